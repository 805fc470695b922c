"""Two processes on 127.0.0.1 (``--coordinator``, jax.distributed, one CPU device each)
give the numbers of one process with ``run.devices = 2``; process 1 writes nothing."""

import csv
import json
import os
import select
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CONFIG = """
[run]
rounds = 4
eval_every = 2
devices = 2
[topology]
name = "ring"
n = 8
[data]
name = "clustered_linear"
dim = 5
n_test = 20
[algorithm]
name = "dsgd"
batch_size = 8
"""
TIMEOUT = 120  # a hang fails
# one process with run.devices = 2: the checkpoint of a dsgd run stopped after round 2
# (as `run` writes it), then the reference runs
ONE = """
import sys
from p2p_fmtl import load_config, run
from p2p_fmtl.runner import Simulation, checkpoint_path
cfg, root = sys.argv[1], sys.argv[2]
sim = Simulation(load_config(cfg, overrides={"algorithm.name": "dsgd"}))
sim.evaluate()
sim.advance(2)
sim.evaluate()
sim.checkpoint(checkpoint_path(root + "/resume-p0/run"))
print("stopped", flush=True)
for alg in ("dsgd", "dem"):
    run(load_config(cfg, overrides={"algorithm.name": alg}), out=root + f"/{alg}-one")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    from combinations import FAST_COMPILE

    flags = os.environ.get("XLA_FLAGS", "") + FAST_COMPILE
    flags += f" --xla_force_host_platform_device_count={devices}"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}


PIPES = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}


def _start(cfg: Path, out: Path, flags: list[str], cwd: Path):
    cmd = [sys.executable, "-m", "p2p_fmtl.cli", "run", str(cfg), "--out", str(out), "--quiet"]
    return subprocess.Popen([*cmd, *flags], env=_env(1), cwd=cwd, **PIPES)


def _wait(procs) -> list[str]:
    errs = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=TIMEOUT)
            errs.append(err)
    finally:
        for p in procs:  # a hang or a failure leaves no process behind
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return errs


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)]


def _assert_close(a: list[dict], b: list[dict]) -> float:
    """Rows of two CSV files agree: numbers to 1e-5, the rest exactly; the largest gap."""
    assert len(a) == len(b) and len(a) > 0
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            try:
                x, y = float(ra[k]), float(rb[k])
            except ValueError:
                assert ra[k] == rb[k], k
                continue
            worst = max(worst, abs(x - y))
            assert abs(x - y) <= 1e-5, (k, ra[k], rb[k])
    return worst


def _pair(cfg: Path, root: Path, name: str, flags: list[str]) -> list:
    """Processes 0 and 1 of a run, each in a folder of its own (``root/name-p{i}``)."""
    port, procs = _free_port(), []
    for i in range(2):
        cwd = root / f"{name}-p{i}"
        cwd.mkdir(exist_ok=True)
        dist = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
        procs.append(_start(cfg, cwd / "run", [*flags, *dist, "--process-id", str(i)], cwd))
    return procs


def test_two_processes_match_two_devices(tmp_path):
    """dem from round 0; dsgd resumed (process 0 reads the checkpoint of a run stopped
    after round 2 and sends it to process 1) ends as the uninterrupted run does."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(CONFIG)
    one = subprocess.Popen(
        [sys.executable, "-c", ONE, str(cfg), str(tmp_path)], env=_env(2), **PIPES
    )
    procs = [one, *_pair(cfg, tmp_path, "dem", ["--set", "algorithm.name=dem"])]
    try:
        assert select.select([one.stdout], [], [], TIMEOUT)[0], "no checkpoint in time"
        assert one.stdout.readline().strip() == "stopped", one.stderr.read()[-3000:]
        ckpt = tmp_path / "resume-p0" / ".run.checkpoint.npz"
        with np.load(ckpt) as z:  # its rows' wall times show that the run went on from it
            stopped = [r["wall_s"] for r in json.loads(bytes(z["meta"]).decode())["history"]]
        procs += _pair(cfg, tmp_path, "resume", ["--set", "algorithm.name=dsgd", "--resume"])
    finally:
        _wait(procs)
    for name, ref in (("dem", "dem-one"), ("resume", "dsgd-one")):
        assert list((tmp_path / f"{name}-p1").iterdir()) == [], name  # process 1: nothing
        assert not list((tmp_path / f"{name}-p0").glob(".*checkpoint*"))  # removed at the end
        _assert_same_run(tmp_path / f"{name}-p0" / "run", tmp_path / ref)
    with open(tmp_path / "resume-p0" / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["round"] for r in rows] == ["0", "2", "4"]
    assert [float(r["wall_s"]) for r in rows[:2]] == stopped


def _assert_same_run(two: Path, one: Path) -> None:
    """Run directories with the same files and numbers (to 1e-5)."""
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    gaps = [_assert_close(_rows(two / f), _rows(one / f)) for f in ("metrics.csv", "nodes.csv")]
    with np.load(two / "params.npz") as a, np.load(one / "params.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-5, err_msg=f"{two} {k}")
            gaps.append(float(np.max(np.abs(a[k] - b[k]))))
    print(f"{two}: largest gap {max(gaps):.3g}")


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--coordinator", "127.0.0.1"], "--coordinator, --num-processes, --process-id: give all"),
        (["--coordinator", "host0", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
        (["--coordinator", "h:99999", "--num-processes", "2", "--process-id", "0"], "1..65535"),
        (["--coordinator", "h:1234", "--num-processes", "0", "--process-id", "0"], "at least 1"),
        (["--coordinator", "h:1234", "--num-processes", "2", "--process-id", "2"], "0..1"),
        (["--coordinator", "h:1234", "--num-processes", "2", "--process-id", "-1"], "got -1"),
    ],
)
def test_bad_process_flags_are_one_line_errors(tmp_path, capsys, flags, expected):
    from p2p_fmtl.cli import main

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(CONFIG)
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("p2p-fmtl: error: --"), err
    assert expected in err[0], err
    assert not (tmp_path / "run").exists()


def test_out_refused_by_process_0_stops_every_process(tmp_path):
    """Only process 0 checks --out; when it refuses, the others stop too (no hang)."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(CONFIG)
    procs = _pair(cfg, tmp_path, "bad", [])
    (tmp_path / "bad-p0" / "run").write_text("not a run directory")
    try:
        errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [2, 2], errs
    assert "error: --out " in errs[0] and "exists and is not a directory" in errs[0], errs[0]
    assert "error: --out: refused by process 0" in errs[1], errs[1]
    assert (tmp_path / "bad-p0" / "run").read_text() == "not a run directory"
    assert list((tmp_path / "bad-p1").iterdir()) == []
