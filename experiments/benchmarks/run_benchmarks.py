"""The full benchmark grid, recorded in ``experiments/BENCHMARKS.md``.

    python experiments/benchmarks/run_benchmarks.py            # n = 30 ... 10000, both algorithms,
                                                               # 1 thread and all cores
    python experiments/benchmarks/run_benchmarks.py --quick    # about a minute
    python experiments/benchmarks/run_benchmarks.py --sizes 30 100 --threads 1

The grid, the reference figures and the markdown live in ``harness.py`` next to this
script (each configuration runs in a worker of the package's ``p2p_fmtl.bench``); this
script only sets the defaults ``--out experiments/BENCHMARKS.md`` (the section between
``<!-- bench:start -->`` and ``<!-- bench:end -->``; the rest of the file is kept) and
``--json experiments/benchmarks/results.json`` (the raw rows).  How and what is
measured: ``experiments/benchmarks/README.md``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_OUT = HERE.parent / "BENCHMARKS.md"
DEFAULT_JSON = HERE / "results.json"

sys.path.insert(0, str(ROOT))  # runs from a checkout without installing too
sys.path.insert(0, str(HERE))

from harness import main as bench_main  # noqa: E402


def _has(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    given = list(argv)
    if not _has(argv, "--out"):
        argv += ["--out", str(DEFAULT_OUT)]
    if not _has(argv, "--json"):
        argv += ["--json", str(DEFAULT_JSON)]
    command = "python experiments/benchmarks/run_benchmarks.py " + shlex.join(given)
    return bench_main(argv, prog="run_benchmarks.py", command=command.strip())


if __name__ == "__main__":
    sys.exit(main())
