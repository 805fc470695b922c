"""Divergence guard and determinism."""

import json

import pytest

from p2p_fmtl import DivergenceError, load_config, run
from p2p_fmtl.cli import main

BASE = {
    "run": {"rounds": 12, "eval_every": 4, "seed": 3},
    "topology": {"name": "ring", "n": 8},
    "data": {"name": "clustered_linear", "dim": 6, "samples": [10, 20], "n_test": 10},
    "algorithm": {"name": "dsgd", "lr": 0.05, "batch_size": 8},
}


def test_divergence_names_round_nodes_algorithm_and_keeps_partial_results(tmp_path):
    cfg = load_config(BASE, overrides={"algorithm.lr": 1e4})
    out = tmp_path / "run"
    with pytest.raises(DivergenceError) as e:
        run(cfg, out=out)
    msg = str(e.value)
    assert "algorithm 'dsgd'" in msg and "round " in msg and "nodes 0" in msg
    assert "\n" not in msg
    round_named = int(msg.split("in round ")[1].split(" ")[0])
    assert 1 <= round_named <= 4  # it blows up within the first chunk
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "incomplete" and summary["rounds"] == 4
    assert "non-finite values from round" in summary["error"]


def test_divergence_through_the_cli_exits_2(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[run]\nrounds = 8\neval_every = 4\n[topology]\nname = "ring"\nn = 8\n'
        '[data]\nname = "clustered_linear"\ndim = 6\nsamples = [10, 20]\nn_test = 10\n'
        '[algorithm]\nname = "graph_mtl"\nlr = 1e4\nbatch_size = 8\n'
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "run diverged: algorithm 'graph_mtl'" in err and len(err.splitlines()) == 1


def test_same_config_and_seed_give_byte_identical_tables(tmp_path):
    """metrics.csv and nodes.csv are identical, wall-time columns aside."""
    for name in ("a", "b"):
        assert main(["run", _write(tmp_path), "--out", str(tmp_path / name), "--quiet"]) == 0

    def strip(path, drop=("wall_s",)):
        lines = path.read_text().splitlines()
        head = lines[0].split(",")
        keep = [i for i, h in enumerate(head) if h not in drop]
        return [",".join(c for i, c in enumerate(line.split(",")) if i in keep) for line in lines]

    for table in ("metrics.csv", "nodes.csv"):
        assert strip(tmp_path / "a" / table) == strip(tmp_path / "b" / table)
    assert (tmp_path / "a" / "nodes.csv").read_bytes() == (
        tmp_path / "b" / "nodes.csv"
    ).read_bytes()


def _write(tmp_path):
    f = tmp_path / "det.toml"
    f.write_text(
        '[run]\nrounds = 10\neval_every = 5\nseed = 7\n[topology]\nname = "erdos_renyi"\n'
        'n = 10\np = 0.4\n[data]\nname = "fedem_synthetic"\ndim = 8\nn_test = 30\n'
        '[algorithm]\nname = "dem"\nbatch_size = 16\nmomentum = 0.9\n'
    )
    return str(f)


def _long_config(tmp_path):
    f = tmp_path / "long.toml"
    f.write_text(
        '[run]\nrounds = 1200\neval_every = 40\nseed = 1\n[topology]\nname = "erdos_renyi"\n'
        'n = 30\np = 0.5\n[data]\nname = "fedem_synthetic"\nn_test = 200\n'
        '[algorithm]\nname = "dsgd"\nbatch_size = 128\nmomentum = 0.9\nlocal_epochs = 1\n'
    )
    return f


def _table(path):
    import csv

    rows = list(csv.DictReader(open(path)))
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_killed_run_resumes_to_the_same_final_metrics(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from p2p_fmtl.runner import checkpoint_path

    cfg = _long_config(tmp_path)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2p_fmtl.cli", "run", str(cfg), "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = checkpoint_path(out)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not out.exists()
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0
    assert not ckpt.exists()
    whole = tmp_path / "whole"
    assert main(["run", str(cfg), "--out", str(whole), "--quiet"]) == 0
    assert _table(out / "metrics.csv") == _table(whole / "metrics.csv")
    assert (out / "nodes.csv").read_bytes() == (whole / "nodes.csv").read_bytes()


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path, capsys):
    from p2p_fmtl.runner import Simulation, checkpoint_path

    cfg = _long_config(tmp_path)
    out = tmp_path / "r"
    ckpt = checkpoint_path(out)
    ckpt.write_bytes(b"not a checkpoint")
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 2
    assert "unreadable checkpoint" in capsys.readouterr().err
    sim = Simulation(load_config(str(cfg), overrides={"run.rounds": 4}))
    sim.advance(2)
    sim.checkpoint(ckpt)  # written by a config with another run.rounds
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 2
    assert "written for a different config" in capsys.readouterr().err


def test_bad_data_is_refused_before_training():
    import numpy as np

    from p2p_fmtl import ConfigError
    from p2p_fmtl.data import FederatedDataset, NodeDataset, validate_dataset

    good = NodeDataset(
        np.ones((3, 2), np.float32),
        np.array([0, 1, 1]),
        np.ones((2, 2), np.float32),
        np.array([0, 1]),
    )
    import dataclasses

    empty = dataclasses.replace(
        good, x_train=np.ones((0, 2), np.float32), y_train=np.array([], int)
    )
    nan = dataclasses.replace(good, x_test=np.array([[1.0, np.nan], [0, 0]], np.float32))
    label = dataclasses.replace(good, y_train=np.array([0, 1, 5]))
    cases = [
        (empty, "node 1 has no training samples"),
        (nan, "node 1 has NaN or infinite values in x_test"),
        (label, r"node 1 has y_train labels in \[0, 5\], outside the model's classes 0..1"),
    ]
    for bad, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            validate_dataset(FederatedDataset([good, bad], "binary", 2))
    validate_dataset(FederatedDataset([good, good], "binary", 2))  # fine
