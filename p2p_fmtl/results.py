"""Run results and run directories.

A run directory holds::

    config.toml    the fully resolved config (every default written out)
    metrics.csv    one row per evaluation round
    nodes.csv      one row per node at the end
    summary.json   final values, timings, status ("complete" | "incomplete")
    params.npz     final parameters: one array per parameter path, leading axis = node

Directories are written atomically: everything goes to a hidden temporary
directory beside the target, which is then renamed into place, so a reader never
sees a half-written run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .config import Config
from .errors import UserError
from .sharing import path_str

RUN_FILES = ("config.toml", "metrics.csv", "nodes.csv", "summary.json", "params.npz")


def flatten_params(tree) -> dict[str, np.ndarray]:
    """``{"dense_0/w": array, ...}`` from a pytree (paths joined with '/')."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {(path_str(p) or "x"): np.asarray(leaf) for p, leaf in flat}


def _csv_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    for r in rows[1:]:
        cols += [c for c in r if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(v) for k, v in r.items()})
    return buf.getvalue()


def _fmt(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        v = float(v)
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        v = float(v)
        return None if not math.isfinite(v) else v
    return v


@dataclass
class RunResult:
    """What :func:`p2p_fmtl.run` returns."""

    config: Config
    metrics: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    summary: dict[str, Any]
    params: dict[str, np.ndarray] = field(repr=False)
    state: Any = field(default=None, repr=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the run directory atomically; return its path."""
        return write_run_dir(path, self)


def write_run_dir(path: str | os.PathLike, result: RunResult) -> Path:
    target = Path(path)
    if target.exists() and any(target.iterdir()):
        if not (target / "summary.json").exists() and not (target / "config.toml").exists():
            raise UserError(
                f"--out {target}: directory exists and is not a run directory; "
                "choose a new or empty directory"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        (tmp / "config.toml").write_text(result.config.to_toml())
        (tmp / "metrics.csv").write_text(_csv_text(result.metrics))
        (tmp / "nodes.csv").write_text(_csv_text(result.nodes))
        (tmp / "summary.json").write_text(
            json.dumps(_json_safe(result.summary), indent=2, sort_keys=False) + "\n"
        )
        with open(tmp / "params.npz", "wb") as f:
            np.savez(f, **result.params)
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, trash / "run")
            os.replace(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a metrics/nodes table back (numbers parsed, empty cells as NaN)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append({k: _parse(v) for k, v in r.items()})
    return rows


def _parse(v: str) -> Any:
    if v == "":
        return float("nan")
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v
