"""Batched runs: several runs as one compiled program, vmapped over a leading run axis.

Runs whose configs differ only in values that keep every array shape and the program —
seeds, graphs of the same size and degree bound, mixing weights, learning rates and
schedules, fault and straggler rates, compression steps, cost-model constants — share
one engine.  :func:`run_batch` stacks their carried states, round inputs (network arrays
and rates included) and learning rates along a new leading axis and calls the engine's
batched programs (:meth:`~p2p_fmtl.engine.Engine.run_chunk_batch`,
:meth:`~p2p_fmtl.engine.Engine.evaluate_batch`): one compilation and one dispatch per
chunk for the whole batch.  Node data are shared when every run uses the same data (the
usual case: only ``run.seed`` varies) and stacked otherwise.

Every configuration that runs alone runs in a batch with the same numbers (the ledger,
simulated time and divergence flags included), or the batch is refused with one line
that says what differs (e.g. one run drops nodes and another does not: that is another
program).  Each run's ``train_s`` and ``seconds_per_round`` are the batch's time divided
by the batch size, and its summary records ``"batched": B``.
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


def _program_difference(a: Simulation, b: Simulation) -> str:
    """What makes two runs different programs, in words."""
    for what, x, y in (
        ("network process", a.process, b.process),
        ("exchange", a.exchange, b.exchange),
    ):
        if x != y:
            fields = [
                f"{f}: {getattr(x, f)!r} vs {getattr(y, f)!r}"
                for f in getattr(x, "_fields", ())
                if getattr(x, f) != getattr(y, f)
            ]
            detail = "; ".join(fields) or f"{x!r} vs {y!r}"
            return f"its {what} differs ({detail})"
    if a.engine.every != b.engine.every:
        return f"algorithm.gossip_every differs ({a.engine.every} vs {b.engine.every})"
    if a.engine.cost != b.engine.cost:
        return "cost.enabled differs"
    return "it computes something else (algorithm, model or data shapes differ)"


def batchable(sims: Sequence[Simulation]) -> str | None:
    """Why these simulations cannot run as one batch, or ``None`` if they can."""
    s0 = sims[0]
    for i, s in enumerate(sims[1:], 1):
        if s.engine is not s0.engine:
            return f"run {i}: {_program_difference(s0, s)}"
        if (s.rounds, s.cfg["run"]["eval_every"]) != (s0.rounds, s0.cfg["run"]["eval_every"]):
            return f"run {i} has other run.rounds / run.eval_every"
        if s.devices != s0.devices or s.devices > 1:
            return f"run {i}: batched runs use one device (run.devices = {s.devices})"
        for name in ("carry", "inputs", "borrow", "layout"):
            where = _shape_difference(getattr(s0, name), getattr(s, name))
            if where:
                return f"run {i}: the shapes of {name}{where} differ"
    return None


def _shape_difference(a, b) -> str | None:
    """The path and shapes of the first leaf where ``a`` and ``b`` differ, or ``None``."""
    if _signature(a) == _signature(b):
        return None
    la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    if len(la) != len(lb):
        return " (structure)"
    for (path, x), (_, y) in zip(la, lb, strict=True):
        if _signature(x) != _signature(y):
            return f"{jax.tree_util.keystr(path)} ({np.shape(x)} vs {np.shape(y)})"
    return ""


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
    shared = _same([s.layout for s in sims])
    layout = sims[0].layout if shared else _stack([s.layout for s in sims])
    borrow = None if sims[0].borrow is None else _stack([s.borrow for s in sims])
    carry = _stack([s.carry for s in sims])
    inputs = _stack([s.inputs for s in sims])
    honest = _stack([s.honest for s in sims])  # training nodes that are not Byzantine

    def eval_all():
        tune = None if not sims[0].finetune_epochs else _stack([s.tuning() for s in sims])
        out = engine.evaluate_batch(carry.state, layout, honest, borrow, tune, shared_layout=shared)
        for i, s in enumerate(sims):
            s.record({k: v[i] for k, v in out.items()})

    eval_all()
    rounds, every = sims[0].rounds, sims[0].cfg["run"]["eval_every"]
    bar = tqdm(total=rounds, desc=f"batch of {b}", disable=quiet, unit="round", leave=False)
    t = 0
    while t < rounds:
        length = min(every, rounds - t)
        lrs = np.stack([s._lrs(t, length) for s in sims])
        c0, t0 = engine.compile_seconds, time.perf_counter()
        carry, finite, msgs, secs = engine.run_chunk_batch(
            carry, inputs, layout, t, lrs, shared_layout=shared
        )
        jax.block_until_ready(carry)
        seconds = time.perf_counter() - t0 - (engine.compile_seconds - c0)
        finite, msgs, secs = np.asarray(finite), np.asarray(msgs), np.asarray(secs)
        for i, s in enumerate(sims):
            s.carry = _unstack(carry, i)
            s._account(length, finite[i], msgs[i], float(secs[i]), seconds / b)
        t += length
        eval_all()
        bar.update(length)
    bar.close()
    results = []
    for i, s in enumerate(sims):
        res = s.result()
        res.summary["batched"] = b
        if outs is not None:
            res.save(outs[i])
        results.append(res)
    return results
