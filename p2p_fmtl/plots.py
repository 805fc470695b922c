"""Figures from run directories: ``plot(path, kind, out=None) -> Path``.

``path`` is one run directory (it holds ``summary.json``), a sweep directory (its runs
sit in ``path/runs/<run-id>/``) or any directory whose sub-directories are run
directories.  ``kind`` is one of:

``consensus``
    Consensus distance per round (log scale) of every run, and for runs whose summary
    has a spectral gap, the prediction ``d_0 (1 − gap)^(2t)`` dashed in the same colour.
``accuracy``
    Mean test accuracy (solid) and its 10th percentile over nodes (dashed) per round;
    regression runs show the mean test MSE and its 90th percentile.
``tradeoff``
    Test accuracy (or MSE) against cumulative bytes sent, one curve per run, with the
    Pareto front over all points (best score for at most that many bytes) in black.
``fairness``
    Distribution over nodes of the final per-node test accuracy (or MSE): one box per run.
``topology``
    The graph of each run (rebuilt from its ``config.toml``), nodes coloured by final
    per-node test accuracy (or MSE); at most 6 panels.

The file format follows ``out``'s extension (``.png``, ``.svg`` or ``.pdf``); the default
is ``<path>/<kind>.png``.  Runs that lack what a figure needs (e.g. ``average`` runs have
no accuracy) are skipped with a warning and a note under the figure; a
:class:`~p2p_fmtl.errors.UserError` is raised only when no run is left.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .errors import UserError  # noqa: E402
from .results import read_csv  # noqa: E402

KINDS = ("consensus", "accuracy", "tradeoff", "fairness", "topology")
FORMATS = (".png", ".svg", ".pdf")
DPI = 120
MAX_TOPOLOGY_PANELS = 6
MAX_DRAWN_NODES = 1000
_LEGEND_INSIDE_MAX = 6
_MAX_LABEL_KEYS = 3
_ROUNDOFF = 1e-12

__all__ = ["FORMATS", "KINDS", "find_runs", "plot"]


@dataclass
class Run:
    """One run directory, read lazily."""

    path: Path
    summary: dict[str, Any]
    label: str = ""
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def _table(self, name: str) -> list[dict[str, Any]]:
        if name not in self._cache:
            f = self.path / name
            self._cache[name] = read_csv(f) if f.exists() else []
        return self._cache[name]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return self._table("metrics.csv")

    @property
    def nodes(self) -> list[dict[str, Any]]:
        return self._table("nodes.csv")

    @property
    def config(self) -> dict[str, Any]:
        if "config" not in self._cache:
            f = self.path / "config.toml"
            try:
                self._cache["config"] = tomllib.loads(f.read_text()) if f.exists() else {}
            except (OSError, tomllib.TOMLDecodeError):
                self._cache["config"] = {}
        return self._cache["config"]

    def column(self, name: str, table: str = "metrics") -> np.ndarray | None:
        rows = self.metrics if table == "metrics" else self.nodes
        if not rows or name not in rows[0]:
            return None
        vals = [r.get(name) for r in rows]
        try:
            arr = np.array([np.nan if v is None or v == "" else v for v in vals], dtype=float)
        except (TypeError, ValueError):
            return None
        return None if np.all(np.isnan(arr)) else arr

    @property
    def base_label(self) -> str:
        s = self.summary
        n = s.get("n_nodes", self.config.get("topology", {}).get("n", "?"))
        return f"{s.get('algorithm', '?')} on {s.get('topology', '?')} (n={n})"


# ----------------------------------------------------------------------------- runs
def _read_summary(d: Path) -> dict[str, Any] | None:
    f = d / "summary.json"
    if not f.is_file():
        return None
    try:
        s = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return s if isinstance(s, dict) else None


def find_runs(path: str | os.PathLike) -> list[Run]:
    """The run directories at ``path``: itself, ``path/runs/*/`` (a sweep) or ``path/*/``.

    Raises
    ------
    p2p_fmtl.errors.UserError
        When ``path`` is not a directory or holds no run directory.
    """
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory (expected a run or sweep directory)")
    s = _read_summary(root)
    if s is not None:
        runs = [Run(root, s)]
    else:
        runs = []
        for parent in (root / "runs", root):
            if not parent.is_dir():
                continue
            for d in sorted(p for p in parent.iterdir() if p.is_dir()):
                if d.name.startswith("."):  # temporary directories of atomic writes
                    continue
                s = _read_summary(d)
                if s is not None:
                    runs.append(Run(d, s))
            if runs:
                break
    if not runs:
        raise UserError(
            f"{root}: no run directories found (expected summary.json in it, "
            "in runs/*/ or in its sub-directories)"
        )
    _set_labels(runs)
    return runs


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def _set_labels(runs: list[Run]) -> None:
    """``<algorithm> on <topology> (n=..)`` plus the config keys that tell runs apart."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.base_label, []).append(r)
    for base, group in groups.items():
        if len(group) == 1:
            group[0].label = base
            continue
        flats = [_flat(r.config) for r in group]
        keys = sorted({k for f in flats for k in f})
        varied = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
        # A section whose name differs (data.name = a vs b) speaks for its other keys.
        renamed = {k[: -len("name")] for k in varied if k.endswith(".name")}
        varied = [
            k for k in varied if k.endswith(".name") or not any(k.startswith(s) for s in renamed)
        ]
        varied = [k for k in varied if k.rsplit(".", 1)[-1] != "seed"] + [
            k for k in varied if k.rsplit(".", 1)[-1] == "seed"
        ]
        if len(varied) > _MAX_LABEL_KEYS:
            varied = varied[:_MAX_LABEL_KEYS]
        leaves = [k.rsplit(".", 1)[-1] for k in varied]
        names = [
            (key.rsplit(".", 1)[0] if leaf == "name" else leaf) if leaves.count(leaf) == 1 else key
            for key, leaf in zip(varied, leaves, strict=True)
        ]
        for r, f in zip(group, flats, strict=True):
            extra = ", ".join(
                f"{name}={_fmt_value(f.get(k))}" for k, name in zip(varied, names, strict=True)
            )
            r.label = f"{base} {extra}" if extra else base
        seen: dict[str, int] = {}
        for r in group:
            seen[r.label] = seen.get(r.label, 0) + 1
        for r in group:
            if seen[r.label] > 1:
                r.label = f"{r.label} [{r.path.name}]"


# ----------------------------------------------------------------------------- helpers
def _colours(k: int) -> list:
    if k <= 10:
        cmap = plt.get_cmap("tab10")
        return [cmap(i) for i in range(k)]
    if k <= 20:
        cmap = plt.get_cmap("tab20")
        return [cmap(i) for i in range(k)]
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(k - 1, 1)) for i in range(k)]


def _metric(runs: list[Run], table: str = "metrics") -> str:
    """``"acc"`` if any run has test accuracy, else ``"mse"`` (test MSE), else ``"loss"``
    (language models' test loss)."""
    for m in ("acc", "mse", "loss"):
        if any(r.column(f"test_{m}", table) is not None for r in runs):
            return m
    raise UserError(
        f"none of the {len(runs)} run(s) has a test_acc or test_mse column in {table}.csv "
        "(e.g. 'average' runs have no test metric)"
    )


def _keep(runs: list[Run], need: str, notes: list[str], table: str = "metrics") -> list[Run]:
    kept = [r for r in runs if r.column(need, table) is not None]
    skipped = [r for r in runs if r.column(need, table) is None]
    if skipped:
        names = ", ".join(r.path.name for r in skipped[:4]) + (" ..." if len(skipped) > 4 else "")
        notes.append(f"skipped {len(skipped)} run(s) without {need} in {table}.csv: {names}")
        _set_labels(kept)  # tell apart only the runs that are drawn
    return kept


def _legend(ax, n_entries: int, **kw) -> None:
    if n_entries > _LEGEND_INSIDE_MAX:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0, **kw)
    else:
        ax.legend(fontsize=8, **kw)


def _metric_name(metric: str) -> str:
    return {"acc": "test accuracy", "mse": "test MSE", "loss": "test loss"}[metric]


def _title_name(metric: str) -> str:
    name = _metric_name(metric)
    return name[0].upper() + name[1:]


def _better(metric: str) -> str:
    return "higher is better" if metric == "acc" else "lower is better"


# ----------------------------------------------------------------------------- kinds
def _consensus(runs: list[Run], notes: list[str]):
    runs = _keep(runs, "consensus_distance", notes)
    if not runs:
        raise UserError("no run has a consensus_distance column in metrics.csv")
    fig, ax = plt.subplots(figsize=(8, 5))
    handles = 0
    lows: list[float] = []
    predicted = False
    masked = False
    for r, c in zip(runs, _colours(len(runs)), strict=True):
        t = r.column("round")
        d = r.column("consensus_distance")
        d = np.where(d > 0, d, np.nan)
        if np.any(np.isfinite(d)):  # float round-off of runs that start at consensus
            small = d < _ROUNDOFF * np.nanmax(d)
            masked |= bool(small.any())
            d = np.where(small, np.nan, d)
            lows.append(float(np.nanmin(d)))
        ax.plot(t, d, "-", color=c, marker="o" if len(t) <= 30 else None, ms=3, label=r.label)
        handles += 1
        gap = r.summary.get("spectral_gap")
        d0 = d[0] if len(d) and t[0] == 0 else np.nan
        if gap is None or not np.isfinite(d0):
            continue
        # Only runs that start from disagreement (gossip decays it); training runs with
        # identical initial models start at consensus and have no useful prediction.
        if not d0 >= 0.5 * np.nanmax(d):
            continue
        slem = max(1.0 - float(gap), 0.0)
        if slem < 1e-6:  # exact averaging in one round (W = 11ᵀ/N)
            slem = 0.0
        tt = np.arange(0, int(np.nanmax(t)) + 1)
        pred = d0 * slem ** (2.0 * tt)
        pred = np.where(pred > 0, pred, np.nan)
        predicted = True
        ax.plot(tt, pred, "--", color=c, lw=1.2, label=f"{r.label}: d₀(1−gap)^(2t)")
        handles += 1
    ax.set_yscale("log")
    if predicted and lows:  # keep the predictions from stretching the axis far below the data
        ax.set_ylim(bottom=max(ax.get_ylim()[0], min(lows) / 1e3))
    ax.set_xlabel("round")
    ax.set_ylabel("consensus distance (1/N) Σᵢ ‖θᵢ − θ̄‖²")
    title = "Consensus distance per round"
    if predicted:
        title += " (dashed: spectral prediction)"
    ax.set_title(title)
    if masked:  # informational, drawn in the axes (not a skipped run)
        ax.text(
            0.01,
            0.01,
            f"values below {_ROUNDOFF:g} × a run's maximum (round-off) not drawn",
            transform=ax.transAxes,
            fontsize=7,
            color="0.4",
        )
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, handles)
    return fig


def _accuracy(runs: list[Run], notes: list[str]):
    metric = _metric(runs)
    low = "p10" if metric == "acc" else "p90"
    runs = _keep(runs, f"test_{metric}", notes)
    fig, ax = plt.subplots(figsize=(8, 5))
    for r, c in zip(runs, _colours(len(runs)), strict=True):
        t = r.column("round")
        ax.plot(t, r.column(f"test_{metric}"), "-", color=c, label=r.label)
        q = r.column(f"test_{metric}_{low}")
        if q is not None:
            ax.plot(t, q, "--", color=c)
    n = len(runs)
    ax.plot([], [], "-", color="0.3", label=f"mean {_metric_name(metric)}")
    ax.plot([], [], "--", color="0.3", label=f"{low} over nodes")
    ax.set_xlabel("round")
    ylabel = "test accuracy (fraction correct)" if metric == "acc" else "test MSE"
    ax.set_ylabel(f"{ylabel}: mean (solid), {low} over nodes (dashed)")
    ax.set_title(f"{_title_name(metric)} per round ({_better(metric)})")
    ax.grid(True, alpha=0.3)
    _legend(ax, n + 2)
    return fig


def _pareto(x: np.ndarray, y: np.ndarray, maximize: bool) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((-y if maximize else y, x))
    fx, fy = [], []
    best = -math.inf if maximize else math.inf
    for i in order:
        if (y[i] > best) if maximize else (y[i] < best):
            best = y[i]
            fx.append(x[i])
            fy.append(y[i])
    return np.array(fx), np.array(fy)


def _tradeoff(runs: list[Run], notes: list[str]):
    metric = _metric(runs)
    runs = _keep(_keep(runs, f"test_{metric}", notes), "bytes_total", notes)
    if not runs:
        raise UserError("no run has both a test metric and bytes_total in metrics.csv")
    fig, ax = plt.subplots(figsize=(8, 5))
    xs, ys = [], []
    for r, c in zip(runs, _colours(len(runs)), strict=True):
        x = r.column("bytes_total") / 1e6
        y = r.column(f"test_{metric}")
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if not len(x):
            continue
        ax.plot(x, y, "-", color=c, marker=".", ms=4, alpha=0.8, label=r.label)
        ax.plot(x[-1:], y[-1:], "o", color=c, ms=7, mec="k", mew=0.6)
        xs.append(x)
        ys.append(y)
    if not xs:
        raise UserError("no run has finite test metric and bytes_total values")
    X, Y = np.concatenate(xs), np.concatenate(ys)
    fx, fy = _pareto(X, Y, maximize=metric == "acc")
    if len(fx):
        sx = np.append(fx, X.max()) if X.max() > fx[-1] else fx
        sy = np.append(fy, fy[-1]) if X.max() > fx[-1] else fy
        ax.step(sx, sy, where="post", color="k", lw=1.5, zorder=5, label="Pareto front")
        ax.plot(fx, fy, "D", color="k", ms=4, zorder=6)
    pos = X[X > 0]
    if len(pos):
        lin = 10.0 ** math.floor(math.log10(pos.min()))
        ax.set_xscale("symlog", linthresh=lin, linscale=0.3)
        ax.set_xlim(left=-0.5 * lin)  # room for the markers of runs that never communicate
        ax.set_xlabel("cumulative bytes sent by all nodes (MB, log scale; 0 = no communication)")
    else:
        ax.set_xlabel("cumulative bytes sent by all nodes (MB)")
    ax.set_ylabel(_metric_name(metric) + (" (fraction correct)" if metric == "acc" else ""))
    ax.set_title(
        f"{_title_name(metric)} vs communication (● final round; ◆ Pareto front, {_better(metric)})"
    )
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, len(xs) + 1)
    return fig


def _fairness(runs: list[Run], notes: list[str]):
    metric = _metric(runs, "nodes")
    runs = _keep(runs, f"test_{metric}", notes, table="nodes")
    data = []
    for r in runs:
        v = r.column(f"test_{metric}", "nodes")
        data.append(v[np.isfinite(v)])
    k = len(runs)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.5 * k + 1.5)))
    pos = np.arange(1, k + 1)[::-1]  # first run on top
    ax.boxplot(
        data,
        positions=pos,
        vert=False,
        widths=0.6,
        showmeans=True,
        showfliers=False,
        meanprops={"marker": "^", "markerfacecolor": "w", "markeredgecolor": "k", "ms": 6},
        medianprops={"color": "k"},
        patch_artist=True,
        boxprops={"alpha": 0.5},
    )
    for patch, c in zip(ax.patches, _colours(k), strict=False):
        patch.set_facecolor(c)
    rng = np.random.default_rng(0)
    for p, v, c in zip(pos, data, _colours(k), strict=True):
        jitter = rng.uniform(-0.18, 0.18, size=len(v))
        ax.scatter(v, p + jitter, s=8, color=c, edgecolors="k", linewidths=0.3, zorder=3)
    ax.set_yticks(pos, [r.label for r in runs], fontsize=8)
    unit = " (fraction correct)" if metric == "acc" else ""
    ax.set_xlabel(f"final per-node {_metric_name(metric)}{unit}")
    ax.set_title(
        f"Per-node {_metric_name(metric)} across nodes (box: quartiles, ▲ mean, dots: nodes)"
    )
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def _topology(runs: list[Run], notes: list[str]):
    import networkx as nx
    from matplotlib import patheffects

    from .config import load_config
    from .runner import build_graph

    total = len(runs)
    shown = runs[:MAX_TOPOLOGY_PANELS]
    metric = None
    for m in ("acc", "mse", "loss"):
        if any(r.column(f"test_{m}", "nodes") is not None for r in shown):
            metric = m
            break
    graphs = []
    for r in shown:
        try:
            cfg = load_config(r.path / "config.toml")
            G = build_graph(cfg)
        except (UserError, OSError) as e:
            notes.append(f"skipped {r.path.name}: cannot rebuild its graph ({e})")
            continue
        if G.number_of_nodes() > MAX_DRAWN_NODES:
            notes.append(
                f"skipped {r.path.name}: {G.number_of_nodes()} nodes are too many to draw "
                f"(at most {MAX_DRAWN_NODES})"
            )
            continue
        graphs.append((r, G))
    if not graphs:
        raise UserError("no run's graph could be drawn")
    vals = {}
    for r, _ in graphs:
        v = r.column(f"test_{metric}", "nodes") if metric else None
        if v is None:
            what = f"test_{metric}" if metric else "test metric"
            notes.append(f"{r.path.name}: no per-node {what} in nodes.csv; nodes drawn grey")
        vals[r.path] = v
    finite = [v[np.isfinite(v)] for v in vals.values() if v is not None]
    finite = [v for v in finite if len(v)]
    vmin = min(float(v.min()) for v in finite) if finite else 0.0
    vmax = max(float(v.max()) for v in finite) if finite else 1.0
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5e-3, vmax + 0.5e-3
    cmap = plt.get_cmap("viridis" if metric == "acc" else "viridis_r")

    k = len(graphs)
    ncols = min(3, k)
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[k:]:
        ax.set_visible(False)
    mappable = None
    for ax, (r, G) in zip(axes.flat, graphs, strict=False):
        name = r.summary.get("topology", "")
        n = G.number_of_nodes()
        if name in ("ring", "complete", "exponential", "two_cliques") or n <= 3:
            pos = nx.circular_layout(G)
        else:
            pos = nx.spring_layout(G, seed=0)
        size = float(np.clip(3000 / max(n, 1), 8, 300))
        nx.draw_networkx_edges(G, pos, ax=ax, alpha=0.35, width=0.8 if n <= 100 else 0.3)
        v = vals[r.path]
        nodelist = list(range(n))
        if v is not None and len(v) == n:
            mappable = nx.draw_networkx_nodes(
                G,
                pos,
                nodelist=nodelist,
                node_color=v,
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                node_size=size,
                edgecolors="k",
                linewidths=0.4,
                ax=ax,
            )
        else:
            nx.draw_networkx_nodes(
                G, pos, node_color="0.75", node_size=size, edgecolors="k", linewidths=0.4, ax=ax
            )
        if n <= 30:
            texts = nx.draw_networkx_labels(G, pos, font_size=7, ax=ax)
            for txt in texts.values():
                txt.set_path_effects([patheffects.withStroke(linewidth=2, foreground="w")])
        gap = r.summary.get("spectral_gap")
        sub = f"\nspectral gap {gap:.3g}" if isinstance(gap, int | float) else ""
        ax.set_title(f"{r.label}{sub}", fontsize=9)
        ax.set_axis_off()
    title = "Gossip graphs, nodes coloured by final per-node " + (
        _metric_name(metric) if metric else "metric"
    )
    if total > MAX_TOPOLOGY_PANELS:
        title += f"\nwarning: showing the first {MAX_TOPOLOGY_PANELS} of {total} runs"
    fig.suptitle(title, fontsize=11, color="k")
    fig.tight_layout()
    if mappable is not None:
        cb = fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02)
        unit = " (fraction correct)" if metric == "acc" else ""
        cb.set_label(f"final per-node {_metric_name(metric)}{unit}")
    return fig


_PLOTTERS = {
    "consensus": _consensus,
    "accuracy": _accuracy,
    "tradeoff": _tradeoff,
    "fairness": _fairness,
    "topology": _topology,
}


def plot(path: str | os.PathLike, kind: str, out: str | os.PathLike | None = None) -> Path:
    """Draw one figure of the runs at ``path`` and return the file written.

    Parameters
    ----------
    path : path-like
        A run directory, a sweep directory (runs in ``path/runs/*/``) or a directory of
        run directories.
    kind : {"consensus", "accuracy", "tradeoff", "fairness", "topology"}
        The figure (see the module docstring).
    out : path-like, optional
        Output file; its extension picks the format (``.png``, ``.svg``, ``.pdf``).
        Default ``<path>/<kind>.png``.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    p2p_fmtl.errors.UserError
        Unknown ``kind`` or extension, no run directory at ``path``, or no run with
        the columns the figure needs.
    """
    if kind not in _PLOTTERS:
        from .errors import did_you_mean

        raise UserError(
            f"plot kind: unknown {kind!r}; allowed: {', '.join(KINDS)}{did_you_mean(kind, KINDS)}"
        )
    target = Path(out) if out is not None else Path(path) / f"{kind}.png"
    if target.suffix.lower() not in FORMATS:
        raise UserError(
            f"--out {target}: unsupported extension {target.suffix!r}; "
            f"allowed: {', '.join(FORMATS)}"
        )
    runs = find_runs(path)
    notes: list[str] = []
    with plt.rc_context({"figure.dpi": DPI, "savefig.dpi": DPI}):
        fig = _PLOTTERS[kind](runs, notes)
        try:
            if kind != "topology":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    fig.tight_layout()
            if notes:
                fig.text(
                    0.01,
                    0.0,
                    "\n".join("note: " + n for n in notes),
                    fontsize=7,
                    va="top",
                    color="0.3",
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(target, dpi=DPI, bbox_inches="tight", format=target.suffix[1:].lower())
        finally:
            plt.close(fig)
    for n in notes:
        warnings.warn(n, UserWarning, stacklevel=2)
    return target
