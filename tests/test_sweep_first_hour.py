"""Sweeps, a new user's first hour: the directory lock, workers that die with the sweep,
scripts without a ``__main__`` guard, equal values, keys given twice, bad files and output
places, dry runs that load every config, and graphs as axis values."""

from __future__ import annotations

import csv
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import time
from argparse import Namespace
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

import p2p_fmtl.sweep as sweep_mod
from p2p_fmtl.cli import main
from p2p_fmtl.errors import ConfigError, UserError
from p2p_fmtl.sweep import LOCK_NAME, _locked, expand, graph_fingerprint, run_id, run_sweep

ROOT = Path(__file__).resolve().parents[1]
AVERAGE = {"topology": {"n": 8, "name": "ring"}, "algorithm": {"name": "average", "dim": 4}}
DSGD = {
    "topology": {"n": 8, "name": "ring"},
    "data": {"name": "fedem_synthetic", "dim": 5, "n_test": 20},
    "algorithm": {"name": "dsgd", "lr": 0.1},
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- the lock
def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    sweep = {"base": AVERAGE, "set": {"run.rounds": 1}}
    with _locked(out):  # as a running sweep holds it (flock: a second open file conflicts)
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(UserError) as e:
            run_sweep(sweep, out=out, quiet=True)
        assert str(e.value) == (
            f"--out {out}: another sweep is running in this directory (pid {os.getpid()}); "
            "wait for it to end or choose another --out"
        )
        assert not (out / "runs").exists() or not any((out / "runs").iterdir())
    assert not (out / LOCK_NAME).exists()  # released and removed at the end
    (out / LOCK_NAME).write_text("999999999\n")  # left by a killed sweep: no flock on it
    res = run_sweep(sweep, out=out, quiet=True)
    assert res.ok and res.ran == 1 and not (out / LOCK_NAME).exists()


# --------------------------------------------------------------------------- workers
LONG_SWEEP = textwrap.dedent(
    """\
    import sys
    from p2p_fmtl.sweep import run_sweep
    base = {"topology": {"n": 8, "name": "ring"}, "algorithm": {"name": "average", "dim": 4}}
    run_sweep({"base": base, "set": {"run.rounds": 10**8, "run.eval_every": 10**8},
               "grid": {"run.seed": [0, 1, 2]}}, out=sys.argv[1], jobs=2, quiet=True)
    """
)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_workers_die_with_the_sweep(tmp_path, sig):
    script = tmp_path / "long.py"
    script.write_text(LONG_SWEEP)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "out")], env=_env(), cwd=tmp_path
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(proc.pid)) < 2:
            assert proc.poll() is None, "the sweep ended early"
            assert time.monotonic() < deadline, "no workers after 60 s"
            time.sleep(0.05)
        time.sleep(1.0)  # let them start their runs
        assert all(_alive(w) for w in workers)
        os.kill(proc.pid, sig)  # the sweep only, not its process group
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers):
            assert time.monotonic() < deadline, f"workers outlived the sweep ({sig.name})"
            time.sleep(0.05)
    finally:
        proc.kill()
        for w in workers:  # when the test fails: leave nothing running
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    if sig != signal.SIGKILL:  # interrupted, not killed: the tables are written, lock freed
        rows = _rows(tmp_path / "out" / "sweep.csv")
        assert [r["status"] for r in rows] == ["pending"] * 3
        assert not (tmp_path / "out" / LOCK_NAME).exists()
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM


def test_a_script_without_main_guard_runs_with_two_jobs(tmp_path):
    script = tmp_path / "no_guard.py"
    script.write_text(
        textwrap.dedent(
            """\
            from p2p_fmtl.sweep import run_sweep
            base = {"topology": {"n": 8, "name": "ring"},
                    "algorithm": {"name": "average", "dim": 4}}
            res = run_sweep({"base": base, "set": {"run.rounds": 2},
                             "grid": {"run.seed": [0, 1]}}, out="out", jobs=2, quiet=True)
            print("ok" if res.ok else [r["error"] for r in res.rows])
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
    assert [r["status"] for r in _rows(tmp_path / "out" / "sweep.csv")] == ["complete"] * 2


# --------------------------------------------------------------------------- values and keys
def test_equal_values_are_one_run_and_keys_given_twice_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"run 2/2 \(algorithm.lr=1.0\): the same run as sweep"):
        expand({"base": DSGD, "grid": {"algorithm.lr": [1, 1.0]}})
    # the values are taken as resolved: 1 and 1.0 give the same run id
    (a,) = expand({"base": DSGD, "grid": {"algorithm.lr": [1]}})
    (b,) = expand({"base": DSGD, "grid": {"algorithm.lr": [1.0]}})
    assert a[0] == {"algorithm.lr": 1.0} and run_id(*a) == run_id(*b)
    assert run_id(*a).startswith("algorithm.lr=1.0-")

    base = tmp_path / "base.toml"
    base.write_text('[algorithm]\nname = "average"\ndim = 4\n')
    f = tmp_path / "s.toml"
    f.write_text('base = "base.toml"\n[grid]\n"algorithm.dim" = [3, 4]\nalgorithm.dim = [5]\n')
    with pytest.raises(ConfigError, match=r"\[grid\] algorithm.dim: given twice"):
        expand(f)
    f.write_text('base = "base.toml"\n[grid]\n"run.seed" = [0]\n[zip]\nrun.seed = [1]\n')
    with pytest.raises(ConfigError, match=r"run.seed: given in both \[grid\] and \[zip\]"):
        expand(f)
    base.write_text('[data]\ndim = 5\n[algorithm]\nname = "dsgd"\n')
    f.write_text('base = "base.toml"\n[grid]\n"algorithm.lr" = [0.10, 0.1]\n')  # one float
    with pytest.raises(ConfigError, match="the same run as sweep run 1"):
        expand(f)


def test_bad_files_and_output_places_are_one_line(tmp_path, capsys):
    f = tmp_path / "latin1.toml"
    f.write_bytes('[set]\n"run.rounds" = 2 # café\n'.encode("latin-1"))
    not_utf8 = r"latin1.toml: not UTF-8 text .*save the sweep file as UTF-8"
    with pytest.raises(ConfigError, match=not_utf8):
        expand(f)
    (tmp_path / "b.toml").write_bytes(b"# \xff\n")
    f.write_text('base = "b.toml"\n')
    not_utf8 = r"b.toml: not UTF-8 text .*save the base config as UTF-8"
    with pytest.raises(ConfigError, match=not_utf8):
        expand(f)

    f.write_text('[set]\n"run.rounds" = 1\n"algorithm.name" = "average"\n"algorithm.dim" = 2\n')
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["sweep", str(f), "--out", str(blocker / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"p2p-fmtl: error: --out {blocker / 'out'}: cannot create the sweep directory"
    )
    assert main(["sweep", str(f), "--out", str(blocker), "--quiet"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_dry_run_loads_every_config(tmp_path, monkeypatch, capsys):
    """Another part of the tool refuses some configs in load_config (e.g. mixing = "fmmc"
    without cvxpy): the dry run must meet the refusal, whichever run it is."""
    calls = []
    real = sweep_mod.load_config

    def load_config(raw, *a, **k):
        calls.append(raw["topology"]["mixing"])
        if raw["topology"]["mixing"] == "fmmc":
            raise ConfigError("topology.mixing: got 'fmmc', which needs cvxpy")
        return real(raw, *a, **k)

    monkeypatch.setattr(sweep_mod, "load_config", load_config)
    f = tmp_path / "s.toml"
    f.write_text(
        '[set]\n"algorithm.name" = "average"\n"algorithm.dim" = 2\n'
        '[grid]\n"topology.mixing" = ["metropolis", "max_degree", "fmmc"]\n'
    )
    with pytest.raises(ConfigError, match=r"sweep run 3/3 \(topology.mixing=fmmc\): .*cvxpy"):
        sweep_mod.sweep_command(Namespace(sweep=str(f), dry_run=True))
    assert calls == ["metropolis", "max_degree", "fmmc"]
    assert capsys.readouterr().out == ""  # nothing listed before the refusal
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- graphs
def test_graph_fingerprint_is_stable_and_tells_graphs_apart():
    G = nx.cycle_graph(8)
    H = nx.Graph()
    H.add_nodes_from(reversed(range(8)))
    H.add_edges_from((v, u) for u, v in reversed(list(G.edges())))
    assert graph_fingerprint(G) == graph_fingerprint(H)  # insertion order and edge direction
    assert graph_fingerprint(G) != graph_fingerprint(nx.path_graph(8))
    runs = expand({"base": AVERAGE, "grid": {"graph": [G, nx.path_graph(8)]}})
    ids = [run_id(*r) for r in runs]
    assert ids[0].startswith(f"graph=graph_{graph_fingerprint(G)[:8]}-")
    assert ids[0] != ids[1] and runs[0][1].to_toml() == runs[1][1].to_toml()
    G.name = "ring8"
    assert run_id(*expand({"base": AVERAGE, "grid": {"graph": [G]}})[0]).startswith("graph=ring8_")
    with pytest.raises(ConfigError, match="grid.graph: got 'ring', expected networkx graphs"):
        expand({"base": AVERAGE, "grid": {"graph": ["ring"]}})
    with pytest.raises(ConfigError, match="the same run as sweep run 1"):
        expand({"base": AVERAGE, "grid": {"graph": [G, H]}})


def _takes_graph() -> bool:
    from p2p_fmtl.assemble import assemble
    from p2p_fmtl.runner import run

    return all("graph" in inspect.signature(f).parameters for f in (run, assemble))


def _metropolis_gap(G) -> float:
    """1 − SLEM of the Metropolis–Hastings weights, computed here from the edges."""
    n = G.number_of_nodes()
    W = np.zeros((n, n))
    for u, v in G.edges():
        W[u, v] = W[v, u] = 1.0 / (1 + max(G.degree(u), G.degree(v)))
    W += np.diag(1.0 - W.sum(axis=1))
    ev = np.sort(np.abs(np.linalg.eigvalsh(W)))
    return 1.0 - ev[-2]


@pytest.mark.skipif(not _takes_graph(), reason="p2p_fmtl.run / assemble take no graph= yet")
def test_graphs_as_axis_values_reach_the_workers(tmp_path):
    graphs = [nx.cycle_graph(8), nx.path_graph(8), nx.star_graph(7)]
    res = run_sweep(
        {"base": AVERAGE, "set": {"run.rounds": 2}, "grid": {"graph": graphs}},
        out=tmp_path / "g",
        jobs=2,
        quiet=True,
    )
    assert res.ok, [r["error"] for r in res.rows]
    for row, G in zip(res.rows, graphs, strict=True):
        assert row["spectral_gap"] == pytest.approx(_metropolis_gap(G), rel=1e-5)
    cells = [r["graph"] for r in _rows(res.sweep_csv)]
    assert cells == [f"graph#{graph_fingerprint(G)[:8]}" for G in graphs]
    again = run_sweep(
        {"base": AVERAGE, "set": {"run.rounds": 2}, "grid": {"graph": graphs}},
        out=tmp_path / "g",
        quiet=True,
    )
    assert again.ran == 0 and again.skipped == 3
