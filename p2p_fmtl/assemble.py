"""Assembling a run's parts from a config: graph, data, model, algorithm, network, engine.

:func:`assemble` reads the config once and returns :class:`Parts`: everything a run is
made of, before any state exists.  What the algorithm needs from the network is read
from its declaration (:class:`~p2p_fmtl.algorithms.base.Needs`: its exchange, copies of
local work, relation weights), the exchange is chosen by :func:`p2p_fmtl.exchange.
plan_exchange`, and the network process by :func:`p2p_fmtl.network.build_process`;
nothing here looks at an algorithm's name.  :class:`p2p_fmtl.runner.Simulation` runs
the parts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import topologies

from .algorithms import ALGORITHMS, Algorithm, AlgorithmSpec, Context, Needs, NodeData, needs_of
from .config import Config
from .data import PackedData, load_dataset, pack
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
from .schema import GOSSIP_KEYS
from .tasks import Task, make_task
from .training import LocalWork

BYTES_PER_VALUE = 4  # float32 data statistics (the similarity relation's one exchange)
TRIM_ABOVE_BYTES = 256 << 20  # give the released dataset back to the system above this size

# Engines (and so their compiled programs) are shared by runs whose computation is the
# same: only data, topology weights, rates, seeds and learning rates differ.
_ENGINES: dict[str, Engine] = {}
_PROGRAMS: dict[str, dict] = {}  # init and evaluation programs, by algorithm
_DATA_FREE_KEYS = ("lr", "schedule", "milestones", "gamma", "lr_min", "init")


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
    lrs: np.ndarray  # the learning rate of every round

    @property
    def alg(self) -> Algorithm:
        return self.engine.alg

    @property
    def n(self) -> int:
        return self.network.n

    @property
    def metric(self) -> str:
        return "acc" if self.task is None else self.task.metric


def build_graph(cfg: Config):
    """The graph of the ``[topology]`` section."""
    t = cfg["topology"]
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


def _engine_for(cfg: Config, shapes: list, build, process, exchange) -> Engine:
    """The cached engine for this computation (so equal computations share compiled code)."""
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
        )
    return _ENGINES[key]


def _to_device(tree):
    return jax.tree.map(jnp.asarray, tree)


def assemble(cfg: Config) -> Parts:
    """Build every part of the run of ``cfg`` (graph, data, model, algorithm, network)."""
    run_cfg, topo_cfg, alg_cfg = cfg["run"], cfg["topology"], cfg["algorithm"]
    spec = ALGORITHMS[alg_cfg["name"]]
    needs = needs_of(alg_cfg)
    G = build_graph(cfg)
    n = G.number_of_nodes()

    # data, task, model, optimizer
    ds = packed = task = model = optimizer = work = None
    holdout = np.zeros(n, dtype=bool)
    if spec.uses_data:
        ds = load_dataset(cfg["data"], n)
        if ds.num_nodes != n:
            raise ConfigError(
                f"topology.n: got {n}, but data {cfg['data']['name']!r} has {ds.num_nodes} "
                f"nodes; allowed: {ds.num_nodes}"
            )
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
        )
        task = make_task(ds.task, ds.num_classes, cfg["model"]["loss"], heads=ds.info.get("heads"))
        model = build_model(cfg["model"], ds.feature_shape, task.out_dim)
        holdout = holdout_mask(cfg["data"]["holdout_nodes"], n, run_cfg["seed"])
    if spec.trains:
        if cfg["model"].get("freeze_base") and alg_cfg["weight_decay"] > 0:
            raise ConfigError(
                f"algorithm.weight_decay: got {alg_cfg['weight_decay']}, but "
                "model.freeze_base = true and decoupled weight decay would still shrink "
                "the frozen base; allowed: 0"
            )
        optimizer = make_optimizer(alg_cfg)
        rng_size = int(packed.n_train.max()) if packed is not None else 0
        work = LocalWork.from_config(alg_cfg, rng_size=rng_size)

    # the network: training mixing weights, the process, the exchange
    n_train = None if packed is None else packed.n_train
    net = build_network(G, topo_cfg["mixing"], holdout, n_train)
    gossip_operator, mixing = make_mixing(*net.mixing, n, topo_cfg["operator"])
    samples = np.zeros(n)
    if work is not None and packed is not None:
        per = (
            work.epochs * packed.n_train
            if work.epochs
            else np.minimum(work.steps * work.batch_size, 10**12)
        )
        samples = per * needs.copies
    exchange = plan_exchange(cfg, needs)
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
        None if work is None else work.rng_size,
    ]
    engine = _engine_for(
        cfg,
        shapes,
        lambda: spec.build(Context(model, task, optimizer, work, alg_cfg)),
        process,
        exchange,
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
    self_weight, sends = static_mixing_facts(net)
    inputs = RoundInputs(
        active=jnp.asarray(~holdout),
        static=StaticNet(mixing, jnp.asarray(self_weight), jnp.asarray(sends)),
        net=_to_device(arrays),
        relation=None if relation is None else jnp.asarray(relation),
        gamma=jnp.float32(cfg["compression"]["gamma"]),
        message_bytes=jnp.float32(0.0),  # set once the message's shapes are known
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
    rounds = run_cfg["rounds"]
    lrs = np.zeros(max(rounds, 1), np.float32)
    if spec.trains:
        sched = lr_schedule(alg_cfg, rounds)
        lrs = np.asarray([sched(t) for t in range(max(rounds, 1))], np.float32)
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
    )


__all__ = ["NetArrays", "Parts", "assemble", "build_graph", "chunk_budget"]
