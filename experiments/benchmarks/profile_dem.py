"""Where a D-EM round goes: the pieces of one round of the benchmark recipe, on one core.

    python experiments/benchmarks/profile_dem.py                 # 300 nodes (about 2 min)
    python experiments/benchmarks/profile_dem.py --nodes 30 --repeats 3

Builds the benchmark's D-EM configuration (:func:`p2p_fmtl.bench.recipe_config`: FedEM
synthetic data, d = 150, linear model, M = 3, one local epoch, batch 128, momentum and
weight decay, full bucketing) in THIS process, pinned to one CPU with XLA's
multi-threaded Eigen off (as a ``--threads 1`` benchmark worker), and prints a table of
milliseconds per round (median of ``--repeats`` calls after a warm-up call):

* whole rounds (``sim.advance``) of the fused local update (the default) and of the
  separate E-step (``algorithm.fused = false``), with M = 1, and with other chunk sizes
  (``run.chunk_kib``) or no chunks;
* the local work alone (every node's ``local_update``, as the engine runs it: bucket by
  bucket, chunk by chunk); the rest of a round (gossip, the network, bookkeeping) is the
  difference;
* pieces run over every bucket the same way: the epoch orders (the sort), the orders and
  the gather of every training row, the E-step's pass alone (losses of the M components,
  softmax, π);
* the copy-bandwidth floor: a jitted ``x + 0`` over 256 MB
  (:func:`p2p_fmtl.bench.copy_bandwidth_gbs`) and the time to stream the real training
  rows once at that rate.

The scan iterations a round runs (Σ over buckets of chunks × steps) turn the local work
into a time per iteration, the per-step cost that bounds small-node workloads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pin_one_core() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _median_ms(fn, repeats: int) -> float:
    fn()  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _sim(n: int, n_test: int, overrides: dict):
    from p2p_fmtl import load_config
    from p2p_fmtl.bench import recipe_config
    from p2p_fmtl.runner import Simulation

    return Simulation(load_config(recipe_config(n, "dem", n_test=n_test), overrides=overrides))


def _round_ms(n, n_test, overrides, repeats, k=2) -> float:
    sim = _sim(n, n_test, overrides)
    sim.advance(k)
    return 1e3 * statistics.median(sim.advance(k) for _ in range(repeats)) / k


def _per_bucket(layout, fn):
    """``fn`` vmapped over the nodes of every bucket, chunk by chunk as the engine runs
    local work; returns a jitted function of the layout's data."""
    import jax

    from p2p_fmtl.engine import _chunked  # the engine's chunk loop, to time it the same

    def run(data):
        outs = []
        for b, d in enumerate(data):
            f = jax.vmap(lambda a: fn(*a))
            chunk = layout.chunk(b)
            outs.append(_chunked(f, d, layout.devices, chunk) if chunk else f(d))
        return outs

    return jax.jit(run)


def _pieces(sim, repeats: int, only_local: bool = False):
    """Milliseconds of the local work and of its pieces, over every bucket (only the
    local work's, a float, with ``only_local``)."""
    import jax
    import jax.numpy as jnp

    from p2p_fmtl.training import _epoch_order

    eng, layout = sim.engine, sim.layout
    state, lr = sim.carry.state, jnp.float32(0.1)
    keys = jax.random.split(jax.random.PRNGKey(1), sim.n_nodes)
    local = jax.jit(lambda s, k: eng._local_work(s, layout, k, lr, None))
    local_ms = _median_ms(lambda: jax.block_until_ready(local(state, keys)), repeats)
    if only_local:
        return local_ms
    out = {"local work alone": local_ms}
    rng = int(max(sim.n_train))  # the largest training set: shuffles are drawn at its size
    params = state.params
    m = jax.tree.leaves(params)[0].shape[1]
    from p2p_fmtl.models import build_model

    task = sim.task
    model_apply = build_model(sim.cfg["model"], sim.packed.feature_shape, task.out_dim).apply
    n_keys = [jax.random.split(jax.random.PRNGKey(2), len(ids)) for ids in layout.ids]
    one_params = jax.tree.map(lambda a: a[0], params)

    def order(d, k):
        return _epoch_order(k, d.n_train, d.x_train.shape[0], rng)

    def gather(d, k):
        return d.x_train[order(d, k)].sum(0)

    def e_step(d, k):
        def loss(p):
            return task.loss(model_apply(p, d.x_train), d.y_train)

        ell = jax.vmap(loss)(one_params)
        mask = jnp.arange(d.x_train.shape[0]) < d.n_train
        q = jax.nn.softmax(-ell, axis=0) * mask
        return q.sum(1)

    for name, fn in (("epoch orders (sort)", order), ("orders + gather of x", gather)):
        f = _per_bucket(layout, fn)
        args = list(zip(layout.data, n_keys, strict=True))
        out[name] = _median_ms(lambda f=f, a=args: jax.block_until_ready(f(a)), repeats)
    f = _per_bucket(layout, e_step)
    args = list(zip(layout.data, n_keys, strict=True))
    out[f"E-step pass alone (M = {m})"] = _median_ms(
        lambda: jax.block_until_ready(f(args)), repeats
    )
    return out


def _iterations(sim) -> int:
    """Scan iterations of one round's local work: Σ over buckets of chunks × steps."""
    layout = sim.layout
    cfg = sim.cfg["algorithm"]
    total = 0
    for b, d in enumerate(layout.data):
        nodes, size = d.x_train.shape[0], d.x_train.shape[1]
        steps = cfg["local_epochs"] * -(-size // min(cfg["batch_size"], size))
        chunk = layout.chunk(b)
        total += (nodes // chunk if chunk else 1) * steps
    return total


def _op_profile(sim, calls: int = 3, k: int = 2, top: int = 8) -> tuple[float, list]:
    """XLA's executed operations in ``calls`` traced ``advance(k)`` calls
    (``jax.profiler``): operations per round and the ``top`` kinds (numbered fusions
    merged: ``gather_bitcast_fusion.7`` counts as ``gather_bitcast_fusion``) with their
    calls per round and share of the traced operation time.  Tracing slows every
    operation, so shares, not times, are what it tells."""
    import collections
    import gzip
    import json
    import re
    import tempfile

    import jax

    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(calls):
            sim.advance(k)
        jax.profiler.stop_trace()
        path = next(Path(tmp).rglob("*.trace.json.gz"))
        events = json.load(gzip.open(path))["traceEvents"]
    dur, count = collections.Counter(), collections.Counter()
    outer = ("$", "Thunk", "Pjit", "Common", "while")
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name.startswith(outer) or " " in name:
            continue  # python frames, executors, loops: not leaf operations
        kind = re.sub(r"\.\d+$", "", name)
        dur[kind] += e["dur"]
        count[kind] += 1
    rounds, total = calls * k, max(sum(dur.values()), 1)
    kinds = [(kd, count[kd] / rounds, 100.0 * t / total) for kd, t in dur.most_common(top)]
    return sum(count.values()) / rounds, kinds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=300)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--n-test", type=int, default=100)
    args = p.parse_args(argv)
    _pin_one_core()
    sys.path.insert(0, str(ROOT))
    from p2p_fmtl.bench import copy_bandwidth_gbs

    n, r, t = args.nodes, args.repeats, args.n_test
    rows: list[tuple[str, float]] = []
    variants = {
        "round, fused (default)": {},
        "round, separate E-step (algorithm.fused = false)": {"algorithm.fused": False},
        "round, M = 1": {"algorithm.components": 1},
        "round, no chunks (run.chunking = off)": {"run.chunking": "off"},
        "round, run.chunk_kib = 512": {"run.chunk_kib": 512},
        "round, run.chunk_kib = 8192": {"run.chunk_kib": 8192},
    }
    for name, over in variants.items():
        rows.append((name, _round_ms(n, t, over, r)))
        print(f"{name}: {rows[-1][1]:.2f} ms", file=sys.stderr, flush=True)
    sim = _sim(n, t, {"algorithm.fused": False})
    local = _pieces(sim, r, only_local=True)
    rows.append(("local work alone, separate E-step", local))
    sim = _sim(n, t, {})
    pieces = _pieces(sim, r)
    rows += [(f"{k}, fused" if k.startswith("local") else k, v) for k, v in pieces.items()]
    for name, ms in rows[-5:]:
        print(f"{name}: {ms:.2f} ms", file=sys.stderr, flush=True)
    iters, local_ms = _iterations(sim), pieces["local work alone"]
    n_rows = int(sum(int(v) for v in sim.n_train))
    x = sim.layout.data[0].x_train
    row_bytes = x.dtype.itemsize * int(x[0, 0].size)
    sim.advance(2)
    ops, kinds = _op_profile(sim)
    gbs = copy_bandwidth_gbs()
    print(f"\nD-EM round pieces, {n} nodes, one pinned core (median of {r} calls)\n")
    print("| piece | ms / round |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} |")
    floor_ms = 1e3 * n_rows * row_bytes / (gbs * 1e9)
    print(
        f"| copy-bandwidth floor: {n_rows:,} rows × {row_bytes} B once at {gbs:.1f} GB/s "
        f"| {floor_ms:.2f} |"
    )
    print(
        f"\nscan iterations per round (Σ buckets chunks × steps): {iters}; "
        f"fused local work per iteration: {1e3 * local_ms / iters:.0f} µs"
    )
    print(f"\nXLA operations executed per round (fused, traced): {ops:,.0f}\n")
    print("| operation kind | calls / round | share of traced op time |\n|---|---:|---:|")
    for kind, calls, share in kinds:
        print(f"| {kind} | {calls:,.1f} | {share:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
