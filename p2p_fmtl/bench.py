"""``p2p-fmtl bench``: seconds per round, one fresh worker process per configuration.

A worker (``python -m p2p_fmtl.bench --worker SPEC_JSON``) builds one
:class:`~p2p_fmtl.runner.Simulation`, warms it up with one ``advance(k)`` (compilation
happens there), times ``repeats`` more ``advance(k)`` calls, evaluates once, measures a
float32 matmul peak and a copy bandwidth (:func:`copy_bandwidth_gbs`), and prints ONE
JSON line.  Threads: ``"1"`` pins it to one CPU with XLA's multi-threaded Eigen off;
``"all"`` leaves the defaults; ``"devices"`` shards the node axis over one
single-threaded CPU device per usable core (``run.devices``).

The command times D-EM and D-SGD on FedEM synthetic data (:func:`recipe_config`) or any
``--config FILE`` and prints a markdown table.  The full grid, FLOP/s and the comparison
with the FedEM reference code live in ``experiments/benchmarks/`` (its ``harness.py``
reuses this module's workers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import UserError

ALGORITHMS = ("dem", "dsgd")
THREADS = ("1", "all", "devices")
DEFAULTS = {"sizes": [30, 300], "algorithms": ALGORITHMS, "threads": ["1", "all"]}
DEFAULTS |= {"repeats": 5, "n_test": 1000}
QUICK = {"sizes": [30, 300], "algorithms": ["dem"], "threads": ["1"], "repeats": 3, "n_test": 100}
ROUNDS_PER_CALL = 2
PEAK_SIZE, PEAK_REPEATS = 2048, 5
COPY_MB, COPY_REPEATS = 256, 5
TIMEOUT_S = 20 * 60
OTHER_LOAD_ABOVE = 0.25  # cores kept busy by other processes while a worker ran
DISTURBED_BELOW = 0.9  # CPU / wall of a single-thread worker during its timed calls
LABELS = {"dem": "D-EM", "dsgd": "D-SGD"}
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DESCRIPTION = (
    "Seconds per round of D-EM and D-SGD on FedEM synthetic data (or of --config FILE), "
    "one worker process per configuration. The full benchmark grid and the comparison "
    "with the FedEM reference implementation live in "
    "`python experiments/benchmarks/run_benchmarks.py`."
)


# --------------------------------------------------------------------------- configs
def recipe_config(
    n: int,
    algorithm: str,
    *,
    topology: Mapping[str, Any] | None = None,
    n_test: int = 1000,
    rounds: int = 100,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """The raw config of the benchmark recipe: FedEM synthetic data (reference variant,
    d = 150), linear model, lr 0.1, batch 128, one local epoch (per component), SGD
    momentum 0.9, weight decay 5e-4, M = 3 for D-EM; ``topology`` defaults to an
    Erdős–Rényi graph with p = 0.5 and Metropolis weights."""
    if algorithm not in ALGORITHMS:
        raise UserError(f"--algorithms: got {algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
    alg = {"name": algorithm, "lr": 0.1, "batch_size": 128, "local_epochs": 1}
    alg |= {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4}
    if algorithm == "dem":
        alg["components"] = 3
    data = {"name": "fedem_synthetic", "variant": "reference", "dim": 150, "seed": 12345}
    data |= {"n_test": n_test, "bucketing": "full"}  # least padding: the round is timed
    graph = {"name": "erdos_renyi", "n": n, "p": 0.5, "mixing": "metropolis"}
    return {
        "run": {"seed": seed, "rounds": rounds, "eval_every": rounds},
        "topology": dict(topology or graph),
        "data": data,
        "model": {"name": "linear"},
        "algorithm": alg,
    }


def spec_config(spec: Mapping[str, Any]):
    """The resolved config of a worker spec: ``spec["config"]`` (a raw dict or a TOML
    file) with the dotted ``spec["overrides"]`` applied (raises UserError)."""
    from .config import load_config

    return load_config(spec["config"], overrides=spec.get("overrides") or {})


def _setting(cfg: Mapping[str, Any], section: str, key: str) -> Any:
    return cfg[section].get(key) if section in cfg else None


# --------------------------------------------------------------------------- the worker
_THREAD_FLAGS = ("xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads")
_DEVICE_FLAG = "xla_force_host_platform_device_count"
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_env(threads: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: ``"1"`` single-threaded XLA and BLAS, ``"all"`` the
    defaults (thread limits inherited from ``base`` removed), ``"devices"`` single-threaded
    XLA (the worker sets ``run.devices``); a forced host device count is dropped."""
    env = dict(os.environ if base is None else base)
    drop = (*_THREAD_FLAGS, _DEVICE_FLAG)
    flags = [t for t in env.pop("XLA_FLAGS", "").split() if not t.lstrip("-").startswith(drop)]
    for var in _THREAD_VARS:
        env.pop(var, None)
    if threads in ("1", "devices"):
        flags.append("--xla_cpu_multi_thread_eigen=false")
    if threads == "1":
        env.update(dict.fromkeys(_THREAD_VARS, "1"))
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + (os.pathsep + path if path else "")
    return env


def _pin(cpu: int) -> None:
    """Pin this process, and every thread it already has, to one CPU."""
    os.sched_setaffinity(0, {cpu})
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:  # pragma: no cover - a thread that just ended
            pass


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


def _reset_peak_rss() -> bool:
    """Reset the peak RSS (``5`` to /proc/self/clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy, from the first line of /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, *rest = map(int, fields[1:])
    except (OSError, ValueError):
        return None
    busy = user + nice + system + irq + softirq + (rest[0] if rest else 0)  # + steal
    return busy / os.sysconf("SC_CLK_TCK")


def matmul_peak_gflops(size: int = PEAK_SIZE, repeats: int = PEAK_REPEATS) -> float:
    """GFLOP/s of a jitted float32 ``size × size`` matmul: 2·size³ / median time."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, a).block_until_ready()
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        f(a, a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2.0 * size**3 / statistics.median(times) / 1e9


def copy_bandwidth_gbs(megabytes: int = COPY_MB, repeats: int = COPY_REPEATS) -> float:
    """GB/s of a jitted float32 ``x + 1`` over ``megabytes`` MB, far above the caches'
    sizes: every byte read once and written once, so 2 · bytes / median time.  The input
    is donated (written in place), so no call pays page faults for a fresh output."""
    import jax
    import jax.numpy as jnp

    n = megabytes * 2**20 // 4
    f = jax.jit(lambda a: a + 1.0, donate_argnums=0)
    x = f(jnp.zeros((n,), jnp.float32)).block_until_ready()
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        x = f(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2.0 * 4 * n / statistics.median(times) / 1e9


def run_worker_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run one configuration in THIS process and return its result row.  ``spec``:
    ``config``, ``threads`` and optionally ``overrides``, ``cpu``, ``rounds_per_call``,
    ``repeats``, ``peak_size``, ``peak_repeats``."""
    if spec["threads"] == "1":
        _pin(int(spec.get("cpu", min(os.sched_getaffinity(0)))))
    elif spec["threads"] == "devices":  # the node axis over one CPU device per core
        devices = {"run.devices": len(os.sched_getaffinity(0))}
        spec = {**spec, "overrides": {**(spec.get("overrides") or {}), **devices}}
    start = (_machine_busy_seconds(), _cpu_seconds(), time.perf_counter())
    rss_import = _rss_peak_mb()
    import jax

    from .runner import Simulation

    cfg = spec_config(spec)
    k, repeats = (
        int(spec.get("rounds_per_call", ROUNDS_PER_CALL)),
        int(spec.get("repeats", DEFAULTS["repeats"])),
    )
    t0 = time.perf_counter()
    sim = Simulation(cfg)
    t1 = time.perf_counter()
    sim.advance(k)  # compiles the chunk of k rounds, then runs it
    row = {"status": "ok", "build_s": t1 - t0, "warmup_s": time.perf_counter() - t1}
    row |= _time_rounds(sim, k, repeats, start) | _describe(sim, cfg)
    row["node_rounds_per_s"] = row["n_nodes"] / row["s_per_round"]
    row |= {"rss_after_import_mb": rss_import, "xla_flags": os.environ.get("XLA_FLAGS", "")}
    row |= {"jax_version": jax.__version__, "backend": jax.default_backend()}
    try:
        acc = sim.evaluate().get("test_acc")
        row["test_acc"] = None if acc is None else float(acc)
    except Exception as e:  # the timing stands; say why there is no accuracy
        row["eval_error"] = f"{type(e).__name__}: {e}"[:300]
    peak = (int(spec.get("peak_size", PEAK_SIZE)), int(spec.get("peak_repeats", PEAK_REPEATS)))
    row["peak_gflops"] = matmul_peak_gflops(*peak)
    row["copy_gbs"] = copy_bandwidth_gbs(int(spec.get("copy_mb", COPY_MB)))
    return row


def _time_rounds(sim: Any, k: int, repeats: int, start: tuple) -> dict[str, Any]:
    """Time ``repeats`` calls of ``sim.advance(k)`` after the warm-up: the timing fields."""
    compile_s, compilations = float(sim.engine.compile_seconds), int(sim.engine.compilations)
    peak_before = _rss_peak_mb()  # build (data generation, packing) and warm-up
    cleared = _reset_peak_rss()
    c0, w0 = _cpu_seconds(), time.perf_counter()
    times = [float(sim.advance(k)) for _ in range(repeats)]
    c1, w1 = _cpu_seconds(), time.perf_counter()
    m1, (m0, c_start, w_start) = _machine_busy_seconds(), start
    other = None  # cores busy with other processes from the worker's start to here
    if m0 is not None and m1 is not None:
        other = max(0.0, ((m1 - m0) - (c1 - c_start)) / max(w1 - w_start, 1e-9))
    peak_timed = _rss_peak_mb()  # since the reset: the timed rounds only
    row = {"compile_s": compile_s, "compilations": compilations, "times_s": times}
    row["recompilations_while_timed"] = int(sim.engine.compilations) - compilations
    row |= {"s_per_round": statistics.median(times) / k, "other_load": other}
    row["cpu_per_wall"] = (c1 - c0) / max(w1 - w0, 1e-9)
    row["peak_rss_mb"] = max(peak_before, peak_timed)
    row["rounds_peak_rss_mb"] = peak_timed if cleared else None
    return row


def _describe(sim: Any, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What was timed: nodes, graph, gossip, training samples, padding, packing."""
    packed, n_train = sim.packed, sim.n_train
    buckets = getattr(packed, "buckets", None)
    return {
        "n_nodes": int(sim.n_nodes),
        "graph": _setting(cfg, "topology", "name"),
        "gossip_operator": sim.gossip_operator,
        "gossip_nnz": int(sim.gossip_nnz),
        "shared_values": int(sim.shared_values),
        "n_test": _setting(cfg, "data", "n_test"),
        "n_train_total": None if n_train is None else int(sum(int(v) for v in n_train)),
        "padding_fraction": float(sim.padding_fraction),
        "buckets": None if buckets is None else len(buckets),
        "cpus": len(os.sched_getaffinity(0)),
        "devices": int(sim.devices),
        "node_chunks": list(getattr(packed, "chunks", ()) or ()),
        "dummy_nodes": int(getattr(packed, "dummy_nodes", 0) or 0),
        "train_row_bytes": _row_bytes(buckets[0]) if buckets else None,
    }


def _row_bytes(bucket: Any) -> int:
    """Bytes of one training row as stored: its features and its label."""
    import numpy as np

    x, y = bucket.x_train, bucket.y_train
    feat = int(np.prod(x.shape[2:], dtype=np.int64)) * np.dtype(x.dtype).itemsize
    return feat + int(np.prod(y.shape[2:], dtype=np.int64)) * np.dtype(y.dtype).itemsize


# --------------------------------------------------------------------------- the parent
def _reason(proc: subprocess.CompletedProcess) -> str:
    """Why a worker gave no row, in one line."""
    rc = proc.returncode
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
        return f"killed by {name}" + (" (out of memory?)" if -rc == signal.SIGKILL else "")
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    return f"exit status {rc}: {lines[-1] if lines else 'no output'}"[:300]


def _last_json(stdout: str) -> dict | None:
    """The last line of ``stdout`` that is a JSON object."""
    for line in reversed((stdout or "").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run_worker(
    spec: Mapping[str, Any],
    *,
    timeout: float = TIMEOUT_S,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run one configuration in a fresh worker process; the row is ``spec`` plus the
    worker's result, or ``status = "failed"`` with a ``reason``.  ``command``: another
    worker program, called with the spec as JSON after it (default: this module's
    ``--worker``)."""
    spec = dict(spec)
    prefix = list(command or [sys.executable, "-m", "p2p_fmtl.bench", "--worker"])
    env, t0 = worker_env(spec["threads"]), time.perf_counter()
    try:
        proc = subprocess.run(
            [*prefix, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {**spec, "status": "failed", "reason": f"timeout after {timeout:.0f} s"}
    wall, result = time.perf_counter() - t0, _last_json(proc.stdout)
    if proc.returncode != 0 or result is None:
        return {**spec, "status": "failed", "reason": _reason(proc), "worker_wall_s": wall}
    return {**spec, **result, "worker_wall_s": wall}


def run_specs(specs: Sequence[Mapping[str, Any]], *, timeout: float, quiet: bool) -> list:
    """Run every spec in its own worker, one after the other, with a progress bar."""
    from tqdm.auto import tqdm

    rows = []
    for spec in (bar := tqdm(specs, desc="bench", unit="config", disable=quiet)):
        label = f"{spec.get('algorithm')} n={spec.get('n')} threads={spec['threads']}"
        bar.set_postfix_str(label)
        rows.append(row := run_worker(spec, timeout=timeout))
        msg = f"FAILED: {row.get('reason')}"
        if row["status"] == "ok":
            msg = f"{row['s_per_round']:.4g} s/round, compile {row['compile_s']:.1f} s"
            if why := disturbance(row):
                msg += f" ⚠ {why}"
        if not quiet:
            bar.write(f"{label}: {msg}", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- the table
TOO_SLOW = (
    "so its times are too slow: the machine was shared while it was timed. Re-run it on an "
    "idle machine (or with fewer other jobs) for a clean number"
)


def disturbance(row: Mapping[str, Any]) -> str | None:
    """Why a row's times are too slow (the machine was shared), in words; None if not."""
    if row.get("status") != "ok":
        return None
    other, cpw, why = row.get("other_load"), row.get("cpu_per_wall"), []
    if other is not None and other > OTHER_LOAD_ABOVE:
        why.append(f"other processes kept {other:.1f} cores busy while its worker ran")
    if row.get("threads") == "1" and cpw is not None and cpw < DISTURBED_BELOW:
        why.append(f"its single-thread worker got only {cpw:.2f} of a core while timed")
    return "; ".join(why) or None


COLUMNS = ("algorithm", "nodes", "graph", "threads", "s / round", "node-rounds / s")
COLUMNS += ("compile (s)", "peak RSS MB", "padding", "test_acc")


def _cells(row: Mapping[str, Any]) -> list[str]:
    alg, n = row.get("algorithm"), row.get("n_nodes", row.get("n"))
    cells = [LABELS.get(alg, str(alg)), str(n), str(row.get("graph")), str(row["threads"])]
    if row.get("status") != "ok":
        reason = str(row.get("reason") or "unknown error").replace("|", "/").replace("\n", " ")
        return cells + [f"failed: {reason[:120]}"] + ["–"] * 5
    acc = row.get("test_acc")
    return cells + [
        f"{row['s_per_round']:.4g}",
        f"{row['node_rounds_per_s']:,.0f}",
        f"{row['compile_s']:.1f}",
        f"{row['peak_rss_mb']:,.0f}",
        f"{100 * row['padding_fraction']:.1f} %",
        "–" if acc is None else f"{acc:.3f}",
    ]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table, one line per row, then a line per disturbed row saying why."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---:|---|---|" + "---:|" * 6]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    for r in rows:
        if why := disturbance(r):
            what = f"{LABELS.get(r['algorithm'], r['algorithm'])}, {r.get('n')} nodes"
            lines.append(f"\n⚠ {what}, threads {r['threads']}: {why}, {TOO_SLOW}")
    return "\n".join(lines)


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same directory,
    then ``os.replace`` (an existing file keeps its permissions, a new one gets 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``bench`` options to ``parser`` (the CLI's subparser reuses this)."""
    add = parser.add_argument
    # fmt: off
    add("--quick", action="store_true", help="about a minute: D-EM at n = 30 and 300, one "
        f"thread, {QUICK['repeats']} timed calls, {QUICK['n_test']} test samples per node")
    add("--out", metavar="FILE", help="also write the table to FILE (replaced atomically)")
    add("--config", metavar="FILE", help="time this config (TOML) instead of the recipe")
    add("--sizes", type=int, nargs="+", metavar="N", help="numbers of nodes (default 30 300)")
    add("--algorithms", choices=ALGORITHMS, nargs="+", metavar="ALG",
        help="dem and/or dsgd (default both; --quick dem)")
    add("--threads", choices=THREADS, nargs="+", metavar="T", help="1 (one pinned CPU, "
        "single-threaded XLA), all (XLA's threads) and/or devices (one single-threaded CPU "
        "device per core); default 1 all, --quick 1")
    add("--repeats", type=int, metavar="R", help=f"timed advance({ROUNDS_PER_CALL}) calls "
        f"after the warm-up (default {DEFAULTS['repeats']}, --quick {QUICK['repeats']})")
    add("--set", action="append", metavar="KEY=VALUE", help="override a config key in every "
        "configuration, e.g. --set data.n_test=200")
    add("--timeout", type=float, default=TIMEOUT_S, metavar="SECONDS",
        help=f"per-configuration worker timeout (default {TIMEOUT_S})")
    add("--quiet", action="store_true", help="no progress bar")
    # fmt: on
    return parser


def make_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One worker spec per configuration and threads; every config is resolved here, so
    a bad ``--config`` or ``--set`` fails before any worker starts."""
    from .config import parse_override

    d = QUICK if args.quick else DEFAULTS
    base = {"rounds_per_call": ROUNDS_PER_CALL, "repeats": args.repeats or d["repeats"]}
    base["overrides"] = dict(parse_override(p) for p in args.set or [])
    if args.config and (args.sizes or args.algorithms):
        raise UserError("--sizes/--algorithms pick recipe configs; with --config use --set")
    configs = [str(Path(args.config).resolve())] if args.config else []
    rounds = ROUNDS_PER_CALL * (1 + base["repeats"])
    for n in [] if args.config else args.sizes or d["sizes"]:
        for alg in args.algorithms or d["algorithms"]:
            configs.append(recipe_config(n, alg, n_test=d["n_test"], rounds=rounds))
    specs = []
    for config in configs:
        cfg = spec_config({**base, "config": config})
        label = {"n": _setting(cfg, "topology", "n"), "graph": _setting(cfg, "topology", "name")}
        label["algorithm"] = _setting(cfg, "algorithm", "name")
        specs += [
            {**label, **base, "config": config, "threads": t} for t in args.threads or d["threads"]
        ]
    return specs


def run_args(args: argparse.Namespace) -> int:
    """Run ``p2p-fmtl bench`` with parsed ``args``: 0 when every configuration succeeded,
    1 when any failed (the table is printed and written either way)."""
    if args.repeats is not None and args.repeats < 1:
        raise UserError(f"--repeats: got {args.repeats}, expected a positive integer")
    if args.timeout <= 0:
        raise UserError(f"--timeout: got {args.timeout}, expected a positive number of seconds")
    rows = run_specs(make_specs(args), timeout=args.timeout, quiet=args.quiet)
    text = format_table(rows)
    print(text)
    if args.out:
        write_atomic(args.out, text + "\n")
        print(f"written: {args.out}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def main(argv: list[str] | None = None, *, prog: str = "p2p-fmtl bench") -> int:
    """``python -m p2p_fmtl.bench [OPTIONS]``, or ``--worker SPEC_JSON``: one worker."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"] and len(argv) == 2:
        print(json.dumps(run_worker_spec(json.loads(argv[1]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    args = add_arguments(parser).parse_args(argv)
    try:
        return run_args(args)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
