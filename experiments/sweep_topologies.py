"""D-EM and D-SGD over topologies: accuracy against the spectral gap.

Runs ``experiments/sweeps/topologies.toml`` (6 topologies × n ∈ {16, 64, 256} × D-EM/D-SGD ×
3 seeds = 108 runs, 100 rounds of the FedEM recipe, Metropolis weights) with the resumable
sweep runner, then writes a table of final mean / p10 test accuracy (mean over seeds) and a
figure of accuracy against spectral gap.  Re-running skips finished runs.

    python experiments/sweep_topologies.py --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from p2p_fmtl.sweep import run_sweep

HERE = Path(__file__).resolve().parent
SWEEP = HERE / "sweeps" / "topologies.toml"
OUT = HERE / "results" / "sweep_topologies"
TOPOLOGIES = ["ring", "torus", "erdos_renyi", "small_world", "exponential", "complete"]


def load_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["status"] == "complete"]


def aggregate(rows):
    groups = defaultdict(list)
    for r in rows:
        groups[(r["algorithm.name"], r["topology.name"], int(r["topology.n"]))].append(r)
    out = {}
    for key, rs in groups.items():
        out[key] = {
            "acc": float(np.mean([float(r["test_acc"]) for r in rs])),
            "acc_sd": float(np.std([float(r["test_acc"]) for r in rs])),
            "p10": float(np.mean([float(r["test_acc_p10"]) for r in rs])),
            "gap": float(np.mean([float(r["spectral_gap"]) for r in rs])),
            "seeds": len(rs),
        }
    return out


def table(agg) -> str:
    sizes = sorted({k[2] for k in agg})
    head = "| topology | " + " | ".join(f"n={n} D-EM | n={n} D-SGD" for n in sizes) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(sizes))]
    for topo in TOPOLOGIES:
        cells = []
        for n in sizes:
            for alg in ("dem", "dsgd"):
                a = agg.get((alg, topo, n))
                cells.append(
                    "–"
                    if a is None
                    else f"{100 * a['acc']:.1f} / {100 * a['p10']:.1f} (gap {a['gap']:.3f})"
                )
        lines.append(f"| {topo} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(agg, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({k[2] for k in agg})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
    markers = {16: "o", 64: "s", 256: "^"}
    for ax, alg, title in zip(axes, ("dem", "dsgd"), ("D-EM", "D-SGD"), strict=True):
        for i, topo in enumerate(TOPOLOGIES):
            for n in sizes:
                a = agg.get((alg, topo, n))
                if a is None:
                    continue
                ax.errorbar(
                    max(a["gap"], 1e-4),
                    100 * a["acc"],
                    yerr=100 * a["acc_sd"],
                    fmt=markers.get(n, "o"),
                    color=f"C{i}",
                    ms=7,
                    capsize=2,
                )
        ax.set_xscale("log")
        ax.set_xlabel("spectral gap of W (log scale)")
        ax.set_title(f"{title}: mean test accuracy after 100 rounds")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("mean test accuracy (%), ± sd over 3 seeds")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=f"C{i}", marker="o", ls="", label=t) for i, t in enumerate(TOPOLOGIES)
    ]
    handles += [
        Line2D([], [], color="0.3", marker=m, ls="", label=f"n = {n}") for n, m in markers.items()
    ]
    fig.legend(handles=handles, loc="center right", fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    result = run_sweep(SWEEP, out=OUT, jobs=args.jobs, quiet=False)
    agg = aggregate(load_rows(result.sweep_csv))
    text = table(agg)
    figure(agg, OUT / "accuracy_vs_gap.png")
    print(text)
    if not args.no_record:
        sys.path.insert(0, str(HERE))
        from reproduce_fedem_synthetic import write_section

        note = (
            "Cells: mean / p10 test accuracy (%) over 3 seeds, and the spectral gap of the "
            "Metropolis matrix.\n\n![accuracy vs gap](results/sweep_topologies/"
            "accuracy_vs_gap.png)"
        )
        write_section(HERE / "RESULTS.md", "sweep_topologies", text + "\n\n" + note)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
