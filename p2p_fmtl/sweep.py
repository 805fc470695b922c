"""Sweeps: many runs of one base config, run in parallel, resumable, gathered into two CSVs.

A sweep file::

    base = "experiments/configs/fedem_synthetic_dem.toml"   # relative to the sweep file
    [set]                          # fixed overrides for every run (optional)
    "run.rounds" = 50
    [grid]                         # every combination of these
    "topology.name" = ["ring", "torus", "erdos_renyi"]
    "run.seed" = [0, 1, 2]
    [zip]                          # varied together, lists of equal length (optional)
    "algorithm.name" = ["dem", "dsgd"]
    "algorithm.lr" = [0.1, 0.05]

Runs are ``product(grid) x zip-tuples``: the zip lists vary together and the zip block is
crossed with the grid (first grid key slowest, zip innermost).  An empty grid and zip give
one run.  Keys are dotted ``SECTION.KEY`` (quoted in TOML; unquoted dotted keys, which TOML
reads as nested tables, are accepted too).  ``base`` is optional (all defaults).

**Name-specific keys.**  A builder's keys sit beside its name (``topology.p`` beside
``topology.name = "erdos_renyi"``), and keys a builder does not use are an error.  So that a
sweep over ``topology.name`` (or ``data.name``, ``model.name``, ``algorithm.name``) is usable,
when a run's overrides change that name away from the base file's, the *base file's* keys of
that section that the new name does not accept are dropped (base ``erdos_renyi`` with ``p``,
grid ``topology.name = ["ring", "erdos_renyi"]``: the ring runs have no ``p``, the
Erdős–Rényi runs keep it).  Likewise when the overrides switch ``algorithm.name`` to an
algorithm that uses no data (``average``), the base file's ``[data]`` keys are dropped.  Keys
given in ``[set]``, ``[grid]`` or ``[zip]`` are never dropped: a key there that the run's
builder does not accept is still an error.  A new name's other keys come from ``[set]`` or the
grid (or their defaults).

The whole sweep is validated up front: the first run whose config does not resolve is
reported as a :class:`~p2p_fmtl.errors.ConfigError` naming that run's varied values.

**Output** (``DIR``, default ``runs/<sweep-file stem>``)::

    DIR/runs/<run id>/   one run directory per run (config.toml has the full config)
    DIR/sweep.csv        one row per run: run_id, each varied key, status, final metrics, error
    DIR/history.csv      one row per run and evaluation: run_id, varied keys, metrics.csv columns

A run id is ``<key=value,...>-<hash>``: the varied values made filesystem-safe (truncated),
then 8 hex digits of the SHA-256 of the fully resolved config, so ids are unique, stable and
change whenever the run's config changes.  A run is finished iff
``DIR/runs/<id>/summary.json`` exists with status ``"complete"``; running the same sweep
again skips finished runs, re-does the others (failed ones included) and removes temporary
directories left by an interrupted sweep.  Runs go to ``jobs`` worker processes (``spawn``
start method); a run that raises is recorded as ``failed`` with its error and the sweep goes
on.  One sweep directory should not be used by two sweeps at the same time.

Python use::

    runs = expand("sweep.toml")            # [(varied values, Config), ...]
    result = run_sweep("sweep.toml", out="runs/s", jobs=4)
    result.rows, result.failed, result.sweep_csv
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import csv
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    DEFAULT_ALGORITHM,
    DEFAULT_DATA,
    MODEL_KEYS,
    TOPOLOGY_KEYS,
    Config,
    _section_schema,
    read_toml,
    set_dotted,
)
from .errors import ConfigError, UserError

SWEEP_KEYS = ("base", "set", "grid", "zip")
NAMED_SECTIONS = ("topology", "data", "model", "algorithm")
FINAL_METRICS = (
    "test_acc",
    "test_mse",
    "test_loss",
    "test_acc_p10",
    "test_mse_p90",
    "test_loss_p90",
    "test_acc_unseen",
    "test_mse_unseen",
    "train_loss",
    "consensus_distance",
    "bytes_total",
    "spectral_gap",
    "seconds_per_round",
    "wall_s",
)
_ID_TEXT_MAX = 96


# --------------------------------------------------------------------------- parsing
def _default_name(section: str) -> str:
    return {
        "topology": TOPOLOGY_KEYS["name"].default,
        "data": DEFAULT_DATA,
        "model": MODEL_KEYS["name"].default,
        "algorithm": DEFAULT_ALGORITHM,
    }[section]


def _flatten(table: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """``{"run.rounds": 50}`` from quoted dotted keys or nested tables (unquoted keys)."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        dotted = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, where, dotted))
        else:
            set_dotted({}, dotted, v)  # checks SECTION.KEY form and the section name
            out[dotted] = v
    return out


@dataclass
class Sweep:
    """A parsed sweep: the base config (raw), fixed overrides, grid and zip."""

    base: dict[str, Any]
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    zipped: dict[str, list[Any]]
    source: str | None = None
    base_source: str | None = None

    @property
    def varied_keys(self) -> list[str]:
        return [*self.grid, *self.zipped]


def load_sweep(sweep: str | os.PathLike | Mapping[str, Any]) -> Sweep:
    """Parse a sweep file (or dict) and check its shape; configs are checked by :func:`expand`."""
    if isinstance(sweep, Mapping):
        data, where, source = copy.deepcopy(dict(sweep)), Path.cwd(), None
    else:
        p = Path(sweep)
        data = read_toml(p, "sweep file")
        where, source = p.parent, str(p)
    for k in data:
        if k not in SWEEP_KEYS:
            raise ConfigError(
                f"sweep: unknown top-level key or table {k!r}; allowed: {', '.join(SWEEP_KEYS)}"
            )

    base_value = data.get("base")
    base_source = None
    if base_value is None:
        base: dict[str, Any] = {}
    elif isinstance(base_value, Mapping):
        base = copy.deepcopy(dict(base_value))
    elif isinstance(base_value, str):
        bp = Path(base_value)
        bp = bp if bp.is_absolute() else where / bp
        if not bp.is_file():
            raise ConfigError(f"base: got {base_value!r}, but {bp} is not a file")
        base = read_toml(bp, "base config")
        base_source = str(bp)
    else:
        raise ConfigError(f"base: got {base_value!r}, expected a path to a config file")

    tables = {}
    for name in ("set", "grid", "zip"):
        t = data.get(name, {})
        if not isinstance(t, Mapping):
            raise ConfigError(f"{name}: expected a table [{name}], got {t!r}")
        tables[name] = _flatten(t, name)
    for name in ("grid", "zip"):
        for k, v in tables[name].items():
            if not isinstance(v, list) or not v:
                raise ConfigError(f"{name}.{k}: got {v!r}, expected a non-empty list of values")
    zipped = tables["zip"]
    lengths = {k: len(v) for k, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ConfigError(f"zip: lists must have equal lengths; got {desc}")
    seen: dict[str, str] = {}
    for name in ("set", "grid", "zip"):
        for k in tables[name]:
            if k in seen:
                raise ConfigError(f"{k}: given in both [{seen[k]}] and [{name}]; give it once")
            seen[k] = name
    return Sweep(base, tables["set"], tables["grid"], zipped, source, base_source)


# --------------------------------------------------------------------------- expansion
def _combinations(sw: Sweep) -> list[dict[str, Any]]:
    grid = [dict(zip(sw.grid, vals, strict=True)) for vals in itertools.product(*sw.grid.values())]
    n_zip = len(next(iter(sw.zipped.values()))) if sw.zipped else 0
    zips = [{k: v[i] for k, v in sw.zipped.items()} for i in range(n_zip)] or [{}]
    return [{**g, **z} for g in grid for z in zips]


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The base's raw config with dotted overrides, minus the base's keys a new name rejects."""
    raw = copy.deepcopy(dict(base))
    for k, v in overrides.items():
        set_dotted(raw, k, copy.deepcopy(v))
    given = {tuple(k.split(".", 1)) for k in overrides}
    for section in NAMED_SECTIONS:
        if (section, "name") not in given:
            continue
        base_body = base.get(section, {})
        if not isinstance(base_body, Mapping):
            continue
        old = base_body.get("name", _default_name(section))
        new = raw[section]["name"]
        if new == old or not isinstance(new, str):
            continue
        try:
            schema = _section_schema(section, new)
        except Exception:  # an unknown name: resolution reports it
            continue
        for key in base_body:
            if (section, key) not in given and key not in schema:
                del raw[section][key]
    if ("algorithm", "name") in given and isinstance(base.get("data"), Mapping):
        from .algorithms import ALGORITHMS

        spec = ALGORITHMS.get(raw["algorithm"]["name"])
        old = base.get("algorithm", {}).get("name", DEFAULT_ALGORITHM)
        if spec is not None and not spec.uses_data and raw["algorithm"]["name"] != old:
            for key in base["data"]:
                if ("data", key) not in given:
                    del raw["data"][key]
            if not raw["data"]:
                del raw["data"]
    return raw


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return repr(v)
    return json.dumps(v, separators=(",", ":")) if isinstance(v, list | dict) else str(v)


def describe(varied: Mapping[str, Any]) -> str:
    """``"topology.name=ring, run.seed=0"`` (or ``"the only run"``)."""
    return ", ".join(f"{k}={_value_text(v)}" for k, v in varied.items()) or "the only run"


def config_hash(cfg: Config) -> str:
    """8 hex digits of the SHA-256 of the fully resolved config."""
    return hashlib.sha256(cfg.to_toml().encode()).hexdigest()[:8]


def run_id(varied: Mapping[str, Any], cfg: Config) -> str:
    """``topology.name=ring,run.seed=0-1a2b3c4d``: varied values (filesystem-safe) + hash."""
    text = ",".join(f"{k}={_value_text(v)}" for k, v in varied.items())
    text = re.sub(r"[^A-Za-z0-9._,=+-]+", "_", text)[:_ID_TEXT_MAX].strip("._")
    return f"{text}-{config_hash(cfg)}" if text else f"run-{config_hash(cfg)}"


def _expand(sw: Sweep) -> list[tuple[dict[str, Any], Config]]:
    combos = _combinations(sw)
    out = []
    for i, varied in enumerate(combos):
        try:
            raw = apply_overrides(sw.base, {**sw.fixed, **varied})
            cfg = Config(raw, source=sw.base_source)
        except UserError as e:
            raise ConfigError(
                f"sweep run {i + 1}/{len(combos)} ({describe(varied)}): {e}"
            ) from None
        out.append((varied, cfg))
    return out


def expand(sweep: str | os.PathLike | Mapping[str, Any]) -> list[tuple[dict[str, Any], Config]]:
    """Every run of a sweep (file path or dict) as ``(varied values, resolved Config)``.

    Raises :class:`ConfigError` for a malformed sweep or the first run that does not resolve.
    A dict's relative ``base`` path is taken from the current directory; ``base`` may also be
    a dict of config sections.
    """
    return _expand(load_sweep(sweep))


# --------------------------------------------------------------------------- running
def _run_one(raw: dict[str, Any], source: str | None, out: str) -> tuple[str, str]:
    """Worker: run one config into ``out``; return ``(status, error message)``."""
    try:
        from .runner import run

        run(Config(raw, source=source), quiet=True, out=out, resume=True)  # from a checkpoint
        return "complete", ""
    except UserError as e:
        return "failed", str(e)
    except Exception as e:  # any error of one run is recorded, not fatal
        return "failed", f"{type(e).__name__}: {e}"


def _summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


def is_finished(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir/summary.json`` exists with status ``"complete"``."""
    s = _summary(Path(run_dir))
    return s is not None and s.get("status") == "complete"


def _clean_leftovers(runs_dir: Path) -> None:
    """Remove what killed runs left behind: temporary directories, and the checkpoints of
    runs that finished (a run killed between writing its directory and deleting its
    checkpoint)."""
    if not runs_dir.is_dir():
        return
    for p in runs_dir.iterdir():
        stale_ckpt = p.name.startswith(".") and p.name.endswith(".checkpoint.npz")
        if stale_ckpt and is_finished(runs_dir / p.name[1 : -len(".checkpoint.npz")]):
            p.unlink(missing_ok=True)
        elif p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: one row per run (as in ``sweep.csv``)."""

    out: Path
    rows: list[dict[str, Any]]
    varied_keys: list[str]
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def sweep_csv(self) -> Path:
        return self.out / "sweep.csv"

    @property
    def history_csv(self) -> Path:
        return self.out / "history.csv"

    @property
    def ok(self) -> bool:
        return not self.failed and all(r["status"] == "complete" for r in self.rows)


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, list | dict):
        return json.dumps(v)
    return v


def _write_csv_atomic(path: Path, cols: list[str], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in cols})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_tables(out: Path, keys: list[str], rows: list[dict[str, Any]]) -> None:
    per_head = [k for r in rows for k in r if k.startswith("test_") and k not in FINAL_METRICS]
    metrics = [*FINAL_METRICS, *dict.fromkeys(per_head)]  # multitask: one column per head
    metric_cols = [m for m in metrics if any(r.get(m) is not None for r in rows)]
    _write_csv_atomic(out / "sweep.csv", ["run_id", *keys, "status", *metric_cols, "error"], rows)
    hist_rows: list[dict[str, Any]] = []
    hist_cols: list[str] = []
    for r in rows:
        if r["status"] != "complete":
            continue
        path = out / "runs" / r["run_id"] / "metrics.csv"
        try:
            with open(path, newline="") as f:
                metrics = list(csv.DictReader(f))
        except OSError:
            continue
        for m in metrics:
            hist_cols += [c for c in m if c not in hist_cols]
            hist_rows.append({**{k: r[k] for k in ["run_id", *keys]}, **m})
    cols = ["run_id", *keys, *[c for c in hist_cols if c not in ("run_id", *keys)]]
    _write_csv_atomic(out / "history.csv", cols, hist_rows)


def _row(rid: str, varied: Mapping[str, Any], run_dir: Path, status: str, error: str = ""):
    row: dict[str, Any] = {"run_id": rid, **varied, "status": status, "error": error}
    if status == "complete":
        s = _summary(run_dir) or {}
        row.update({m: s.get(m) for m in FINAL_METRICS})
        row.update({k: v for k, v in s.items() if k.startswith("test_") and k not in row})
    return row


def run_sweep(
    sweep_path: str | os.PathLike | Mapping[str, Any],
    out: str | os.PathLike | None = None,
    jobs: int = 1,
    quiet: bool = False,
) -> SweepResult:
    """Run every unfinished run of a sweep into ``out`` (default ``runs/<sweep stem>``).

    ``jobs`` > 1 runs in that many ``spawn`` worker processes; ``jobs = 1`` runs in this
    process.  Writes ``sweep.csv`` and ``history.csv`` at the end (also when interrupted).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs: got {jobs!r}, expected an integer >= 1")
    sw = load_sweep(sweep_path)
    runs = _expand(sw)
    if out is None:
        stem = Path(sw.source).stem if sw.source else "sweep"
        out = Path("runs") / stem
    out = Path(out)
    runs_dir = out / "runs"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    ids = [run_id(v, c) for v, c in runs]
    dup = next((i for i, n in Counter(ids).items() if n > 1), None)
    if dup is not None:
        raise ConfigError(f"sweep: run {dup!r} appears more than once (repeated grid values?)")
    runs_dir.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(runs_dir)

    keys = sw.varied_keys
    status: dict[str, tuple[str, str]] = {}
    todo = []
    for rid, (_, cfg) in zip(ids, runs, strict=True):
        if is_finished(runs_dir / rid):
            status[rid] = ("complete", "")
        else:
            todo.append((rid, cfg))
    result = SweepResult(out, [], keys, skipped=len(status))

    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(runs), initial=len(status), desc="sweep", unit="run", disable=quiet, leave=True
    )

    def done(rid: str, st: tuple[str, str]) -> None:
        status[rid] = st
        result.ran += 1
        if st[0] == "failed":
            result.failed.append(rid)
            bar.set_postfix(failed=len(result.failed))
        bar.update(1)

    try:
        if jobs == 1 or len(todo) <= 1:
            for rid, cfg in todo:
                done(rid, _run_one(cfg.raw, cfg.source, str(runs_dir / rid)))
        else:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=ctx) as pool:
                futures = {
                    pool.submit(_run_one, cfg.raw, cfg.source, str(runs_dir / rid)): rid
                    for rid, cfg in todo
                }
                try:
                    for fut in cf.as_completed(futures):
                        try:
                            st = fut.result()
                        except Exception as e:  # e.g. a worker process that died
                            st = ("failed", f"{type(e).__name__}: {e}")
                        done(futures[fut], st)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
        result.rows = [
            _row(rid, varied, runs_dir / rid, *status.get(rid, ("pending", "")))
            for rid, (varied, _) in zip(ids, runs, strict=True)
        ]
        _write_tables(out, keys, result.rows)
    return result


# --------------------------------------------------------------------------- command line
def add_arguments(p) -> None:
    """Arguments of ``p2p-fmtl sweep`` on an argparse (sub)parser."""
    p.add_argument("sweep", help="sweep file (TOML: base, [set], [grid], [zip])")
    p.add_argument("--out", help="sweep directory (default runs/<sweep file stem>)")
    p.add_argument(
        "--jobs", type=int, default=1, help="parallel worker processes (default 1: in process)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run", action="store_true", help="validate the sweep and list its runs, run nothing"
    )


def sweep_command(args) -> int:
    """``p2p-fmtl sweep``: 0 if every run completed, 1 if any failed (ConfigError propagates)."""
    if getattr(args, "dry_run", False):
        runs = expand(args.sweep)
        for varied, cfg in runs:
            print(run_id(varied, cfg))
        print(f"{len(runs)} runs")
        return 0
    res = run_sweep(args.sweep, out=args.out, jobs=args.jobs, quiet=args.quiet)
    n = len(res.rows)
    print(
        f"sweep: {n} runs ({res.ran} run now, {res.skipped} already finished, "
        f"{len(res.failed)} failed) -> {res.sweep_csv}"
    )
    for rid in res.failed:
        err = next(r["error"] for r in res.rows if r["run_id"] == rid)
        print(f"p2p-fmtl: run {rid} failed: {err}", file=sys.stderr)
    return 0 if res.ok else 1
