"""Graph-regularized MTL on clustered linear tasks: local vs D-SGD vs graph_mtl vs propagation.

32 nodes hold regression tasks from 4 clusters (``clustered_linear``: d = 20, 10-40
samples per node, noise 0.5, cluster separation 2).  They talk over a planted-partition
graph (4 groups, p_in = 0.5, p_out = 0.05):

* ``aligned``: node i's cluster is its graph group (the graph is partly aligned with the
  clusters: most edges are within a cluster, some cross);
* ``mixed``:   clusters are assigned at random, so most edges join different tasks.

Methods: local training, D-SGD (one global model), graph_mtl with relations
``uniform`` / ``graph`` (Metropolis weights) / ``similarity`` / ``learned``, swept over λ,
and model propagation swept over μ = 1/λ (its trust in the local model).  Metric: test
MSE averaged over nodes (lower is better; the noise floor is 0.25), mean over 3 seeds
(each seed draws new data, graph and initialization).

    python experiments/graph_mtl_clustered.py            # writes results/ and RESULTS.md
    python experiments/graph_mtl_clustered.py --quick    # 1 seed, fewer λ

Finished runs are cached in ``experiments/results/graph_mtl_clustered/runs.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from p2p_fmtl import load_config, run

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "graph_mtl_clustered"
LAMBDAS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
RELATIONS = ["uniform", "graph", "similarity", "learned"]
SETTINGS = {"aligned": "contiguous", "mixed": "random"}


def base_config(setting: str, seed: int) -> dict:
    return {
        "run": {"rounds": 200, "eval_every": 200, "seed": seed},
        "topology": {"name": "planted_partition", "n": 32, "groups": 4, "p_in": 0.5, "p_out": 0.05},
        "data": {
            "name": "clustered_linear",
            "clusters": 4,
            "dim": 20,
            "samples": [10, 40],
            "noise": 0.5,
            "separation": 2.0,
            "assignment": SETTINGS[setting],
            "n_test": 200,
            "seed": seed,
        },
        "algorithm": {"name": "local", "lr": 0.02, "batch_size": 16, "momentum": 0.9},
    }


def jobs(seeds, lambdas):
    for setting in SETTINGS:
        for seed in seeds:
            yield setting, seed, "local", "", math.nan, {}
            yield setting, seed, "dsgd", "", math.nan, {"algorithm.name": "dsgd"}
            for lam in lambdas:
                for rel in RELATIONS:
                    yield (
                        setting,
                        seed,
                        "graph_mtl",
                        rel,
                        lam,
                        {
                            "algorithm.name": "graph_mtl",
                            "algorithm.lam": lam,
                            "algorithm.relation": rel,
                        },
                    )
                yield (
                    setting,
                    seed,
                    "propagation",
                    "uniform",
                    lam,
                    {
                        "algorithm.name": "propagation",
                        "algorithm.mu": 1.0 / lam,
                    },
                )


def key_of(row) -> tuple:
    lam = float(row["lam"])
    return (
        row["setting"],
        int(row["seed"]),
        row["method"],
        row["relation"],
        "nan" if math.isnan(lam) else f"{lam:g}",
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed and 4 values of λ")
    ap.add_argument("--no-record", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args(argv)
    seeds = [0] if args.quick else [0, 1, 2]
    lambdas = [0.03, 0.3, 3.0, 30.0] if args.quick else LAMBDAS

    OUT.mkdir(parents=True, exist_ok=True)
    cache = OUT / "runs.csv"
    fields = ["setting", "seed", "method", "relation", "lam", "test_mse", "test_mse_p90"]
    done = {}
    if cache.exists():
        with open(cache) as f:
            done = {key_of(r): r for r in csv.DictReader(f)}
    todo = list(jobs(seeds, lambdas))
    with open(cache, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if not done:
            w.writeheader()
        for setting, seed, method, rel, lam, over in tqdm(todo, desc="runs", unit="run"):
            row = {"setting": setting, "seed": seed, "method": method, "relation": rel, "lam": lam}
            if key_of(row) in done:
                continue
            s = run(load_config(base_config(setting, seed), overrides=over)).summary
            row.update(test_mse=s["test_mse"], test_mse_p90=s["test_mse_p90"])
            w.writerow(row)
            f.flush()
            done[key_of(row)] = {k: str(v) for k, v in row.items()}

    rows = [r for r in done.values() if int(r["seed"]) in seeds]
    table = summarize(rows, lambdas)
    print(table)
    figure(rows, lambdas, OUT / "error_vs_lambda.png")
    if not args.no_record:
        from reproduce_fedem_synthetic import write_section

        write_section(
            HERE / "RESULTS.md",
            "graph_mtl_clustered",
            table + "\n\n![test MSE vs λ](results/graph_mtl_clustered/error_vs_lambda.png)",
        )
    return 0


def _curve(rows, setting, method, rel, lambdas):
    means = []
    for lam in lambdas:
        vals = [
            float(r["test_mse"])
            for r in rows
            if r["setting"] == setting
            and r["method"] == method
            and r["relation"] == rel
            and not math.isnan(float(r["lam"]))
            and math.isclose(float(r["lam"]), lam)
        ]
        vals = [v if math.isfinite(v) else math.inf for v in vals]
        means.append(float(np.mean(vals)) if vals else math.nan)
    return np.array(means)


def _baseline(rows, setting, method):
    vals = [float(r["test_mse"]) for r in rows if r["setting"] == setting and r["method"] == method]
    return float(np.mean(vals))


def summarize(rows, lambdas) -> str:
    lines = [
        "| graph vs clusters | method | relation | best λ | test MSE (mean over seeds) | "
        "error reduction vs better of local / D-SGD |",
        "|---|---|---|---:|---:|---:|",
    ]
    for setting in SETTINGS:
        local, dsgd = _baseline(rows, setting, "local"), _baseline(rows, setting, "dsgd")
        best_base = min(local, dsgd)
        lines.append(f"| {setting} | local | – | – | {local:.3f} | – |")
        lines.append(f"| {setting} | dsgd | – | – | {dsgd:.3f} | – |")
        for method, rel in [("graph_mtl", r) for r in RELATIONS] + [("propagation", "uniform")]:
            curve = _curve(rows, setting, method, rel, lambdas)
            finite = np.where(np.isfinite(curve), curve, np.inf)
            i = int(np.argmin(finite))
            gain = 100 * (1 - finite[i] / best_base)
            lam = f"{lambdas[i]:g}" if method == "graph_mtl" else f"1/{lambdas[i]:g} (μ)"
            lines.append(
                f"| {setting} | {method} | {rel} | {lam} | {finite[i]:.3f} | {gain:+.1f} % |"
            )
    return "\n".join(lines)


def figure(rows, lambdas, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = 5.0  # errors above this (divergence: lr·λ·Σ_j a_ij too large) are drawn as ×
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    colours = {"uniform": "C0", "graph": "C1", "similarity": "C2", "learned": "C3"}

    def draw(ax, y, style, colour, label):
        ok = np.isfinite(y) & (y <= top)
        ax.plot(np.array(lambdas)[ok], y[ok], style, color=colour, label=label)
        ax.plot(
            np.array(lambdas)[~ok], np.full((~ok).sum(), top * 0.93), "x", color=colour, ms=8, mew=2
        )

    for ax, setting in zip(axes, SETTINGS, strict=True):
        for rel in RELATIONS:
            y = _curve(rows, setting, "graph_mtl", rel, lambdas)
            draw(ax, y, "o-", colours[rel], f"graph_mtl ({rel})")
        y = _curve(rows, setting, "propagation", "uniform", lambdas)
        draw(ax, y, "s--", "C4", "propagation (μ = 1/λ)")
        ax.axhline(_baseline(rows, setting, "local"), color="0.4", ls=":", label="local")
        ax.axhline(_baseline(rows, setting, "dsgd"), color="k", ls="-.", label="D-SGD")
        ax.axhline(0.25, color="0.7", lw=0.8, label="noise floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(0.2, top)
        ax.set_xlabel("λ (regularization strength)")
        ax.set_title(f"graph {setting} with the clusters")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("test MSE (mean over nodes and seeds)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=9, frameon=False)
    fig.suptitle(
        "32 nodes, 4 clusters of linear tasks, planted-partition graph "
        "(× = diverged: step size lr·λ·Σa too large)"
    )
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
