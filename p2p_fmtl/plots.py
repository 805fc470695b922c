"""Figures from run directories: ``plot(path, kind, out=None, aggregate=True, select=None)``.

``path`` is one run directory or any directory with run directories somewhere below it (a
sweep directory, a folder of runs, folders of sweeps): a run directory is a folder holding
``config.toml`` and ``metrics.csv``.  ``kind`` is one of:

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
    The graphs, nodes coloured by final per-node test accuracy (or MSE): one panel per
    distinct graph (rebuilt from ``config.toml``; runs on the same graph share a panel,
    coloured by their mean), or one panel per run without aggregation.

**Seeds.**  By default runs that differ only in their seeds (``run.seed``, and the keys
named ``seed`` that follow it, such as ``topology.seed``) are one line: the mean over the
seeds, with a shaded band from the smallest to the largest seed's value (the legend says
so); ``fairness`` pools their nodes.  ``aggregate=False`` (``--no-aggregate``) draws every
run.  ``select={"algorithm.lr": 0.05}`` (``--select algorithm.lr=0.05``, repeatable)
keeps the runs whose resolved ``config.toml`` has those values.

The file format follows ``out``'s extension (``.png``, ``.svg`` or ``.pdf``); the default
is ``<path>/<kind>.png``.  The output's directory must exist and be writable (checked before
drawing); the file is written atomically.  Runs that lack what a figure needs (e.g.
``average`` runs have no accuracy) are skipped with a warning and a note under the figure;
a :class:`~p2p_fmtl.errors.UserError` is raised only when no run is left.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .errors import UserError, did_you_mean  # noqa: E402
from .results import read_csv  # noqa: E402

KINDS = ("consensus", "accuracy", "tradeoff", "fairness", "topology")
SIGNATURE = "p2p-fmtl"  # the figures' Software / Creator field
FORMATS = (".png", ".svg", ".pdf")
DPI = 120
MAX_TOPOLOGY_PANELS = 60
MAX_DRAWN_NODES = 1000
_LEGEND_INSIDE_MAX = 6
_MAX_LABEL_KEYS = 3
_ROUNDOFF = 1e-12
_BAND_ALPHA = 0.2

__all__ = ["FORMATS", "KINDS", "add_arguments", "find_runs", "plot", "plot_command"]


@dataclass
class Run:
    """One run directory, read lazily."""

    path: Path
    summary: dict[str, Any]
    label: str = ""
    name: str = ""  # its path below the directory it was found in (for notes and labels)
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
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
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
        s, c = self.summary, self.config
        alg = s.get("algorithm", c.get("algorithm", {}).get("name", "?"))
        topo = s.get("topology", c.get("topology", {}).get("name", "?"))
        n = s.get("n_nodes", c.get("topology", {}).get("n", "?"))
        return f"{alg} on {topo} (n={n})"


class Line:
    """Runs drawn as one line: one run, or runs that differ only in their seeds (mean and a
    min–max band)."""

    def __init__(self, runs: list[Run]):
        self.runs = runs
        self.label = ""

    @property
    def k(self) -> int:
        return len(self.runs)

    @property
    def summary(self) -> dict[str, Any]:
        return self.runs[0].summary

    @property
    def path(self) -> Path:
        return self.runs[0].path

    @property
    def name(self) -> str:
        first = self.runs[0].name
        return first if self.k == 1 else f"{first} and {self.k - 1} more seed(s)"

    @property
    def base_label(self) -> str:
        return self.runs[0].base_label

    @property
    def config(self) -> dict[str, Any]:
        """The first run's config without its seeds (they differ within the line)."""
        if self.k == 1:
            return self.runs[0].config
        return {
            s: {k: v for k, v in body.items() if k != "seed"} if isinstance(body, dict) else body
            for s, body in self.runs[0].config.items()
        }

    def series(self, name: str):
        """``(rounds, mean, low, high)`` of a metrics.csv column over the runs' common
        rounds (``low``/``high`` the smallest/largest run; None for one run), or None."""
        cols = [(r.column("round"), r.column(name)) for r in self.runs]
        if any(t is None or y is None for t, y in cols):
            return None
        t = reduce(np.intersect1d, [t for t, _ in cols])
        ys = np.stack([y[np.searchsorted(tr, t)] for tr, y in cols])
        if self.k == 1:
            return t, ys[0], None, None
        with warnings.catch_warnings():  # rounds that are NaN in every run stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return t, np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)

    def node_values(self, name: str) -> list[np.ndarray] | None:
        """The nodes.csv column of every run (None if a run lacks it)."""
        vals = [r.column(name, "nodes") for r in self.runs]
        return None if any(v is None for v in vals) else vals


# ----------------------------------------------------------------------------- runs
def _read_summary(d: Path) -> dict[str, Any] | None:
    f = d / "summary.json"
    if not f.is_file():
        return None
    try:
        s = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return s if isinstance(s, dict) else None


def _is_run_dir(d: Path) -> bool:
    return (d / "config.toml").is_file() and (d / "metrics.csv").is_file()


def find_runs(path: str | os.PathLike) -> list[Run]:
    """The run directories at ``path``: itself, or every one below it (any depth).

    A run directory holds ``config.toml`` and ``metrics.csv``; hidden folders (temporary
    directories of atomic writes) are not searched, nor are run directories themselves.

    Raises
    ------
    p2p_fmtl.errors.UserError
        When ``path`` is not a directory or holds no run directory.
    """
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory (expected a run or sweep directory)")
    found: list[Path] = []
    if _is_run_dir(root):
        found = [root]
    else:
        for here, dirs, _ in os.walk(root):
            d = Path(here)
            if d != root and _is_run_dir(d):
                found.append(d)
                dirs[:] = []
                continue
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
    if not found:
        raise UserError(
            f"{root}: no run directories found (a run directory holds config.toml and "
            "metrics.csv; searched it and every folder below it)"
        )
    runs = []
    for d in sorted(found):
        name = d.name if d == root else d.relative_to(root).as_posix()
        runs.append(Run(d, _read_summary(d) or {}, name=name))
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


def _set_labels(runs: list) -> None:
    """``<algorithm> on <topology> (n=..)`` plus the config keys that tell runs (or lines)
    apart."""
    groups: dict[str, list] = {}
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
                r.label = f"{r.label} [{r.name or r.path.name}]"


def _seedless(run: Run) -> str:
    """What a run is apart from its seeds: its flat config without keys named ``seed``."""
    flat = _flat(run.config)
    return repr(sorted((k, repr(v)) for k, v in flat.items() if k.rsplit(".", 1)[-1] != "seed"))


def _lines(runs: list[Run], aggregate: bool) -> list[Line]:
    """One line per run, or (``aggregate``) per set of runs that differ only in seeds."""
    if not aggregate:
        lines = [Line([r]) for r in runs]
    else:
        groups: dict[str, list[Run]] = {}
        for r in runs:
            groups.setdefault(_seedless(r), []).append(r)
        lines = [Line(g) for g in groups.values()]
    _set_labels(lines)
    sizes = sorted({ln.k for ln in lines})
    if len(sizes) > 1:  # the band legend cannot give one count: each label does
        for ln in lines:
            if ln.k > 1:
                ln.label += f" ({ln.k} seeds)"
    return lines


def _band_note(lines: list[Line]) -> str | None:
    """The legend entry of the shaded bands, or None when every line is one run."""
    sizes = sorted({ln.k for ln in lines if ln.k > 1})
    if not sizes:
        return None
    k = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    return f"line: mean over {k} seeds; shaded: min–max over the seeds"


def _band_handle(ax, lines: list[Line]) -> int:
    """Add the band's legend entry; return how many entries it added."""
    text = _band_note(lines)
    if text is None:
        return 0
    ax.fill_between([], [], [], color="0.5", alpha=_BAND_ALPHA + 0.1, label=text)
    return 1


def _same(have: Any, want: Any) -> bool:
    """Config value equality as a user means it: 1 == 1.0, lists element by element."""
    if isinstance(have, list) and isinstance(want, list):
        return len(have) == len(want) and all(map(_same, have, want))
    numbers = (int, float)
    if isinstance(have, bool) or isinstance(want, bool):
        return type(have) is type(want) and have == want
    if isinstance(have, numbers) and isinstance(want, numbers):
        return float(have) == float(want)
    return type(have) is type(want) and have == want


def _select(runs: list[Run], select: Mapping[str, Any] | None) -> list[Run]:
    """The runs whose resolved config has every ``select`` value (one line if none)."""
    for key, want in (select or {}).items():
        flats = [(r, _flat(r.config)) for r in runs]
        known = sorted({k for _, f in flats for k in f})
        if key not in known:
            raise UserError(
                f"--select {key}: no run's config.toml has this key (keys look like "
                f"'algorithm.lr'){did_you_mean(key, known)}"
            )
        kept = [r for r, f in flats if key in f and _same(f[key], want)]
        if not kept:
            values = sorted({_fmt_value(f[key]) for _, f in flats if key in f})
            raise UserError(
                f"--select {key}={_fmt_value(want)}: no run has this value; the runs have "
                + ", ".join(values[:12])
                + (" ..." if len(values) > 12 else "")
            )
        runs = kept
    _set_labels(runs)
    return runs


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
        names = ", ".join(r.name for r in skipped[:4]) + (" ..." if len(skipped) > 4 else "")
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


def _band(ax, t, lo, hi, colour) -> None:
    if lo is not None:
        ax.fill_between(t, lo, hi, color=colour, alpha=_BAND_ALPHA, lw=0)


# ----------------------------------------------------------------------------- kinds
def _consensus(runs: list[Run], notes: list[str], aggregate: bool):
    runs = _keep(runs, "consensus_distance", notes)
    if not runs:
        raise UserError("no run has a consensus_distance column in metrics.csv")
    lines = _lines(runs, aggregate)
    fig, ax = plt.subplots(figsize=(8, 5))
    handles = 0
    lows: list[float] = []
    predicted = False
    masked = False
    for ln, c in zip(lines, _colours(len(lines)), strict=True):
        t, d, lo, hi = ln.series("consensus_distance")
        d = np.where(d > 0, d, np.nan)
        if np.any(np.isfinite(d)):  # float round-off of runs that start at consensus
            small = d < _ROUNDOFF * np.nanmax(d)
            masked |= bool(small.any())
            d = np.where(small, np.nan, d)
            lows.append(float(np.nanmin(d)))
            if lo is not None:
                lo = np.where(small | (lo <= 0), np.nan, lo)
                hi = np.where(small, np.nan, hi)
        ax.plot(t, d, "-", color=c, marker="o" if len(t) <= 30 else None, ms=3, label=ln.label)
        _band(ax, t, lo, hi, c)
        handles += 1
        pred = _prediction(ln, t, d)
        if pred is None:
            continue
        predicted = True
        ax.plot(pred[0], pred[1], "--", color=c, lw=1.2, label=f"{ln.label}: d₀(1−gap)^(2t)")
        handles += 1
    handles += _band_handle(ax, lines)
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


def _prediction(ln: Line, t: np.ndarray, d: np.ndarray):
    """``(rounds, mean over the line's runs of d₀ (1 − gap)^(2t))``, or None.

    Only for runs that start from disagreement (gossip decays it); training runs with
    identical initial models start at consensus and have no useful prediction.
    """
    if not len(t) or t[0] != 0 or not np.isfinite(d[0]) or not d[0] >= 0.5 * np.nanmax(d):
        return None
    tt = np.arange(0, int(np.nanmax(t)) + 1)
    preds = []
    for r in ln.runs:
        gap = r.summary.get("spectral_gap")
        d0 = r.column("consensus_distance")[0]
        if not isinstance(gap, int | float) or not np.isfinite(d0):
            return None
        slem = max(1.0 - float(gap), 0.0)
        if slem < 1e-6:  # exact averaging in one round (W = 11ᵀ/N)
            slem = 0.0
        preds.append(d0 * slem ** (2.0 * tt))
    pred = np.mean(preds, axis=0)
    return tt, np.where(pred > 0, pred, np.nan)


def _accuracy(runs: list[Run], notes: list[str], aggregate: bool):
    metric = _metric(runs)
    low = "p10" if metric == "acc" else "p90"
    runs = _keep(runs, f"test_{metric}", notes)
    lines = _lines(runs, aggregate)
    fig, ax = plt.subplots(figsize=(8, 5))
    for ln, c in zip(lines, _colours(len(lines)), strict=True):
        t, y, lo, hi = ln.series(f"test_{metric}")
        ax.plot(t, y, "-", color=c, label=ln.label)
        _band(ax, t, lo, hi, c)
        q = ln.series(f"test_{metric}_{low}")
        if q is not None:
            ax.plot(q[0], q[1], "--", color=c)
    ax.plot([], [], "-", color="0.3", label=f"mean {_metric_name(metric)}")
    ax.plot([], [], "--", color="0.3", label=f"{low} over nodes")
    extra = _band_handle(ax, lines)
    ax.set_xlabel("round")
    ylabel = "test accuracy (fraction correct)" if metric == "acc" else "test MSE"
    ax.set_ylabel(f"{ylabel}: mean (solid), {low} over nodes (dashed)")
    ax.set_title(f"{_title_name(metric)} per round ({_better(metric)})")
    ax.grid(True, alpha=0.3)
    _legend(ax, len(lines) + 2 + extra)
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


def _tradeoff(runs: list[Run], notes: list[str], aggregate: bool):
    metric = _metric(runs)
    runs = _keep(_keep(runs, f"test_{metric}", notes), "bytes_total", notes)
    if not runs:
        raise UserError("no run has both a test metric and bytes_total in metrics.csv")
    lines = _lines(runs, aggregate)
    fig, ax = plt.subplots(figsize=(8, 5))
    xs, ys = [], []
    for ln, c in zip(lines, _colours(len(lines)), strict=True):
        _, x, _, _ = ln.series("bytes_total")
        _, y, lo, hi = ln.series(f"test_{metric}")
        x = x / 1e6
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if not len(x):
            continue
        ax.plot(x, y, "-", color=c, marker=".", ms=4, alpha=0.8, label=ln.label)
        ax.plot(x[-1:], y[-1:], "o", color=c, ms=7, mec="k", mew=0.6)
        if lo is not None:
            _band(ax, x, lo[ok], hi[ok], c)
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
    extra = _band_handle(ax, lines)
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
    _legend(ax, len(xs) + 1 + extra)
    return fig


def _fairness(runs: list[Run], notes: list[str], aggregate: bool):
    metric = _metric(runs, "nodes")
    runs = _keep(runs, f"test_{metric}", notes, table="nodes")
    lines = _lines(runs, aggregate)
    data = []
    for ln in lines:
        v = np.concatenate(ln.node_values(f"test_{metric}"))  # a line's seeds: nodes pooled
        data.append(v[np.isfinite(v)])
    k = len(lines)
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
    ax.set_yticks(pos, [ln.label for ln in lines], fontsize=8)
    unit = " (fraction correct)" if metric == "acc" else ""
    ax.set_xlabel(f"final per-node {_metric_name(metric)}{unit}")
    pooled = _band_note(lines) is not None
    ax.set_title(
        f"Per-node {_metric_name(metric)} across nodes (box: quartiles, ▲ mean, dots: nodes"
        + ("; a line's seeds pooled" if pooled else "")
        + ")"
    )
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def _graph_of(r: Run, cache: dict[str, Any]):
    """The run's graph, rebuilt from its config.toml (cached by the topology and seed)."""
    from .config import load_config
    from .runner import build_graph

    given = r.config.get("topology", {}).get("name") == "given" or "node_labels" in r.summary
    if given:  # a run on a user's graph: not in its config.toml
        raise UserError("it ran on a graph given in Python, which config.toml does not hold")
    key = repr((r.config.get("topology"), r.config.get("run", {}).get("seed")))
    if key not in cache:
        cache[key] = build_graph(load_config(r.path / "config.toml"))
    return cache[key]


def _topology(runs: list[Run], notes: list[str], aggregate: bool):
    import networkx as nx
    from matplotlib import patheffects

    import topologies

    from .sweep import graph_fingerprint

    metric = None
    for m in ("acc", "mse", "loss"):
        if any(r.column(f"test_{m}", "nodes") is not None for r in runs):
            metric = m
            break
    panels: dict[str, tuple[Any, list[Run]]] = {}  # one per graph (aggregate) or per run
    cache: dict[str, Any] = {}
    for r in runs:
        try:
            G = _graph_of(r, cache)
        except (UserError, OSError) as e:
            notes.append(f"skipped {r.name}: cannot rebuild its graph ({e})")
            continue
        if G.number_of_nodes() > MAX_DRAWN_NODES:
            notes.append(
                f"skipped {r.name}: {G.number_of_nodes()} nodes are too many to draw "
                f"(at most {MAX_DRAWN_NODES})"
            )
            continue
        key = graph_fingerprint(G) if aggregate else str(r.path)
        panels.setdefault(key, (G, []))[1].append(r)
    if not panels:
        raise UserError(f"no run's graph could be drawn ({notes[-1]})")
    graphs = list(panels.values())
    if len(graphs) > MAX_TOPOLOGY_PANELS:
        notes.append(f"drew the first {MAX_TOPOLOGY_PANELS} of {len(graphs)} graphs")
        graphs = graphs[:MAX_TOPOLOGY_PANELS]
    vals = []
    for _, group in graphs:
        got = [r.column(f"test_{metric}", "nodes") if metric else None for r in group]
        got = [v for v in got if v is not None]
        for r in group:
            if metric is None or r.column(f"test_{metric}", "nodes") is None:
                what = f"test_{metric}" if metric else "test metric"
                notes.append(f"{r.name}: no per-node {what} in nodes.csv")
        same = got and all(len(v) == len(got[0]) for v in got)
        vals.append(np.mean(got, axis=0) if same else None)
    finite = [v[np.isfinite(v)] for v in vals if v is not None]
    finite = [v for v in finite if len(v)]
    vmin = min(float(v.min()) for v in finite) if finite else 0.0
    vmax = max(float(v.max()) for v in finite) if finite else 1.0
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5e-3, vmax + 0.5e-3
    cmap = plt.get_cmap("viridis" if metric == "acc" else "viridis_r")

    k = len(graphs)
    ncols = min(k, max(3, math.ceil(math.sqrt(k))), 6)
    nrows = math.ceil(k / ncols)
    w, h = (4.6, 4.4) if k <= 9 else (3.3, 3.2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    for ax in axes.flat[k:]:
        ax.set_visible(False)
    mappable = None
    shared = False
    for ax, (G, group), v in zip(axes.flat, graphs, vals, strict=False):
        G = topologies.as_networkx(G)
        r = group[0]
        n = G.number_of_nodes()
        name = r.summary.get("topology") or r.config.get("topology", {}).get("name")
        if name in ("ring", "complete", "exponential", "two_cliques") or n <= 3:
            pos = nx.circular_layout(G)
        else:
            pos = nx.spring_layout(G, seed=0)
        size = float(np.clip(3000 / max(n, 1), 8, 300))
        nx.draw_networkx_edges(G, pos, ax=ax, alpha=0.35, width=0.8 if n <= 100 else 0.3)
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
        if len(group) == 1:
            head = r.label
        else:
            shared = True
            topo = r.config.get("topology", {})
            seeds = {x.config.get("topology", {}).get("seed") for x in group}
            seed = f", seed {seeds.pop()}" if len(seeds) == 1 and None not in seeds else ""
            head = f"{topo.get('name', '?')} (n={n}{seed}): {len(group)} runs"
        ax.set_title(f"{head}{sub}", fontsize=9)
        ax.set_axis_off()
    what = _metric_name(metric) if metric else "metric"
    title = f"Gossip graphs, nodes coloured by final per-node {what}"
    if shared:
        title += "\n(one panel per distinct graph; a panel of several runs shows their mean)"
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


def _check_target(target: Path) -> None:
    """One line, before any drawing, if the figure cannot be written at ``target``."""
    if target.suffix.lower() not in FORMATS:
        raise UserError(
            f"--out {target}: unsupported extension {target.suffix!r}; "
            f"allowed: {', '.join(FORMATS)}"
        )
    parent = target.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise UserError(f"--out {target}: the folder {parent} {what}; create it first")
    if target.is_dir():
        raise UserError(f"--out {target}: is a directory; give a file name ending in .png")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {target}: the folder {parent} is not writable")


def _save(fig, target: Path) -> None:
    """Write the figure atomically (a temporary file beside ``target``, then renamed)."""
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.tmp-", suffix=target.suffix, dir=target.parent
    )
    os.close(fd)
    try:
        fmt = target.suffix[1:].lower()
        # signed, so a run directory holding the figure still counts as the tool's own
        # (p2p_fmtl.results.run_dir_state)
        sign = {"png": {"Software": SIGNATURE}}.get(fmt, {"Creator": SIGNATURE})
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=fmt, metadata=sign)
        os.replace(tmp, target)
    except OSError as e:
        raise UserError(f"--out {target}: cannot write it ({e.strerror or e})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def plot(
    path: str | os.PathLike,
    kind: str,
    out: str | os.PathLike | None = None,
    *,
    aggregate: bool = True,
    select: Mapping[str, Any] | None = None,
) -> Path:
    """Draw one figure of the runs at ``path`` and return the file written.

    Parameters
    ----------
    path : path-like
        A run directory, or a directory with run directories anywhere below it.
    kind : {"consensus", "accuracy", "tradeoff", "fairness", "topology"}
        The figure (see the module docstring).
    out : path-like, optional
        Output file in an existing, writable folder; its extension picks the format
        (``.png``, ``.svg``, ``.pdf``).  Default ``<path>/<kind>.png``.
    aggregate : bool
        Runs that differ only in their seeds are one line (mean, min–max band); False
        draws every run.
    select : mapping, optional
        ``{"algorithm.lr": 0.05, ...}``: only runs whose resolved config has these values.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    p2p_fmtl.errors.UserError
        Unknown ``kind``, a bad ``out``, no run directory at ``path``, a ``select`` no run
        matches, or no run with the columns the figure needs.
    """
    if kind not in _PLOTTERS:
        raise UserError(
            f"plot kind: unknown {kind!r}; allowed: {', '.join(KINDS)}{did_you_mean(kind, KINDS)}"
        )
    target = Path(out) if out is not None else Path(path) / f"{kind}.png"
    runs = _select(find_runs(path), select)
    _check_target(target)
    notes: list[str] = []
    with plt.rc_context({"figure.dpi": DPI, "savefig.dpi": DPI}):
        fig = _PLOTTERS[kind](runs, notes, aggregate)
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
            _save(fig, target)
        finally:
            plt.close(fig)
    for n in notes:
        warnings.warn(n, UserWarning, stacklevel=2)
    return target


# ----------------------------------------------------------------------------- command line
def add_arguments(p) -> None:
    """Arguments of ``p2p-fmtl plot`` on an argparse (sub)parser."""
    p.add_argument("dir", help="a run directory, or a folder with run directories below it")
    p.add_argument("--kind", default="accuracy", choices=KINDS, help="which figure")
    p.add_argument("--out", help="output file (.png, .svg or .pdf; default DIR/KIND.png)")
    p.add_argument(
        "--no-aggregate",
        dest="aggregate",
        action="store_false",
        help="one line per run (default: runs that differ only in seeds are one line, "
        "their mean with a min-max band)",
    )
    p.add_argument(
        "--select",
        action="append",
        metavar="KEY=VALUE",
        help="only runs whose config.toml has this value, e.g. --select algorithm.lr=0.05 "
        "(repeatable)",
    )


def plot_command(args) -> int:
    """``p2p-fmtl plot``: draw the figure, print notes (stderr) and its path; 0."""
    from .config import parse_override

    select = {}
    for text in args.select or []:
        if "=" not in text:
            raise UserError(f"--select {text}: expected KEY=VALUE, e.g. --select algorithm.lr=0.05")
        key, value = parse_override(text)
        select[key] = value
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        path = plot(args.dir, args.kind, args.out, aggregate=args.aggregate, select=select)
    for w in caught:
        print(f"p2p-fmtl plot: note: {w.message}", file=sys.stderr)
    print(f"figure: {path}")
    return 0
