"""Communication–accuracy trade-off: accuracy against cumulative bytes sent.

D-SGD and D-EM on the 30-node FedEM recipe with local work E ∈ {1, 2, 5} epochs per round on
three graphs of increasing degree (ring: 2 neighbours, exponential: ~8, Erdős–Rényi p = 0.5:
~15), 100 rounds.  Each run is a curve of mean test accuracy against the cumulative bytes all
nodes have sent (float32 parameters to every neighbour each round); the Pareto front over all
evaluations is marked.  Compression (top-k, QSGD) and gossip every k rounds will add axes once the
network-realism features exist.

    python experiments/comm_accuracy_tradeoff.py --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

from p2p_fmtl.plots import plot
from p2p_fmtl.sweep import run_sweep

HERE = Path(__file__).resolve().parent
SWEEP = HERE / "sweeps" / "tradeoff.toml"
OUT = HERE / "results" / "tradeoff"


def bytes_to_reach(history: Path, target: float) -> dict:
    """Cumulative MB each run has sent when it first reaches ``target`` mean accuracy."""
    first = {}
    runs = defaultdict(list)
    with open(history, newline="") as f:
        for r in csv.DictReader(f):
            runs[r["run_id"]].append(r)
    for rows in runs.values():
        r0 = rows[0]
        key = (r0["algorithm.name"], int(r0["algorithm.local_epochs"]), r0["topology.name"])
        hit = [float(r["bytes_total"]) / 1e6 for r in rows if float(r["test_acc"]) >= target]
        first[key] = (min(hit) if hit else None, max(float(r["test_acc"]) for r in rows))
    return first


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    result = run_sweep(SWEEP, out=OUT, jobs=args.jobs, quiet=False)
    plot(OUT, "tradeoff", OUT / "tradeoff.png")
    lines = [
        "| algorithm | local epochs | graph | best mean acc (%) | MB sent to reach 70 % |",
        "|---|---:|---|---:|---:|",
    ]
    for (alg, e, topo), (mb, best) in sorted(bytes_to_reach(result.history_csv, 0.70).items()):
        lines.append(
            f"| {alg} | {e} | {topo} | {100 * best:.2f} | {'–' if mb is None else f'{mb:.2f}'} |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        sys.path.insert(0, str(HERE))
        from reproduce_fedem_synthetic import write_section

        write_section(
            HERE / "RESULTS.md",
            "tradeoff",
            text + "\n\n![accuracy vs bytes](results/tradeoff/tradeoff.png)",
        )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
