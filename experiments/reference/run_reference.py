"""Run the reference FedEM code (omarfoq/FedEM) on its 30-client synthetic data, per method.

The reference is PyTorch and lives outside this repository (see ``README.md`` here for how
it was reconstructed).  This driver only starts the reference's own ``run_experiment.py``
in a subprocess, one run at a time and single-threaded, reads the global accuracies it
prints (``--verbose 1``: train and test accuracy of the clients' models, weighted by their
train and test set sizes) and records them in ``fedem_reference_results.json``::

    python experiments/reference/run_reference.py \\
        --ref /work/ref/FedEM --python /work/refenv/bin/python --seeds 1234 1235 1236

``--ref`` is a copy of the reference with its synthetic data generated in
``data/synthetic/all_data`` (``python generate_data.py --n_tasks 30 --seed 12345`` in
``data/synthetic``); ``--python`` an interpreter with torch, torchvision, scikit-learn,
tensorboard, cvxpy and networkx.  Finished (method, seed) rows are kept and skipped, so
an interrupted run resumes.  The reference trains ``n_rounds + 1`` rounds (its loop runs
while ``c_round <= n_rounds``) and logs every ``log_freq`` rounds; the recorded final
accuracy is its last log, after round ``n_rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "fedem_reference_results.json"

# the recipe shared by every method (issue 15: lr 0.1, multi-step, 200 rounds, batch 128)
COMMON = [
    "--n_rounds", "200", "--bz", "128", "--lr", "0.1", "--lr_scheduler", "multi_step",
    "--log_freq", "10", "--device", "cpu", "--verbose", "1",
    "--input_dimension", "150", "--output_dimension", "2",
]  # fmt: skip

# method -> the reference's positional method name and its own flags
METHODS: dict[str, list[str]] = {
    "FedEM": ["FedEM", "--n_learners", "3", "--optimizer", "sgd"],
    "FedAvg": ["FedAvg", "--n_learners", "1", "--optimizer", "sgd"],
    "FedAvg+": ["FedAvg", "--n_learners", "1", "--optimizer", "sgd", "--locally_tune_clients"],
    "Local": ["local", "--n_learners", "1", "--optimizer", "sgd"],
    "FedProx": ["FedProx", "--n_learners", "1", "--optimizer", "prox_sgd", "--mu", "0.1"],
    "pFedMe": ["pFedMe", "--n_learners", "1", "--optimizer", "prox_sgd", "--mu", "1.0"],
    "Clustered FL": ["clustered", "--n_learners", "1", "--optimizer", "sgd"],
    # the reference's get_aggregator has no "APFL" branch: recorded as not runnable
    "APFL": ["APFL", "--n_learners", "2", "--optimizer", "sgd"],
}

LOG_LINE = re.compile(
    r"Train Loss: ([\d.]+) \| Train Acc: ([\d.]+)% \|Test Loss: ([\d.]+) \| Test Acc: ([\d.]+)% \|"
)


def command(method: str, seed: int) -> list[str]:
    name, *flags = METHODS[method]
    return ["run_experiment.py", "synthetic", name, *flags, *COMMON, "--seed", str(seed)]


def parse(log: str) -> list[dict[str, float]]:
    """The global train/test loss and accuracy of every log the reference printed."""
    return [
        {
            "train_loss": float(m[1]),
            "train_acc": float(m[2]),
            "test_loss": float(m[3]),
            "test_acc": float(m[4]),
        }
        for m in LOG_LINE.finditer(log)
    ]


def one_run(method: str, seed: int, ref: Path, python: str, logs: Path) -> dict:
    cmd = command(method, seed)
    logs_dir = logs / f"{method.replace(' ', '_').replace('+', 'plus')}-seed{seed}"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python, *cmd, "--logs_dir", str(logs_dir / "tb")],
        cwd=ref,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    logs_dir.mkdir(parents=True, exist_ok=True)
    (logs_dir / "stdout.txt").write_text(proc.stdout)
    (logs_dir / "stderr.txt").write_text(proc.stderr[-20000:])
    row = {
        "method": method,
        "seed": seed,
        "command": "python " + shlex.join(cmd),
        "rounds": 200,
        "wall_s": round(wall, 1),
        "threads": 1,
    }
    history = parse(proc.stdout)
    if proc.returncode != 0 or not history:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        row.update(status="failed", error=last)
        return row
    log_freq = int(COMMON[COMMON.index("--log_freq") + 1])
    row.update(
        status="ok",
        log_freq=log_freq,
        final_test_acc=history[-1]["test_acc"],
        final_train_acc=history[-1]["train_acc"],
        final_test_loss=history[-1]["test_loss"],
        final_train_loss=history[-1]["train_loss"],
        final_round=(len(history) - 1) * log_freq,
        test_acc_by_log=[h["test_acc"] for h in history],
    )
    return row


def load(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"rows": []}


def save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=Path, default=Path("/work/ref/FedEM"))
    ap.add_argument("--python", default="/work/refenv/bin/python")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1234])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--logs", type=Path, default=Path("/work/ref/logs"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    data = load(args.out)
    data["about"] = (
        "omarfoq/FedEM run on its own 30-client synthetic data (generate_data.py --n_tasks 30 "
        "--seed 12345, other arguments at their defaults); accuracies in percent, the "
        "reference's global log: clients' accuracies weighted by test (train) set size; "
        "see experiments/reference/README.md"
    )
    done = {(r["method"], r["seed"]) for r in data["rows"]}
    for seed in args.seeds:
        for method in args.methods:
            if (method, seed) in done:
                continue
            print(f"{method} seed {seed} ...", file=sys.stderr, flush=True)
            row = one_run(method, seed, args.ref, args.python, args.logs)
            print(json.dumps({k: v for k, v in row.items() if k != "test_acc_by_log"}))
            data["rows"].append(row)
            save(args.out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
