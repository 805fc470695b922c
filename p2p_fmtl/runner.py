"""``run(config) -> RunResult``: config → topology + data + model + algorithm → engine → results."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

import topologies

from .algorithms import ALGORITHMS, Context, NodeData
from .config import Config, load_config
from .data import PackedData, load_dataset, pack
from .engine import Engine
from .errors import ConfigError, UserError
from .gossip import Neighbours, make_mixing, num_values
from .models import build_model
from .network import (
    borrow_matrix,
    holdout_mask,
    neighbour_table,
    relation_weights,
    training_degrees,
    training_edges,
    training_mixing,
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


def _engine_for(cfg: Config, shapes: list, build) -> Engine:
    """The cached engine for this computation (so equal computations share compiled code)."""
    alg = {k: v for k, v in cfg["algorithm"].items() if k not in _DATA_FREE_KEYS}
    key = json.dumps([alg, cfg["model"], shapes], sort_keys=True)
    if key not in _ENGINES:
        _ENGINES[key] = Engine(build())
    return _ENGINES[key]


def _spectral_gap(W: np.ndarray, holdout: np.ndarray) -> float | None:
    """Spectral gap of the training nodes' mixing matrix (None when too large for eig)."""
    train = np.flatnonzero(~holdout)
    if len(train) > 4000:
        return None
    return float(topologies.spectral_gap(W[np.ix_(train, train)]))


def _node_data(packed: PackedData | None):
    if packed is None:
        return None
    return NodeData(*(jax.numpy.asarray(a) for a in packed))


def _init_keys(key, n: int, mode: str):
    if mode == "identical":
        return jax.numpy.broadcast_to(key, (n, *key.shape))
    return jax.random.split(key, n)


def run(
    config: Config | Mapping[str, Any] | str | Path,
    *,
    quiet: bool = True,
    out: str | Path | None = None,
) -> RunResult:
    """Run one simulation and return its :class:`~p2p_fmtl.results.RunResult`.

    ``config`` is a :class:`Config`, a dict of sections, or a path to a TOML file.
    With ``out``, the run directory is also written there (atomically).
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    t_start = time.perf_counter()
    run_cfg, topo_cfg, alg_cfg = cfg["run"], cfg["topology"], cfg["algorithm"]
    spec = ALGORITHMS[alg_cfg["name"]]
    G = build_graph(cfg)
    n = G.number_of_nodes()

    # data, task, model, optimizer
    packed, task, model, optimizer, work = None, None, None, None, None
    dataset_info: dict[str, Any] = {}
    holdout = np.zeros(n, dtype=bool)
    if spec.uses_data:
        ds = load_dataset(cfg["data"], n)
        if ds.num_nodes != n:
            raise ConfigError(
                f"topology.n: got {n}, but data {cfg['data']['name']!r} has {ds.num_nodes} "
                f"nodes; allowed: {ds.num_nodes}"
            )
        dataset_info = ds.info
        packed = pack(ds)
        task = make_task(ds.task, ds.num_classes, cfg["model"]["loss"])
        model = build_model(cfg["model"], ds.feature_shape, task.out_dim)
        holdout = holdout_mask(cfg["data"]["holdout_nodes"], n, run_cfg["seed"])
    if spec.trains:
        optimizer = make_optimizer(alg_cfg)
        work = LocalWork.from_config(alg_cfg)
    n_train = None if packed is None else packed.n_train
    W = training_mixing(G, topo_cfg["mixing"], holdout, n_train)
    borrow = None
    if holdout.any():
        _, borrow = make_mixing(borrow_matrix(G, holdout), topo_cfg["operator"])
    active = jax.numpy.asarray(~holdout)
    relation = alg_cfg.get("relation")

    shapes = [
        None if task is None else [task.kind, task.loss_name, task.num_classes],
        None if packed is None else list(packed.x_train.shape[2:]),
    ]
    engine = _engine_for(
        cfg, shapes, lambda: spec.build(Context(model, task, optimizer, work, alg_cfg))
    )
    alg = engine.alg
    compile_before = engine.compile_seconds

    kind, mixing = make_mixing(W, topo_cfg["operator"])
    nbrs, setup_bytes = None, np.zeros(n, dtype=np.int64)
    if alg.inbox != "none" or alg.combine is not None:
        src, dst = training_edges(G, holdout)
        a = relation_weights(relation or "uniform", src, dst, W, packed)
        index, weights = neighbour_table(n, src, dst, a)
        nbrs = Neighbours(
            jax.numpy.asarray(index, jax.numpy.int32), jax.numpy.asarray(weights, jax.numpy.float32)
        )
        if relation == "similarity":  # one exchange of each node's data statistics
            stats_values = int(np.prod(packed.x_train.shape[2:])) * max(task.num_classes, 1)
            setup_bytes = training_degrees(G, holdout) * stats_values * BYTES_PER_VALUE
    data = _node_data(packed)
    rounds, every = run_cfg["rounds"], run_cfg["eval_every"]
    lrs = np.zeros(rounds, np.float32)
    if spec.trains:
        sched = lr_schedule(alg_cfg, rounds)
        lrs = np.asarray([sched(t) for t in range(rounds)], np.float32)

    key = jax.random.PRNGKey(run_cfg["seed"])
    k_init, key = jax.random.split(key)
    state = engine.init(_init_keys(k_init, n, alg_cfg.get("init", "independent")), data)

    # the byte ledger: each round every node sends its shared state to each neighbour
    degree = training_degrees(G, holdout)
    msg_bytes = num_values(alg.shared(state)) * BYTES_PER_VALUE if alg.communicates else 0
    bytes_per_round = degree * msg_bytes

    metric = "acc" if task is None else task.metric
    history: list[dict[str, Any]] = []
    t_train = 0.0
    last_eval: dict[str, np.ndarray] = {}

    def evaluate(t: int) -> None:
        nonlocal last_eval
        ev = engine.evaluate(state, data, active, borrow)
        last_eval = ev
        row: dict[str, Any] = {"round": t}
        if "test_score" in ev:
            seen = ~holdout
            score, n_test = ev["test_score"][seen], packed.n_test[seen]
            row[f"test_{metric}"] = float(np.sum(score * n_test) / max(n_test.sum(), 1))
            if metric == "acc":
                row["test_acc_p10"] = float(np.percentile(score, 10))
            else:
                row["test_mse_p90"] = float(np.percentile(score, 90))
            if "unseen_score" in ev:
                us, un = ev["unseen_score"][holdout], packed.n_test[holdout]
                row[f"test_{metric}_unseen"] = float(np.sum(us * un) / max(un.sum(), 1))
            tl, nt = ev["train_loss"][seen], packed.n_train[seen]
            row["train_loss"] = float(np.sum(tl * nt) / max(nt.sum(), 1))
        row["consensus_distance"] = float(ev["consensus_distance"])
        row["bytes_total"] = int(setup_bytes.sum() + bytes_per_round.sum() * t)
        if spec.trains:
            row["lr"] = float(lrs[t - 1]) if t > 0 else float(lrs[0]) if rounds else alg_cfg["lr"]
        row["wall_s"] = round(time.perf_counter() - t_start, 4)
        history.append(row)

    evaluate(0)
    bar = tqdm(total=rounds, desc=alg_cfg["name"], disable=quiet, unit="round", leave=False)
    t = 0
    while t < rounds:
        length = min(every, rounds - t)
        c0 = engine.compile_seconds
        t0 = time.perf_counter()
        state, key, _ = engine.run_rounds(
            state, key, lrs[t : t + length], mixing, data, active, nbrs
        )
        jax.block_until_ready(state)
        t_train += time.perf_counter() - t0 - (engine.compile_seconds - c0)
        t += length
        evaluate(t)
        bar.update(length)
        last = history[-1]
        if f"test_{metric}" in last:
            bar.set_postfix({metric: f"{last[f'test_{metric}']:.4f}"})
    bar.close()

    # per-node table
    nodes = []
    for i in range(n):
        row = {"node": i}
        if packed is not None:
            row.update(n_train=int(packed.n_train[i]), n_test=int(packed.n_test[i]))
            score = last_eval["unseen_score" if holdout[i] else "test_score"][i]
            row[f"test_{metric}"] = float(score)
            row["train_loss"] = float(last_eval["train_loss"][i])
            row["holdout"] = int(holdout[i])
        sent = setup_bytes[i] + bytes_per_round[i] * rounds
        row.update(degree=int(degree[i]), bytes_sent=int(sent))
        nodes.append(row)

    final = history[-1]
    summary: dict[str, Any] = {
        "status": "complete",
        "algorithm": alg_cfg["name"],
        "topology": topo_cfg["name"],
        "n_nodes": n,
        "rounds": rounds,
        "seed": run_cfg["seed"],
        **{k: v for k, v in final.items() if k not in ("round", "lr", "wall_s")},
        "spectral_gap": _spectral_gap(W, holdout),
        "holdout_nodes": np.flatnonzero(holdout).tolist(),
        "gossip_operator": kind,
        "padding_fraction": None if packed is None else packed.padding_fraction,
        "wall_s": round(time.perf_counter() - t_start, 4),
        "train_s": round(t_train, 4),
        "seconds_per_round": t_train / rounds if rounds else None,
        "compile_s": round(engine.compile_seconds - compile_before, 4),
        "jax_backend": jax.default_backend(),
        "jax_version": jax.__version__,
    }
    params = flatten_params((alg.params or alg.shared)(state))
    if alg.extras is not None:
        params.update({k: np.asarray(v) for k, v in alg.extras(state).items()})
    result = RunResult(cfg, history, nodes, summary, params, state=state)
    result.dataset_info = dataset_info  # type: ignore[attr-defined]
    if out is not None:
        result.save(out)
    return result
