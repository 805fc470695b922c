"""Networks of 10^4 to 10^6 nodes: seconds per round and peak memory, build and run.

    python experiments/benchmarks/scale.py                                   # the grid
    python experiments/benchmarks/scale.py --kinds gossip --sizes 10000      # one row

Two workloads, on random 4-regular graphs with Metropolis weights (from 10^5 nodes the
graph is built as numpy edge arrays, never a networkx object; see ``topologies``):

* ``gossip``: ``algorithm = "average"``, 16 values per node, 10 % of the nodes down each
  round (``faults.node_drop = 0.1``: the live subgraph re-weighted every round);
* ``dsgd``: D-SGD with a linear model on FedEM synthetic data (d = 16 features, 50–100
  training samples per node: ``data.max_samples = 100``; 10 test samples), batch 128,
  one local epoch, momentum 0.9 (from 10^5 nodes the data are generated one node at a
  time straight into the packed buckets, see ``p2p_fmtl.data.NodeStream``).

Each configuration runs in its own worker process, single-threaded on one pinned core:
build the simulation (graph, mixing table, data, packing: the *build* peak RSS is the
process's peak after this), reset the peak, one warm-up ``advance(1)`` (compilation),
``--repeats`` timed ``advance(1)`` calls and one evaluation (the *run* peak).  The
issue's bar: the build peak within 1.5× the run's.  Writes the section between
``<!-- scale:start -->`` and ``<!-- scale:end -->`` of experiments/BENCHMARKS.md and the
raw rows to experiments/benchmarks/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # runs from a checkout without installing too
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

from p2p_fmtl import bench  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000)
KINDS = ("gossip", "dsgd")
MARKS = ("<!-- scale:start -->", "<!-- scale:end -->")


def config(kind: str, n: int, rounds: int) -> dict:
    graph = {"name": "random_regular", "n": n, "d": 4, "mixing": "metropolis"}
    run = {"seed": 0, "rounds": rounds, "eval_every": rounds}
    if kind == "gossip":
        return {
            "run": run,
            "topology": graph,
            "data": {"name": "none"},
            "algorithm": {"name": "average", "dim": 16},
            "faults": {"node_drop": 0.1},
        }
    return {
        "run": run,
        "topology": graph,
        "data": {
            "name": "fedem_synthetic",
            "variant": "reference",
            "dim": 16,
            "seed": 12345,
            "max_samples": 100,
            "n_test": 10,
            "bucketing": "full",
        },
        "model": {"name": "linear"},
        "algorithm": {
            "name": "dsgd",
            "lr": 0.1,
            "batch_size": 128,
            "local_epochs": 1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
        },
    }


def worker(spec: dict) -> dict:
    """One configuration in this process (pinned to one core): the result row."""
    bench._pin(min(os.sched_getaffinity(0)))
    import jax  # noqa: F401

    from p2p_fmtl import load_config
    from p2p_fmtl.runner import Simulation

    kind, n, repeats = spec["kind"], spec["n"], spec["repeats"]
    rss_import = bench._rss_peak_mb()
    t0 = time.perf_counter()
    sim = Simulation(load_config(config(kind, n, 2 + repeats)))
    build_s = time.perf_counter() - t0
    rss_build = bench._rss_peak_mb()
    reset = bench._reset_peak_rss()
    t1 = time.perf_counter()
    sim.advance(1)
    warmup_s = time.perf_counter() - t1
    c0, w0 = bench._cpu_seconds(), time.perf_counter()
    times = [float(sim.advance(1)) for _ in range(repeats)]
    cpu_per_wall = (bench._cpu_seconds() - c0) / (time.perf_counter() - w0)
    row = sim.evaluate()
    rss_run = bench._rss_peak_mb()
    trains = kind != "gossip"
    return {
        "kind": kind,
        "n": n,
        "status": "ok",
        "s_per_round": statistics.median(times),
        "times_s": times,
        "node_rounds_per_s": n / statistics.median(times),
        "build_s": build_s,
        "warmup_s": warmup_s,
        "compile_s": sim.engine.compile_seconds,
        "rss_import_mb": rss_import,
        "build_peak_rss_mb": rss_build,
        "run_peak_rss_mb": rss_run if reset else None,
        "peak_reset": reset,
        "train_samples": int(sim.n_train.sum()) if trains else 0,
        "packed_gb": sim.packed.nbytes / 1e9 if trains and sim.packed is not None else 0.0,
        "padding_fraction": sim.padding_fraction if trains else 0.0,
        "gossip_operator": sim.gossip_operator,
        "gossip_nnz": sim.gossip_nnz,
        "test_acc": row.get("test_acc"),
        "consensus_distance": row.get("consensus_distance"),
        "cpu_per_wall": cpu_per_wall,
        "rounds": sim.round,
    }


def run_one(kind: str, n: int, repeats: int, timeout: float) -> dict:
    """One configuration in a fresh worker process (this script's ``--worker``)."""
    spec = {"kind": kind, "n": n, "repeats": repeats, "threads": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    return bench.run_worker(spec, timeout=timeout, command=command)


def render(rows: list[dict], machine: dict, command: str) -> str:
    lines = [
        "## Networks of 10^4 to 10^6 nodes (`experiments/benchmarks/scale.py`)",
        "",
        f"- CPU: {machine['cpu']}; cores: {machine['cores']}; RAM: {machine['ram']}",
        f"- {machine['jax']}; Python {machine['python']}; date: {machine['date']}",
        f"- command: `{command}`; one pinned core, single-threaded XLA",
        "",
        "Random 4-regular graphs, Metropolis weights. **gossip**: `average`, 16 values per "
        "node, 10 % of the nodes down each round (`faults.node_drop = 0.1`, the live "
        "subgraph re-weighted). **D-SGD**: linear model on FedEM synthetic data (d = 16, "
        "50–100 training samples per node, 10 test samples), batch 128, one local epoch, "
        "momentum 0.9. Build = graph, mixing table, data, packing (its peak RSS: the "
        "process's peak when the simulation is built); run = compilation, the timed "
        "rounds and one evaluation (the peak RSS after a reset once built).",
        "",
        "| workload | nodes | s / round | node-rounds / s | build (s) | compile (s) "
        "| peak RSS MB: build / run | build ÷ run | packed data (GB) | padding "
        "| test acc or consensus distance | CPU / wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        label = "gossip" if r.get("kind") == "gossip" else "D-SGD"
        if r.get("status") != "ok":
            reason = str(r.get("reason", "?")).replace("|", "/")[:120]
            lines.append(f"| {label} | {r['n']:,} | failed: {reason} |" + " – |" * 9)
            continue
        run = r.get("run_peak_rss_mb")
        ratio = f"{r['build_peak_rss_mb'] / run:.2f}" if run else "–"
        metric = (
            f"{100 * r['test_acc']:.1f} %"
            if r.get("test_acc") is not None
            else f"{r.get('consensus_distance', float('nan')):.3g}"
        )
        lines.append(
            f"| {label} | {r['n']:,} | {r['s_per_round']:.4g} "
            f"| {r['node_rounds_per_s']:,.0f} | {r['build_s']:.1f} | {r['compile_s']:.1f} "
            f"| {r['build_peak_rss_mb']:,.0f} / {run or 0:,.0f} | {ratio} "
            f"| {r['packed_gb']:.2f} | {100 * r['padding_fraction']:.1f} % | {metric} "
            f"| {r['cpu_per_wall']:.2f}{' ⚠' if r['cpu_per_wall'] < 0.9 else ''} |"
        )
    lines += [
        "",
        "CPU / wall: the worker's CPU time over wall time during the timed rounds; ⚠ below "
        "0.9: other processes shared its core, so that row's s / round is too slow by about "
        "that factor. Memory is not affected.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per size")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", default=str(HERE.parent / "BENCHMARKS.md"))
    p.add_argument("--json", default=str(HERE / "scale.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    rows = []
    for kind in args.kinds:
        for n in args.sizes:
            row = run_one(kind, n, args.repeats, args.timeout)
            keys = ("kind", "n", "status", "s_per_round", "build_peak_rss_mb", "run_peak_rss_mb")
            print(json.dumps({k: row.get(k) for k in keys}), flush=True)
            rows.append(row)
    command = "python experiments/benchmarks/scale.py " + " ".join(argv or sys.argv[1:])
    body = render(rows, harness.machine_description(), command.strip())
    print(body)
    harness.write_section(args.out, body, start=MARKS[0], end=MARKS[1])
    harness.write_json(args.json, {"rows": rows})
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
