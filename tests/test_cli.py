"""The command line: outputs, run directories, and exit status 2 for user mistakes."""

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from p2p_fmtl.cli import main

CONFIG = """
[run]
rounds = 6
eval_every = 3
[topology]
name = "ring"
n = 8
[data]
name = "fedem_synthetic"
dim = 10
n_test = 40
[algorithm]
name = "dsgd"
lr = 0.1
batch_size = 32
"""


def test_topology_json_ring_closed_form(capsys):
    assert main(["topology", "ring", "--n", "8", "--mixing", "metropolis", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    expected = 1 - (1 / 3 + 2 / 3 * math.cos(2 * math.pi / 8))
    assert info["spectral_gap"] == pytest.approx(expected, abs=1e-10)
    assert round(info["spectral_gap"], 5) == 0.19526
    assert info["nodes"] == 8 and info["edges"] == 8
    assert info["min_degree"] == info["max_degree"] == 2 and info["mixing"] == "metropolis"


def test_topology_params_and_drawing(tmp_path, capsys):
    png = tmp_path / "g.png"
    code = main(
        ["topology", "erdos_renyi", "--n", "12", "--param", "p=0.4", "--json", "--draw", str(png)]
    )
    assert code == 0 and png.stat().st_size > 1000
    assert json.loads(capsys.readouterr().out)["nodes"] == 12


def test_run_writes_a_complete_run_directory(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--set", "algorithm.lr=0.05"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.toml", "metrics.csv", "nodes.csv", "summary.json", "params.npz"]
    )
    assert "lr = 0.05" in (out / "config.toml").read_text()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["round"]) for r in rows] == [0, 3, 6]
    for col in (
        "test_acc",
        "test_acc_p10",
        "train_loss",
        "consensus_distance",
        "bytes_total",
        "wall_s",
    ):
        assert col in rows[0]
    nodes = list(csv.DictReader(open(out / "nodes.csv")))
    assert len(nodes) == 8 and {
        "node",
        "n_train",
        "n_test",
        "test_acc",
        "degree",
        "bytes_sent",
    } <= set(nodes[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["test_acc"] == pytest.approx(float(rows[-1]["test_acc"]))
    assert 0 < summary["padding_fraction"] < 1
    # bytes: every node sends its 11 float32 values to its 2 ring neighbours per round
    assert summary["bytes_total"] == 6 * 8 * 2 * 11 * 4
    params = np.load(out / "params.npz")
    assert params["w"].shape == (8, 10, 1) and params["b"].shape == (8, 1)
    # a second run into the same directory: refused (the first is kept), then with
    # --overwrite it replaces it atomically
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2  # a complete run: kept
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert "lr = 0.1" in (out / "config.toml").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "algorithm.lr=-1"], "algorithm.lr: got -1"),
        (["--set", "topology.name=rign"], "did you mean 'ring'"),
        (["--set", "run.rouns=3"], "run.rouns: unknown key"),
        (["--set", "topology.p=0.3"], "topology.p: unknown key for 'ring'"),
        (["--set", "data.variant=fixed"], "data.variant"),
        (["--set", "topology.n=1"], "topology.n"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys, args, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "never"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_missing_config_and_non_run_out_dir(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    assert main(["run", str(cfg), "--out", str(tmp_path / "precious"), "--quiet"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert (tmp_path / "precious" / "thesis.tex").exists()


def test_console_script_exit_status(tmp_path):
    """The installed entry point: status 2 and no traceback for a bad topology."""
    proc = subprocess.run(
        [sys.executable, "-m", "p2p_fmtl.cli", "topology", "hypercube", "--n", "12"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "hypercube" in proc.stderr


def test_demo_runs_and_prints_a_table(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "local" in out and "dsgd" in out and "dem" in out and "mean acc" in out
    acc = {}
    for alg in ("local", "dsgd", "dem"):
        s = json.loads((tmp_path / "demo" / alg / "summary.json").read_text())
        assert s["status"] == "complete" and s["test_acc"] > 0.6
        acc[alg] = s["test_acc"]
    assert acc["dem"] > max(acc["local"], acc["dsgd"])  # the mixture structure pays off


def _write_npz_nodes(folder, n=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i in range(n):
        w = rng.normal(size=d)
        xtr, xte = rng.normal(size=(20 + i, d)), rng.normal(size=(10, d))
        np.savez(
            folder / f"task_{i:02d}.npz",
            x_train=xtr,
            y_train=(xtr @ w).astype(np.float32),
            x_test=xte,
            y_test=(xte @ w).astype(np.float32),
        )


def test_npz_directory_runs_end_to_end(tmp_path):
    """A user's per-node .npz files (one regression task per node) through `p2p-fmtl run`."""
    _write_npz_nodes(tmp_path / "tasks")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[run]
rounds = 20
eval_every = 10
[topology]
name = "ring"
n = 5
[data]
name = "npz"
path = "{tmp_path / "tasks"}"
[algorithm]
name = "graph_mtl"
lam = 0.1
lr = 0.05
batch_size = 8
""")
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert "test_mse" in rows[0] and "test_mse_p90" in rows[0] and "test_acc" not in rows[0]
    assert float(rows[-1]["test_mse"]) < float(rows[0]["test_mse"])
    nodes = list(csv.DictReader(open(out / "nodes.csv")))
    assert [int(r["n_train"]) for r in nodes] == [20, 21, 22, 23, 24]


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("empty", "no .npz files"),
        ("missing_array", "lacks y_test"),
        ("shape", "task_01.npz"),
        ("count", "topology.n: got 5"),
    ],
)
def test_malformed_npz_directories_exit_2(tmp_path, capsys, breakage, message):
    folder = tmp_path / "tasks"
    if breakage == "empty":
        folder.mkdir()
    else:
        _write_npz_nodes(folder)
    if breakage == "missing_array":
        f = folder / "task_02.npz"
        arrays = dict(np.load(f))
        del arrays["y_test"]
        np.savez(f, **arrays)
    if breakage == "shape":
        f = folder / "task_01.npz"
        arrays = dict(np.load(f))
        arrays["y_train"] = arrays["y_train"][:-3]
        np.savez(f, **arrays)
    if breakage == "count":
        (folder / "task_04.npz").unlink()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[topology]\nname = "ring"\nn = 5\n[data]\nname = "npz"\npath = "{folder}"\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
