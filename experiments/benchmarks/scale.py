"""Rings of 10^3 to 10^5 nodes: D-SGD with a linear model, seconds and memory per round.

    python experiments/benchmarks/scale.py                      # n = 1000, 10000, 100000
    python experiments/benchmarks/scale.py --sizes 1000 10000   # a shorter check

Each size runs in its own worker process (a clean peak RSS), single-threaded on one
pinned core: build the simulation (data generation, packing, graph), one warm-up
``advance(1)`` (compilation), ``--repeats`` timed ``advance(1)`` calls, then one
evaluation.  Per node it is the FedEM synthetic recipe with the reference's 150
features, capped at 100 training samples (50 to 100 per node, so that 10^5 nodes fit
comfortably in memory: 7.5 million samples, 4.5 GB of features) and 20 test samples.
The ring's gossip is the sparse neighbour-table operator (3 non-zeros per row, padded
to 4), so its cost is linear in the number of edges.  Writes the section between
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

SIZES = (1000, 10000, 100000)
MARKS = ("<!-- scale:start -->", "<!-- scale:end -->")


def config(n: int, rounds: int) -> dict:
    return {
        "run": {"seed": 0, "rounds": rounds, "eval_every": rounds},
        "topology": {"name": "ring", "n": n, "mixing": "metropolis"},
        "data": {
            "name": "fedem_synthetic",
            "variant": "reference",
            "dim": 150,
            "seed": 12345,
            "max_samples": 100,
            "n_test": 20,
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
    """One size in this process (pinned to one core): the result row."""
    bench._pin(min(os.sched_getaffinity(0)))
    import jax  # noqa: F401

    from p2p_fmtl import load_config
    from p2p_fmtl.runner import Simulation

    n, repeats = spec["n"], spec["repeats"]
    t0 = time.perf_counter()
    sim = Simulation(load_config(config(n, 1 + repeats)))
    build_s = time.perf_counter() - t0
    rss_built = bench._rss_peak_mb()
    sim.advance(1)
    bench._reset_peak_rss()
    c0, w0 = bench._cpu_seconds(), time.perf_counter()
    times = [float(sim.advance(1)) for _ in range(repeats)]
    cpu_per_wall = (bench._cpu_seconds() - c0) / (time.perf_counter() - w0)
    rss_rounds = bench._rss_peak_mb()
    row = sim.evaluate()
    return {
        "n": n,
        "status": "ok",
        "s_per_round": statistics.median(times),
        "times_s": times,
        "node_rounds_per_s": n / statistics.median(times),
        "build_s": build_s,
        "compile_s": sim.engine.compile_seconds,
        "peak_rss_mb": max(rss_built, rss_rounds),
        "rounds_peak_rss_mb": rss_rounds,
        "train_samples": int(sim.n_train.sum()),
        "train_gb": float(sim.n_train.sum()) * 151 * 4 / 1e9,
        "padding_fraction": sim.padding_fraction,
        "gossip_operator": sim.gossip_operator,
        "gossip_nnz": sim.gossip_nnz,
        "test_acc": row.get("test_acc"),
        "consensus_distance": row.get("consensus_distance"),
        "cpu_per_wall": cpu_per_wall,
        "rounds": sim.round,
    }


def run_size(n: int, repeats: int, timeout: float) -> dict:
    """One size in a fresh worker process (this script's ``--worker``), one pinned core."""
    spec = {"n": n, "repeats": repeats, "threads": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    return bench.run_worker(spec, timeout=timeout, command=command)


def render(rows: list[dict], machine: dict, command: str) -> str:
    lines = [
        "## Rings of 10^3 to 10^5 nodes (`experiments/benchmarks/scale.py`)",
        "",
        f"- CPU: {machine['cpu']}; cores: {machine['cores']}; RAM: {machine['ram']}",
        f"- {machine['jax']}; Python {machine['python']}; date: {machine['date']}",
        f"- command: `{command}`; one pinned core, single-threaded XLA",
        "",
        "D-SGD, linear model, FedEM synthetic features (d = 150), 50–100 training samples "
        "per node (`data.max_samples = 100`), batch 128, one local epoch, momentum 0.9, "
        "Metropolis weights on a ring (sparse neighbour-table gossip).",
        "",
        "| nodes | training data (GB) | s / round | node-rounds / s | compile (s) | build (s) "
        "| peak RSS MB (process / timed rounds) | MB per 1k nodes | padding | test acc "
        "after the timed rounds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['n']} | failed: {r.get('reason', '?')} |" + " – |" * 8)
            continue
        lines.append(
            f"| {r['n']:,} | {r['train_gb']:.2f} | {r['s_per_round']:.4g} "
            f"| {r['node_rounds_per_s']:,.0f} | {r['compile_s']:.1f} | {r['build_s']:.1f} "
            f"| {r['peak_rss_mb']:,.0f} / {r['rounds_peak_rss_mb']:,.0f} "
            f"| {1000 * r['peak_rss_mb'] / r['n']:,.0f} "
            f"| {100 * r['padding_fraction']:.1f} % | {100 * r['test_acc']:.1f} % |"
        )
    ok = [r for r in rows if r.get("status") == "ok"]
    if len(ok) >= 2:
        a, b = ok[0], ok[-1]
        c = ok[-2]  # memory: the line through the two largest sizes
        per_node = (b["peak_rss_mb"] - c["peak_rss_mb"]) / (b["n"] - c["n"])
        fixed = b["peak_rss_mb"] - per_node * b["n"]
        lines += [
            "",
            f"From {a['n']:,} to {b['n']:,} nodes ({b['n'] / a['n']:.0f}×): time per round "
            f"×{b['s_per_round'] / a['s_per_round']:.1f}, peak memory "
            f"×{b['peak_rss_mb'] / a['peak_rss_mb']:.1f}: about {1000 * per_node:.0f} kB per "
            f"node on top of {fixed:,.0f} MB (the line through the two largest runs; the "
            "process peak is reached while the generated per-node arrays and the packed "
            "arrays coexist, before the former are released).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
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
    for n in args.sizes:
        row = run_size(n, args.repeats, args.timeout)
        print(json.dumps({k: row.get(k) for k in ("n", "status", "s_per_round", "peak_rss_mb")}))
        rows.append(row)
    command = "python experiments/benchmarks/scale.py " + " ".join(argv or sys.argv[1:])
    body = render(rows, harness.machine_description(), command.strip())
    print(body)
    harness.write_section(args.out, body, start=MARKS[0], end=MARKS[1])
    harness.write_json(args.json, {"rows": rows})
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
