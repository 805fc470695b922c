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

The tool never deletes what it did not write.  It writes only into a new or empty
directory, or over a *run directory of its own*: a real directory that holds nothing
but :data:`RUN_FILES` (regular files) and figures ``p2p-fmtl plot`` drew there (signed
in their metadata), among them a ``summary.json`` signed ``"written_by": "p2p-fmtl"``
(:func:`run_dir_state`).  A complete run is replaced
only with ``overwrite=True`` (``--overwrite``).
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

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the run directory atomically; return its path (:func:`write_run_dir`)."""
        return write_run_dir(path, self, overwrite=overwrite)


WRITTEN_BY = "p2p-fmtl"  # the signature in summary.json of every run directory written here


def run_dir_state(path: str | os.PathLike) -> tuple[str, str]:
    """What is at ``path``, as a place to write a run directory: ``(state, detail)``.

    ``state`` is ``"missing"``, ``"empty"`` (an empty directory), ``"complete"`` or
    ``"incomplete"`` (a run directory of this tool, by its status), or ``"other"``:
    anything else, which is never written over; ``detail`` then says what it is.
    """
    p = Path(path)
    if p.is_symlink():
        return "other", "is a symbolic link"
    if not p.exists():
        return "missing", ""
    if not p.is_dir():
        return "other", "exists and is not a directory"
    try:
        entries = sorted(os.listdir(p))
    except OSError as e:
        return "other", f"cannot be read ({e.strerror})"
    if not entries:
        return "empty", ""
    foreign = [
        e
        for e in entries
        if not _plain_file(p / e) or (e not in RUN_FILES and not _our_figure(p / e))
    ]
    summary = _summary(p / "summary.json") if not foreign else None
    if foreign or summary is None or summary.get("written_by") != WRITTEN_BY:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        holds = f"it holds {shown}" if foreign else "its summary.json is not one p2p-fmtl wrote"
        return "other", f"is not a run directory of p2p-fmtl ({holds})"
    status = summary.get("status")
    return ("complete" if status == "complete" else "incomplete"), f"{status} run"


def _plain_file(p: Path) -> bool:
    return p.is_file() and not p.is_symlink()


FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def _our_figure(p: Path) -> bool:
    """A figure ``p2p-fmtl plot`` drew into the run directory (its default place): signed
    "p2p-fmtl" in its Software / Creator field.  It goes with the run it shows when the
    run is overwritten."""
    if p.suffix.lower() not in FIGURE_SUFFIXES or p.stat().st_size > 50 * 2**20:
        return False
    try:
        return WRITTEN_BY.encode() in p.read_bytes()
    except OSError:
        return False


def _summary(path: Path) -> dict | None:
    try:
        s = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


def refuse_unsafe(target: Path, state: str, detail: str, overwrite: bool) -> None:
    """Raise a one-line UserError if a run directory may not be written at ``target``
    (in state ``state`` of :func:`run_dir_state`)."""
    if state == "other":
        raise UserError(
            f"--out {target}: {detail}; p2p-fmtl writes only into a new or empty directory "
            "or over a run directory of its own"
        )
    if state == "complete" and not overwrite:
        raise UserError(
            f"--out {target}: holds a complete run; --overwrite replaces it "
            "(or choose another directory)"
        )


def _new_dir_mode() -> int:
    """The mode a directory made by ``mkdir`` gets under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def write_run_dir(path: str | os.PathLike, result: RunResult, *, overwrite: bool = False) -> Path:
    """Write ``result`` as the run directory ``path``, atomically.

    ``path`` may be missing (its parents are made), an empty directory, or a run
    directory of this tool (:func:`run_dir_state`): an incomplete one is replaced, a
    complete one only with ``overwrite``.  Anything else is refused with a UserError
    and left as it is.  The files go to a hidden ``.NAME.tmp-*`` directory that is then
    renamed into place; a replaced run moves to ``.NAME.old-*`` and is deleted, and on
    any exit (an exception, Ctrl-C) neither is left behind and the old run is back.
    """
    target = Path(path)
    state, detail = run_dir_state(target)
    refuse_unsafe(target, state, detail, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    trash: Path | None = None
    try:
        os.chmod(tmp, _new_dir_mode())
        summary = {**_json_safe(result.summary), "written_by": WRITTEN_BY}
        (tmp / "config.toml").write_text(result.config.to_toml())
        (tmp / "metrics.csv").write_text(_csv_text(result.metrics))
        (tmp / "nodes.csv").write_text(_csv_text(result.nodes))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        with open(tmp / "params.npz", "wb") as f:
            np.savez(f, **result.params)
        if state in ("complete", "incomplete"):  # our own run: move it aside, then swap
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, trash / "run")
        os.replace(tmp, target)  # onto a missing or empty directory (POSIX rename)
    finally:
        if trash is not None and (trash / "run").exists() and not target.exists():
            os.replace(trash / "run", target)  # interrupted between the two renames
        for leftover in (tmp, trash):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
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
