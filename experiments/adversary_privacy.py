"""Byzantine nodes against robust gossip, and accuracy against the privacy budget.

Part 1 (robustness): D-SGD on FedEM synthetic data (30 nodes, linear model, the FedEM
recipe's optimizer: SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, one local
epoch), ``ROUNDS`` rounds, on a ring, a small world (k = 4, beta = 0.1) and an
Erdős–Rényi graph (p = 0.3), Metropolis weights.  A fixed set of 0, 10, 20 or 30 % of the
nodes is Byzantine, with each attack (``sign_flip`` k = 10, ``gaussian`` std 10, ``alie``
with the paper's z, ``label_flip``), against each aggregator (plain gossip,
``clipped_gossip`` with the paper's adaptive radius, ``trimmed_mean`` b = 1, ``median``).
Reported: the test accuracy of the honest nodes (mean over nodes, weighted by test
samples), mean over seeds.

Part 2 (privacy): D-SGD, D-EM (M = 3) and graph_mtl on the same data and an Erdős–Rényi
graph (p = 0.3), DP-SGD with clip norm 1 and noise multipliers ``SIGMAS`` (and no
privacy); epsilon of each node at delta = 1e-5 from dp-accounting's RDP accountant;
reported: honest test accuracy against the largest epsilon of a node.

Every configuration runs as one resumable sweep (``p2p_fmtl.sweep``, in this process, so
runs of the same shapes share compiled programs) under ``results/adversary_privacy/``;
a rerun skips finished runs.  Writes ``results.csv``, the figures ``robustness.png`` and
``privacy.png`` there and the section ``adversary_privacy`` of ``experiments/RESULTS.md``.

    python experiments/adversary_privacy.py            # the study
    python experiments/adversary_privacy.py --quick    # a smoke run (temporary directory)
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from p2p_fmtl.sweep import run_sweep

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "adversary_privacy"
ROUNDS = 60
SEEDS = [0, 1]
N = 30
FRACTIONS = [0.0, 0.1, 0.2, 0.3]
ATTACKS = {
    "sign_flip": {"kind": "sign_flip", "scale": 10.0},
    "gaussian": {"kind": "gaussian", "scale": 10.0},
    "alie": {"kind": "alie"},
    "label_flip": {"kind": "label_flip"},
}
AGGREGATORS = {
    "gossip": {"robust": "none"},
    "clipped gossip": {"robust": "clipped_gossip"},
    "trimmed mean (b=1)": {"robust": "trimmed_mean", "trim": 1},
    "median": {"robust": "median"},
}
GRAPHS = {
    "ring": {"name": "ring"},
    "small world": {"name": "small_world", "k": 4, "beta": 0.1},
    "ER p=0.3": {"name": "erdos_renyi", "p": 0.3},
}
SIGMAS = [0.5, 2.0, 8.0, 32.0]
PRIVATE_METHODS = {
    "D-SGD": {"name": "dsgd"},
    "D-EM": {"name": "dem", "components": 3},
    "graph_mtl": {"name": "graph_mtl"},
}
TRAINING = {
    "lr": 0.1,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 128,
    "local_epochs": 1,
}
CHANCE = 0.5  # binary labels: the accuracy of a constant guess
COLUMNS = ["part", "graph", "aggregator", "attack", "method", "fraction", "sigma", "seed"]
COLUMNS += ["status", "test_acc", "test_acc_p10", "epsilon_max", "error", "run_id"]


def base(rounds: int, graph: str, algorithm: dict) -> dict:
    return {
        "run": {"rounds": rounds, "eval_every": rounds},
        "topology": {"n": N, "mixing": "metropolis", **GRAPHS[graph]},
        "data": {"name": "fedem_synthetic", "n_test": 200},
        "model": {"name": "linear"},
        "algorithm": {**TRAINING, **algorithm},
    }


def sweeps(args):
    """(labels, sweep spec) of every configuration of the study."""
    for graph in args.graphs if args.part in ("all", "robust") else []:
        for agg in args.aggregators:
            for attack in args.attacks:
                spec = {
                    "base": {
                        **base(args.rounds, graph, {"name": "dsgd", **AGGREGATORS[agg]}),
                        "attack": dict(ATTACKS[attack]),
                    },
                    "grid": {"attack.fraction": list(args.fractions), "run.seed": args.seeds},
                }
                yield {"part": "robust", "graph": graph, "aggregator": agg, "attack": attack}, spec
    for method in args.methods if args.part in ("all", "privacy") else []:
        sigmas = [0.0, *args.sigmas]  # 0: privacy off
        for sigma in sigmas:
            cfg = base(args.rounds, "ER p=0.3", PRIVATE_METHODS[method])
            if sigma > 0:
                cfg["privacy"] = {"enabled": True, "clip_norm": 1.0, "noise_multiplier": sigma}
            spec = {"base": cfg, "grid": {"run.seed": args.seeds}}
            yield {"part": "privacy", "method": method, "sigma": sigma}, spec


def slug(labels: dict) -> str:
    text = "_".join(str(v) for v in labels.values())
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


def run_all(args, out: Path) -> list[dict]:
    rows = []
    for labels, spec in sweeps(args):
        res = run_sweep(spec, out=out / labels["part"] / slug(labels), jobs=1, quiet=True)
        with open(res.sweep_csv, newline="") as f:
            for r in csv.DictReader(f):
                rows.append(
                    {
                        **{k: "" for k in COLUMNS},
                        **labels,
                        "fraction": r.get("attack.fraction", ""),
                        "seed": r["run.seed"],
                        **{k: r.get(k, "") for k in COLUMNS[8:]},
                    }
                )
        done = sum(r["status"] == "complete" for r in rows)
        print(f"{labels}: {res.ran} ran, {res.skipped} cached ({done} complete)", flush=True)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def aggregate(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, dict]:
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(str(r[k]) for k in keys)].append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r["status"] == "complete"]
        # a run the divergence guard stopped: the attack blew the honest models up (their
        # predictions are then a constant guess, CHANCE)
        div = [r for r in rs if r["status"] != "complete" and "diverged" in r["error"]]
        acc = [_num(r["test_acc"]) for r in ok] + [CHANCE] * len(div)
        eps = [_num(r["epsilon_max"]) for r in ok]
        out[key] = {
            "acc": float(np.mean(acc)) if acc else math.nan,
            "sd": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
            "eps": float(np.mean(eps)) if ok else math.nan,
            "diverged": len(div),
            "failed": len(rs) - len(ok) - len(div),
        }
    return out


def robustness_tables(rows: list[dict], args) -> str:
    agg = aggregate(
        [r for r in rows if r["part"] == "robust"], ("graph", "attack", "aggregator", "fraction")
    )
    parts = []
    for graph in args.graphs:
        head = (
            "| attack | aggregator | "
            + " | ".join(f"{100 * f:.0f} %" for f in args.fractions)
            + " |"
        )
        lines = [f"**{graph}** (honest test accuracy %, by Byzantine share)", "", head]
        lines.append("|---|---|" + "---:|" * len(args.fractions))
        for attack in args.attacks:
            for a in args.aggregators:
                cells = []
                for f in args.fractions:
                    v = agg.get((graph, attack, a, str(f)))
                    ok = v is not None and not math.isnan(v["acc"])
                    mark = "†" * bool(ok and v["diverged"])
                    cells.append(f"{100 * v['acc']:.1f}{mark}" if ok else "×")
                lines.append(f"| {attack} | {a} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def privacy_table(rows: list[dict], args) -> str:
    agg = aggregate([r for r in rows if r["part"] == "privacy"], ("method", "sigma"))
    lines = [
        "| method | noise multiplier | epsilon (largest node, delta 1e-5) | honest test acc % |"
    ]
    lines.append("|---|---:|---:|---:|")
    for m in args.methods:
        for s in [0.0, *args.sigmas]:
            v = agg.get((m, str(s)))
            if v is None:
                continue
            eps = "∞ (no privacy)" if s == 0 else f"{v['eps']:.3g}"
            lines.append(f"| {m} | {s:g} | {eps} | {100 * v['acc']:.1f} ± {100 * v['sd']:.1f} |")
    return "\n".join(lines)


def figures(rows: list[dict], args, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(
        [r for r in rows if r["part"] == "robust"], ("graph", "attack", "aggregator", "fraction")
    )
    fig, axes = plt.subplots(
        len(args.graphs),
        len(args.attacks),
        figsize=(3.2 * len(args.attacks), 2.7 * len(args.graphs)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    xs = [100 * f for f in args.fractions]
    for i, graph in enumerate(args.graphs):
        for j, attack in enumerate(args.attacks):
            ax = axes[i, j]
            for k, a in enumerate(args.aggregators):
                ys = [
                    100 * agg.get((graph, attack, a, str(f)), {"acc": math.nan})["acc"]
                    for f in args.fractions
                ]
                ax.plot(xs, ys, marker="o", ms=3, color=f"C{k}", label=a)
            ax.set_title(f"{graph} · {attack}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(args.graphs) - 1:
                ax.set_xlabel("Byzantine nodes (%)")
            if j == 0:
                ax.set_ylabel("honest test acc (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(out / "robustness.png", dpi=110)
    plt.close(fig)

    pagg = aggregate([r for r in rows if r["part"] == "privacy"], ("method", "sigma"))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for k, m in enumerate(args.methods):
        pts = [
            (pagg[(m, str(s))]["eps"], pagg[(m, str(s))]["acc"])
            for s in args.sigmas
            if (m, str(s)) in pagg
        ]
        pts = sorted(p for p in pts if not math.isnan(p[0]))
        if pts:
            ax.plot(
                [p[0] for p in pts], [100 * p[1] for p in pts], marker="o", color=f"C{k}", label=m
            )
        base_ = pagg.get((m, "0.0"))
        if base_ is not None:
            ax.axhline(100 * base_["acc"], color=f"C{k}", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("epsilon of the most exposed node (delta = 1e-5)")
    ax.set_ylabel("honest test acc (%)")
    ax.set_title("accuracy vs privacy budget (dotted: no privacy)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "privacy.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    ap.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=list(GRAPHS))
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    ap.add_argument(
        "--aggregators", nargs="+", default=list(AGGREGATORS), choices=list(AGGREGATORS)
    )
    ap.add_argument(
        "--methods", nargs="+", default=list(PRIVATE_METHODS), choices=list(PRIVATE_METHODS)
    )
    ap.add_argument("--sigmas", type=float, nargs="+", default=SIGMAS)
    ap.add_argument("--out", type=Path, help=f"results directory (default {OUT})")
    ap.add_argument(
        "--part",
        choices=("all", "robust", "privacy"),
        default="all",
        help="run one part only (with --no-record; a last plain run writes the tables)",
    )
    ap.add_argument("--quick", action="store_true", help="a smoke run into a temporary directory")
    ap.add_argument("--no-record", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seeds, args.fractions = 2, [0], [0.0, 0.2]
        args.graphs, args.attacks, args.aggregators = ["ring"], ["sign_flip"], ["gossip", "median"]
        args.methods, args.sigmas, args.no_record = ["D-SGD"], [1.0], True
        with tempfile.TemporaryDirectory(prefix="adversary_privacy_") as tmp:
            args.out = Path(tmp)
            return study(args)
    args.out = OUT if args.out is None else args.out
    return study(args)


def study(args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run_all(args, args.out)
    write_csv(args.out / "results.csv", rows)
    figures(rows, args, args.out)
    body = (
        f"D-SGD (part 1) and D-SGD / D-EM / graph_mtl (part 2) on FedEM synthetic data, {N} "
        f"nodes, {args.rounds} rounds, seeds {', '.join(map(str, args.seeds))}; accuracy of "
        "the honest nodes, mean over seeds. Byzantine nodes: a fixed set drawn from the seed. "
        "† : at least one seed diverged (the divergence guard stopped it: the attack blew "
        "the honest models up), counted at chance accuracy (50 %).\n\n"
        + robustness_tables(rows, args)
        + "\n\n![honest accuracy vs Byzantine share](results/adversary_privacy/robustness.png)\n\n"
        + privacy_table(rows, args)
        + "\n\n![accuracy vs epsilon](results/adversary_privacy/privacy.png)"
    )
    failed = [r for r in rows if r["status"] != "complete" and "diverged" not in r["error"]]
    if failed:
        body += "\n\nNot complete:\n\n" + "\n".join(
            f"- {r['part']} {r['graph']} {r['aggregator']} {r['attack']} {r['method']} "
            f"f={r['fraction']} sigma={r['sigma']} seed {r['seed']}: {r['status']}: {r['error']}"
            for r in failed
        )
    print(body)
    if not args.no_record:
        sys.path.insert(0, str(HERE))
        from reproduce_fedem_synthetic import write_section

        write_section(HERE / "RESULTS.md", "adversary_privacy", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
