"""Assembling a run's parts from a config: graph, data, model, algorithm, network, engine.

:func:`assemble` reads the config once and returns :class:`Parts`: everything a run is
made of, before any state exists.  What the algorithm needs from the network is read
from its declaration (:class:`~p2p_fmtl.algorithms.base.Needs`: its exchange, copies of
local work, relation weights), the exchange is chosen by :func:`p2p_fmtl.exchange.
plan_exchange`, and the network process by :func:`p2p_fmtl.network.build_process`;
nothing here looks at an algorithm's name.  :class:`p2p_fmtl.runner.Simulation` runs
the parts.

Before the graph is built or the data generated, and again once the data are loaded and
the model built (before anything is packed or initialised), :mod:`p2p_fmtl.memory`
estimates the memory the run needs and refuses a run that cannot fit.

A researcher's own graph and mixing matrix go straight in:
``assemble(cfg, graph=G, mixing=W)`` (see :func:`assemble`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import topologies

from . import memory
from .adversary import attack_inputs, fixed_byzantine, flip_labels
from .algorithms import ALGORITHMS, Algorithm, AlgorithmSpec, Context, Needs, NodeData, needs_of
from .config import GIVEN, Config
from .data import PackedData, load_dataset, pack
from .data.packing import plan_groups
from .engine import Engine, Layout, RoundInputs
from .errors import ConfigError, UserError
from .exchange import Exchange, plan_exchange
from .gossip import Mixing, make_mixing
from .models import build_model
from .netsim import NetArrays, Process, StaticNet
from .network import (
    Network,
    borrow_edges,
    build_network,
    build_process,
    holdout_mask,
    relation_table,
    static_mixing_facts,
)
from .optim import lr_schedule, make_optimizer
from .schema import GOSSIP_KEYS, TOPOLOGY_KEYS
from .tasks import Task, make_task
from .training import LocalWork

BYTES_PER_VALUE = 4  # float32 data statistics (the similarity relation's one exchange)
TRIM_ABOVE_BYTES = 256 << 20  # give the released dataset back to the system above this size

# Engines (and so their compiled programs) are shared by runs whose computation is the
# same: only data, topology weights, rates, seeds and learning rates differ.
_ENGINES: dict[str, Engine] = {}
_PROGRAMS: dict[str, dict] = {}  # init and evaluation programs, by algorithm
_DATA_FREE_KEYS = ("lr", "schedule", "milestones", "gamma", "lr_min", "init", "finetune_lr")
_DATA_FREE_KEYS += ("trim", "clip_radius")  # robust rules read them as data


@dataclass
class Parts:
    """Everything a run is made of, built from its config (no state yet)."""

    cfg: Config
    graph: Any  # networkx.Graph
    network: Network
    holdout: np.ndarray  # (N,) bool: unseen nodes
    spec: AlgorithmSpec
    needs: Needs
    task: Task | None
    packed: PackedData | None
    dataset_info: dict[str, Any]
    engine: Engine
    process: Process
    exchange: Exchange
    layout: Layout
    inputs: RoundInputs  # node-independent data of the compiled round
    borrow: Mixing | None  # how unseen nodes borrow their neighbours' shared state
    gossip_operator: str  # "dense" | "sparse"
    setup_bytes: np.ndarray  # (N,) bytes sent once before training (data statistics)
    lrs: LearningRates  # the learning rate of every round (``lrs[t]``, t an index array)
    node_labels: list | None = None  # a given graph's node labels, in node order
    # (N,) bool: the fixed Byzantine nodes (attack.kind set, no redraw); all False else
    byzantine: np.ndarray | None = None

    @property
    def alg(self) -> Algorithm:
        return self.engine.alg

    @property
    def n(self) -> int:
        return self.network.n

    @property
    def metric(self) -> str:
        return "acc" if self.task is None else self.task.metric


class LearningRates:
    """The learning rate of every round, computed when read: ``lrs[idx]`` for an index
    array gives a float32 array (the schedule of :func:`p2p_fmtl.optim.lr_schedule`, or
    zeros for an algorithm that does not train); ``len(lrs)`` is ``max(run.rounds, 1)``.
    Nothing is stored per round, so a large ``run.rounds`` costs no memory up front."""

    def __init__(self, alg_cfg: Mapping[str, Any], rounds: int, trains: bool):
        self._sched = lr_schedule(alg_cfg, rounds) if trains else None
        self._len = max(rounds, 1)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, idx) -> np.ndarray:
        t = np.asarray(idx)
        if self._sched is None:
            return np.zeros(t.shape, np.float32)
        values = [float(self._sched(int(i))) for i in t.reshape(-1)]
        return np.asarray(values, np.float32).reshape(t.shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(self._len)]
        return out if dtype is None else out.astype(dtype)


def build_graph(cfg: Config):
    """The graph of the ``[topology]`` section."""
    t = cfg["topology"]
    if t["name"] == GIVEN:
        raise ConfigError(
            "topology.name: got 'given', which stands for a graph passed in Python "
            "(assemble(cfg, graph=G) or p2p_fmtl.run(cfg, graph=G)); in a config name a "
            f"builder: {', '.join(topologies.BUILDERS)}"
        )
    params = {k: t[k] for k in topologies.builder_params(t["name"]) if t.get(k) is not None}
    try:
        return topologies.build(t["name"], t["n"], seed=t["seed"], **params)
    except topologies.TopologyError as e:
        raise UserError(str(e)) from None


def chunk_budget(run_cfg: Mapping[str, Any]) -> tuple[int, int]:
    """``(chunk_bytes, node_chunk)`` for :func:`~p2p_fmtl.data.pack`; ``(0, 0)``: no chunks.
    An explicit ``run.node_chunk`` turns chunks on unless ``run.chunking = "off"``.

    ``run.chunking = "auto"`` turns chunks on for a CPU where every device has one core
    (a pinned process, or ``run.devices`` = the usable cores): there they keep a chunk's
    working set in cache (D-EM at 10,000 nodes: 0.46 against 0.79 s per round on one
    core).  With several cores per device XLA splits every operation over threads, and
    the many small per-chunk operations cost more than the cache saves (0.71 against
    0.51 s); accelerators want whole buckets.
    """
    mode = run_cfg["chunking"]
    if mode == "off":
        return 0, 0
    if run_cfg["node_chunk"] > 0:  # an explicit chunk size asks for chunks
        return 0, run_cfg["node_chunk"]
    if mode == "auto" and (jax.default_backend() != "cpu" or usable_cpus() > run_cfg["devices"]):
        return 0, 0
    return run_cfg["chunk_kib"] * 1024, 0


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _trim_heap() -> None:
    """Collect garbage and give freed heap memory back to the system (glibc's
    ``malloc_trim``; a no-op elsewhere): the per-node arrays of a dataset are many
    small allocations, and a dataset can sit in a reference cycle."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _layout(packed: PackedData | None, n: int, devices: int = 1) -> Layout:
    if packed is None:
        return Layout((jnp.arange(n),), (None,), jnp.arange(n), devices=devices)
    ids = np.concatenate([b.nodes for b in packed.buckets])
    real = np.flatnonzero(ids >= 0)
    inverse = np.empty(n, np.int64)
    inverse[ids[real]] = real  # node -> its position in the concatenated buckets
    # device_put, not jnp.asarray: on a CPU it can use the packed numpy buffers in place
    # (no second copy of the data)
    data = tuple(
        NodeData(
            *(
                jax.device_put(a)
                for a in (b.x_train, b.y_train, b.n_train, b.x_test, b.y_test, b.n_test)
            ),
            size_fraction=jax.device_put(b.size_fraction),
            component=None if b.component is None else jax.device_put(b.component),
        )
        for b in packed.buckets
    )
    return Layout(
        tuple(jnp.asarray(b.nodes, jnp.int32) for b in packed.buckets),
        data,
        jnp.asarray(inverse, jnp.int32),
        chunks=packed.chunks,
        devices=devices,
    )


def _engine_for(cfg: Config, shapes: list, build, process, exchange, build_tuner=None) -> Engine:
    """The cached engine for this computation (so equal computations share compiled code).
    ``build_tuner``: builds the algorithm that fine-tunes before evaluation (one local
    epoch of work), for ``algorithm.finetune_epochs > 0``."""
    alg = {k: v for k, v in cfg["algorithm"].items() if k not in _DATA_FREE_KEYS}
    network_free = {k: v for k, v in alg.items() if k not in GOSSIP_KEYS}
    alg_key = json.dumps([network_free, cfg["model"], shapes], sort_keys=True)
    key = json.dumps([alg_key, alg, repr(process), repr(exchange), cfg["cost"]["enabled"]])
    if key not in _ENGINES:
        _ENGINES[key] = Engine(
            build(),
            process,
            exchange,
            every=cfg["algorithm"].get("gossip_every", 1),
            cost=cfg["cost"]["enabled"],
            programs=_PROGRAMS.setdefault(alg_key, {}),
            finetune=None if build_tuner is None else (build_tuner(), alg["finetune_epochs"]),
        )
    return _ENGINES[key]


def _to_device(tree):
    return jax.tree.map(jnp.asarray, tree)


def _given(cfg: Config, graph, mixing) -> tuple[Config, Any, list | None, np.ndarray | None]:
    """The config of a run on a given graph and / or mixing matrix (``topology.name`` and
    ``topology.mixing`` say ``"given"``), the graph relabelled, its labels, and W."""
    raw = cfg.raw
    topo = dict(raw.get("topology", {}))
    G = labels = W = None
    if graph is not None:
        try:
            G = topologies.from_graph(graph)
        except topologies.TopologyError as e:
            raise UserError(f"graph: {str(e).split(': ', 1)[-1]}") from None
        n = G.number_of_nodes()
        if "n" in topo and topo["n"] != n:  # the graph passed in decides
            warnings.warn(
                f"topology.n: {topo['n']!r} replaced by the given graph's {n} nodes",
                UserWarning,
                stacklevel=3,
            )
        if isinstance(G, topologies.EdgeGraph):  # numbered 0..n-1, no labels kept
            labels = list(range(n))
        else:
            labels = [G.nodes[i]["label"] for i in range(n)]
        topo = {k: v for k, v in topo.items() if k in TOPOLOGY_KEYS}  # no builder keys
        topo.update(name=GIVEN, n=n)
    if isinstance(mixing, str):  # a rule's name
        topo["mixing"] = mixing
    elif mixing is not None:
        try:
            W = np.asarray(mixing, dtype=np.float64)
        except (TypeError, ValueError):
            raise UserError(
                f"mixing: got {type(mixing).__name__}, expected a square numeric matrix "
                "(or a mixing rule's name)"
            ) from None
        topo["mixing"] = GIVEN
    if W is not None:
        _check_given_matrix(cfg)
    raw["topology"] = topo
    return Config(raw, source=cfg.source), G, labels, W


def _check_given_matrix(cfg: Config) -> None:
    """A given W is the static graph's: no other graphs, nothing to recompute it from."""
    schedule, faults = cfg["topology"]["schedule"], cfg["faults"]
    if schedule != "static":
        raise ConfigError(
            f"mixing: a given matrix is the W of the static graph, but topology.schedule = "
            f"{schedule!r} draws other graphs; allowed: 'static' (or give a mixing rule's name)"
        )
    losses = any(faults[k] > 0 for k in ("node_drop", "link_drop", "churn"))
    if losses and faults["reweight"] == "rule":
        raise ConfigError(
            "faults.reweight: got 'rule', which recomputes topology.mixing on each round's "
            "live graph, but a given matrix has no rule; allowed: 'self', 'metropolis'"
        )


def _check_outputs(cfg: Config, model, task: Task, ds) -> None:
    """The model's outputs for one sample have the shape the task reads: ``(classes,)``
    (or ``(1,)``), or ``(positions, vocab)`` for next-token data."""
    nd = ds.first
    x = jax.ShapeDtypeStruct((1, *ds.feature_shape), nd.x_train.dtype)
    name = cfg["model"]["name"]
    field = "model.module" if name in ("flax", "equinox") else "model.name"
    try:
        params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
        out = jax.eval_shape(model.apply, params, x).shape[1:]
    except Exception as e:  # noqa: BLE001 - a user's module that cannot run on the data
        if name not in ("flax", "equinox"):
            raise
        msg = " ".join(str(e).split())[:200]
        raise ConfigError(
            f"{field}: the module fails on inputs of shape {ds.feature_shape} "
            f"({type(e).__name__}: {msg})"
        ) from None
    want = (*nd.y_train.shape[1:], task.out_dim) if task.kind == "lm" else (task.out_dim,)
    if tuple(out) != want:
        raise ConfigError(
            f"{field}: got {cfg['model'].get('module') or name!r}, whose output for one "
            f"sample has shape {tuple(out)}, but data.name = {cfg['data']['name']!r} is a "
            f"{task.kind} task reading outputs of shape {want}"
        )


def assemble(cfg: Config, *, graph=None, mixing=None) -> Parts:
    """Build every part of the run of ``cfg`` (graph, data, model, algorithm, network).

    ``graph``: any networkx graph, replacing the config's topology builder.  Its nodes
    become ``0 .. n-1`` in sorted order of their labels (insertion order when the labels
    cannot be sorted), a directed graph becomes undirected and self-loops are dropped
    (:func:`topologies.from_graph`); it must be connected.  ``parts.node_labels`` holds
    the original labels in node order, and ``parts.cfg`` says ``topology.name = "given"``
    and ``topology.n`` = the graph's size (a config that sets ``topology.n`` to another
    size is refused; one that leaves it unset takes the graph's).

    ``mixing``: a matrix ``W`` (numpy or array-like), the static graph's mixing weights:
    square of the graph's size, symmetric, doubly stochastic, non-negative and zero off
    the graph's edges and diagonal (else refused with one line naming ``mixing`` and the
    worst violation); ``parts.cfg`` says ``topology.mixing = "given"``.  A mixing rule's
    name instead replaces ``topology.mixing``.  Without ``graph``, ``W`` is for the
    config's graph.  A matrix needs ``topology.schedule = "static"``, no held-out nodes,
    and, with node or link faults, ``faults.reweight = "self"`` or ``"metropolis"``.
    """
    labels = W = G = None
    if graph is not None or mixing is not None:
        cfg, G, labels, W = _given(cfg, graph, mixing)
    run_cfg, topo_cfg, alg_cfg = cfg["run"], cfg["topology"], cfg["algorithm"]
    spec = ALGORITHMS[alg_cfg["name"]]
    needs = needs_of(alg_cfg)
    if G is None:
        memory.check(memory.estimate_config(cfg), warn=False)
        G = build_graph(cfg)
    else:
        memory.check(memory.estimate_config(cfg, edges=G.number_of_edges()), warn=False)
    n = G.number_of_nodes()

    # data, task, model, optimizer
    ds = packed = task = model = optimizer = work = groups = None
    holdout = np.zeros(n, dtype=bool)
    if spec.uses_data:
        ds = load_dataset(cfg["data"], n)
        if ds.num_nodes != n:
            raise ConfigError(
                f"topology.n: got {n}, but data {cfg['data']['name']!r} has {ds.num_nodes} "
                f"nodes; allowed: {ds.num_nodes}"
            )
        task = make_task(ds.task, ds.num_classes, cfg["model"]["loss"], heads=ds.info.get("heads"))
        model = build_model(cfg["model"], ds.feature_shape, task.out_dim)
        _check_outputs(cfg, model, task, ds)
        holdout = holdout_mask(cfg["data"]["holdout_nodes"], n, run_cfg["seed"])
        groups = plan_groups(
            ds.n_train,
            alg_cfg.get("batch_size"),
            cfg["data"]["bucketing"],
            cfg["data"]["max_buckets"],
            run_cfg["rounds"],
            needs.copies,
        )
    if spec.trains:
        if cfg["model"].get("freeze_base") and alg_cfg["weight_decay"] > 0:
            raise ConfigError(
                f"algorithm.weight_decay: got {alg_cfg['weight_decay']}, but "
                "model.freeze_base = true and decoupled weight decay would still shrink "
                "the frozen base; allowed: 0"
            )
        optimizer = make_optimizer(alg_cfg)
    degrees = topologies.degrees(G)
    memory.check(
        memory.estimate_parts(
            cfg,
            n=n,
            edges=G.number_of_edges(),
            max_degree=int(degrees.max(initial=0)),
            ds=ds,
            groups=groups,
            model=model,
            optimizer=optimizer,
            copies=max(needs.copies, 1),
            on_host=jax.default_backend() == "cpu",
        )
    )
    if ds is not None:
        chunk_bytes, node_chunk = chunk_budget(run_cfg)
        packed = pack(
            ds,
            batch_size=alg_cfg.get("batch_size"),
            bucketing=cfg["data"]["bucketing"],
            max_buckets=cfg["data"]["max_buckets"],
            rounds=run_cfg["rounds"],
            copies=needs.copies,
            chunk_bytes=chunk_bytes,
            node_chunk=node_chunk,
            devices=run_cfg["devices"],
            storage=cfg["data"]["storage"],
        )
    if spec.trains:
        rng_size = int(packed.n_train.max()) if packed is not None else 0
        work = LocalWork.from_config(alg_cfg, rng_size=rng_size, privacy=cfg["privacy"])

    # the network: training mixing weights, the process, the exchange
    n_train = None if packed is None else packed.n_train
    net = build_network(G, topo_cfg["mixing"], holdout, n_train, weights=W)
    exchange = plan_exchange(cfg, needs)
    adversary = getattr(exchange, "adversary", None)
    operator = topo_cfg["operator"]
    if adversary is not None and adversary.needs_table and exchange.kind == "average":
        operator = "sparse"  # robust rules and ALIE read the (N, K) neighbour table
    gossip_operator, mixing = make_mixing(*net.mixing, n, operator)
    samples = np.zeros(n)
    if work is not None and packed is not None:
        per = (
            work.epochs * packed.n_train
            if work.epochs
            else np.minimum(work.steps * work.batch_size, 10**12)
        )
        samples = per * needs.copies
    process, arrays = build_process(
        cfg,
        net,
        samples,
        dense=gossip_operator == "dense",
        exchange_reads_edges=exchange.reads_edges,
    )
    shapes = [
        None
        if task is None
        else [
            task.kind,
            task.loss_name,
            task.num_classes,
            [[h["kind"], h["width"]] for h in task.heads],
        ],
        None if packed is None else list(packed.feature_shape),
        None if work is None else [work.rng_size, work.clip_norm, work.noise],
    ]
    build_tuner = None
    if alg_cfg.get("finetune_epochs", 0) > 0:  # only algorithms that train have the key
        one_epoch = work._replace(epochs=1, steps=0)  # fine-tuning: one epoch at a time

        def build_tuner():
            return spec.build(Context(model, task, optimizer, one_epoch, alg_cfg))

    engine = _engine_for(
        cfg,
        shapes,
        lambda: spec.build(Context(model, task, optimizer, work, alg_cfg)),
        process,
        exchange,
        build_tuner,
    )

    # what the round reads besides node data
    setup_bytes = np.zeros(n, dtype=np.int64)
    relation = None
    pad = len(arrays.u) - 1
    if needs.exchange in ("inbox", "combine"):
        relation = relation_table(needs.relation, net, arrays.index, arrays.edge, ds, pad)
        if needs.relation == "similarity":  # one exchange of each node's data statistics
            values = int(np.prod(packed.feature_shape)) * max(task.num_classes, 1)
            setup_bytes = net.degree * values * BYTES_PER_VALUE
    # Byzantine nodes: a fixed set drawn from the seed (none with a redraw or no attack)
    att = cfg["attack"]
    byzantine = np.zeros(n, dtype=bool)
    if att["kind"] != "none" and not att["redraw"]:
        byzantine = fixed_byzantine(run_cfg["seed"], ~holdout, att["fraction"])
    if att["kind"] == "label_flip" and packed is not None:
        flip_labels(packed, byzantine, task)
    self_weight, sends = static_mixing_facts(net)
    inputs = RoundInputs(
        active=jnp.asarray(~holdout),
        static=StaticNet(mixing, jnp.asarray(self_weight), jnp.asarray(sends)),
        net=_to_device(arrays),
        relation=None if relation is None else jnp.asarray(relation),
        gamma=jnp.float32(cfg["compression"]["gamma"]),
        message_bytes=jnp.float32(0.0),  # set once the message's shapes are known
        adversary=None if adversary is None else attack_inputs(cfg, byzantine),
    )
    borrow = None
    if holdout.any():
        _, borrow = make_mixing(*borrow_edges(net), n, topo_cfg["operator"])

    layout = _layout(packed, n, run_cfg["devices"])
    # the per-node arrays now live once, in the packed buckets the device arrays use:
    # keep the dataset's metadata, release its arrays (half the memory of a large run)
    dataset_info = {} if ds is None else ds.info
    ds = None
    if packed is not None and packed.nbytes > TRIM_ABOVE_BYTES:
        _trim_heap()
    lrs = LearningRates(alg_cfg, run_cfg["rounds"], spec.trains)
    return Parts(
        cfg=cfg,
        graph=G,
        network=net,
        holdout=holdout,
        spec=spec,
        needs=needs,
        task=task,
        packed=packed,
        dataset_info=dataset_info,
        engine=engine,
        process=process,
        exchange=exchange,
        layout=layout,
        inputs=inputs,
        borrow=borrow,
        gossip_operator=gossip_operator,
        setup_bytes=setup_bytes,
        lrs=lrs,
        node_labels=labels,
        byzantine=byzantine,
    )


__all__ = ["LearningRates", "NetArrays", "Parts", "assemble", "build_graph", "chunk_budget"]
