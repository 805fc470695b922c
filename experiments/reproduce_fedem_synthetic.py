"""Reproduce FedEM's decentralized synthetic experiment: D-EM vs D-SGD vs local.

The reference recipe (Marfoq et al. 2021, official code): FedEM synthetic data
(reference variant, data seed 12345), Erdős–Rényi p = 0.5, M = 3, linear model, lr 0.1,
batch 128, one local epoch per component, SGD momentum 0.9, weight decay 5e-4, lr × 0.1
at rounds R/2 and 3R/4, R = 200.  The 30-node graph mixes with the reference's
fastest-mixing matrix with a zero diagonal (needs cvxpy; falls back to Metropolis with
a warning); 100 and 300 nodes use Metropolis weights, because the SDP takes over a minute
at 100 nodes and is impractical at 300.

    python experiments/reproduce_fedem_synthetic.py              # n = 30, 100, 300; seeds 0-2
    python experiments/reproduce_fedem_synthetic.py --sizes 30 --seeds 0

Each run's directory is kept under ``experiments/results/fedem_synthetic/`` and skipped
when re-run, so an interrupted reproduction resumes.  The table goes to stdout, to
``experiments/results/fedem_synthetic.csv`` and into ``experiments/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

from p2p_fmtl import load_config, run

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "fedem_synthetic_dem.toml"
OUT = HERE / "results" / "fedem_synthetic"
REFERENCE_SPR = {30: 0.64, 100: 1.66, 300: 5.11}
ALGORITHMS = ("dem", "dsgd", "local")


def mixing_for(n: int) -> str:
    if n != 30:
        return "metropolis"
    try:
        import cvxpy  # noqa: F401

        return "fmmc_zero_diagonal"
    except ImportError:
        print("cvxpy not installed: using Metropolis weights at n = 30", file=sys.stderr)
        return "metropolis"


def one_run(alg: str, n: int, seed: int) -> dict:
    out = OUT / f"{alg}-n{n}-seed{seed}"
    summary = out / "summary.json"
    if summary.exists():
        return json.loads(summary.read_text())
    cfg = load_config(
        CONFIG,
        overrides={
            "algorithm.name": alg,
            "topology.n": n,
            "topology.mixing": mixing_for(n),
            "run.seed": seed,
        },
    )
    t0 = time.perf_counter()
    result = run(cfg, out=out)
    result.summary["run_s"] = time.perf_counter() - t0
    return result.summary


def table(rows: list[dict]) -> str:
    lines = [
        "| nodes | mixing | algorithm | mean test acc (%) | p10 test acc (%) | s / round | "
        "reference D-EM s / round (1 core) | whole run (s) | seeds |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = (
            f"{REFERENCE_SPR[r['n']]:.2f}"
            if r["algorithm"] == "dem" and r["n"] in (REFERENCE_SPR)
            else "–"
        )
        lines.append(
            f"| {r['n']} | {r['mixing']} | {r['algorithm']} | {r['acc']} | {r['p10']} | "
            f"{r['spr']:.4f} | {ref} | {r['wall']:.1f} | {r['seeds']} |"
        )
    return "\n".join(lines)


def pm(values: list[float]) -> str:
    mean = 100 * statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def write_section(path: Path, name: str, body: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Results\n"
    block = f"{start}\n{body}\n{end}"
    if start in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_name(path.name + ".tmp")  # re-read just before, replaced atomically
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30, 100, 300])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-record", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args(argv)

    jobs = [(n, a, s) for n in args.sizes for a in ALGORITHMS for s in args.seeds]
    summaries = {}
    for n, alg, seed in tqdm(jobs, desc="runs", unit="run"):
        summaries[(n, alg, seed)] = one_run(alg, n, seed)

    rows = []
    for n in args.sizes:
        for alg in ALGORITHMS:
            ss = [summaries[(n, alg, s)] for s in args.seeds]
            rows.append(
                {
                    "n": n,
                    "mixing": mixing_for(n),
                    "algorithm": alg,
                    "acc": pm([s["test_acc"] for s in ss]),
                    "p10": pm([s["test_acc_p10"] for s in ss]),
                    "spr": statistics.median(s["seconds_per_round"] for s in ss),
                    "wall": statistics.median(s["wall_s"] for s in ss),
                    "seeds": ",".join(map(str, args.seeds)),
                }
            )
    text = table(rows)
    print(text)
    (OUT.parent).mkdir(parents=True, exist_ok=True)
    with open(OUT.parent / "fedem_synthetic.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if not args.no_record:
        write_section(HERE / "RESULTS.md", "fedem_synthetic", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
