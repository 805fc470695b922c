"""Personalised FL methods side by side: every method on three graphs, two sizes, three datasets.

Methods (each with its own, paper-derived defaults): local, D-SGD, FedAvg+ (D-SGD, then
``algorithm.finetune_epochs = 1`` of local fine-tuning), FedProx, pFedMe, APFL, Ditto,
FedRep (the model's last layer personal: ``head = "last"``, the bias of the linear model),
IFCA, D-EM (M = 3) and graph_mtl.  Graphs: ring, Erdős–Rényi p = 0.2 and small world
(k = 4, beta = 0.1), n = 30 and 100, Metropolis weights.  Data (same optimizer, batch,
local epochs and rounds for every method of a dataset):

* ``fedem_synthetic`` (corrected variant: every sample labelled by its own component;
  500 test samples per node), linear model, SGD lr 0.1 momentum 0.9 weight decay 5e-4,
  batch 128, lr x 0.1 at 50 % and 75 % of the rounds (the FedEM recipe);
* ``mnist1d``, mixture partition (3 label-permutation components, node weights ~ Dir(0.1)),
* ``digits``, Dirichlet partition (alpha = 0.3),

the last two with an MLP (64), SGD lr 0.05 momentum 0.9, batch 32 (as in
``real_data.py`` part 2).  One local epoch per round everywhere.  Seeds 0, 1, 2
(``run.seed``): each seed draws the graph, the initialization and the batch order.  The
data (and partition) stay fixed at the data set's default ``data.seed`` (12345 for FedEM
synthetic, 0 otherwise): another partition changes the node data's array shapes, so every
seed would compile its own programs (15-35 s each on the loaded 2-core machine, most of
this study's time); with fixed data, the 9 runs (3 graphs x 3 seeds) of a (dataset,
method, n) reuse one compiled program.

11 methods x 3 datasets x 6 graphs x 3 seeds = 594 runs of ``ROUNDS`` = 100 rounds (what
the budget allowed: the study took 35 min as two ``--shard`` processes on a shared, loaded
2-core machine, 67 min of run time of which 61 % compilation), run as one resumable sweep
per (dataset, method) (``p2p_fmtl.sweep`` in this process, so that runs of the same shapes
share compiled programs; runs under ``results/pfl_compare/<dataset>/<method>/``); a rerun
skips finished runs.  ``--shard K/N`` runs every N-th (dataset, method) pair, so N
processes can share the work; a last plain invocation then finds every run cached and
writes the tidy table ``results/pfl_compare/results.csv``, the figure ``pfl_compare.png``
and the section ``pfl_compare`` of ``experiments/RESULTS.md``.

    python experiments/pfl_compare.py --shard 0/2 --no-record & \
    python experiments/pfl_compare.py --shard 1/2 --no-record; wait
    python experiments/pfl_compare.py          # tables, figure, RESULTS.md
    python experiments/pfl_compare.py --quick   # a smoke run (2 runs, into a temporary dir)
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from p2p_fmtl import load_config
from p2p_fmtl.sweep import run_sweep

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "pfl_compare"
ROUNDS = 100
SEEDS = [0, 1, 2]
SIZES = [30, 100]

SGD_MLP = {
    "lr": 0.05,
    "optimizer": "sgd",
    "momentum": 0.9,
    "batch_size": 32,
    "local_epochs": 1,
}
DATASETS = {
    "fedem_synthetic": {
        "data": {"name": "fedem_synthetic", "variant": "corrected", "n_test": 500},
        "model": {"name": "linear"},
        "algorithm": {
            "lr": 0.1,
            "optimizer": "sgd",
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "batch_size": 128,
            "local_epochs": 1,
            "schedule": "multistep",
            "milestones": [0.5, 0.75],
            "gamma": 0.1,
        },
    },
    "mnist1d": {
        "data": {
            "name": "mnist1d",
            "partition": "mixture",
            "components": 3,
            "transform": "label",
            "alpha": 0.1,
        },
        "model": {"name": "mlp", "hidden": [64]},
        "algorithm": SGD_MLP,
    },
    "digits": {
        "data": {"name": "digits", "partition": "dirichlet", "alpha": 0.3},
        "model": {"name": "mlp", "hidden": [64]},
        "algorithm": SGD_MLP,
    },
}
DATA_LABEL = {
    "fedem_synthetic": "FedEM synthetic (corrected), linear",
    "mnist1d": "MNIST-1D, mixture partition, MLP (64)",
    "digits": "digits, Dirichlet (alpha 0.3), MLP (64)",
}
# label -> [algorithm] keys beyond the dataset's optimizer keys (all else: the defaults)
METHODS = {
    "local": {"name": "local"},
    "dsgd": {"name": "dsgd"},
    "fedavg+": {"name": "dsgd", "finetune_epochs": 1},
    "fedprox": {"name": "fedprox"},
    "pfedme": {"name": "pfedme"},
    "apfl": {"name": "apfl"},
    "ditto": {"name": "ditto"},
    "fedrep": {"name": "fedrep", "head": "last"},
    "ifca": {"name": "ifca"},
    "dem": {"name": "dem", "components": 3},
    "graph_mtl": {"name": "graph_mtl"},
}
GRAPHS = {  # label -> topology name; Erdős–Rényi's p comes from the base config
    "ring": "ring",
    "ER p=0.2": "erdos_renyi",
    "small world": "small_world",
}
TOPO_LABEL = {v: k for k, v in GRAPHS.items()}
CHANCE = {"fedem_synthetic": 50, "mnist1d": 10, "digits": 10}  # accuracy of a constant guess (%)
COLUMNS = ["dataset", "method", "topology", "n", "seed", "status", "test_acc", "test_acc_p10"]
COLUMNS += ["bytes_total", "train_loss", "wall_s", "error", "run_id"]


# ----------------------------------------------------------------------------- running
def base_config(dataset: str, method: str, rounds: int) -> dict:
    """The full config of one (dataset, method) pair; the sweep varies graph, n and seed."""
    d = DATASETS[dataset]
    return {
        "run": {"rounds": rounds, "eval_every": rounds},
        "topology": {"name": "erdos_renyi", "p": 0.2, "mixing": "metropolis"},
        "data": dict(d["data"]),
        "model": dict(d["model"]),
        "algorithm": {**d["algorithm"], **METHODS[method]},
    }


def available(dataset: str, method: str) -> str | None:
    """None if the method's config loads, else the one-line reason (e.g. an unknown key)."""
    try:
        load_config(base_config(dataset, method, 1))
        return None
    except Exception as e:  # a key not (yet) in this version of the package
        return str(e)


def sweep_spec(dataset: str, method: str, rounds: int, graphs, sizes, seeds) -> dict:
    grid = {"topology.n": list(sizes), "topology.name": list(graphs), "run.seed": list(seeds)}
    return {"base": base_config(dataset, method, rounds), "grid": grid}


def run_all(args, out: Path) -> tuple[list[dict], dict[tuple, str]]:
    """Run (or resume) every (dataset, method) sweep; tidy rows and unavailable methods."""
    rows, missing = [], {}
    pairs = [(d, m) for d in args.datasets for m in args.methods]
    for dataset, method in pairs[args.shard[0] :: args.shard[1]]:
        why = available(dataset, method)
        if why is not None:
            missing[(dataset, method)] = why
            print(f"skipped {dataset} / {method}: {why}", file=sys.stderr)
            continue
        spec = sweep_spec(dataset, method, args.rounds, args.graphs, args.sizes, args.seeds)
        t0 = time.perf_counter()
        res = run_sweep(spec, out=out / dataset / method, jobs=1, quiet=True)
        took = time.perf_counter() - t0
        new = tidy(res.sweep_csv, dataset, method)
        bad = sum(r["status"] != "complete" for r in new)
        print(
            f"{dataset:16s} {method:10s} {res.ran:3d} ran, {res.skipped:3d} cached, "
            f"{bad} not complete, {took:6.1f} s",
            flush=True,
        )
        rows += new
    return rows, missing


def tidy(sweep_csv: Path, dataset: str, method: str) -> list[dict]:
    with open(sweep_csv, newline="") as f:
        raw = list(csv.DictReader(f))
    return [
        {
            "dataset": dataset,
            "method": method,
            "topology": r["topology.name"],
            "n": int(r["topology.n"]),
            "seed": int(r["run.seed"]),
            **{k: r.get(k, "") for k in COLUMNS[5:]},
        }
        for r in raw
    ]


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write atomically (a temporary file renamed over the old one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- tables
def aggregate(rows: list[dict]) -> dict[tuple, dict]:
    """(dataset, method, topology, n) -> mean / sd / p10 / MB over complete seeds, failures."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["method"], r["topology"], int(r["n"]))].append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r["status"] == "complete"]
        acc = [float(r["test_acc"]) for r in ok]
        out[key] = {
            "seeds": len(ok),
            "failed": [r for r in rs if r["status"] != "complete"],
            "acc": float(np.mean(acc)) if ok else math.nan,
            "sd": float(np.std(acc, ddof=1)) if len(ok) > 1 else 0.0,
            "p10": float(np.mean([float(r["test_acc_p10"]) for r in ok])) if ok else math.nan,
            "mb": float(np.mean([float(r["bytes_total"]) for r in ok])) / 1e6 if ok else math.nan,
        }
    return out


def fmt_mb(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def cell(a: dict | None, best: bool) -> str:
    if a is None:
        return "–"
    if not a["seeds"]:
        return "× (failed)"
    acc = f"{100 * a['acc']:.1f} ± {100 * a['sd']:.1f}"
    acc = f"**{acc}**" if best else acc
    mark = f" ×{len(a['failed'])}" if a["failed"] else ""
    return f"{acc}{mark} · {100 * a['p10']:.1f} · {fmt_mb(a['mb'])}"


def tables(agg: dict, args, missing: dict) -> str:
    setups = [(t, n) for t in args.graphs for n in args.sizes]
    parts = []
    for dataset in args.datasets:
        head = "| method | " + " | ".join(f"{TOPO_LABEL[t]}, n={n}" for t, n in setups) + " |"
        lines = [f"**{DATA_LABEL[dataset]}**", "", head, "|---|" + "---:|" * len(setups)]
        best = {}
        for t, n in setups:
            vals = [agg[k]["acc"] for k in agg if k[0] == dataset and k[2:] == (t, n)]
            vals = [v for v in vals if not math.isnan(v)]
            best[(t, n)] = max(vals) if vals else None
        for method in args.methods:
            if (dataset, method) in missing:
                lines.append(f"| {method} | " + " | ".join("× (not run)" for _ in setups) + " |")
                continue
            cells = []
            for t, n in setups:
                a = agg.get((dataset, method, t, n))
                cells.append(cell(a, a is not None and a["acc"] == best[(t, n)]))
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def failures(rows: list[dict], missing: dict) -> str:
    lines = [
        f"- {r['dataset']} / {r['method']} / {r['topology']} n={r['n']} seed {r['seed']}: "
        f"{r['status']}: {r['error']}"
        for r in rows
        if r["status"] != "complete"
    ]
    lines += [f"- {d} / {m}: not run: {why}" for (d, m), why in missing.items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figure
def figure(agg: dict, args, path: Path) -> None:
    """Per dataset: grouped bars of mean accuracy (± sd) per method and graph, p10 as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    setups = [(t, n) for n in args.sizes for t in args.graphs]
    colors = {30: ["#9ecae1", "#a1d99b", "#fdae6b"], 100: ["#3182bd", "#31a354", "#e6550d"]}
    fig, axes = plt.subplots(len(args.datasets), 1, figsize=(13, 3.6 * len(args.datasets)))
    axes = np.atleast_1d(axes)
    width = 0.8 / len(setups)
    x = np.arange(len(args.methods))
    for ax, dataset in zip(axes, args.datasets, strict=True):
        for j, (t, n) in enumerate(setups):
            a = [agg.get((dataset, m, t, n)) for m in args.methods]
            acc = [100 * v["acc"] if v and v["seeds"] else np.nan for v in a]
            sd = [100 * v["sd"] if v and v["seeds"] else 0 for v in a]
            p10 = [100 * v["p10"] if v and v["seeds"] else np.nan for v in a]
            xs = x - 0.4 + (j + 0.5) * width
            color = colors[n][args.graphs.index(t) % 3] if n in colors else f"C{j}"
            ax.bar(xs, acc, width, yerr=sd, color=color, capsize=1.5, error_kw={"lw": 0.7})
            ax.plot(xs, p10, "_", color="k", ms=6, mew=1.5)
            for xi, v in zip(xs, acc, strict=True):
                if np.isnan(v):
                    ax.text(xi, 1, "×", ha="center", va="bottom", color="red", fontsize=9)
        ax.set_xticks(x, args.methods)
        ax.set_xlim(-0.5, len(args.methods) - 0.5)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{DATA_LABEL[dataset]}: mean over nodes (bars, ± sd over seeds), p10 (—)")
        ax.grid(axis="y", alpha=0.3)
        mine = [v for k, v in agg.items() if k[0] == dataset and v["seeds"]]
        lo = min([100 * v["p10"] for v in mine], default=0)
        hi = max([100 * (v["acc"] + v["sd"]) for v in mine], default=100)
        ax.set_ylim(max(0, 5 * math.floor(lo / 5 - 0.5)), min(100, 5 * math.ceil(hi / 5 + 0.5)))
        ax.axhline(CHANCE[dataset], color="0.3", ls=":", lw=1.2)  # clipped if below
    handles = [
        Patch(color=colors[n][args.graphs.index(t) % 3] if n in colors else f"C{j}")
        for j, (t, n) in enumerate(setups)
    ]
    labels = [f"{TOPO_LABEL[t]}, n={n}" for t, n in setups]
    handles.append(Line2D([], [], color="k", marker="_", ls="", ms=8, mew=1.5))
    labels.append("p10 of per-node accuracy")
    handles.append(Line2D([], [], color="0.3", ls=":", lw=1.2))
    labels.append("chance")
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def shard(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"got {text!r}, expected K/N with 0 <= K < N")
    return int(k), int(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shard", type=shard, default=(0, 1), help="K/N: every N-th pair from K")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    ap.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--graphs", nargs="+", default=list(GRAPHS.values()))
    ap.add_argument(
        "--out", type=Path, help=f"results directory (default {OUT}; --quick: a temporary one)"
    )
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (implies --no-record)")
    ap.add_argument("--no-record", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args(argv)
    for g in args.graphs:
        if g not in TOPO_LABEL:
            ap.error(f"--graphs: got {g!r}, allowed: {', '.join(TOPO_LABEL)}")
    if args.quick:
        args.rounds, args.seeds, args.sizes = 2, [0], [8]
        args.datasets, args.graphs = ["digits"], ["ring"]
        args.methods = ["local", "dem"]
        args.no_record = True
        if args.out is None:
            with tempfile.TemporaryDirectory(prefix="pfl_compare_quick_") as tmp:
                args.out = Path(tmp)
                return study(args)
    args.out = OUT if args.out is None else args.out
    return study(args)


def study(args) -> int:
    """Run (or resume) the study of ``args``; write the CSV, figure and tables."""
    args.out.mkdir(parents=True, exist_ok=True)
    rows, missing = run_all(args, args.out)
    if args.shard[1] > 1:  # one of several processes: the last, plain invocation writes
        return 0
    write_csv(args.out / "results.csv", rows)
    agg = aggregate(rows)
    figure(agg, args, args.out / "pfl_compare.png")
    run_min = sum(float(r["wall_s"] or 0) for r in rows) / 60
    n_runs = len(rows)
    body = (
        f"{args.rounds} rounds, seeds {', '.join(map(str, args.seeds))}, Metropolis weights. "
        "Cell: mean test accuracy (%) ± sd over seeds · p10 of per-node accuracy (%, mean "
        "over seeds) · MB sent by all nodes (mean over seeds); best mean per column in bold; "
        "× marks failed or diverged runs.\n\n"
        + tables(agg, args, missing)
        + "\n\n![methods x graphs](results/pfl_compare/pfl_compare.png)\n\n"
        + f"{n_runs} runs, {run_min:.0f} min of run time in all (compilation included: one "
        "compilation per dataset, method and n) on a shared 2-CPU machine."
    )
    fails = failures(rows, missing)
    if fails:
        body += "\n\nFailed or not run:\n\n" + fails
    print(body)
    if not args.no_record:
        sys.path.insert(0, str(HERE))
        from reproduce_fedem_synthetic import write_section

        write_section(HERE / "RESULTS.md", "pfl_compare", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
