"""``run(config) -> RunResult``: config → parts → engine rounds → results.

:func:`p2p_fmtl.assemble.assemble` builds a run's parts from its config (graph, packed
data, model, algorithm, network process, exchange, compiled engine);
:class:`Simulation` holds one prepared run (the parts and the carried state) and steps
it; :func:`run` drives it chunk by chunk with evaluations, checkpoints and a progress
bar.  Benchmarks and other drivers use :class:`Simulation` directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .assemble import Parts, assemble, build_graph, chunk_budget, usable_cpus  # noqa: F401
from .config import Config, load_config
from .engine import Carry
from .errors import ConfigError, DivergenceError, UserError
from .gossip import num_values
from .netsim import effective_gap
from .results import RunResult, flatten_params, refuse_unsafe, run_dir_state

TUNE_SALT = 0x74756E65  # fine-tuning keys: fold_in(PRNGKey(seed), TUNE_SALT), then the round


def _init_keys(key, n: int, mode: str):
    if mode == "identical":
        return jnp.broadcast_to(key, (n, *key.shape))
    return jax.random.split(key, n)


def multiprocess() -> bool:
    """Whether this process is one of several of one run (``jax.distributed.initialize``
    was called with ``num_processes`` > 1).  Asks JAX nothing before that, so a
    single-process run can still choose its CPU devices."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def lead_process() -> bool:
    """Whether this process writes files: always, except in processes 1.. of a
    multi-process run (process 0 writes the run directory and checkpoints)."""
    return not multiprocess() or jax.process_index() == 0


def to_host(tree):
    """numpy copies of ``tree``'s leaves.  Across processes, arrays split over other
    processes' devices are gathered from all of them: a collective, so every process
    must call it, in the same order."""
    if not multiprocess():
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def lead_agrees(ok: bool) -> bool:
    """Process 0's ``ok``, sent to every process of a multi-process run (a collective),
    so that a check only process 0 makes (its ``--out``) stops all of them, not only it."""
    if not multiprocess():
        return ok
    from jax.experimental.multihost_utils import broadcast_one_to_all

    return bool(broadcast_one_to_all(np.int32(ok)))


def _shared_checkpoint(plan: OutPlan | None) -> bytes | None:
    """The checkpoint to resume from, as bytes: process 0's (only it has the run
    directory), sent to every process of a multi-process run; None to start at round 0."""
    data = plan.checkpoint.read_bytes() if plan is not None and plan.resume else b""
    if multiprocess():
        from jax.experimental.multihost_utils import broadcast_one_to_all

        size = int(broadcast_one_to_all(np.int32(len(data))))
        buf = np.frombuffer(data, np.uint8) if data else np.zeros(size, np.uint8)
        data = np.asarray(broadcast_one_to_all(buf)).tobytes() if size else b""
    return data or None


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
    if k <= 1 or k > usable_cpus() or jax.config.jax_num_cpu_devices >= k:
        return
    if jax.distributed.is_initialized():  # each process has its own devices (flags, config)
        return
    try:
        jax.config.update("jax_num_cpu_devices", k)
    except RuntimeError:  # JAX already initialised its backends
        pass


class Simulation:
    """One prepared run: build once, then :meth:`advance` rounds and :meth:`evaluate`."""

    def __init__(self, config: Config | Mapping[str, Any] | str | Path, *, graph=None, mixing=None):
        """``graph`` (a networkx graph) and ``mixing`` (a matrix or a rule name) replace
        the config's topology (:func:`p2p_fmtl.assemble.assemble`)."""
        cfg = config if isinstance(config, Config) else load_config(config)
        self.cfg = cfg
        request_cpu_devices(cfg["run"]["devices"])
        self.t_start = time.perf_counter()
        parts = self.parts = assemble(cfg, graph=graph, mixing=mixing)
        cfg = self.cfg = parts.cfg  # with a given graph or W: topology name/n/mixing say so
        self._fingerprint: str | None = None
        self.engine, self.alg, self.spec = parts.engine, parts.alg, parts.spec
        self.needs, self.process, self.exchange = parts.needs, parts.process, parts.exchange
        self.task, self.holdout, self.metric = parts.task, parts.holdout, parts.metric
        self.network, self.packed = parts.network, parts.packed
        self.dataset_info = parts.dataset_info
        self.gossip_operator, self.borrow = parts.gossip_operator, parts.borrow
        self.inputs, self.layout = parts.inputs, parts.layout
        self.setup_bytes, self.lrs = parts.setup_bytes, parts.lrs
        n = self.n_nodes = parts.n
        self.rounds = cfg["run"]["rounds"]
        self.gossip_nnz = 0 if self.needs.exchange == "none" else len(self.network.mixing.weights)
        # the fixed Byzantine set ([attack]; all False when redrawn each round): metrics
        # and the consensus distance are over the honest training nodes
        byz = parts.byzantine
        self.byzantine = np.zeros(n, bool) if byz is None else np.asarray(byz, dtype=bool)
        self.honest = self.inputs.active & jnp.asarray(~self.byzantine)

        key = jax.random.PRNGKey(cfg["run"]["seed"])
        k_init, key = jax.random.split(key)
        self.compile_before = self.engine.compile_seconds
        keys = _init_keys(k_init, n, cfg["algorithm"].get("init", "independent"))
        self.devices = cfg["run"]["devices"]
        if self.devices > 1:
            keys, key = self._shard_arrays(keys, key)
        state = self.engine.init(keys, self.layout)
        if self.devices > 1:  # split by node from the start (as each chunk returns it), so
            state = self._put(state)  # the chunk program compiles once, not twice

        # the byte ledger: messages each node sent (counted on device where they cross an
        # edge, by the exchange) × the encoded size of one message
        message = self.engine.message(state)
        self.shared_values = num_values(self.alg.shared(state))
        self.msg_bytes = self.exchange.message_bytes(message)
        msg_bytes = jnp.float32(self.msg_bytes)
        if self.devices > 1:
            msg_bytes = self._put(msg_bytes, by_node=False)
        self.inputs = self.parts.inputs = self.inputs._replace(message_bytes=msg_bytes)
        away = jnp.zeros((n,), jnp.int32)
        self.key0 = key  # the run's key after initialisation (network_trace replays from it)
        self.carry = Carry(state, key, away, self.exchange.init(message, n))
        if self.devices > 1:
            self.carry = self.carry._replace(
                away_until=self._put(away), exchange=self._put(self.carry.exchange)
            )
        self.round = 0
        self.train_seconds = 0.0
        self.diverged_at: int | None = None  # first round that left a non-finite value
        self.msgs_sent = np.zeros(n, dtype=np.int64)
        self.sim_time = 0.0
        # the energy ledger: samples processed by local work (added up from the carry's
        # per-chunk work, counted only with [cost]) and the FLOPs of training on one
        self.work_samples = 0.0
        self.flops_per_sample = 0.0
        if cfg["cost"]["enabled"]:
            from .training import model_train_flops

            work = jnp.zeros((n,), jnp.float32)
            self.carry = self.carry._replace(work=self._put(work) if self.devices > 1 else work)
            if self.spec.trains and self.packed is not None:
                self.flops_per_sample = model_train_flops(cfg["model"], self.packed, self.task)
        self.history: list[dict[str, Any]] = []
        self.last_eval: dict[str, np.ndarray] = {}
        self.finetune_epochs = cfg["algorithm"].get("finetune_epochs", 0)

    # the carried state, by name
    @property
    def state(self):
        return self.carry.state

    @state.setter
    def state(self, value) -> None:
        self.carry = self.carry._replace(state=value)

    @property
    def key(self):
        return self.carry.key

    @property
    def active(self):
        return self.inputs.active

    def network_trace(self, rounds: int | None = None) -> dict[str, np.ndarray]:
        """The network this run meets in rounds ``0 .. rounds − 1`` (default: all), with the
        run's own keys: per round the W gossip uses (dense), alive nodes, live candidate
        edges, work budgets and whether it is a gossip round
        (:meth:`~p2p_fmtl.engine.Engine.network_trace`)."""
        rounds = self.rounds if rounds is None else rounds
        return self.engine.network_trace(self.key0, self.inputs, rounds)

    def effective_spectral_gap(self, samples: int = 200) -> float | None:
        """The schedule's effective gap (:func:`p2p_fmtl.netsim.effective_gap`)."""
        ticks = getattr(self.exchange, "ticks", 0) if self.exchange.name == "pairwise" else 0
        if self.process.trivial and not ticks:
            return self.network.spectral_gap
        return effective_gap(
            self.process,
            self.inputs.static,
            self.inputs.net,
            self.active,
            pairwise_ticks=ticks,
            samples=samples,
        )

    # ------------------------------------------------------------------ devices
    def _shard_arrays(self, init_keys, key):
        """Shard the node axis over a 1-D mesh of ``run.devices`` devices.

        Node-indexed arrays (keys, data buckets, dense mixing rows, neighbour tables,
        masks, per-node rates) are split along their leading axis; everything else is
        replicated.  XLA's SPMD partitioner turns gossip across shards into collectives.
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
        if multiprocess() and k != len(avail):  # every process holds a shard
            raise ConfigError(
                f"run.devices: got {k}, but the {jax.process_count()} processes have "
                f"{len(avail)} devices together; across processes run.devices must be "
                "their total"
            )
        if n % k:
            raise ConfigError(f"run.devices: got {k}, but topology.n = {n} is not a multiple")
        mesh = Mesh(np.array(avail[:k]), ("nodes",))
        self._split = NamedSharding(mesh, P("nodes"))
        self._replicated = NamedSharding(mesh, P())
        put = self._put

        ids = tuple(put(i, by_node=False) for i in self.layout.ids)
        self.layout = dataclasses.replace(
            self.layout,
            ids=ids,
            data=put(self.layout.data, rows=None),
            inverse=put(self.layout.inverse, by_node=False),
        )
        if self.packed is not None:  # the shards replace the packed host arrays (one copy)
            fields = ("x_train", "y_train", "x_test", "y_test")
            self.packed = self.packed._replace(
                buckets=tuple(
                    b._replace(**{f: getattr(d, f) for f in fields})
                    for b, d in zip(self.packed.buckets, self.layout.data, strict=True)
                )
            )
        inp = self.inputs
        self.inputs = inp._replace(
            active=put(inp.active),
            static=put(inp.static),
            net=inp.net._replace(
                **{f: put(getattr(inp.net, f)) for f in ("index", "edge", "samples")},
                **{
                    f: put(getattr(inp.net, f), by_node=False)
                    for f in ("u", "v", "valid", "weights", "rates", "cost")
                },
            ),
            relation=put(inp.relation),
            gamma=put(inp.gamma, by_node=False),
        )
        if self.borrow is not None:
            self.borrow = put(self.borrow)
        self.honest = put(self.honest)
        # the parts keep the placed arrays only (one copy of the data)
        parts = self.parts
        parts.layout, parts.packed, parts.inputs = self.layout, self.packed, self.inputs
        parts.borrow = self.borrow
        return put(init_keys), put(key, by_node=False)

    def _put(self, tree, by_node: bool = True, rows: int | None = -1):
        """Place ``tree`` on the mesh: leaves with a leading node axis (``rows`` entries;
        any multiple of the device count when ``rows`` is None) split, others replicated."""
        k = self.devices
        rows = self.n_nodes if rows == -1 else rows

        def one(x):
            lead = np.shape(x)[0] if np.ndim(x) > 0 else None
            ok = by_node and lead is not None and (lead == rows if rows else lead % k == 0)
            return jax.device_put(x, self._split if ok else self._replicated)

        return jax.tree.map(one, tree)

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
        self.carry, finite, msgs, secs = self.engine.run_chunk(
            self.carry, self.inputs, self.layout, self.round, self._lrs(self.round, rounds)
        )
        jax.block_until_ready(self.carry)
        seconds = time.perf_counter() - t0 - (self.engine.compile_seconds - c0)
        finite, msgs, secs = to_host((finite, msgs, secs))
        self._account(rounds, finite, msgs, float(secs), seconds)
        return seconds

    def _account(self, rounds: int, finite, msgs, sim_seconds: float, seconds: float) -> None:
        """Book ``rounds`` finished rounds: divergence, the ledger, simulated and wall time."""
        if not finite.all() and self.diverged_at is None:
            self.diverged_at = self.round + int(np.argmin(finite)) + 1
        self.msgs_sent += msgs.astype(np.int64)
        self.sim_time += sim_seconds
        if self.carry.work is not None:  # samples each node processed in these rounds
            self.work_samples += float(to_host(self.carry.work).astype(np.float64).sum())
        self.round += rounds
        self.train_seconds += seconds

    def evaluate(self) -> dict[str, Any]:
        """Evaluate now; append and return one metrics row."""
        args = self.state, self.layout, self.honest, self.borrow, self.tuning()
        if multiprocess():  # the engine's numpy copies need every process's shard
            ev = to_host(self.engine.evaluate_on_devices(*args))
        else:
            ev = self.engine.evaluate(*args)
        return self.record(ev)

    def tuning(self):
        """``(key, lr)`` of fine-tuning before an evaluation now (``None`` without
        ``algorithm.finetune_epochs``): a key of the round from the run's seed, and
        ``algorithm.finetune_lr``, or (0, the default) the learning rate of the last trained
        round (the row's ``lr``)."""
        if not self.finetune_epochs:
            return None
        # a stream of its own: training's keys come from split(PRNGKey(seed)), never this
        key = jax.random.PRNGKey(self.cfg["run"]["seed"])
        key = jax.random.fold_in(jax.random.fold_in(key, TUNE_SALT), self.round)
        lr = self.cfg["algorithm"].get("finetune_lr", 0.0)
        lr = lr if lr > 0 else self._lrs(max(self.round - 1, 0), 1)[0]
        tune = key, jnp.float32(lr)
        return self._put(tune, by_node=False) if self.devices > 1 else tune

    def record(self, ev: dict[str, np.ndarray]) -> dict[str, Any]:
        """Append the metrics row of an evaluation ``ev`` (per-node arrays) and return it."""
        self.last_eval = ev
        t, metric, packed = self.round, self.metric, self.packed
        row: dict[str, Any] = {"round": t}
        if "test_score" in ev:
            seen = ~self.holdout & ~self.byzantine  # the honest nodes that train
            if self.task.heads:  # one column per head, over the nodes doing that task
                row.update(self._per_head(ev["test_score"], seen, "test"))
                if "unseen_score" in ev:
                    row.update(self._per_head(ev["unseen_score"], self.holdout, "unseen"))
            else:
                score, n_test = ev["test_score"][seen], packed.n_test[seen]
                row[f"test_{metric}"] = _weighted(score, n_test)
                if metric == "acc":
                    row["test_acc_p10"] = float(np.percentile(score, 10))
                else:  # mse, loss: lower is better, the worst decile
                    row[f"test_{metric}_p90"] = float(np.percentile(score, 90))
                if "unseen_score" in ev:
                    us, un = ev["unseen_score"][self.holdout], packed.n_test[self.holdout]
                    row[f"test_{metric}_unseen"] = _weighted(us, un)
            tl, nt = ev["train_loss"][seen], packed.n_train[seen]
            row["train_loss"] = _weighted(tl, nt)
        row["consensus_distance"] = float(ev["consensus_distance"])
        row["bytes_total"] = int(self.setup_bytes.sum() + self.msgs_sent.sum() * self.msg_bytes)
        if self.cfg["cost"]["enabled"]:
            row["sim_time_s"] = round(self.sim_time, 6)
            c = self.cfg["cost"]
            joules = c["joules_per_flop"] * self.flops_per_sample * self.work_samples
            joules += c["joules_per_byte"] * row["bytes_total"]
            row["energy_j"] = float(f"{joules:.9g}")
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
        """``acc`` or ``mse``: what head h's score is."""
        return "mse" if self.task.heads[h]["kind"] == "regression" else "acc"

    def _per_head(self, score: np.ndarray, nodes: np.ndarray, what: str) -> dict[str, float]:
        """Multitask runs: ``test_<head>_acc`` / ``test_<head>_mse`` (``what = "unseen"``:
        ``..._unseen``), each weighted by test-set size over the nodes of that head, and
        the per-head spread (``_p10`` of accuracies, ``_p90`` of errors).  Accuracy and
        squared error are never averaged together; :func:`p2p_fmtl.metrics.delta_m`
        compares the heads against a baseline run."""
        tasks, out = self.node_tasks(), {}
        for h, head in enumerate(self.task.heads):
            m = nodes & (tasks == h)
            if not m.any():
                continue
            metric = self.head_metric(h)
            key = f"test_{head['name']}_{metric}"
            if what == "unseen":
                out[f"{key}_unseen"] = _weighted(score[m], self.packed.n_test[m])
                continue
            out[key] = _weighted(score[m], self.packed.n_test[m])
            q, tail = (10, "p10") if metric == "acc" else (90, "p90")
            out[f"{key}_{tail}"] = float(np.percentile(score[m], q))
        return out

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, path: Path | None) -> None:
        """Write the carried state (model state, PRNG key, churn timers, the exchange's
        state), round, ledger and history to ``path`` atomically (temp + rename).  Across
        processes every process calls it (the state is gathered) and process 0 writes;
        ``path`` None gathers without writing."""
        leaves = to_host(jax.tree.leaves(self.carry))
        fingerprint = self.fingerprint()
        if path is None or not lead_process():
            return
        arrays = {f"leaf{i}": x for i, x in enumerate(leaves)}
        arrays["msgs_sent"] = self.msgs_sent
        meta = {
            "round": self.round,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "diverged_at": self.diverged_at,
            "sim_time": self.sim_time,
            "work_samples": self.work_samples,
            "config": self.cfg.to_toml(),
            "fingerprint": fingerprint,
            "leaves": len(leaves),
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:  # an exception or Ctrl-C while writing leaves no temporary file
            tmp.unlink(missing_ok=True)

    def restore(self, path: Path, data: bytes | None = None) -> None:
        """Continue from a checkpoint of the same config; refuse corrupt or foreign ones.
        ``data``: the checkpoint file's bytes (sent by process 0), read instead of ``path``."""
        try:
            with np.load(path if data is None else io.BytesIO(data)) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                stored = [z[f"leaf{i}"] for i in range(meta["leaves"])]
                msgs_sent = z["msgs_sent"]
        except Exception as e:  # zip, pickle-free npz, json or key errors alike
            raise UserError(
                f"{path}: unreadable checkpoint ({type(e).__name__}); --overwrite (instead "
                "of --resume) starts over"
            ) from None
        if meta["config"] != self.cfg.to_toml():
            raise UserError(
                f"{path}: the checkpoint was written for a different config; --overwrite "
                "(instead of --resume) starts over"
            )
        if meta.get("fingerprint") != self.fingerprint():
            raise UserError(
                f"{path}: the checkpoint was written for other data or another graph (the "
                "node data or mixing weights changed since); --overwrite (instead of "
                "--resume) starts over"
            )
        leaves, treedef = jax.tree.flatten(self.carry)
        if len(stored) != len(leaves) or any(
            a.shape != np.shape(b) for a, b in zip(stored, leaves, strict=True)
        ):
            raise UserError(f"{path}: the checkpoint's arrays do not match this run's state")
        placed = [
            jax.device_put(a.astype(b.dtype), getattr(b, "sharding", None))
            for a, b in zip(stored, leaves, strict=True)
        ]
        self.carry = jax.tree.unflatten(treedef, placed)
        self.msgs_sent = msgs_sent.astype(np.int64)
        self.sim_time = meta["sim_time"]
        self.work_samples = meta.get("work_samples", 0.0)
        self.round, self.history = meta["round"], meta["history"]
        self.train_seconds, self.diverged_at = meta["train_seconds"], meta["diverged_at"]

    def fingerprint(self) -> str:
        """A hash of what the run learns from and gossips over: the packed node data
        (training and test arrays, sizes) and the mixing weights.  A checkpoint records
        it, so a resumed run refuses data files or a graph that changed since."""
        if self._fingerprint is None:
            net = self.network
            arrays = [net.mixing.senders, net.mixing.receivers, net.mixing.weights, self.holdout]
            fields = ("nodes", "x_train", "y_train", "n_train", "x_test", "y_test", "n_test")
            for b in () if self.packed is None else self.packed.buckets:
                arrays += to_host([getattr(b, f) for f in fields])
            h = hashlib.blake2b(digest_size=16)
            for a in arrays:
                a = np.ascontiguousarray(np.asarray(a))
                h.update(f"{a.dtype.str}{a.shape};".encode())
                h.update(a.reshape(-1).view(np.uint8))
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _effective_gap(self):
        if not hasattr(self, "_eff_gap"):
            try:
                self._eff_gap = self.effective_spectral_gap()
            except Exception:  # pragma: no cover - a report, never a failure
                self._eff_gap = None
        return self._eff_gap

    # ------------------------------------------------------------------ divergence
    def divergence(self) -> tuple[str, str] | None:
        """Why the run has diverged, judged at its latest evaluation: ``(what it
        produced, the summary's error)``, or None.

        A run diverges when a loss or parameter becomes non-finite (checked every round
        on the device), when the consensus distance overflows, when the mean train loss
        exceeds ``run.max_loss_growth`` times its round-0 value, or when the consensus
        distance exceeds ``run.max_consensus_growth`` times its first positive value
        after round 0 (0 turns a bound off).  Logistic and softmax losses never become
        NaN however far the parameters run off, so without the bounds such a run would
        end "complete" with a loss of 1e29.
        """
        row, first, r = self.history[-1], self.history[0], self.round
        if self.diverged_at is not None:
            ev = self.last_eval
            broken = ~np.asarray(ev["finite"], bool)
            if "train_loss" in ev:
                broken |= ~np.isfinite(ev["train_loss"])
            bad = np.flatnonzero(broken).tolist()
            nodes = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
            what = f"non-finite losses or parameters in round {self.diverged_at}"
            return f"{what} (nodes {nodes or 'unknown'})", (
                f"non-finite values from round {self.diverged_at}"
            )
        run_cfg = self.cfg["run"]
        loss, loss0 = row.get("train_loss"), first.get("train_loss")
        if loss is not None and not math.isfinite(loss):
            return f"a non-finite mean train loss in round {r}", f"non-finite train loss, round {r}"
        growth = run_cfg["max_loss_growth"]
        if growth and loss0 is not None and math.isfinite(loss0) and loss0 > 0:
            if loss > growth * loss0:
                return (
                    f"a mean train loss of {loss:.4g} in round {r}, more than "
                    f"run.max_loss_growth = {growth:g} times its round-0 value {loss0:.4g}",
                    f"train loss above run.max_loss_growth x its round-0 value, round {r}",
                )
        cd = row["consensus_distance"]
        if not math.isfinite(cd):
            return (
                f"an infinite consensus distance in round {r} (parameters too large to square)",
                f"infinite consensus distance, round {r}",
            )
        growth = run_cfg["max_consensus_growth"]
        ref = next(
            (h for h in self.history if h["round"] > 0 and h["consensus_distance"] > 0), None
        )
        if growth and ref is not None and cd > growth * ref["consensus_distance"]:
            return (
                f"a consensus distance of {cd:.4g} in round {r}, more than "
                f"run.max_consensus_growth = {growth:g} times its value "
                f"{ref['consensus_distance']:.4g} in round {ref['round']}",
                f"consensus distance above run.max_consensus_growth x its first value, round {r}",
            )
        return None

    # ------------------------------------------------------------------ results
    def epsilons(self) -> np.ndarray | None:
        """Each node's epsilon after the rounds run so far (``privacy.delta``; dp-accounting),
        or ``None`` without ``privacy.enabled``."""
        from .privacy import node_epsilons

        return node_epsilons(self.cfg, self.n_train, self.round, self.holdout)

    def result(self) -> RunResult:
        ev, n, metric = self.last_eval, self.n_nodes, self.metric
        eps = self.epsilons()
        attack = self.cfg["attack"]
        attacked = attack["kind"] != "none"
        # attack.redraw: the gossip rounds each node was Byzantine (the exchange counts them)
        redrawn = (
            np.asarray(to_host(self.carry.exchange)) if attacked and attack["redraw"] else None
        )
        nodes = []
        for i in range(n):
            row: dict[str, Any] = {"node": i}
            if self.packed is not None:
                row.update(n_train=int(self.packed.n_train[i]), n_test=int(self.packed.n_test[i]))
                score = float(ev["unseen_score" if self.holdout[i] else "test_score"][i])
                tasks = self.node_tasks()
                if tasks is None:
                    row[f"test_{metric}"] = score
                else:  # its own head's score, in the column of that score
                    row["task"] = self.task.heads[tasks[i]]["name"]
                    head_metric = self.head_metric(tasks[i])
                    row.update(test_acc=None, test_mse=None)
                    row[f"test_{head_metric}"] = score
                row["train_loss"] = float(ev["train_loss"][i])
                row["holdout"] = int(self.holdout[i])
            sent = self.setup_bytes[i] + self.msgs_sent[i] * self.msg_bytes
            row.update(
                degree=int(self.network.degree[i]),
                messages_sent=int(self.msgs_sent[i]),
                bytes_sent=int(sent),
            )
            if eps is not None:
                row["epsilon"] = float(eps[i])
            if attacked:
                row["byzantine"] = int(self.byzantine[i])
                if redrawn is not None:
                    row["byzantine_rounds"] = int(redrawn[i])
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
            "exchange": self.exchange.name,
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
        if attacked:  # metrics above are over the honest nodes
            summary["byzantine_nodes"] = np.flatnonzero(self.byzantine).tolist()
        if eps is not None:  # privacy.enabled: each node's epsilon at privacy.delta
            summary["epsilon_max"] = float(eps.max(initial=0.0))
            summary["delta"] = cfg["privacy"]["delta"]
        if self.finetune_epochs:  # scores and train losses are of fine-tuned copies
            summary["finetune_epochs"] = self.finetune_epochs
        labels = getattr(self.parts, "node_labels", None)
        if labels is not None:  # a user's graph: its node labels, in node-index order
            summary["node_labels"] = [str(label) for label in labels]
        if self.node_tasks() is not None:  # multitask: what each head's score is
            summary["heads"] = {
                head["name"]: self.head_metric(h) for h, head in enumerate(self.task.heads)
            }
        alg = self.alg
        params = flatten_params(to_host((alg.params or alg.shared)(self.state)))
        if alg.extras is not None:
            params.update({k: to_host(v) for k, v in alg.extras(self.state).items()})
        result = RunResult(cfg, self.history, nodes, summary, params, state=self.state)
        result.dataset_info = self.dataset_info  # type: ignore[attr-defined]
        return result


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sum(values * weights) / max(weights.sum(), 1))


def _diverged(sim: Simulation, plan: OutPlan | None, why: tuple[str, str]) -> None:
    """Write what the run has (status "incomplete") and stop with a one-line error."""
    what, error = why
    result = sim.result()
    result.summary.update(status="incomplete", error=error)
    if plan is not None and lead_process():
        result.save(plan.path, overwrite=plan.overwrite)
    hint = "try a smaller algorithm.lr" if sim.spec.trains else "check the mixing weights"
    raise DivergenceError(
        f"run diverged: algorithm {sim.alg.name!r} produced {what}; {hint}"
        + (f"; partial results in {plan.path}" if plan is not None else "")
    )


@dataclasses.dataclass
class OutPlan:
    """Where a run writes, checked before any work by :func:`check_out`."""

    path: Path  # the run directory
    checkpoint: Path  # its checkpoint (:func:`checkpoint_path`)
    resume: bool  # continue from the checkpoint
    overwrite: bool  # a complete run directory there may be replaced
    made: list[Path]  # missing parent folders, deepest first (made when first written)

    def discard(self) -> None:
        """Remove what a run that cannot be resumed leaves: its checkpoint, and the parent
        folders it made if they are empty again."""
        self.checkpoint.unlink(missing_ok=True)
        for folder in self.made:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): what is above it stays too
                break


def check_out(out: str | Path, *, resume: bool = False, overwrite: bool = False) -> OutPlan:
    """Check, before any work, that a run may write its directory at ``out``; raise a
    one-line :class:`~p2p_fmtl.errors.UserError` if not.

    Allowed: a missing path (its parent folders are made when the run first writes), an
    empty directory, or a run directory of this tool
    (:func:`~p2p_fmtl.results.run_dir_state`): an incomplete one is replaced, a complete
    one only with ``overwrite``.  Refused: an empty path, the current directory, a file,
    a link, a folder with anything else in it, a parent that is a file or is not
    writable.  A checkpoint beside ``out`` (an unfinished run) is continued with
    ``resume`` or started over with ``overwrite``, and refused without either;
    ``resume`` without a checkpoint starts at round 0, and on a complete run is refused
    (there is nothing to resume).
    """
    if not str(out).strip():
        raise UserError(f"--out: got {str(out)!r}, expected a directory path such as runs/NAME")
    if resume and overwrite:
        raise UserError(
            "--resume and --overwrite: give one of them (--resume continues an unfinished "
            "run, --overwrite starts over)"
        )
    path = Path(os.path.normpath(out))
    full = Path(os.path.abspath(path))
    if path == Path(".") or (full.exists() and os.path.samefile(full, ".")):
        raise UserError(
            f"--out {out}: is the current directory; name a run directory such as runs/NAME"
        )
    made, above = [], full.parent
    while not os.path.lexists(above):
        made.append(above)
        above = above.parent
    if not above.is_dir():
        raise UserError(f"--out {out}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write in {above} (permission denied)")
    state, detail = run_dir_state(full)
    refuse_unsafe(Path(str(out)), state, detail, overwrite=True)  # anything not ours
    ckpt = checkpoint_path(path)
    has_ckpt = os.path.lexists(ckpt)
    if has_ckpt and (ckpt.is_symlink() or not ckpt.is_file()):
        raise UserError(f"--out {out}: {ckpt} is in the way and is not a checkpoint file")
    if state == "complete" and not overwrite:
        if resume:
            raise UserError(
                f"--out {out}: the run there is complete, there is nothing to resume "
                "(--overwrite runs it again)"
            )
        refuse_unsafe(Path(str(out)), state, detail, overwrite=False)
    if has_ckpt and not (resume or overwrite):
        raise UserError(
            f"--out {out}: an unfinished run's checkpoint is there ({ckpt.name}); --resume "
            "continues it, --overwrite starts over"
        )
    return OutPlan(path, ckpt, resume and has_ckpt, overwrite, made)


def run(
    config: Config | Mapping[str, Any] | str | Path,
    *,
    quiet: bool = True,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    graph=None,
    mixing=None,
) -> RunResult:
    """Run one simulation and return its :class:`~p2p_fmtl.results.RunResult`.

    ``config`` is a :class:`Config`, a dict of sections, or a path to a TOML file;
    ``graph`` (a networkx graph) and ``mixing`` (a mixing matrix or rule name) replace
    its topology (:func:`p2p_fmtl.assemble.assemble`).

    With ``out``, the run directory is written there (atomically) at the end, and after
    every evaluation a checkpoint (state, PRNG key, round, metrics so far, a fingerprint
    of the data) is written atomically beside it (:func:`checkpoint_path`);
    ``resume=True`` continues from it, so a killed run loses at most one chunk and ends
    with the same numbers.  ``out`` is checked before any work (:func:`check_out`): a
    complete run there is replaced only with ``overwrite=True``, and nothing this tool
    did not write is ever replaced.  The checkpoint is kept when the run stops by Ctrl-C
    or an unexpected error (it can be resumed) and removed when it diverges or meets a
    user error; temporary files never stay.

    A run that diverges (:meth:`Simulation.divergence`) writes its partial results
    (status "incomplete") and raises :class:`~p2p_fmtl.errors.DivergenceError`.

    Across processes (``jax.distributed.initialize`` called first, the same call in
    every process) each process runs this with the same arguments; process 0 alone
    checks and writes ``out`` and its checkpoints, and sends its checkpoint to the
    others on ``resume``.
    """
    lead, plan, refused = lead_process(), None, None
    try:
        if out is not None and lead:
            plan = check_out(out, resume=resume, overwrite=overwrite)
    except UserError as e:
        refused = e
    if not lead_agrees(refused is None):  # across processes, all stop when process 0 does
        raise refused or UserError("--out: refused by process 0 (see its error); stopping")
    sim = Simulation(config, graph=graph, mixing=mixing)
    every = sim.cfg["run"]["eval_every"]
    if multiprocess():
        data = _shared_checkpoint(plan)
        if data is not None:
            where = plan.checkpoint if plan is not None else Path("process 0's checkpoint")
            sim.restore(where, data)
        else:
            sim.evaluate()
    elif plan is not None and plan.resume:
        sim.restore(plan.checkpoint)
    else:
        sim.evaluate()
    bar = tqdm(
        total=sim.rounds,
        initial=sim.round,
        desc=sim.alg.name,
        disable=quiet or not lead,
        unit="round",
        leave=False,
    )
    try:
        while sim.round < sim.rounds:
            length = min(every, sim.rounds - sim.round)
            sim.advance(length)
            row = sim.evaluate()
            why = sim.divergence()
            if why is not None:
                bar.close()
                _diverged(sim, plan, why)
            if out is not None and sim.round < sim.rounds:
                sim.checkpoint(plan.checkpoint if lead else None)
            bar.update(length)
            shown = {k[5:]: f"{v:.4f}" for k, v in row.items() if _headline(k)}
            if shown:
                bar.set_postfix(shown)
        bar.close()
        result = sim.result()
        if plan is not None:
            result.save(plan.path, overwrite=plan.overwrite)
            plan.checkpoint.unlink(missing_ok=True)
    except UserError:  # diverged, or the place changed under the run: not resumable
        if plan is not None:
            plan.discard()
        raise
    finally:
        bar.close()
    return result


def _headline(key: str) -> bool:
    """Metrics shown beside the progress bar: the test score(s), not their spread."""
    return key.startswith("test_") and not key.endswith(("_p10", "_p90", "_unseen"))


def checkpoint_path(out: str | Path) -> Path:
    """Where a run writing to ``out`` keeps its checkpoint: a hidden file beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.checkpoint.npz"
