"""Consensus convergence of gossip averaging against spectral theory.

The ``average`` algorithm (no data, no training: random vectors, gossip only) on ring,
torus, Erdős–Rényi (p = 0.1), small-world (k = 4, β = 0.1), exponential and complete
graphs with Metropolis weights, n ∈ {16, 64, 256}.  For a static symmetric W the
consensus distance decays like ‖X₀ − X̄‖²/N · |λ₂(W)|^(2t).  The script measures the
per-round decay rate (geometric mean of d_{t+1}/d_t over the window where
1e-12 < d_t/d_0 < 1e-5 (late enough for the slowest mode to dominate,
above the float32 floor), or the tail of the run) and compares it with |λ₂|².

    python experiments/consensus_convergence.py            # writes results/ and RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from p2p_fmtl import load_config, run

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "consensus"
TOPOLOGIES = {
    "ring": {},
    "torus": {},
    "erdos_renyi": {"p": 0.1},
    "small_world": {"k": 4, "beta": 0.1},
    "exponential": {},
    "complete": {},
}
SIZES = (16, 64, 256)


def simulate(name: str, n: int, rounds: int, seed: int = 0):
    """Consensus distance per round and the spectral gap, from a real ``average`` run."""
    params = dict(TOPOLOGIES[name])
    if name == "erdos_renyi":
        params["p"] = max(params["p"], 3 * np.log(n) / n)  # connected with high probability
    cfg = load_config(
        {
            "run": {"rounds": rounds, "eval_every": 1, "seed": seed},
            "topology": {"name": name, "n": n, "mixing": "metropolis", **params},
            "algorithm": {"name": "average", "dim": 64},
        }
    )
    res = run(cfg)
    d = np.array([r["consensus_distance"] for r in res.metrics])
    return d, res.summary["spectral_gap"]


def measured_rate(d: np.ndarray) -> float:
    """Per-round decay over the window 1e-12 < d_t/d_0 < 1e-5 (else the tail)."""
    rel = d / d[0]
    inside = np.flatnonzero((rel < 1e-5) & (rel > 1e-12))
    if len(inside) >= 3:
        a, b = inside[0], inside[-1]
    elif rel[1] < 1e-12:  # exact (or numerically exact) consensus in one round
        return 0.0
    else:
        a, b = len(d) // 2, len(d) - 1
    return float((d[b] / d[a]) ** (1.0 / (b - a)))


def measure(names=tuple(TOPOLOGIES), sizes=SIZES, rounds: int = 300):
    rows, curves = [], {}
    for n in sizes:
        for name in names:
            d, gap = simulate(name, n, rounds)
            theory = (1.0 - gap) ** 2
            rate = measured_rate(d)
            rel = abs(rate - theory) / theory if theory > 1e-12 else abs(rate)
            rows.append(
                {
                    "topology": name,
                    "n": n,
                    "gap": gap,
                    "theory": theory,
                    "measured": rate,
                    "rel_error": rel,
                }
            )
            curves[(name, n)] = (d, gap)
    return rows, curves


def figure(curves, sizes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4.2), sharey=True)
    for ax, n in zip(np.atleast_1d(axes), sizes, strict=True):
        for i, name in enumerate(TOPOLOGIES):
            if (name, n) not in curves:
                continue
            d, gap = curves[(name, n)]
            t = np.arange(len(d))
            rel = d / d[0]
            keep = rel > 1e-13
            ax.plot(t[keep], rel[keep], color=f"C{i}", label=name)
            pred = (1 - gap) ** (2 * t)
            ok = pred > 1e-13
            ax.plot(t[ok], pred[ok], color=f"C{i}", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_ylim(1e-13, 2)
        ax.set_xlabel("round")
        ax.set_title(f"n = {n}")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("consensus distance / initial")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=9, frameon=False)
    fig.suptitle(
        "Gossip averaging (Metropolis weights): measured (solid) vs |λ₂|^(2t) (dashed); "
        "spectral gaps in the table"
    )
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    rows, curves = measure(rounds=args.rounds)
    OUT.mkdir(parents=True, exist_ok=True)
    figure(curves, SIZES, OUT / "consensus.png")
    lines = [
        "| topology | n | spectral gap | \\|λ₂\\|² | measured rate per round | relative error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['topology']} | {r['n']} | {r['gap']:.4f} | {r['theory']:.4f} | "
            f"{r['measured']:.4f} | {100 * r['rel_error']:.2f} % |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        sys.path.insert(0, str(HERE))
        from reproduce_fedem_synthetic import write_section

        write_section(
            HERE / "RESULTS.md",
            "consensus",
            table + "\n\n![consensus](results/consensus/consensus.png)",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
