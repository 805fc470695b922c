"""Batched runs: several runs as one compiled program, vmapped over a leading run axis.

Runs whose configs differ only in values that keep every array shape — seeds, graphs
of the same size and degree bound, mixing weights, learning rates and schedules — share
one engine.  :func:`run_batch` stacks their states, keys, mixing operators, masks and
learning rates along a new leading axis and runs ``vmap`` of the engine's round chunk
over it: one compilation and one dispatch per chunk for the whole batch, and the
vectorised work of all runs together.  Node data are shared when every run uses the same
data config (the usual case: only ``run.seed`` varies) and stacked otherwise.

Each run's results are exactly those of running it alone (tested); its ``train_s`` and
``seconds_per_round`` are the batch's time divided by the batch size, and its summary
records ``"batched": B``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .config import Config, load_config
from .engine import _signature
from .errors import UserError
from .results import RunResult
from .runner import Simulation


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree, i: int):
    return jax.tree.map(lambda x: x[i], tree)


def _same(trees) -> bool:
    first = jax.tree.leaves(trees[0])
    for t in trees[1:]:
        leaves = jax.tree.leaves(t)
        if len(leaves) != len(first) or any(
            a.shape != b.shape or not bool(jnp.all(a == b))
            for a, b in zip(first, leaves, strict=True)
        ):
            return False
    return True


def batchable(sims: Sequence[Simulation]) -> str | None:
    """Why these simulations cannot run as one batch, or ``None`` if they can."""
    s0 = sims[0]
    for i, s in enumerate(sims[1:], 1):
        if s.engine is not s0.engine:
            return f"run {i} computes something else (algorithm, model or shapes differ)"
        if (s.rounds, s.cfg["run"]["eval_every"]) != (s0.rounds, s0.cfg["run"]["eval_every"]):
            return f"run {i} has other run.rounds / run.eval_every"
        parts = ("state", "mixing", "active", "nbrs", "borrow", "layout")
        for name in parts:
            if _signature(getattr(s, name)) != _signature(getattr(s0, name)):
                return f"run {i}: the shapes of {name} differ"
    return None


def run_batch(
    configs: Sequence[Config | Mapping[str, Any] | str | Path],
    *,
    quiet: bool = True,
    outs: Sequence[str | Path] | None = None,
) -> list[RunResult]:
    """Run several same-shaped configs as one vmapped program; one result per config."""
    cfgs = [c if isinstance(c, Config) else load_config(c) for c in configs]
    if not cfgs:
        return []
    sims = [Simulation(c) for c in cfgs]
    why = batchable(sims)
    if why is not None:
        raise UserError(f"run_batch: these runs cannot share one program: {why}")
    engine, b = sims[0].engine, len(sims)
    shared_data = _same([s.layout for s in sims])
    lay_axis = None if shared_data else 0
    layout = sims[0].layout if shared_data else _stack([s.layout for s in sims])
    borrow = None if sims[0].borrow is None else _stack([s.borrow for s in sims])
    nbrs = None if sims[0].nbrs is None else _stack([s.nbrs for s in sims])
    state = _stack([s.state for s in sims])
    key = _stack([s.key for s in sims])
    mixing = _stack([s.mixing for s in sims])
    active = _stack([s.active for s in sims])

    chunk = jax.vmap(engine._chunk_impl, in_axes=(0, 0, 0, 0, lay_axis, 0, 0))
    evaluate = jax.vmap(engine._eval_impl, in_axes=(0, lay_axis, 0, 0))

    def eval_all():
        out = engine._call("eval_batch", evaluate, state, layout, active, borrow)
        for i, s in enumerate(sims):
            s.record({k: np.asarray(v[i]) for k, v in out.items()})

    eval_all()
    rounds, every = sims[0].rounds, sims[0].cfg["run"]["eval_every"]
    bar = tqdm(total=rounds, desc=f"batch of {b}", disable=quiet, unit="round", leave=False)
    t = 0
    while t < rounds:
        length = min(every, rounds - t)
        lrs = jnp.stack([jnp.asarray(s._lrs(t, length)) for s in sims])
        c0, t0 = engine.compile_seconds, time.perf_counter()
        state, key, finite = engine._call(
            "chunk_batch", chunk, state, key, lrs, mixing, layout, active, nbrs
        )
        jax.block_until_ready(state)
        seconds = time.perf_counter() - t0 - (engine.compile_seconds - c0)
        t += length
        finite = np.asarray(finite)
        for i, s in enumerate(sims):
            if not finite[i].all() and s.diverged_at is None:  # reported as "incomplete"
                s.diverged_at = t - length + int(np.argmin(finite[i])) + 1
            s.state, s.round = _unstack(state, i), t
            s.train_seconds += seconds / b
        eval_all()
        bar.update(length)
    bar.close()
    results = []
    for i, s in enumerate(sims):
        s.state, s.key = _unstack(state, i), _unstack(key, i)
        res = s.result()
        res.summary["batched"] = b
        if outs is not None:
            res.save(outs[i])
        results.append(res)
    return results
