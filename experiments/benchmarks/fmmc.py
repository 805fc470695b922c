"""Fastest-mixing weights: the first-order solver against the SDP, size x time x memory x SLEM.

    python experiments/benchmarks/fmmc.py                                  # first order only
    python experiments/benchmarks/fmmc.py --cvxpy-python /path/to/venv/bin/python
    python experiments/benchmarks/fmmc.py --sizes 30 100 --sparse 0       # a shorter check

Graphs: Erdős–Rényi G(n, 1/2) (seed 0; the FedEM reference's family) at ``--sizes``, each
with the plain and the zero-diagonal problem, and a random ``--degree``-regular graph
on ``--sparse`` nodes (plain problem).  Every solve runs in its own worker process, so
its peak RSS (``ru_maxrss``) is its own: the first-order solver
(:func:`topologies.fmmc.first_order_weights`, default tolerance) with this Python, and
the SDP (cvxpy, W-matrix formulation, SCS; :func:`topologies.fmmc.cvxpy_weights`) with
``--cvxpy-python``, an interpreter that has cvxpy (the project's default install does
not).  The SDP is skipped where its estimated memory exceeds the available memory or
``n`` exceeds ``--cvxpy-max-n``.  Prints the table and writes it between
``<!-- fmmc:start -->`` and ``<!-- fmmc:end -->`` at the end of experiments/BENCHMARKS.md
(nothing else in the file changes; it is replaced atomically).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MARKS = ("<!-- fmmc:start -->", "<!-- fmmc:end -->")
COMMAND = "python experiments/benchmarks/fmmc.py"


def graph(kind: str, n: int, degree: int):
    sys.path.insert(0, str(ROOT))
    from topologies import build

    if kind == "er":
        return build("erdos_renyi", n, p=0.5, seed=0)
    return build("random_regular", n, d=degree, seed=0)


def worker(spec: dict) -> dict:
    """One solve in this process; returns its row (the parent reads it as JSON)."""
    import resource

    sys.path.insert(0, str(ROOT))
    import topologies.fmmc as fmmc
    from topologies import TopologyError
    from topologies.mixing import _edge_arrays

    n, u, v, _ = _edge_arrays(graph(spec["kind"], spec["n"], spec["degree"]))
    start = time.perf_counter()
    try:
        w, d, report = fmmc.solve_fmmc(
            n, u, v, zero_diagonal=spec["zero_diagonal"], solver=spec["solver"]
        )
    except TopologyError as exc:  # e.g. the one-line memory refusal
        return {"status": "refused", "reason": str(exc)}
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {
        "status": "ok",
        "edges": int(len(u)),
        "seconds": seconds,
        "peak_bytes": peak,
        "slem": report.slem,
        "lower_bound": report.lower_bound,
        "gap": report.gap,
        "iterations": report.iterations,
        "converged": report.converged,
        "solver_value": report.solver_value,
    }


def run_worker(python: str, spec: dict, timeout: float) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"over {timeout:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        killed = out.returncode in (-9, 137)
        return {"status": "failed", "reason": "killed (out of memory?)" if killed else last}
    return json.loads(out.stdout.strip().splitlines()[-1])


def available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _sig(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def cells(row: dict) -> list[str]:
    fo, sdp = row["first_order"], row["sdp"]

    def dash(r: dict) -> bool:
        return r.get("status") != "ok"

    fo_cells = (
        [f"({fo.get('status')}: {fo.get('reason', '')})"] + ["–"] * 4
        if dash(fo)
        else [
            f"{fo['seconds']:.2f}",
            f"{fo['peak_bytes'] / 2**20:,.0f}",
            str(fo["iterations"]),
            f"{fo['slem']:.7f}",
            f"{fo['gap']:.1e}",
        ]
    )
    if dash(sdp):
        sdp_cells = ["–", "–", "–", "–"]
        note = sdp.get("reason", "")
    else:
        sdp_cells = [
            f"{sdp['seconds']:.2f}",
            f"{sdp['peak_bytes'] / 2**20:,.0f}",
            f"{sdp['slem']:.7f}",
            f"{fo['slem'] - sdp['slem']:+.1e}" if not dash(fo) else "–",
        ]
        note = ""
    return [
        str(row["n"]),
        f"{row['edges']:,}",
        row["graph"],
        "zero diagonal" if row["zero_diagonal"] else "plain",
        *fo_cells,
        *sdp_cells,
        note.replace("|", "/"),
    ]


HEADER = [
    "n",
    "edges",
    "graph",
    "variant",
    "first-order s",
    "peak RSS MB",
    "iterations",
    "SLEM first-order",
    "certified gap",
    "SDP s",
    "SDP peak RSS MB",
    "SLEM SDP",
    "first-order − SDP",
    "SDP not run because",
]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|---:|---:|---|---|" + "---:|" * 9 + "---|"]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import scipy

    return (
        f"CPU: {cpu}; {os.cpu_count()} logical cores; Python {platform.python_version()}, "
        f"numpy {numpy.__version__}, scipy {scipy.__version__}"
    )


def render(rows: list[dict], args: argparse.Namespace, load: tuple[float, float]) -> str:
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "## Fastest-mixing weights: first-order solver against the SDP",
            "",
            f"- {machine()}",
            f"- date: {date}; load average before / after: {load[0]:.1f} / {load[1]:.1f}",
            f"- command: `{' '.join([COMMAND, *args.argv])}`; BLAS threads: "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
            "- first order: `topologies.fmmc.first_order_weights`, default tolerance (stops "
            "when the SLEM is certified within 1e-5 of the optimum); numpy and scipy only",
            "- SDP: cvxpy, the reference FedEM code's W-matrix formulation, SCS with "
            "eps 1e-7, its answer made exactly feasible before its SLEM is recomputed",
            "- each solve in its own process; peak RSS = that process's `ru_maxrss` "
            "(Python, numpy and the graph included); seconds = the solve alone",
            "",
            table(rows),
            "",
            "Certified gap: the first-order solver's SLEM minus its lower bound on the optimum "
            "(from the dual of its last iterate and a linear program over the edge weights); "
            "the optimum lies in between, whatever any other solver reports. "
            "first-order − SDP: difference of the two SLEMs, both recomputed from the weights.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="*", default=[30, 100, 300])
    parser.add_argument("--sparse", type=int, default=2000, help="0: no sparse graph")
    parser.add_argument("--degree", type=int, default=10)
    parser.add_argument("--cvxpy-python", help="an interpreter with cvxpy and SCS")
    parser.add_argument("--cvxpy-max-n", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per solve")
    parser.add_argument("--output", type=Path, default=ROOT / "experiments" / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    args.argv = sys.argv[1:] if argv is None else argv
    sys.path.insert(0, str(ROOT))
    from topologies.fmmc import fmmc_memory_bytes

    specs = [("er", n, z) for n in args.sizes for z in (False, True)]
    if args.sparse:
        specs.append(("regular", args.sparse, False))
    load_before = os.getloadavg()[0]
    rows = []
    for kind, n, zero in specs:
        spec = {"kind": kind, "n": n, "degree": args.degree, "zero_diagonal": zero}
        label = "G(n, 1/2)" if kind == "er" else f"random {args.degree}-regular"
        fo = run_worker(sys.executable, {**spec, "solver": "first_order"}, args.timeout)
        edges = fo.get("edges") or graph(kind, n, args.degree).number_of_edges()
        need, have = fmmc_memory_bytes(n, edges, "cvxpy"), available_bytes()
        if not args.cvxpy_python:
            sdp = {"status": "skipped", "reason": "no --cvxpy-python"}
        elif n > args.cvxpy_max_n:
            sdp = {"status": "skipped", "reason": f"n > --cvxpy-max-n {args.cvxpy_max_n}"}
        elif have is not None and need > have:
            sdp = {
                "status": "skipped",
                "reason": f"needs ~{need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB available",
            }
        else:
            sdp = run_worker(args.cvxpy_python, {**spec, "solver": "cvxpy"}, args.timeout)
        row = {"n": n, "edges": edges, "graph": label, "zero_diagonal": zero}
        row.update(first_order=fo, sdp=sdp)
        rows.append(row)
        print(" | ".join(cells(row)), flush=True)
    body = render(rows, args, (load_before, os.getloadavg()[0]))
    print(body)
    if not args.no_write:
        from harness import write_section  # this folder's atomic section writer

        write_section(args.output, body, start=MARKS[0], end=MARKS[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
