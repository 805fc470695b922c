"""Sweeps: expansion, name-key dropping, validation, kill-and-resume, failed runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

from p2p_fmtl.errors import ConfigError
from p2p_fmtl.sweep import expand, run_id, run_sweep, sweep_command

ROOT = Path(__file__).resolve().parents[1]
AVERAGE = {"topology": {"n": 8}, "algorithm": {"name": "average", "dim": 4}}
TIMING_COLUMNS = {"wall_s", "seconds_per_round"}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


# --------------------------------------------------------------------------- expansion
def test_grid_times_zip_with_set():
    runs = expand(
        {
            "base": AVERAGE,
            "set": {"run.eval_every": 1, "run.rounds": 2},
            "grid": {"topology.name": ["ring", "torus"], "run.seed": [0, 1, 2]},
            "zip": {"algorithm.dim": [3, 5], "topology.mixing": ["metropolis", "max_degree"]},
        }
    )
    assert len(runs) == 2 * 3 * 2
    varied = [v for v, _ in runs]
    assert varied[0] == {
        "topology.name": "ring",
        "run.seed": 0,
        "algorithm.dim": 3,
        "topology.mixing": "metropolis",
    }
    assert varied[1]["algorithm.dim"] == 5 and varied[1]["topology.mixing"] == "max_degree"
    assert varied[-1] == {
        "topology.name": "torus",
        "run.seed": 2,
        "algorithm.dim": 5,
        "topology.mixing": "max_degree",
    }
    # zip lists vary together, crossed with the grid
    assert {(v["algorithm.dim"], v["topology.mixing"]) for v in varied} == {
        (3, "metropolis"),
        (5, "max_degree"),
    }
    assert len({tuple(v.values()) for v in varied}) == 12
    for v, cfg in runs:
        assert cfg["run"]["eval_every"] == 1 and cfg["run"]["rounds"] == 2  # [set]
        assert cfg["topology"]["n"] == 8  # base
        assert cfg["topology"]["name"] == v["topology.name"]
        assert cfg["algorithm"]["dim"] == v["algorithm.dim"]
        assert cfg["run"]["seed"] == v["run.seed"]
    ids = [run_id(v, c) for v, c in runs]
    assert len(set(ids)) == len(ids)
    assert ids[0].startswith("topology.name=ring,run.seed=0,algorithm.dim=3,")
    assert all(i.replace(",", "").replace("=", "").replace(".", "").isascii() for i in ids)


def test_sweep_file_relative_base_and_dotted_tables(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.toml").write_text(
        '[topology]\nn = 8\nname = "ring"\n[algorithm]\nname = "average"\ndim = 4\n'
    )
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        'base = "configs/base.toml"\n[set]\nrun.rounds = 3\n[grid]\n"run.seed" = [4, 5]\n'
    )
    runs = expand(sweep)
    assert [v for v, _ in runs] == [{"run.seed": 4}, {"run.seed": 5}]
    assert all(c["run"]["rounds"] == 3 and c["topology"]["name"] == "ring" for _, c in runs)
    # ids are stable across expansions and change with the resolved config
    again = expand(sweep)
    assert [run_id(*r) for r in runs] == [run_id(*r) for r in again]
    sweep.write_text(
        'base = "configs/base.toml"\n[set]\nrun.rounds = 4\n[grid]\n"run.seed" = [4]\n'
    )
    assert run_id(*expand(sweep)[0]) != run_id(*runs[0])


def test_empty_grid_and_zip_is_one_run():
    runs = expand({"base": AVERAGE})
    assert len(runs) == 1 and runs[0][0] == {}
    assert run_id(*runs[0]).startswith("run-")


def test_name_specific_keys_of_the_base_are_dropped():
    base = {**AVERAGE, "topology": {"n": 8, "name": "erdos_renyi", "p": 0.7}}
    runs = expand({"base": base, "grid": {"topology.name": ["ring", "erdos_renyi", "torus"]}})
    by_name = {c["topology"]["name"]: c for _, c in runs}
    assert "p" not in by_name["ring"]["topology"] and "p" not in by_name["torus"]["topology"]
    assert by_name["erdos_renyi"]["topology"]["p"] == 0.7
    # a name-specific key given by the sweep itself is never dropped: still an error
    with pytest.raises(ConfigError, match=r"topology.name=ring.*topology.p"):
        expand({"base": base, "set": {"topology.p": 0.3}, "grid": {"topology.name": ["ring"]}})
    # keys the new name does accept come from [set]
    runs = expand({"base": base, "set": {"topology.rows": 2}, "zip": {"topology.name": ["torus"]}})
    assert runs[0][1]["topology"]["rows"] == 2 and "p" not in runs[0][1]["topology"]


def test_algorithm_switch_drops_base_keys_and_data():
    base = {
        "topology": {"n": 8, "name": "ring"},
        "data": {"name": "fedem_synthetic", "dim": 5, "n_test": 10},
        "algorithm": {"name": "dem", "lr": 0.1, "components": 2, "batch_size": 16},
    }
    runs = expand({"base": base, "grid": {"algorithm.name": ["dem", "dsgd", "average"]}})
    cfgs = {c["algorithm"]["name"]: c for _, c in runs}
    assert cfgs["dem"]["algorithm"]["components"] == 2
    assert "components" not in cfgs["dsgd"]["algorithm"]
    assert cfgs["dsgd"]["algorithm"]["batch_size"] == 16 and cfgs["dsgd"]["data"]["dim"] == 5
    assert "lr" not in cfgs["average"]["algorithm"] and cfgs["average"]["data"] == {"name": "none"}


def test_bad_sweeps_are_config_errors():
    with pytest.raises(ConfigError, match="equal lengths"):
        expand({"base": AVERAGE, "zip": {"run.seed": [0, 1], "algorithm.dim": [2, 3, 4]}})
    with pytest.raises(ConfigError, match=r"sweep run 2/3 \(run.rounds=-1\): run.rounds"):
        expand({"base": AVERAGE, "grid": {"run.rounds": [2, -1, 3]}})
    with pytest.raises(ConfigError, match=r"algorithm.dim=4, topology.name=hexagon"):
        expand({"base": AVERAGE, "grid": {"algorithm.dim": [4], "topology.name": ["hexagon"]}})
    with pytest.raises(ConfigError, match="unknown top-level"):
        expand({"base": AVERAGE, "grids": {"run.seed": [0]}})
    with pytest.raises(ConfigError, match="non-empty list"):
        expand({"base": AVERAGE, "grid": {"run.seed": 3}})
    with pytest.raises(ConfigError, match=r"both \[set\] and \[grid\]"):
        expand({"base": AVERAGE, "set": {"run.seed": 1}, "grid": {"run.seed": [0]}})
    with pytest.raises(ConfigError, match="unknown section"):
        expand({"base": AVERAGE, "grid": {"runs.seed": [0]}})
    with pytest.raises(ConfigError, match="not a file"):
        expand({"base": "no/such/base.toml"})
    with pytest.raises(ConfigError, match=r"run 2/2 \(run.seed=0\): the same run as sweep run 1"):
        run_sweep({"base": AVERAGE, "grid": {"run.seed": [0, 0]}}, out="unused", quiet=True)


# --------------------------------------------------------------------------- running
SWEEP_30 = """\
base = "base.toml"
[set]
"run.rounds" = 300
"run.eval_every" = 1
[grid]
"topology.name" = ["ring", "torus", "erdos_renyi"]
"run.seed" = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
"""
BASE_30 = (
    '[topology]\nn = 8\nname = "erdos_renyi"\np = 0.5\n[algorithm]\nname = "average"\ndim = 4\n'
)

SUBPROCESS = (
    "import sys; from p2p_fmtl.sweep import run_sweep; "
    "r = run_sweep(sys.argv[1], out=sys.argv[2], jobs=2, quiet=True); "
    "sys.exit(0 if r.ok else 1)"
)


def _finished(runs_dir: Path) -> int:
    n = 0
    for d in runs_dir.glob("*/summary.json"):
        try:
            n += json.loads(d.read_text())["status"] == "complete"
        except (OSError, ValueError):
            pass
    return n


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def test_kill_and_resume_matches_an_uninterrupted_sweep(tmp_path):
    (tmp_path / "base.toml").write_text(BASE_30)
    sweep = tmp_path / "s30.toml"
    sweep.write_text(SWEEP_30)
    out = tmp_path / "killed"
    runs_dir = out / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBPROCESS, str(sweep), str(out)],
        env=_env(),
        start_new_session=True,  # its own process group: the kill takes the workers too
    )
    try:
        deadline = time.monotonic() + 60
        while _finished(runs_dir) < 3:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no run finished in 60 s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_at_kill = _finished(runs_dir)
    assert 3 <= done_at_kill < 30
    assert not (out / "sweep.csv").exists()
    ids = [run_id(*r) for r in expand(sweep)]
    (runs_dir / f".{ids[-1]}.tmp-leftover").mkdir()  # as left by a killed worker

    resumed = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(sweep), str(out)], env=_env(), timeout=120
    )
    assert resumed.returncode == 0

    rows = read_rows(out / "sweep.csv")
    assert [r["run_id"] for r in rows] == ids and len(set(ids)) == 30
    assert all(r["status"] == "complete" for r in rows)
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(ids)  # no temp dirs left
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []

    # a third pass finds everything finished and runs nothing
    res = run_sweep(sweep, out=out, jobs=1, quiet=True)
    assert res.ran == 0 and res.skipped == 30 and res.ok

    fresh = tmp_path / "fresh"
    res = run_sweep(sweep, out=fresh, jobs=1, quiet=True)
    assert res.ran == 30 and res.ok
    assert without_timing(read_rows(fresh / "sweep.csv")) == without_timing(rows)
    history = read_rows(out / "history.csv")
    assert len(history) == 30 * 301
    assert list(history[0])[:4] == ["run_id", "topology.name", "run.seed", "round"]
    assert "consensus_distance" in history[0]
    assert {h["run_id"] for h in history} == set(ids)
    assert without_timing(read_rows(fresh / "history.csv")) == without_timing(history)


def test_failed_run_is_recorded_and_exit_code_is_1(tmp_path, capsys):
    sweep = tmp_path / "fail.toml"
    (tmp_path / "base.toml").write_text(BASE_30)
    # run.devices = 3 resolves, but fails at run time (too few devices or 8 % 3 != 0)
    sweep.write_text(
        'base = "base.toml"\n[set]\n"run.rounds" = 2\n"topology.name" = "ring"\n'
        '[grid]\n"run.devices" = [1, 3]\n'
    )
    out = tmp_path / "out"
    args = Namespace(sweep=str(sweep), out=str(out), jobs=1, quiet=True)
    assert sweep_command(args) == 1
    assert "failed" in capsys.readouterr().err
    rows = read_rows(out / "sweep.csv")
    assert [r["status"] for r in rows] == ["complete", "failed"]
    assert rows[0]["error"] == "" and "run.devices" in rows[1]["error"]
    assert rows[0]["consensus_distance"] != "" and rows[1]["consensus_distance"] == ""
    assert {h["run.devices"] for h in read_rows(out / "history.csv")} == {"1"}
    # re-running skips the finished run and re-does the failed one
    res = run_sweep(sweep, out=out, jobs=1, quiet=True)
    assert (res.ran, res.skipped, len(res.failed)) == (1, 1, 1) and not res.ok
    assert sorted(p.name for p in (out / "runs").iterdir()) == [rows[0]["run_id"]]


def test_default_out_is_runs_slash_stem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.toml").write_text(BASE_30)
    (tmp_path / "tiny.toml").write_text(
        'base = "base.toml"\n[set]\n"run.rounds" = 1\n"topology.name" = "ring"\n'
    )
    res = run_sweep("tiny.toml", quiet=True)
    assert res.out == Path("runs") / "tiny" and res.ok
    rows = read_rows(tmp_path / "runs" / "tiny" / "sweep.csv")
    assert len(rows) == 1 and rows[0]["status"] == "complete"


def test_dry_run_lists_the_runs(tmp_path, capsys):
    (tmp_path / "base.toml").write_text(BASE_30)
    sweep = tmp_path / "s.toml"
    sweep.write_text('base = "base.toml"\n[grid]\n"topology.name" = ["ring", "torus"]\n')
    args = Namespace(sweep=str(sweep), out=None, jobs=1, quiet=True, dry_run=True)
    assert sweep_command(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "2 runs" and lines[0].startswith("topology.name=ring-")
    assert not (tmp_path / "runs").exists()
