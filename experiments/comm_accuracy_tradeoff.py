"""Communication–accuracy trade-off: accuracy against cumulative bytes sent.

D-SGD and D-EM on the 30-node FedEM recipe (Erdős–Rényi p = 0.5, Metropolis weights, 100
rounds).  Three studies, each a resumable sweep (finished runs are skipped on a re-run):

1. **γ check** (``sweeps/tradeoff_gamma.toml``, 60 runs): CHOCO's consensus step γ ∈ {0.02,
   0.05, 0.1, 0.2, 0.4} for each compressor (top-k 10 %, top-k 1 %, QSGD 4 bits), D-SGD and
   D-EM, E ∈ {1, 5} local epochs, gossip every round.  Kept per compressor: the largest γ
   whose consensus distance still shrinks by at least a quarter over the last quarter of the
   run (rounds 75 → 100, learning rate already decayed) in all four settings: the fastest
   consensus step that still converges.  Larger steps stall or blow up (top-k 1 % at γ = 0.05
   stalls and loses 3 points; at γ ≥ 0.1 it diverges).  The main sweep file must use these
   values (a warning says when it does not).
2. **Compression and gossip frequency** (``sweeps/tradeoff_compression.toml``, 72 runs): local
   work E ∈ {1, 2, 5} epochs × gossip every k ∈ {1, 2, 5} rounds × wire ∈ {float32, top-k
   10 %, top-k 1 %, QSGD s = 7 (4 bits incl. sign)} with CHOCO-gossip.  Table: per
   configuration, best and final mean accuracy, total MB sent by all nodes, MB sent when a
   target accuracy is first reached, and whether one of its evaluations lies on the
   algorithm's Pareto front (fewest bytes for the accuracy; round 0 left out).  Figure: one
   row of panels per algorithm, one panel per E, colour = wire, line style = k, log-x, the
   algorithm's front in black.

   **Consensus.**  A compressed run can score above an uncompressed one only because its
   nodes never agree (each keeps a partly local model).  An evaluation is marked *apart*
   when its consensus distance is above the largest consensus distance the uncompressed run
   of the same algorithm, E and gossip period ever had (rounds 1 to 100): the nodes are
   further apart than plain gossip ever lets them be.  The figure draws apart evaluations
   as open circles and a run still apart at its last evaluation with a cross; the table
   gives every run's final consensus distance (and its ratio to that reference), and marks
   with † the MB-to-target values read at an apart evaluation.
3. **Graph degree** (``sweeps/tradeoff.toml``, 18 runs): E ∈ {1, 2, 5} on a ring, the
   exponential graph and Erdős–Rényi, uncompressed, gossip every round (the first version of
   this study), drawn with ``p2p-fmtl plot`` kind ``tradeoff``.

    python experiments/comm_accuracy_tradeoff.py --jobs 2          # about 11 minutes on 2 cores
    python experiments/comm_accuracy_tradeoff.py --from-results    # redraw from the CSVs: seconds
"""

from __future__ import annotations

import argparse
import csv
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import numpy as np

from p2p_fmtl.plots import plot
from p2p_fmtl.sweep import run_sweep

HERE = Path(__file__).resolve().parent
SWEEPS = HERE / "sweeps"
RESULTS = HERE / "results"
GAMMA_SWEEP, GAMMA_OUT = SWEEPS / "tradeoff_gamma.toml", RESULTS / "tradeoff_gamma"
COMP_SWEEP, COMP_OUT = SWEEPS / "tradeoff_compression.toml", RESULTS / "tradeoff_compression"
DEGREE_SWEEP, DEGREE_OUT = SWEEPS / "tradeoff.toml", RESULTS / "tradeoff"
FIGURE = COMP_OUT / "tradeoff_compression.png"

ALGS = {"dem": "D-EM", "dsgd": "D-SGD"}
TARGETS = {"dem": (0.70, 0.72), "dsgd": (0.68, 0.70)}  # per algorithm: low, high
WIRES = ["none", "top_k 10%", "top_k 1%", "qsgd 4-bit"]
COLOURS = {
    "none": "k",
    "top_k 10%": "tab:blue",
    "top_k 1%": "tab:orange",
    "qsgd 4-bit": "tab:green",
}
STYLES = {1: "-", 2: "--", 5: ":"}
READING = (
    "Reading: compression reaches a given accuracy with fewer bytes. D-EM with QSGD 4-bit "
    "(γ = 0.4) reaches 72 % after 2.5 MB (E = 1 or 2, gossip every 2 rounds) against 7.7 MB "
    "for the cheapest uncompressed setting (E = 2, gossip every 5) and 23–39 MB for "
    "uncompressed gossip every round, and ends at 74.2 % (E = 2, every round, 10 MB) against "
    "75.7 % uncompressed (77 MB): QSGD sends 7.7× fewer bytes per message and CHOCO still "
    "reaches consensus. Top-k 10 % (γ = 0.2) stops at 71–72.6 % and top-k 1 % (γ = 0.02) at "
    "68–70.7 %: with these γ their public copies lag, so they are on the front only for the "
    "first few hundred kB. QSGD gossiping every 1 or 2 rounds owns the D-EM front from 0.5 "
    "to 7 MB; beyond that uncompressed D-EM with E = 5 does (up to 76.7 %). Gossip "
    "every 5 rounds hurts the compressed D-EM runs late in training (QSGD: 71 % best, "
    "68 % final; γ was tuned with gossip every round). D-SGD is different: a single model "
    "converges to 68.1 %, and the compressed runs score up to 71.5 % only while their nodes "
    "are still apart (partly personalized models), then fall back to 68.1–68.4 % as CHOCO "
    "reaches consensus (top-k 1 % is still apart at round 100: 70.4 %); its 70 % column "
    "measures that transient, not a better consensus model. MB to a target are read at the "
    "evaluations (every 10 rounds). Bytes per message: D-EM (M = 3 components) sends 1,812 B "
    "uncompressed, 368 B top-k 10 %, 40 B top-k 1 %, 235 B QSGD; D-SGD 604, 128, 24, 84 B. "
    "Consensus marks: every compressed run first reaches the targets while its nodes are further "
    "apart than the uncompressed run's ever are (†), so the MB-to-target savings are measured on "
    "partly local models. At round 100 all top-k 1 % runs, the top-k 10 % runs gossiping every 5 "
    "rounds and D-EM's QSGD runs gossiping every 5 rounds are still apart (27 of 54 compressed "
    "runs); D-EM's QSGD runs gossiping every 1 or 2 rounds are back at consensus (final distance "
    "0.03–0.3× the reference) at 71.7–74.2 % with 5–10 MB, against 73.6–76.7 % with 39–77 MB "
    "uncompressed at the same gossip periods."
)
SHRINK = 0.75  # γ check: consensus distance must shrink by a quarter over the last quarter
APART_LABEL = "nodes apart: consensus distance > the uncompressed run's peak"
APART_TEXT = (
    "*Consensus*: an evaluation is *apart* when its consensus distance is above the largest "
    "consensus distance of the uncompressed run with the same algorithm, E and gossip period "
    "(rounds 1–100): the nodes disagree more than plain gossip ever lets them, so the "
    "accuracy partly measures local models. Last column: final consensus distance and, in "
    "brackets, its ratio to that reference; **apart**: still apart at round 100 (open "
    "circles and crosses in the figure); †: the target was first reached at an apart "
    "evaluation."
)


def wire(r: dict) -> str:
    name = r["compression.name"]
    if name == "top_k":
        return f"top_k {100 * float(r['compression.ratio']):g}%"
    if name == "qsgd":
        bits = 1 + int(np.ceil(np.log2(int(r.get("compression.levels") or 7) + 1)))
        return f"qsgd {bits}-bit"
    return name


def histories(path: Path) -> dict[str, list[dict]]:
    runs = defaultdict(list)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            runs[r["run_id"]].append(r)
    return runs


# --------------------------------------------------------------------------- γ check
def choose_gamma(history: Path) -> tuple[dict[str, float], list[str]]:
    """Per wire, the largest γ whose consensus distance shrinks by ≥ 25 % in every run's last
    quarter; also the markdown lines of the check's table."""
    stable = defaultdict(lambda: defaultdict(list))  # wire -> gamma -> [ok per setting]
    detail = defaultdict(dict)  # (wire, gamma) -> {(alg, E): (final acc, final consensus)}
    for rows in histories(history).values():
        r0 = rows[0]
        w, g = wire(r0), float(r0["compression.gamma"])
        cons = [float(r["consensus_distance"]) for r in rows]
        q = cons[(3 * (len(cons) - 1)) // 4]
        stable[w][g].append(bool(np.isfinite(cons[-1]) and cons[-1] < SHRINK * q))
        key = (r0["algorithm.name"], int(r0["algorithm.local_epochs"]))
        detail[(w, g)][key] = (float(rows[-1]["test_acc"]), cons[-1])
    chosen = {}
    for w, by_g in stable.items():
        ok = [g for g, oks in by_g.items() if all(oks)]
        chosen[w] = max(ok) if ok else min(by_g)
    settings = sorted({k for d in detail.values() for k in d})
    head = " | ".join(f"{ALGS[a]} E={e}" for a, e in settings)
    lines = [
        f"| wire | γ | {head} | stable |",
        "|---|---:|" + "---:|" * len(settings) + "---|",
    ]
    for w in [x for x in WIRES if x in stable]:
        for g in sorted(stable[w]):
            cells = []
            for s in settings:
                acc, c = detail[(w, g)].get(s, (float("nan"), float("nan")))
                cells.append(f"{100 * acc:.1f} ({c:.2g})")
            mark = "yes" if all(stable[w][g]) else "no"
            if g == chosen[w]:
                mark += " **(chosen)**"
            lines.append(f"| {w} | {g:g} | " + " | ".join(cells) + f" | {mark} |")
    return chosen, lines


def file_gammas(sweep: Path) -> dict[str, float]:
    data = tomllib.loads(sweep.read_text())
    z = data["zip"]
    out = {}
    for name, ratio, g in zip(
        z["compression.name"], z["compression.ratio"], z["compression.gamma"], strict=True
    ):
        r = {"compression.name": name, "compression.ratio": ratio}
        r["compression.levels"] = data["set"].get("compression.levels", 7)
        if name != "none":
            out[wire(r)] = g
    return out


# --------------------------------------------------------------------------- main study
def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points no other point beats: fewer (or equal) bytes and higher accuracy."""
    order = np.lexsort((-y, x))
    on = np.zeros(len(x), bool)
    best = -np.inf
    for i in order:
        if y[i] > best:
            best = y[i]
            on[i] = True
    return on


def first_hit(acc, target: float) -> int | None:
    """Index of the first evaluation with mean accuracy >= target (None: never)."""
    hit = np.nonzero(np.asarray(acc) >= target)[0]
    return int(hit[0]) if len(hit) else None


def first_mb(mb, acc, target: float) -> float | None:
    """Cumulative MB at the first evaluation with mean accuracy >= target (None: never)."""
    i = first_hit(acc, target)
    return None if i is None else float(np.asarray(mb)[i])


def mb_cell(v: float | None, apart: bool = False) -> str:
    return "–" if v is None else f"{v:.2f}" + (" †" if apart else "")


def mark_apart(recs: list[dict]) -> None:
    """Per run, ``apart``: which evaluations have a consensus distance above the largest one
    of the uncompressed run with the same algorithm, E and gossip period (its reference,
    ``ref_cons``); None when the study has no such run."""
    ref = {
        (r["alg"], r["E"], r["k"]): float(np.nanmax(r["cons"][1:]))
        for r in recs
        if r["wire"] == "none"
    }
    for r in recs:
        peak = ref.get((r["alg"], r["E"], r["k"]))
        r["ref_cons"] = peak
        r["apart"] = None if peak is None else r["cons"] > peak


def cons_cell(r: dict) -> str:
    """Final consensus distance, its ratio to the reference and whether still apart."""
    c = r["cons"][-1]
    if r["ref_cons"] is None:
        return f"{c:.2g}"
    ratio = c / r["ref_cons"]
    cell = f"{c:.2g} ({ratio:.0f}×)" if ratio >= 10 else f"{c:.2g} ({ratio:.2g}×)"
    return cell + (" **apart**" if r["apart"][-1] else "")


def analyse(history: Path) -> list[dict]:
    """One record per configuration with its curve, summary numbers and Pareto flag."""
    recs = []
    for rid, rows in histories(history).items():
        r0 = rows[0]
        mb = np.array([float(r["bytes_total"]) / 1e6 for r in rows])
        acc = np.array([float(r["test_acc"]) for r in rows])
        cons = np.array([float(r["consensus_distance"]) for r in rows])
        alg = r0["algorithm.name"]
        recs.append(
            {
                "run_id": rid,
                "alg": alg,
                "E": int(r0["algorithm.local_epochs"]),
                "k": int(r0["algorithm.gossip_every"]),
                "wire": wire(r0),
                "gamma": float(r0["compression.gamma"])
                if r0["compression.name"] != "none"
                else None,
                "mb": mb,
                "acc": acc,
                "cons": cons,
                "best": float(acc.max()),
                "final": float(acc[-1]),
                "total_mb": float(mb[-1]),
                "hit": [first_hit(acc, t) for t in TARGETS[alg]],
                "mb_target": [first_mb(mb, acc, t) for t in TARGETS[alg]],
            }
        )
    mark_apart(recs)
    for alg in ALGS:
        rs = [r for r in recs if r["alg"] == alg]
        if not rs:
            continue
        xs = np.concatenate([r["mb"][1:] for r in rs])
        ys = np.concatenate([r["acc"][1:] for r in rs])
        on = pareto_mask(xs, ys)
        i = 0
        for r in rs:
            n = len(r["mb"]) - 1
            r["front"] = np.concatenate([[False], on[i : i + n]])
            i += n
    recs.sort(key=lambda r: (list(ALGS).index(r["alg"]), r["E"], r["k"], WIRES.index(r["wire"])))
    return recs


def front_of(recs: list[dict], alg: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [
        (x, y)
        for r in recs
        if r["alg"] == alg
        for x, y, f in zip(r["mb"], r["acc"], r["front"], strict=True)
        if f
    ]
    pts.sort()
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def table(recs: list[dict]) -> str:
    lines = [
        "| algorithm | E | gossip every | wire (γ) | best acc (%) | final acc (%) | total MB "
        "| MB to low target | MB to high target | Pareto | final consensus distance (× ref.) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in recs:
        g = "" if r["gamma"] is None else f" ({r['gamma']:g})"
        n_front = int(r["front"].sum())
        front = "–"
        if n_front:
            sel = r["mb"][r["front"]]
            span = f"{sel.min():.2g}" if n_front == 1 else f"{sel.min():.2g}–{sel.max():.2g}"
            front = f"**yes** ({n_front}: {span} MB)"
        targets = [
            mb_cell(v, i is not None and r["apart"] is not None and bool(r["apart"][i]))
            for v, i in zip(r["mb_target"], r["hit"], strict=True)
        ]
        lines.append(
            f"| {ALGS[r['alg']]} | {r['E']} | {r['k']} | {r['wire']}{g} | {100 * r['best']:.2f} "
            f"| {100 * r['final']:.2f} | {r['total_mb']:.2f} | {targets[0]} | {targets[1]} "
            f"| {front} | {cons_cell(r)} |"
        )
    return "\n".join(lines)


def best_saving(recs: list[dict]) -> list[str]:
    """Per algorithm and target: fewest MB to reach it, compressed vs uncompressed wire."""
    out = []
    for alg, name in ALGS.items():
        for i, target in enumerate(TARGETS[alg]):
            t = f"{100 * target:.0f} %"
            rs = [r for r in recs if r["alg"] == alg and r["mb_target"][i] is not None]
            plain = [r for r in rs if r["wire"] == "none"]
            comp = [r for r in rs if r["wire"] != "none"]

            def desc(r, i=i):
                j = r["hit"][i]
                apart = r["apart"] is not None and bool(r["apart"][j])
                return (
                    f"{r['mb_target'][i]:.2f} MB (E = {r['E']}, gossip every {r['k']}, {r['wire']}"
                    + (", nodes apart)" if apart else ")")
                )

            if not comp:
                out.append(f"{name} to {t}: no compressed configuration reaches it.")
                continue
            c = min(comp, key=lambda r, i=i: r["mb_target"][i])
            if not plain:
                out.append(f"{name} to {t}: only compressed runs reach it, best {desc(c)}.")
                continue
            p = min(plain, key=lambda r, i=i: r["mb_target"][i])
            ratio = p["mb_target"][i] / c["mb_target"][i]
            verdict = (
                f"compression needs {ratio:.1f}× fewer bytes"
                if ratio > 1
                else f"compression needs {1 / ratio:.1f}× more bytes"
            )
            out.append(
                f"{name} to {t}: best compressed {desc(c)}, best uncompressed {desc(p)}: {verdict}."
            )
    return out


def figure(recs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    es = sorted({r["E"] for r in recs})
    algs = {a: name for a, name in ALGS.items() if any(r["alg"] == a for r in recs)}
    fig, axes = plt.subplots(
        len(algs), len(es), figsize=(4.6 * len(es), 3.9 * len(algs)), sharex=True, squeeze=False
    )
    xmin = min(r["mb"][1] for r in recs) / 1.5
    xmax = max(r["mb"][-1] for r in recs) * 1.5
    for row, (alg, name) in enumerate(algs.items()):
        fx, fy = front_of(recs, alg)
        ys = [a for r in recs if r["alg"] == alg for a in r["acc"][1:]]
        lo, hi = np.percentile(ys, 1) - 0.01, max(ys) + 0.01
        for col, e in enumerate(es):
            ax = axes[row][col]
            for r in (r for r in recs if r["alg"] == alg and r["E"] == e):
                x, y = r["mb"][1:], r["acc"][1:]
                c = COLOURS[r["wire"]]
                ax.plot(x, y, STYLES[r["k"]], color=c, lw=1.4, alpha=0.85)
                apart = r["apart"][1:] if r["apart"] is not None else np.zeros(len(x), bool)
                if apart[:-1].any():  # evaluations whose nodes are apart: open circles
                    a = np.flatnonzero(apart[:-1])
                    ax.plot(x[a], y[a], "o", ls="", mfc="white", mec=c, mew=1.0, ms=4.5)
                if apart[-1]:  # still apart at the end: a cross
                    ax.plot(x[-1], y[-1], "X", color=c, mec="k", mew=0.6, ms=8, zorder=4)
                else:
                    ax.plot(x[-1], y[-1], "o", color=c, ms=4)
                f = r["front"][1:]
                for sel, face in ((f & ~apart, c), (f & apart, "white")):  # open: apart
                    if sel.any():
                        ax.plot(x[sel], y[sel], "*", ls="", mfc=face, mec=c, ms=11, mew=1.0)
            ax.step(fx, fy, where="post", color="tab:red", lw=1.0, alpha=0.6, zorder=0)
            for t in TARGETS[alg]:
                ax.axhline(t, color="grey", lw=0.7, ls="-.")
            ax.set_xscale("log")
            ax.set_xlim(xmin, xmax)
            ax.set_ylim(lo, hi)
            ax.grid(alpha=0.3, which="both", lw=0.4)
            ax.set_title(f"{name}, E = {e} local epoch{'s' if e > 1 else ''}", fontsize=10)
            if row == len(algs) - 1:
                ax.set_xlabel("cumulative MB sent (all nodes, log)")
            if col == 0:
                ax.set_ylabel("mean test accuracy")
    handles = [Line2D([], [], color=COLOURS[w], lw=2, label=w) for w in WIRES]
    handles += [
        Line2D([], [], color="grey", ls=STYLES[k], label=f"gossip every {k}") for k in STYLES
    ]
    handles += [
        Line2D([], [], color="tab:red", lw=1.0, alpha=0.6, label="Pareto front (all E)"),
        Line2D([], [], ls="", marker="*", color="grey", ms=11, label="on the front"),
        Line2D(
            [], [], ls="", marker="*", mfc="white", mec="grey", ms=11, label="on it, nodes apart"
        ),
        Line2D([], [], color="grey", lw=0.7, ls="-.", label="target accuracies"),
        Line2D([], [], ls="", marker="o", mfc="white", mec="grey", ms=5, label=APART_LABEL),
        Line2D(
            [], [], ls="", marker="X", color="grey", mec="k", ms=8, label="still apart at the end"
        ),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(
        "FedEM synthetic, 30 nodes, Erdős–Rényi p = 0.5, 100 rounds: accuracy vs bytes "
        "(CHOCO-gossip for compressed wires)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.11, 1, 0.97))
    fig.savefig(path, dpi=130)
    plt.close(fig)


# --------------------------------------------------------------------------- degree study
def degree_table(history: Path) -> str:
    lines = [
        "| algorithm | E | graph | best acc (%) | total MB | MB to low target "
        "| MB to high target |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    rows = []
    for rs in histories(history).values():
        r0 = rs[0]
        alg = r0["algorithm.name"]
        mb = [float(r["bytes_total"]) / 1e6 for r in rs]
        acc = [float(r["test_acc"]) for r in rs]
        tgt = [first_mb(mb, acc, t) for t in TARGETS[alg]]
        rows.append(
            (alg, int(r0["algorithm.local_epochs"]), r0["topology.name"], max(acc), mb[-1], tgt)
        )
    for alg, e, topo, best, tot, tgt in sorted(rows):
        lines.append(
            f"| {ALGS[alg]} | {e} | {topo} | {100 * best:.2f} | {tot:.2f} "
            f"| {mb_cell(tgt[0])} | {mb_cell(tgt[1])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-degree", action="store_true", help="skip the graph-degree study")
    ap.add_argument("--no-record", action="store_true", help="do not touch RESULTS.md")
    ap.add_argument(
        "--from-results",
        action="store_true",
        help="run nothing: redraw the figure and tables from the history.csv files in results/",
    )
    args = ap.parse_args(argv)

    ok = True

    def sweep(path: Path, out: Path) -> Path:
        """The sweep's history.csv (running the unfinished runs unless --from-results)."""
        nonlocal ok
        if args.from_results:
            return out / "history.csv"
        res = run_sweep(path, out=out, jobs=args.jobs, quiet=False)
        ok &= res.ok
        return res.history_csv

    chosen, gamma_lines = choose_gamma(sweep(GAMMA_SWEEP, GAMMA_OUT))
    used = file_gammas(COMP_SWEEP)
    if used != chosen:
        print(
            f"warning: {COMP_SWEEP.name} uses γ {used}, the check picks {chosen}",
            file=sys.stderr,
        )

    recs = analyse(sweep(COMP_SWEEP, COMP_OUT))
    figure(recs, FIGURE)
    main_table = table(recs)
    saving = best_saving(recs)

    deg = None
    if not args.no_degree:
        history = sweep(DEGREE_SWEEP, DEGREE_OUT)
        if (DEGREE_OUT / "runs").is_dir():  # the run directories (not kept in git)
            plot(DEGREE_OUT, "tradeoff", DEGREE_OUT / "tradeoff.png")
        deg = degree_table(history)

    targets = "; ".join(
        f"{ALGS[a]} {100 * lo:.0f} % and {100 * hi:.0f} %" for a, (lo, hi) in TARGETS.items()
    )
    parts = [
        f"Targets (low and high): {targets}. γ is CHOCO's consensus step (chosen per wire below); "
        "*Pareto*: some evaluation of the run is on its algorithm's front of (cumulative MB, "
        "mean accuracy) over all 36 runs (count and MB range of those evaluations).",
        "",
        main_table,
        "",
        APART_TEXT,
        "",
        "\n".join(f"* {s}" for s in saving),
        "",
        READING,
        "",
        f"![accuracy vs bytes]({FIGURE.relative_to(HERE).as_posix()})",
        "",
        "CHOCO γ check (final mean accuracy % and, in brackets, final consensus distance; "
        "*stable*: the consensus distance shrinks by at least 25 % from round 75 to 100 in all "
        "four settings; the largest stable γ is kept):",
        "",
        "\n".join(gamma_lines),
    ]
    if deg is not None:
        parts += [
            "",
            "Graph degree (uncompressed, gossip every round, 100 rounds, eval every 10):",
            "",
            deg,
            "",
            "![accuracy vs bytes, graphs](results/tradeoff/tradeoff.png)",
        ]
    text = "\n".join(parts)
    print(text)
    if not args.no_record:
        sys.path.insert(0, str(HERE))
        from reproduce_fedem_synthetic import write_section

        write_section(HERE / "RESULTS.md", "tradeoff", text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
