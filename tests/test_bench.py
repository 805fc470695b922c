"""Benchmarks: the package's small ``p2p-fmtl bench`` (workers, table, atomic writer) and
the reference harness in experiments/benchmarks/harness.py (FLOP formula, reference
look-up, grid table, markdown section, one real worker run)."""

import importlib.util
import inspect
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from p2p_fmtl import bench, cli
from p2p_fmtl.errors import UserError

HARNESS_PATH = Path(__file__).resolve().parent.parent / "experiments" / "benchmarks" / "harness.py"


def _load_harness():
    spec = importlib.util.spec_from_file_location("bench_harness", HARNESS_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


# --------------------------------------------------------------------------- FLOPs
def test_useful_flops_dem_by_hand():
    # P = 151; node 0: 3 * 100 * (2*151 + 6*151*1) = 362_400; node 1: 3 * 50 * 1208 = 181_200
    # gossip: 2 * 4 nonzeros * 453 values = 3_624
    got = harness.useful_flops(
        "dem", [100, 50], dim=150, local_epochs=1, components=3, gossip_nnz=4, shared_values=453
    )
    assert got == 362_400 + 181_200 + 3_624


def test_useful_flops_dsgd_by_hand_and_epochs_scale_linearly():
    # P = 11, E = 2: per sample 6 * 11 * 2 = 132 -> 7 samples: 924; gossip 2 * 9 * 11 = 198
    flops = harness.useful_flops
    got = flops("dsgd", [3, 4], dim=10, local_epochs=2, gossip_nnz=9, shared_values=11)
    assert got == 924 + 198
    one = flops("dsgd", [7], dim=10, local_epochs=1)
    assert flops("dsgd", [7], dim=10, local_epochs=3) == 3 * one
    with pytest.raises(ValueError):
        flops("local", [7], dim=10, local_epochs=1)


def test_add_flops_from_a_worker_row():
    cfg = bench.spec_config({"config": harness.bench_config(30, "dem", n_test=10)})
    row = {"status": "ok", "algorithm": "dem", "n_train_total": 150, "gossip_nnz": 4}
    row |= {"shared_values": 453, "s_per_round": 0.5, "peak_gflops": 0.01}
    harness.add_flops(row, cfg)
    flops = 362_400 + 181_200 + 3_624  # the same sums as above: 150 samples in all
    assert row["gflop_per_round"] == pytest.approx(flops / 1e9)
    assert row["achieved_gflops"] == pytest.approx(2 * flops / 1e9)
    assert row["peak_pct"] == pytest.approx(100 * 2 * flops / 1e9 / 0.01)
    failed = {"status": "failed", "algorithm": "dem"}
    assert harness.add_flops(dict(failed), cfg) == failed


# --------------------------------------------------------------------------- reference
def test_reference_lookup():
    ref_s = harness.reference_seconds
    assert ref_s("dem", 30) == (0.64, False)
    assert ref_s("dem", 100) == (1.66, False)
    assert ref_s("dem", 300) == (5.11, False)
    ref, extrap = ref_s("dem", 1000)
    assert ref == pytest.approx(17.0) and extrap
    ref, extrap = ref_s("dem", 10000)
    assert ref == pytest.approx(170.0) and extrap
    assert ref_s("dem", 50) == (None, False)
    assert ref_s("dsgd", 30) == (None, False)
    assert ref_s("dsgd", 10000) == (None, False)


def test_graph_and_test_size_per_n():
    assert harness.graph_for(300)["name"] == "erdos_renyi" and harness.graph_for(300)["p"] == 0.5
    assert harness.graph_for(1000) == {
        "name": "random_regular",
        "n": 1000,
        "d": 10,
        "mixing": "metropolis",
    }
    assert harness.default_n_test(300) == 5000 and harness.default_n_test(10000) == 100
    cfg = harness.bench_config(30, "dem")
    assert cfg["algorithm"]["components"] == 3 and cfg["data"]["dim"] == 150
    assert cfg["data"]["n_test"] == 5000
    assert "components" not in harness.bench_config(30, "dsgd")["algorithm"]
    assert harness.bench_config(10000, "dsgd")["topology"]["name"] == "random_regular"


# --------------------------------------------------------------------------- grid table
def _ok_row(**kw):
    row = {
        "n": 30,
        "algorithm": "dem",
        "threads": "1",
        "status": "ok",
        "cpus": 1,
        "s_per_round": 0.1,
        "node_rounds_per_s": 300.0,
        "compile_s": 1.234,
        "peak_rss_mb": 812.4,
        "padding_fraction": 0.5,
        "gflop_per_round": 0.5,
        "achieved_gflops": 5.0,
        "peak_gflops": 50.0,
        "peak_pct": 10.0,
        "cpu_per_wall": 0.99,
        "graph": "erdos_renyi",
        "test_acc": 0.8125,
    }
    row.update(kw)
    return row


def test_table_cells_and_speedups():
    cells = harness.table_cells(_ok_row())
    assert cells["algorithm"] == "D-EM" and cells["graph"] == "ER p=0.5"
    assert cells["s_round"] == "0.1000" and cells["node_rounds"] == "300"
    assert cells["padding"] == "50.0 %" and cells["pct"] == "10.0 %"
    assert cells["ref"] == "0.640" and cells["speedup"] == "×6.40"
    big = harness.table_cells(_ok_row(n=1000, threads="all", cpus=2, s_per_round=2.0))
    assert big["graph"] == "10-regular" and big["threads"] == "all (2)"
    assert harness.table_cells(_ok_row(threads="devices", devices=2))["threads"] == "2 devices × 1"
    assert big["ref"] == "17.0 (extrap.)" and big["speedup"] == "×8.50 (extrap.)"
    assert harness.table_cells(_ok_row(cpu_per_wall=0.5))["cpu"] == "0.50 ⚠"
    assert harness.table_cells(_ok_row(threads="all", cpu_per_wall=0.5))["cpu"] == "0.50"
    assert harness.table_cells(_ok_row(threads="all", other_load=0.1))["cpu"] == "0.99"
    assert harness.table_cells(_ok_row(threads="all", other_load=0.9))["cpu"] == "0.99 ⚠"
    dsgd = harness.table_cells(_ok_row(algorithm="dsgd"))
    assert dsgd["ref"] == "–" and dsgd["speedup"] == "–"


def test_table_has_one_line_per_row_and_keeps_failures():
    failed = {"n": 300, "algorithm": "dsgd", "threads": "all", "status": "failed"}
    failed["reason"] = "timeout after 1200 s"
    text = harness.format_table([_ok_row(), failed])
    lines = text.splitlines()
    assert len(lines) == 4
    ncols = len(harness.TABLE_COLUMNS)
    assert all(line.count("|") == ncols + 1 for line in lines)
    assert "failed: timeout after 1200 s" in lines[3]
    settings = {"rounds_per_call": 2, "repeats": 3, "peak_size": 2048, "peak_repeats": 5}
    md = harness.render_markdown([_ok_row(), failed], harness.machine_description(), settings)
    assert text in md and "1 configuration(s) failed" in md
    assert "timed while the machine was shared" not in md
    md = harness.render_markdown([_ok_row(other_load=0.9)], harness.machine_description(), settings)
    assert "timed while the machine was shared: other processes kept more than 0.25" in md


# --------------------------------------------------------------------------- file writers
def test_write_section_creates_replaces_and_keeps_the_rest(tmp_path):
    start, end = harness.MARK_START, harness.MARK_END
    path = tmp_path / "BENCHMARKS.md"
    harness.write_section(path, "first")
    text = path.read_text()
    assert text.startswith("# Benchmarks") and f"{start}\nfirst\n{end}" in text

    path.write_text(f"# Title\n\nintro\n\n{start}\nold\n{end}\n\n## Other\nkeep\n")
    harness.write_section(path, "new table")
    assert path.read_text() == f"# Title\n\nintro\n\n{start}\nnew table\n{end}\n\n## Other\nkeep\n"
    assert [p.name for p in tmp_path.iterdir()] == ["BENCHMARKS.md"]  # no temp file left


def test_write_section_appends_to_a_file_without_markers_and_rejects_broken_ones(tmp_path):
    start, end = harness.MARK_START, harness.MARK_END
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\ntext\n")
    harness.write_section(path, "body")
    assert path.read_text() == f"# Notes\n\ntext\n\n{start}\nbody\n{end}\n"
    path.write_text(f"# Notes\n{start}\nno end\n")
    with pytest.raises(UserError):
        harness.write_section(path, "body")
    assert path.read_text() == f"# Notes\n{start}\nno end\n"


def test_write_atomic_replaces_keeps_mode_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "sub" / "table.md"
    bench.write_atomic(path, "one\n")
    assert path.read_text() == "one\n" and stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)
    bench.write_atomic(path, "two\n")
    assert path.read_text() == "two\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        bench.write_atomic(path, None)  # fails while writing the temporary file
    assert path.read_text() == "two\n"
    assert [p.name for p in path.parent.iterdir()] == ["table.md"]
    harness.write_json(tmp_path / "rows.json", {"rows": [1]})
    assert json.loads((tmp_path / "rows.json").read_text()) == {"rows": [1]}


# --------------------------------------------------------------------------- package bench
def test_package_bench_knows_no_reference_figures():
    src = inspect.getsource(bench)
    for figure in ("REFERENCE", "5.11", "0.64", "1.66", "0.017", "speed-up", "extrap"):
        assert figure not in src, figure
    assert "experiments/benchmarks/run_benchmarks.py" in bench.DESCRIPTION


def test_cli_bench_help_points_to_the_reference_harness(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "experiments/benchmarks/run_benchmarks.py" in out and "--config" in out


def test_recipe_config():
    cfg = bench.recipe_config(30, "dem", n_test=10, rounds=6)
    assert cfg["topology"] == {"name": "erdos_renyi", "n": 30, "p": 0.5, "mixing": "metropolis"}
    assert cfg["algorithm"]["components"] == 3 and cfg["algorithm"]["momentum"] == 0.9
    assert cfg["data"]["dim"] == 150 and cfg["data"]["n_test"] == 10
    assert cfg["run"]["rounds"] == 6 and "components" not in bench.recipe_config(8, "dsgd")
    with pytest.raises(UserError):
        bench.recipe_config(8, "sgd")


def test_package_table_and_disturbed_rows_say_why():
    failed = {"n": 300, "algorithm": "dsgd", "threads": "all", "status": "failed"}
    failed |= {"graph": "erdos_renyi", "reason": "killed by SIGKILL (out of memory?)"}
    rows = [_ok_row(n_nodes=30), _ok_row(threads="all", other_load=0.8), failed]
    rows.append(_ok_row(cpu_per_wall=0.5))
    text = bench.format_table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| algorithm | nodes | graph | threads | s / round")
    assert "test_acc" in lines[0]
    assert lines[2] == "| D-EM | 30 | erdos_renyi | 1 | 0.1 | 300 | 1.2 | 812 | 50.0 % | 0.812 |"
    assert "failed: killed by SIGKILL (out of memory?)" in lines[4]
    assert all(line.count("|") == len(bench.COLUMNS) + 1 for line in lines[:6])
    warnings = [line for line in lines if "⚠" in line]
    assert len(warnings) == 2  # the row with other load and the starved single-thread row
    assert "other processes kept 0.8 cores busy" in warnings[0]
    assert "threads all" in warnings[0]
    assert "single-thread worker got only 0.50 of a core" in warnings[1]
    assert "⚠" not in "\n".join(lines[:6])  # never a bare mark in a cell
    assert bench.disturbance(_ok_row()) is None and bench.disturbance(failed) is None


def test_package_bench_runs_specs_and_writes_the_table(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_worker(spec, *, timeout):
        calls.append(spec)
        return {**spec, **_ok_row(n=spec["n"], threads=spec["threads"], n_nodes=spec["n"])}

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    out = tmp_path / "bench.md"
    assert bench.main(["--quick", "--quiet", "--out", str(out)]) == 0
    assert [(s["n"], s["algorithm"], s["threads"]) for s in calls] == [
        (30, "dem", "1"),
        (300, "dem", "1"),
    ]
    assert calls[0]["config"]["data"]["n_test"] == 100 and calls[0]["repeats"] == 3
    assert calls[0]["config"]["run"]["rounds"] == 2 * (1 + 3)
    printed = capsys.readouterr().out
    assert out.read_text().endswith("|\n") and out.read_text()[:-1] in printed
    assert "| D-EM | 300 | erdos_renyi | 1 |" in printed and f"written: {out}" in printed

    toml = tmp_path / "exp.toml"
    toml.write_text('[topology]\nname = "ring"\nn = 12\n[data]\nname = "fedem_synthetic"\n')
    toml.write_text(toml.read_text() + '[model]\nname = "linear"\n[algorithm]\nname = "dsgd"\n')
    calls.clear()
    assert bench.main(["--config", str(toml), "--threads", "1", "all", "--quiet"]) == 0
    assert [(s["n"], s["algorithm"], s["graph"], s["threads"]) for s in calls] == [
        (12, "dsgd", "ring", "1"),
        (12, "dsgd", "ring", "all"),
    ]
    assert calls[0]["config"] == str(toml.resolve())


def test_package_bad_options_are_user_errors(tmp_path, capsys):
    assert bench.main(["--sizes", "8", "--set", "algorithm.lr=-1", "--quiet"]) == 2
    assert "algorithm.lr" in capsys.readouterr().err
    assert bench.main(["--repeats", "0", "--quiet"]) == 2
    assert bench.main(["--config", str(tmp_path / "missing.toml"), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err
    assert bench.main(["--config", str(tmp_path / "x.toml"), "--sizes", "8"]) == 2
    with pytest.raises(SystemExit):
        bench.main(["--algorithms", "sgd"])


def test_harness_bad_options_are_user_errors(capsys):
    assert harness.main(["--sizes", "8", "--set", "algorithm.lr=-1", "--quiet"]) == 2
    assert "algorithm.lr" in capsys.readouterr().err
    assert harness.main(["--repeats", "0", "--quiet"]) == 2
    with pytest.raises(SystemExit):
        harness.main(["--algorithms", "sgd"])


# --------------------------------------------------------------------------- worker env
def test_worker_env_threads():
    base = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false --xla_foo=1", "OMP_NUM_THREADS": "4"}
    one = bench.worker_env("1", base)
    assert "--xla_cpu_multi_thread_eigen=false" in one["XLA_FLAGS"]
    assert "intra_op_parallelism_threads" not in one["XLA_FLAGS"]  # not an XLA flag
    assert "--xla_foo=1" in one["XLA_FLAGS"] and one["OMP_NUM_THREADS"] == "1"
    assert one["XLA_FLAGS"].count("multi_thread_eigen") == 1
    all_ = bench.worker_env("all", base)
    assert all_["XLA_FLAGS"] == "--xla_foo=1" and "OMP_NUM_THREADS" not in all_
    forced = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_foo=1"}
    dev = bench.worker_env("devices", forced)  # the worker asks for its own devices
    assert dev["XLA_FLAGS"] == "--xla_foo=1 --xla_cpu_multi_thread_eigen=false"
    assert all_["PYTHONPATH"].split(os.pathsep)[0] == str(bench.PACKAGE_ROOT)
    assert "XLA_FLAGS" not in bench.worker_env(
        "all", {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=1"}
    )


# --------------------------------------------------------------------------- one worker
def test_tiny_end_to_end_worker(tmp_path, capsys):
    try:
        from p2p_fmtl.runner import Simulation  # noqa: F401
    except ImportError as e:
        pytest.skip(f"p2p_fmtl.runner.Simulation not available: {e}")
    out, raw = tmp_path / "b.md", tmp_path / "rows.json"
    code = harness.main(
        [
            "--sizes", "8",
            "--algorithms", "dem",
            "--threads", "1",
            "--rounds-per-call", "1",
            "--repeats", "2",
            "--n-test", "20",
            "--peak-size", "128",
            "--peak-repeats", "2",
            "--set", "data.dim=20",
            "--set", "data.max_samples=100",
            "--timeout", "120",
            "--quiet",
            "--out", str(out),
            "--json", str(raw),
        ]
    )  # fmt: skip
    rows = json.loads(raw.read_text())["rows"]
    assert len(rows) == 1, rows
    row = rows[0]
    assert code == 0, row.get("reason")
    assert row["status"] == "ok" and row["n_nodes"] == 8 and row["cpus"] == 1
    for key in (
        "s_per_round",
        "node_rounds_per_s",
        "compile_s",
        "compilations",
        "peak_rss_mb",
        "gflop_per_round",
        "achieved_gflops",
        "peak_gflops",
        "peak_pct",
        "gossip_nnz",
        "shared_values",
        "copy_gbs",
        "train_row_bytes",
        "floor_pct",
    ):
        assert row[key] > 0, key
    assert row["recompilations_while_timed"] == 0
    assert 0 <= row["padding_fraction"] < 1 and 0 <= row["test_acc"] <= 1
    assert len(row["times_s"]) == 2
    assert row["other_load"] is None or row["other_load"] >= 0
    assert row["rounds_peak_rss_mb"] is None or 0 < row["rounds_peak_rss_mb"] <= row["peak_rss_mb"]
    assert row["shared_values"] == 3 * 21  # M * (d + 1)
    assert "config" not in row and row["overrides"]["data.dim"] == 20
    text = out.read_text()
    assert harness.MARK_START in text and "| D-EM | 8 |" in text
    assert "`python experiments/benchmarks/run_benchmarks.py --sizes 8" in text
    assert "| D-EM | 8 |" in capsys.readouterr().out
    # the same real row in the package's table
    assert bench.format_table(rows).splitlines()[2].startswith("| D-EM | 8 | erdos_renyi | 1 |")
