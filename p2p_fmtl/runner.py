"""``run(config) -> RunResult``: config → topology + data + model + algorithm → engine → results.

:class:`Simulation` holds one prepared run (graph, packed data, compiled engine, state);
:func:`run` drives it chunk by chunk with evaluations and a progress bar.  Benchmarks
and other drivers use :class:`Simulation` directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import topologies

from .algorithms import ALGORITHMS, Context, NodeData
from .compress import tree_message_bytes
from .config import Config, load_config
from .data import FederatedDataset, PackedData, load_dataset, pack
from .engine import Engine, Layout
from .errors import ConfigError, DivergenceError, UserError
from .gossip import Neighbours, make_mixing, num_values
from .models import build_model
from .netsim import Dynamics, NetArrays, NetState, edge_ids, effective_gap
from .network import (
    borrow_edges,
    build_network,
    build_process,
    holdout_mask,
    neighbour_table,
    relation_weights,
)
from .optim import lr_schedule, make_optimizer
from .results import RunResult, flatten_params
from .tasks import make_task
from .training import LocalWork

BYTES_PER_VALUE = 4  # float32 on the wire

# Engines (and so their compiled programs) are shared by runs whose computation is the
# same: only data, topology weights, seeds and learning rates differ.
_ENGINES: dict[str, Engine] = {}
_DATA_FREE_KEYS = ("lr", "schedule", "milestones", "gamma", "lr_min", "init")


def build_graph(cfg: Config):
    """The graph of the ``[topology]`` section."""
    t = cfg["topology"]
    params = {k: t[k] for k in topologies.builder_params(t["name"]) if t.get(k) is not None}
    try:
        return topologies.build(t["name"], t["n"], seed=t["seed"], **params)
    except topologies.TopologyError as e:
        raise UserError(str(e)) from None


def _engine_for(cfg: Config, shapes: list, build, dyn: Dynamics) -> Engine:
    """The cached engine for this computation (so equal computations share compiled code)."""
    alg = {k: v for k, v in cfg["algorithm"].items() if k not in _DATA_FREE_KEYS}
    key = json.dumps([alg, cfg["model"], shapes, list(dyn)], sort_keys=True)
    if key not in _ENGINES:
        _ENGINES[key] = Engine(build(), dyn)
    return _ENGINES[key]


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
    if mode == "auto" and (jax.default_backend() != "cpu" or _usable_cpus() > run_cfg["devices"]):
        return 0, 0
    return run_cfg["chunk_kib"] * 1024, 0


TRIM_ABOVE_BYTES = 256 << 20  # give the released dataset back to the system above this size


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


def _init_keys(key, n: int, mode: str):
    if mode == "identical":
        return jnp.broadcast_to(key, (n, *key.shape))
    return jax.random.split(key, n)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def request_cpu_devices(k: int) -> None:
    """Ask JAX for ``k`` CPU devices (``jax_num_cpu_devices``) if it has not started yet
    and the process may use at least ``k`` cores.

    On a multi-core CPU, ``run.devices = K`` then runs the node axis as K streams, one
    per core, which is faster than XLA's intra-op threads on the small per-chunk
    operations of local work.  Once JAX has run anything the setting is fixed, and more
    devices than cores are only simulated on request;
    :meth:`Simulation._shard_arrays` then explains how.  Accelerators are unaffected
    (their devices come first).
    """
    if k <= 1 or k > _usable_cpus() or jax.config.jax_num_cpu_devices >= k:
        return
    try:
        jax.config.update("jax_num_cpu_devices", k)
    except RuntimeError:  # JAX already initialised its backends
        pass


class Simulation:
    """One prepared run: build once, then :meth:`advance` rounds and :meth:`evaluate`."""

    def __init__(self, config: Config | Mapping[str, Any] | str | Path):
        cfg = config if isinstance(config, Config) else load_config(config)
        self.cfg = cfg
        request_cpu_devices(cfg["run"]["devices"])
        self.t_start = time.perf_counter()
        run_cfg, topo_cfg, alg_cfg = cfg["run"], cfg["topology"], cfg["algorithm"]
        self.spec = spec = ALGORITHMS[alg_cfg["name"]]
        G = build_graph(cfg)
        n = self.n_nodes = G.number_of_nodes()

        # data, task, model, optimizer
        # the dataset while the run is built; afterwards None (its arrays are released
        # once packed) and its metadata stays in ``dataset_info``
        self.dataset: FederatedDataset | None = None
        self.packed: PackedData | None = None
        task = model = optimizer = work = None
        holdout = np.zeros(n, dtype=bool)
        if spec.uses_data:
            ds = self.dataset = load_dataset(cfg["data"], n)
            if ds.num_nodes != n:
                raise ConfigError(
                    f"topology.n: got {n}, but data {cfg['data']['name']!r} has {ds.num_nodes} "
                    f"nodes; allowed: {ds.num_nodes}"
                )
            chunk_bytes, node_chunk = chunk_budget(run_cfg)
            self.packed = pack(
                ds,
                batch_size=alg_cfg.get("batch_size"),
                bucketing=cfg["data"]["bucketing"],
                max_buckets=cfg["data"]["max_buckets"],
                rounds=run_cfg["rounds"],
                copies=alg_cfg.get("components", 1),
                chunk_bytes=chunk_bytes,
                node_chunk=node_chunk,
                devices=run_cfg["devices"],
            )
            task = make_task(
                ds.task, ds.num_classes, cfg["model"]["loss"], heads=ds.info.get("heads")
            )
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
            rng_size = int(self.packed.n_train.max()) if self.packed is not None else 0
            work = LocalWork.from_config(alg_cfg, rng_size=rng_size)
        self.task, self.holdout = task, holdout
        self.metric = "acc" if task is None else task.metric

        # network: training mixing weights (edge lists), operator, neighbours, borrow
        n_train = None if self.packed is None else self.packed.n_train
        net = self.network = build_network(G, topo_cfg["mixing"], holdout, n_train)
        shapes = [
            None
            if task is None
            else [
                task.kind,
                task.loss_name,
                task.num_classes,
                [[h["kind"], h["width"]] for h in task.heads],
            ],
            None if self.packed is None else list(self.packed.feature_shape),
            None if work is None else work.rng_size,
        ]
        self.gossip_operator, self.mixing = make_mixing(*net.mixing, n, topo_cfg["operator"])
        samples = np.zeros(n)
        if work is not None and self.packed is not None:
            per = (
                work.epochs * self.packed.n_train
                if work.epochs
                else np.minimum(work.steps * work.batch_size, 10**12)
            )
            samples = per * alg_cfg.get("components", 1)
        dyn, self._net_arrays = build_process(
            cfg, net, samples, 0, dense=self.gossip_operator == "dense"
        )
        self.dyn = dyn
        self.engine = _engine_for(
            cfg, shapes, lambda: spec.build(Context(model, task, optimizer, work, alg_cfg)), dyn
        )
        alg = self.alg = self.engine.alg
        self.gossip_nnz = int(len(net.mixing.weights)) if alg.communicates else 0
        self.borrow = None
        if holdout.any():
            _, self.borrow = make_mixing(*borrow_edges(net), n, topo_cfg["operator"])
        self.active = jnp.asarray(~holdout)
        self.nbrs = None
        self.setup_bytes = np.zeros(n, dtype=np.int64)
        relation = alg_cfg.get("relation")
        if relation is None and alg_cfg.get("aggregation") == "decoupled":
            relation = "graph"  # D-SGD's decoupled mixing uses the gossip weights W_ij
        if alg.inbox != "none" or alg.combine is not None:
            a = relation_weights(relation or "uniform", net, self.dataset)
            index, weights = neighbour_table(n, net.src, net.dst, a)
            self.nbrs = Neighbours(jnp.asarray(index, jnp.int32), jnp.asarray(weights, jnp.float32))
            if relation == "similarity":  # one exchange of each node's data statistics
                values = int(np.prod(self.packed.feature_shape)) * max(task.num_classes, 1)
                self.setup_bytes = net.degree * values * BYTES_PER_VALUE

        self.layout = _layout(self.packed, n, run_cfg["devices"])
        # the per-node arrays now live once, in the packed buckets the device arrays use:
        # keep the dataset's metadata, release its arrays (half the memory of a large run)
        self.dataset_info = {} if self.dataset is None else self.dataset.info
        self.dataset = ds = None
        if self.packed is not None and self.packed.nbytes > TRIM_ABOVE_BYTES:
            _trim_heap()
        self.rounds = rounds = run_cfg["rounds"]
        self.lrs = np.zeros(max(rounds, 1), np.float32)
        if spec.trains:
            sched = lr_schedule(alg_cfg, rounds)
            self.lrs = np.asarray([sched(t) for t in range(max(rounds, 1))], np.float32)

        key = jax.random.PRNGKey(run_cfg["seed"])
        k_init, self.key = jax.random.split(key)
        self.compile_before = self.engine.compile_seconds
        keys = _init_keys(k_init, n, alg_cfg.get("init", "independent"))
        self.devices = run_cfg["devices"]
        if self.devices > 1:
            keys = self._shard_arrays(keys)
        self.state = self.engine.init(keys, self.layout)
        self.round = 0
        self.train_seconds = 0.0
        self.diverged_at: int | None = None  # first round that left a non-finite value

        # the byte ledger: messages each node sent (counted on device by the network
        # process, or degree per round on the plain path) × the encoded message size
        shared = alg.shared(self.state)
        self.shared_values = num_values(shared)
        comp = cfg["compression"]
        self.msg_bytes = 0
        if alg.communicates:
            self.msg_bytes = tree_message_bytes(
                shared,
                comp["name"],
                ratio=comp["ratio"],
                levels=comp["levels"],
                dtype=comp["dtype"],
            )
        self.msgs_sent = np.zeros(n, dtype=np.int64)
        self.sim_time = 0.0
        self.net_state = None
        if not dyn.trivial:
            self._net_arrays["cost"][3] = self.msg_bytes
            self._prepare_process(net, shared)
        self.history: list[dict[str, Any]] = []
        self.last_eval: dict[str, np.ndarray] = {}

    def _prepare_process(self, net, shared) -> None:
        """Device arrays and initial state of the network process."""
        arr = self._net_arrays
        nbr_edge = None
        if self.nbrs is not None:
            ids = edge_ids(arr["u"], arr["v"], net.n, net.src, net.dst)
            index, _ = neighbour_table(net.n, net.src, net.dst, ids.astype(np.float64))
            table = np.zeros(index.shape, np.int64)
            counts = np.bincount(net.src, minlength=net.n)
            starts = np.cumsum(counts) - counts
            table[net.src, np.arange(len(net.src)) - starts[net.src]] = ids
            nbr_edge = jnp.asarray(table, jnp.int32)
        self.net_arrays = NetArrays(
            u=jnp.asarray(arr["u"], jnp.int32),
            v=jnp.asarray(arr["v"], jnp.int32),
            valid=jnp.asarray(arr["valid"]),
            weights=jnp.asarray(arr["weights"], jnp.float32),
            rates=jnp.asarray(arr["rates"]),
            churn_rounds=jnp.asarray(arr["churn_rounds"], jnp.int32),
            nbr_edge=nbr_edge,
            samples=jnp.asarray(arr["samples"], jnp.float32),
            cost=jnp.asarray(arr["cost"], jnp.float32),
        )
        dyn = self.dyn
        public = None
        if dyn.compressed and (dyn.method == "choco" or dyn.error_feedback):
            public = jax.tree.map(jnp.zeros_like, shared)
        self.net_state = NetState(jnp.zeros((net.n,), jnp.int32), public)

    def effective_spectral_gap(self, samples: int = 200) -> float | None:
        """The schedule's effective gap (:func:`p2p_fmtl.netsim.effective_gap`)."""
        if self.dyn.trivial:
            return self.network.spectral_gap
        return effective_gap(self.dyn, self.net_arrays, self.active, samples)

    # ------------------------------------------------------------------ devices
    def _shard_arrays(self, init_keys):
        """Shard the node axis over a 1-D mesh of ``run.devices`` devices.

        Node-indexed arrays (keys, data buckets, dense mixing rows, neighbour tables, the
        active mask) are split along their leading axis; everything else is replicated.
        XLA's SPMD partitioner turns gossip across shards into collectives.
        """
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        k, n = self.devices, self.n_nodes
        avail = jax.devices()
        if k > len(avail):
            raise ConfigError(
                f"run.devices: got {k}, but only {len(avail)} devices are available "
                "(on CPU, jax.config.update('jax_num_cpu_devices', K) right after importing "
                "jax, or XLA_FLAGS=--xla_force_host_platform_device_count=K, gives K)"
            )
        if n % k:
            raise ConfigError(f"run.devices: got {k}, but topology.n = {n} is not a multiple")
        mesh = Mesh(np.array(avail[:k]), ("nodes",))
        split, replicated = NamedSharding(mesh, P("nodes")), NamedSharding(mesh, P())

        def put(tree, by_node=True):
            def one(x):
                ok = by_node and np.ndim(x) > 0 and x.shape[0] % k == 0
                return jax.device_put(x, split if ok else replicated)

            return jax.tree.map(one, tree)

        ids = tuple(put(i, by_node=False) for i in self.layout.ids)
        self.layout = dataclasses.replace(
            self.layout,
            ids=ids,
            data=put(self.layout.data),
            inverse=put(self.layout.inverse, False),
        )
        if self.packed is not None:  # the shards replace the packed host arrays (one copy)
            fields = ("x_train", "y_train", "x_test", "y_test")
            self.packed = self.packed._replace(
                buckets=tuple(
                    b._replace(**{f: getattr(d, f) for f in fields})
                    for b, d in zip(self.packed.buckets, self.layout.data, strict=True)
                )
            )
        dense = self.mixing.dense is not None  # dense: split W by rows; sparse: replicate
        self.mixing = put(self.mixing, by_node=dense)
        if self.borrow is not None:
            self.borrow = put(self.borrow, by_node=self.borrow.dense is not None)
        self.active = put(self.active)
        if self.nbrs is not None:
            self.nbrs = put(self.nbrs)
        self.key = put(self.key, False)
        return put(init_keys)

    # ------------------------------------------------------------------ stepping
    @property
    def padding_fraction(self) -> float | None:
        return None if self.packed is None else self.packed.padding_fraction

    @property
    def n_train(self) -> np.ndarray | None:
        return None if self.packed is None else self.packed.n_train

    def _lrs(self, t0: int, length: int) -> np.ndarray:
        idx = np.minimum(np.arange(t0, t0 + length), len(self.lrs) - 1)
        return self.lrs[idx]

    def advance(self, rounds: int) -> float:
        """Run ``rounds`` rounds as one compiled chunk; return seconds (compilation excluded)."""
        if rounds <= 0:
            return 0.0
        c0 = self.engine.compile_seconds
        t0 = time.perf_counter()
        if self.dyn.trivial:
            self.state, self.key, finite = self.engine.run_rounds(
                self.state,
                self.key,
                self._lrs(self.round, rounds),
                self.mixing,
                self.layout,
                self.active,
                self.nbrs,
            )
            if self.alg.communicates:
                self.msgs_sent += self.network.degree * rounds
        else:
            self.state, self.key, finite, self.net_state, msgs, secs = (
                self.engine.run_dynamic_rounds(
                    self.state,
                    self.key,
                    self._lrs(self.round, rounds),
                    self.round,
                    self.layout,
                    self.active,
                    self.nbrs,
                    self.net_arrays,
                    self.net_state,
                )
            )
            self.msgs_sent += np.asarray(msgs, np.int64)
            self.sim_time += float(secs)
        jax.block_until_ready(self.state)
        seconds = time.perf_counter() - t0 - (self.engine.compile_seconds - c0)
        finite = np.asarray(finite)
        if not finite.all() and self.diverged_at is None:
            self.diverged_at = self.round + int(np.argmin(finite)) + 1
        self.round += rounds
        self.train_seconds += seconds
        return seconds

    def evaluate(self) -> dict[str, Any]:
        """Evaluate now; append and return one metrics row."""
        ev = self.engine.evaluate(self.state, self.layout, self.active, self.borrow)
        return self.record(ev)

    def record(self, ev: dict[str, np.ndarray]) -> dict[str, Any]:
        """Append the metrics row of an evaluation ``ev`` (per-node arrays) and return it."""
        self.last_eval = ev
        t, metric, packed = self.round, self.metric, self.packed
        row: dict[str, Any] = {"round": t}
        if "test_score" in ev:
            seen = ~self.holdout
            score, n_test = ev["test_score"][seen], packed.n_test[seen]
            row[f"test_{metric}"] = float(np.sum(score * n_test) / max(n_test.sum(), 1))
            if metric == "acc":
                row["test_acc_p10"] = float(np.percentile(score, 10))
            elif metric in ("mse", "loss"):  # lower is better: the worst decile
                row[f"test_{metric}_p90"] = float(np.percentile(score, 90))
            else:  # multitask: one column per head, over the nodes doing that task
                row.update(self._per_head(ev["test_score"], seen))
            if "unseen_score" in ev:
                us, un = ev["unseen_score"][self.holdout], packed.n_test[self.holdout]
                row[f"test_{metric}_unseen"] = float(np.sum(us * un) / max(un.sum(), 1))
            tl, nt = ev["train_loss"][seen], packed.n_train[seen]
            row["train_loss"] = float(np.sum(tl * nt) / max(nt.sum(), 1))
        row["consensus_distance"] = float(ev["consensus_distance"])
        row["bytes_total"] = int(self.setup_bytes.sum() + self.msgs_sent.sum() * self.msg_bytes)
        if self.dyn.cost:
            row["sim_time_s"] = round(self.sim_time, 6)
        if self.spec.trains:
            row["lr"] = float(self._lrs(max(t - 1, 0), 1)[0])
        row["wall_s"] = round(time.perf_counter() - self.t_start, 4)
        self.history.append(row)
        return row

    def node_tasks(self) -> np.ndarray | None:
        """Head index of each node (multitask data), else ``None``."""
        if self.task is None or not self.task.heads:
            return None
        return np.asarray(self.dataset_info["node_task"], int)

    def head_metric(self, h: int) -> str:
        head = self.task.heads[h]
        return f"{head['name']}_{'mse' if head['kind'] == 'regression' else 'acc'}"

    def _per_head(self, score: np.ndarray, seen: np.ndarray) -> dict[str, float]:
        """``test_<head>_acc`` / ``test_<head>_mse``: test-size weighted over its nodes."""
        tasks, out = self.node_tasks(), {}
        for h in range(len(self.task.heads)):
            m = seen & (tasks == h)
            if m.any():
                nt = self.packed.n_test[m]
                out[f"test_{self.head_metric(h)}"] = float(np.sum(score[m] * nt) / max(nt.sum(), 1))
        return out

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, path: Path) -> None:
        """Write state, PRNG key, round and history to ``path`` atomically (temp + rename)."""
        leaves = jax.tree.leaves((self.state, self.net_state))
        arrays = {f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves)}
        arrays["key"] = np.asarray(self.key)
        arrays["msgs_sent"] = self.msgs_sent
        meta = {
            "round": self.round,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "diverged_at": self.diverged_at,
            "sim_time": self.sim_time,
            "config": self.cfg.to_toml(),
            "leaves": len(leaves),
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint of the same config; refuse corrupt or foreign ones."""
        try:
            with np.load(path) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                stored = [z[f"leaf{i}"] for i in range(meta["leaves"])]
                key = z["key"]
                msgs_sent = z["msgs_sent"]
        except Exception as e:  # zip, pickle-free npz, json or key errors alike
            raise UserError(
                f"{path}: unreadable checkpoint ({type(e).__name__}); delete it to start over"
            ) from None
        if meta["config"] != self.cfg.to_toml():
            raise UserError(
                f"{path}: the checkpoint was written for a different config; run without "
                "--resume (or delete it) to start over"
            )
        leaves, treedef = jax.tree.flatten((self.state, self.net_state))
        if len(stored) != len(leaves) or any(
            a.shape != np.shape(b) for a, b in zip(stored, leaves, strict=True)
        ):
            raise UserError(f"{path}: the checkpoint's arrays do not match this run's state")
        placed = [
            jax.device_put(a.astype(b.dtype), getattr(b, "sharding", None))
            for a, b in zip(stored, leaves, strict=True)
        ]
        self.state, self.net_state = jax.tree.unflatten(treedef, placed)
        self.msgs_sent = msgs_sent.astype(np.int64)
        self.sim_time = meta["sim_time"]
        self.key = jax.device_put(jnp.asarray(key), getattr(self.key, "sharding", None))
        self.round, self.history = meta["round"], meta["history"]
        self.train_seconds, self.diverged_at = meta["train_seconds"], meta["diverged_at"]

    def _effective_gap(self):
        if self.dyn.trivial:
            return self.network.spectral_gap
        if not hasattr(self, "_eff_gap"):
            try:
                self._eff_gap = self.effective_spectral_gap()
            except Exception:  # pragma: no cover - a report, never a failure
                self._eff_gap = None
        return self._eff_gap

    # ------------------------------------------------------------------ results
    def result(self) -> RunResult:
        ev, n, metric = self.last_eval, self.n_nodes, self.metric
        nodes = []
        for i in range(n):
            row: dict[str, Any] = {"node": i}
            if self.packed is not None:
                row.update(n_train=int(self.packed.n_train[i]), n_test=int(self.packed.n_test[i]))
                score = ev["unseen_score" if self.holdout[i] else "test_score"][i]
                row[f"test_{metric}"] = float(score)
                tasks = self.node_tasks()
                if tasks is not None:
                    row["task"] = self.task.heads[tasks[i]]["name"]
                    row["task_metric"] = self.head_metric(tasks[i]).rsplit("_", 1)[1]
                row["train_loss"] = float(ev["train_loss"][i])
                row["holdout"] = int(self.holdout[i])
            sent = self.setup_bytes[i] + self.msgs_sent[i] * self.msg_bytes
            row.update(
                degree=int(self.network.degree[i]),
                messages_sent=int(self.msgs_sent[i]),
                bytes_sent=int(sent),
            )
            nodes.append(row)
        final = self.history[-1]
        cfg = self.cfg
        summary: dict[str, Any] = {
            "status": "complete" if self.diverged_at is None else "incomplete",
            "algorithm": cfg["algorithm"]["name"],
            "topology": cfg["topology"]["name"],
            "n_nodes": n,
            "rounds": self.round,
            "seed": cfg["run"]["seed"],
            **{k: v for k, v in final.items() if k not in ("round", "lr", "wall_s")},
            "spectral_gap": self.network.spectral_gap,
            "schedule": cfg["topology"]["schedule"],
            "effective_spectral_gap": self._effective_gap(),
            "message_bytes": self.msg_bytes,
            "holdout_nodes": np.flatnonzero(self.holdout).tolist(),
            "gossip_operator": self.gossip_operator,
            "padding_fraction": self.padding_fraction,
            "buckets": None if self.packed is None else len(self.packed.buckets),
            "node_chunks": None if self.packed is None else list(self.packed.chunks),
            "dummy_nodes": None if self.packed is None else self.packed.dummy_nodes,
            "wall_s": round(time.perf_counter() - self.t_start, 4),
            "train_s": round(self.train_seconds, 4),
            "seconds_per_round": self.train_seconds / self.round if self.round else None,
            "compile_s": round(self.engine.compile_seconds - self.compile_before, 4),
            "jax_backend": jax.default_backend(),
            "jax_version": jax.__version__,
        }
        alg = self.alg
        params = flatten_params((alg.params or alg.shared)(self.state))
        if alg.extras is not None:
            params.update({k: np.asarray(v) for k, v in alg.extras(self.state).items()})
        result = RunResult(cfg, self.history, nodes, summary, params, state=self.state)
        result.dataset_info = self.dataset_info  # type: ignore[attr-defined]
        return result


def _diverged(sim: Simulation, out) -> None:
    """Write what the run has (status "incomplete") and stop with a clear error."""
    ev = sim.last_eval
    broken = ~ev["finite"]
    if "train_loss" in ev:
        broken |= ~np.isfinite(ev["train_loss"])
    bad = np.flatnonzero(broken).tolist()
    result = sim.result()
    result.summary["error"] = f"non-finite values from round {sim.diverged_at}"
    if out is not None:
        result.save(out)
    nodes = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
    raise DivergenceError(
        f"run diverged: algorithm {sim.alg.name!r} produced non-finite losses or parameters "
        f"in round {sim.diverged_at} (nodes {nodes or 'unknown'}); try a smaller algorithm.lr"
        + (f"; partial results in {out}" if out is not None else "")
    )


def run(
    config: Config | Mapping[str, Any] | str | Path,
    *,
    quiet: bool = True,
    out: str | Path | None = None,
    resume: bool = False,
) -> RunResult:
    """Run one simulation and return its :class:`~p2p_fmtl.results.RunResult`.

    ``config`` is a :class:`Config`, a dict of sections, or a path to a TOML file.
    With ``out``, the run directory is written there (atomically) at the end, and after
    every evaluation a checkpoint (state, PRNG key, round, metrics so far) is written
    atomically beside it (:func:`checkpoint_path`); ``resume=True`` continues from it, so
    a killed run loses at most one chunk and ends with the same numbers.
    """
    sim = Simulation(config)
    every = sim.cfg["run"]["eval_every"]
    ckpt = checkpoint_path(out) if out is not None else None
    if resume and ckpt is not None and ckpt.exists():
        sim.restore(ckpt)
    else:
        sim.evaluate()
    bar = tqdm(
        total=sim.rounds,
        initial=sim.round,
        desc=sim.alg.name,
        disable=quiet,
        unit="round",
        leave=False,
    )
    while sim.round < sim.rounds:
        length = min(every, sim.rounds - sim.round)
        sim.advance(length)
        row = sim.evaluate()
        if sim.diverged_at is not None:
            bar.close()
            _diverged(sim, out)
        if ckpt is not None and sim.round < sim.rounds:
            sim.checkpoint(ckpt)
        bar.update(length)
        if f"test_{sim.metric}" in row:
            bar.set_postfix({sim.metric: f"{row[f'test_{sim.metric}']:.4f}"})
    bar.close()
    result = sim.result()
    if out is not None:
        result.save(out)
        if ckpt.exists():
            ckpt.unlink()
    return result


def checkpoint_path(out: str | Path) -> Path:
    """Where a run writing to ``out`` keeps its checkpoint: a hidden file beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.checkpoint.npz"
