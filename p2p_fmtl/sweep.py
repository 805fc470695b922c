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

The whole sweep is validated up front: every run's config is loaded with
:func:`~p2p_fmtl.config.load_config` (also by ``--dry-run``), and the first run whose config
does not resolve is reported as a :class:`~p2p_fmtl.errors.ConfigError` naming that run's
varied values.  Axis values are taken as resolved (``1`` and ``1.0`` of a float key are the
same value), and two runs with the same resolved config are an error, as is a key given twice
(quoted ``"algorithm.lr"`` and nested ``algorithm.lr`` in one table, or in two tables).

**Graphs** (Python only): the key ``graph`` in ``set``, ``grid`` or ``zip`` holds networkx
graphs, passed to ``p2p_fmtl.run(cfg, graph=G)``; the run id shows the graph's name and a
fingerprint of its nodes and edges, and the hash covers it::

    run_sweep({"base": base, "grid": {"graph": [G1, G2], "run.seed": [0, 1]}}, out="runs/g")

**Output** (``DIR``, default ``runs/<sweep-file stem>``)::

    DIR/runs/<run id>/   one run directory per run (config.toml has the full config)
    DIR/sweep.csv        one row per run: run_id, each varied key, status, final metrics, error
    DIR/history.csv      one row per run and evaluation: run_id, varied keys, metrics.csv columns

A run id is ``<key=value,...>-<hash>``: the varied values made filesystem-safe (truncated),
then 8 hex digits of the SHA-256 of the fully resolved config (and graph), so ids are unique,
stable and change whenever the run's config changes.  A run is finished iff
``DIR/runs/<id>/summary.json`` exists with status ``"complete"``; running the same sweep
again skips finished runs, re-does the others (failed ones included) and removes temporary
directories left by an interrupted sweep.  A running sweep holds ``DIR/.sweep.lock`` (an
exclusive ``flock``, removed at the end); a second sweep on ``DIR`` is refused, naming the
holder's pid.

With ``jobs`` > 1 the runs go to worker processes started as ``python -c`` programs that
import only ``p2p_fmtl`` (never the caller's script, so a script needs no
``if __name__ == "__main__":`` guard).  The workers die with the sweep: on Linux through
``PR_SET_PDEATHSIG`` (also when the sweep is killed with SIGKILL), elsewhere by watching their
parent; SIGINT and SIGTERM of the sweep end them and still write the two tables.  A run that
raises (or whose worker dies) is recorded as ``failed`` with its error and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config
from .config import Config, load_config, set_dotted
from .errors import ConfigError, UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: no lock
    fcntl = None

SWEEP_KEYS = ("base", "set", "grid", "zip")
GRAPH_KEY = "graph"
LOCK_NAME = ".sweep.lock"
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
    "epsilon_max",  # privacy.enabled: the largest epsilon of a node
)
_ID_TEXT_MAX = 96


# --------------------------------------------------------------------------- parsing
def _is_graph(v: Any) -> bool:
    import networkx as nx

    import topologies

    return isinstance(v, nx.Graph | topologies.EdgeGraph)


def _flatten(
    table: Mapping[str, Any], where: str, prefix: str = "", out: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``{"run.rounds": 50}`` from quoted dotted keys or nested tables (unquoted keys).

    A key reached twice (quoted ``"algorithm.lr"`` beside nested ``algorithm.lr``) is an
    error, not a silent overwrite.
    """
    out = {} if out is None else out
    for k, v in table.items():
        dotted = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            _flatten(v, where, dotted, out)
            continue
        if dotted != GRAPH_KEY:
            set_dotted({}, dotted, v)  # checks SECTION.KEY form and the section name
        if dotted in out:
            raise ConfigError(
                f'[{where}] {dotted}: given twice (a quoted "{dotted}" key and a nested '
                "or dotted one); give it once"
            )
        out[dotted] = v
    return out


def _check_graphs(name: str, values: list[Any]) -> None:
    for g in values:
        if not _is_graph(g):
            raise ConfigError(
                f"{name}.{GRAPH_KEY}: got {g!r}, expected networkx graphs (a graph axis is for "
                "Python sweeps; files vary topology.name)"
            )


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
        data = config.read_toml(p, "sweep file")
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
    elif isinstance(base_value, str | os.PathLike):
        bp = Path(base_value)
        bp = bp if bp.is_absolute() else where / bp
        if not bp.is_file():
            raise ConfigError(f"base: got {str(base_value)!r}, but {bp} is not a file")
        base = config.read_toml(bp, "base config")
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
            if k == GRAPH_KEY:
                _check_graphs(name, v)
    if GRAPH_KEY in tables["set"]:
        _check_graphs("set", [tables["set"][GRAPH_KEY]])
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
    """The base's raw config with dotted overrides, minus the base's keys a new name rejects
    (:func:`p2p_fmtl.config.apply_overrides`, without notes: a sweep states the rule once);
    a graph axis value is not a config key."""
    plain = {k: v for k, v in overrides.items() if k != GRAPH_KEY}
    return config.apply_overrides(base, plain, warn=False)


def graph_fingerprint(G) -> str:
    """16 hex digits of the SHA-256 of a graph's sorted nodes and edges (with their data)."""
    directed = G.is_directed()
    edges = []
    for u, v, d in G.edges(data=True):
        a, b = repr(u), repr(v)
        if not directed and b < a:
            a, b = b, a
        edges.append((a, b, repr(sorted(d.items()))))
    text = json.dumps(
        {"directed": directed, "nodes": sorted(map(repr, G.nodes())), "edges": sorted(edges)}
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return repr(v)
    if _is_graph(v):
        return f"{v.name or 'graph'}#{graph_fingerprint(v)[:8]}"
    return json.dumps(v, separators=(",", ":")) if isinstance(v, list | dict) else str(v)


def describe(varied: Mapping[str, Any]) -> str:
    """``"topology.name=ring, run.seed=0"`` (or ``"the only run"``)."""
    return ", ".join(f"{k}={_value_text(v)}" for k, v in varied.items()) or "the only run"


def config_hash(cfg: Config, graph=None) -> str:
    """8 hex digits of the SHA-256 of the fully resolved config (and the graph's fingerprint)."""
    text = cfg.to_toml()
    if graph is not None:
        text += f"\n# graph {graph_fingerprint(graph)}\n"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_id(varied: Mapping[str, Any], cfg: Config, graph=None) -> str:
    """``topology.name=ring,run.seed=0-1a2b3c4d``: varied values (filesystem-safe) + hash.

    ``graph`` defaults to ``varied["graph"]`` (a graph axis); a fixed graph is passed here.
    """
    graph = varied.get(GRAPH_KEY) if graph is None else graph
    text = ",".join(f"{k}={_value_text(v)}" for k, v in varied.items())
    text = re.sub(r"[^A-Za-z0-9._,=+-]+", "_", text)[:_ID_TEXT_MAX].strip("._")
    h = config_hash(cfg, graph)
    return f"{text}-{h}" if text else f"run-{h}"


def _resolved(varied: Mapping[str, Any], cfg: Config) -> dict[str, Any]:
    """The varied values as the config resolved them (``1`` of a float key becomes ``1.0``)."""
    out = {}
    for k, v in varied.items():
        section, _, key = k.partition(".")
        body = cfg.get(section) if key else None
        out[k] = body[key] if isinstance(body, Mapping) and key in body else v
    return out


def _expand(sw: Sweep) -> list[tuple[dict[str, Any], Config]]:
    combos = _combinations(sw)
    out = []
    first: dict[str, int] = {}
    for i, varied in enumerate(combos):
        where = f"sweep run {i + 1}/{len(combos)} ({describe(varied)})"
        try:
            cfg = load_config(apply_overrides(sw.base, {**sw.fixed, **varied}))
        except UserError as e:
            raise ConfigError(f"{where}: {e}") from None
        cfg.source = sw.base_source
        norm = _resolved(varied, cfg)
        j = first.setdefault(config_hash(cfg, norm.get(GRAPH_KEY, sw.fixed.get(GRAPH_KEY))), i)
        if j != i:
            raise ConfigError(
                f"{where}: the same run as sweep run {j + 1} ({describe(combos[j])}): a "
                "value listed twice, or equal values such as 1 and 1.0; give each value once"
            )
        out.append((norm, cfg))
    return out


def expand(sweep: str | os.PathLike | Mapping[str, Any]) -> list[tuple[dict[str, Any], Config]]:
    """Every run of a sweep (file path or dict) as ``(varied values, resolved Config)``.

    Raises :class:`ConfigError` for a malformed sweep, the first run that does not resolve,
    or a run equal to an earlier one.  A dict's relative ``base`` path is taken from the
    current directory; ``base`` may also be a dict of config sections.  The varied values
    are the resolved ones (``1`` of a float key is ``1.0``).
    """
    return _expand(load_sweep(sweep))


# --------------------------------------------------------------------------- running
def _run_one(raw: dict[str, Any], source: str | None, out: str, graph=None) -> tuple[str, str]:
    """Run one config into ``out`` (resuming from its checkpoint); ``(status, error)``."""
    try:
        from .runner import run

        cfg = load_config(raw)
        cfg.source = source
        extra = {} if graph is None else {"graph": graph}
        run(cfg, quiet=True, out=out, resume=True, **extra)
        return "complete", ""
    except UserError as e:
        return "failed", str(e)
    except Exception as e:  # any error of one run is recorded, not fatal
        return "failed", f"{type(e).__name__}: {e}"


def _die_with_parent(parent: int) -> None:
    """Make this worker die with the sweep process ``parent``, however that one ends."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)

    def watch() -> None:  # other systems (and a second guard): poll the parent
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker_main(fd: int, parent: int) -> None:
    """A worker process: run the tasks received on connection ``fd`` until it closes."""
    from multiprocessing.connection import Connection

    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle
    conn = Connection(fd)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_run_one(*task))


_WORKER_CODE = "from p2p_fmtl.sweep import _worker_main; _worker_main({fd}, {pid})"


class _Workers:
    """Worker processes that run tasks and die with this process (see the module docstring)."""

    def __init__(self, n: int):
        self.n = n
        self.procs: dict[Any, subprocess.Popen] = {}  # connection -> process

    def _start(self):
        from multiprocessing import Pipe

        ours, theirs = Pipe()
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parents[1])  # the p2p_fmtl this process uses
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        code = _WORKER_CODE.format(fd=theirs.fileno(), pid=os.getpid())
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", code], pass_fds=(theirs.fileno(),), env=env
            )
        finally:
            theirs.close()
        self.procs[ours] = proc
        return ours

    def run(self, tasks: list[tuple[str, tuple]], done) -> None:
        """Send ``(key, args of _run_one)`` tasks to idle workers; ``done(key, result)``."""
        from multiprocessing.connection import wait

        todo = list(reversed(tasks))
        idle = [self._start() for _ in range(min(self.n, len(todo)))]
        busy: dict[Any, str] = {}
        while todo or busy:
            while idle and todo:
                conn = idle.pop()
                key, args = todo.pop()
                try:
                    conn.send(args)
                except OSError:  # died while idle: put the task back, start another
                    todo.append((key, args))
                    self._end(conn, kill=True)
                    idle.append(self._start())
                    continue
                busy[conn] = key
            for conn in wait(list(busy)):
                key = busy.pop(conn)
                try:
                    result = conn.recv()
                except (EOFError, OSError):
                    code = self._end(conn, kill=True)
                    result = ("failed", f"worker process died (exit status {code})")
                    if todo:
                        idle.append(self._start())
                else:
                    idle.append(conn)
                done(key, result)

    def _end(self, conn, kill: bool) -> int | None:
        proc = self.procs.pop(conn)
        conn.close()  # an idle worker reads end-of-file and returns
        if kill:
            proc.kill()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def close(self, kill: bool = False) -> None:
        """End every worker: gently when idle, killed when ``kill`` (an interrupted sweep)."""
        for conn in list(self.procs):
            self._end(conn, kill)


@contextlib.contextmanager
def _terminate_raises():
    """SIGTERM raises SystemExit (so the workers are ended and the tables written)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _locked(out: Path):
    """Hold ``out/.sweep.lock`` (flock) for the sweep; one line if another sweep holds it."""
    path = out / LOCK_NAME
    if fcntl is None:  # pragma: no cover
        yield
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"--out {out}: cannot write there ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"--out {out}: another sweep is running in this directory (pid {holder}); "
                "wait for it to end or choose another --out"
            ) from None
        try:  # the holder before us may have removed the file between our open and flock
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before the unlock: no one locks a removed file for long
        os.close(fd)


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
    if _is_graph(v):
        return _value_text(v)
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


def _prepare_out(out: Path) -> None:
    """Create the sweep directory, or one line saying why it cannot be used."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"--out {out}: cannot create the sweep directory there ({e.strerror or e})"
        ) from None
    if not os.access(out / "runs", os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: the sweep directory is not writable")


def run_sweep(
    sweep_path: str | os.PathLike | Mapping[str, Any],
    out: str | os.PathLike | None = None,
    jobs: int = 1,
    quiet: bool = False,
) -> SweepResult:
    """Run every unfinished run of a sweep into ``out`` (default ``runs/<sweep stem>``).

    ``jobs`` > 1 runs in that many worker processes; ``jobs = 1`` runs in this process.
    Every config is loaded, and ``out`` checked and locked, before any run starts.  Writes
    ``sweep.csv`` and ``history.csv`` at the end (also when interrupted).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs: got {jobs!r}, expected an integer >= 1")
    sw = load_sweep(sweep_path)
    runs = _expand(sw)
    fixed_graph = sw.fixed.get(GRAPH_KEY)
    graphs = [v.get(GRAPH_KEY, fixed_graph) for v, _ in runs]
    if any(g is not None for g in graphs):
        import inspect

        from .runner import run

        if "graph" not in inspect.signature(run).parameters:
            raise UserError("graph: this version of p2p_fmtl.run takes no graph= argument")
    if out is None:
        stem = Path(sw.source).stem if sw.source else "sweep"
        out = Path("runs") / stem
    out = Path(out)
    ids = [run_id(v, c, fixed_graph) for v, c in runs]
    _prepare_out(out)
    runs_dir = out / "runs"
    with _locked(out), _terminate_raises():
        _clean_leftovers(runs_dir)
        return _run_all(out, sw.varied_keys, runs, ids, graphs, jobs, quiet)


def _run_all(out: Path, keys, runs, ids, graphs, jobs: int, quiet: bool) -> SweepResult:
    runs_dir = out / "runs"
    status: dict[str, tuple[str, str]] = {}
    todo = []
    for rid, (_, cfg), graph in zip(ids, runs, graphs, strict=True):
        if is_finished(runs_dir / rid):
            status[rid] = ("complete", "")
        else:
            todo.append((rid, (cfg.raw, cfg.source, str(runs_dir / rid), graph)))
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
            for rid, args in todo:
                done(rid, _run_one(*args))
        else:
            workers = _Workers(min(jobs, len(todo)))
            finished = False
            try:
                workers.run(todo, done)
                finished = True
            finally:
                workers.close(kill=not finished)
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
        "--dry-run",
        action="store_true",
        help="load every run's config and list the runs, run nothing",
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
