"""The benchmark harness: FLOP formula, reference look-up, table, file writer, one worker."""

import json
import os

import pytest

from p2p_fmtl import bench
from p2p_fmtl.errors import UserError


# --------------------------------------------------------------------------- FLOPs
def test_useful_flops_dem_by_hand():
    # P = 151; node 0: 3 * 100 * (2*151 + 6*151*1) = 362_400; node 1: 3 * 50 * 1208 = 181_200
    # gossip: 2 * 4 nonzeros * 453 values = 3_624
    got = bench.useful_flops(
        "dem", [100, 50], dim=150, local_epochs=1, components=3, gossip_nnz=4, shared_values=453
    )
    assert got == 362_400 + 181_200 + 3_624


def test_useful_flops_dsgd_by_hand_and_epochs_scale_linearly():
    # P = 11, E = 2: per sample 6 * 11 * 2 = 132 -> 7 samples: 924; gossip 2 * 9 * 11 = 198
    got = bench.useful_flops("dsgd", [3, 4], dim=10, local_epochs=2, gossip_nnz=9, shared_values=11)
    assert got == 924 + 198
    one = bench.useful_flops("dsgd", [7], dim=10, local_epochs=1)
    assert bench.useful_flops("dsgd", [7], dim=10, local_epochs=3) == 3 * one
    with pytest.raises(ValueError):
        bench.useful_flops("local", [7], dim=10, local_epochs=1)


# --------------------------------------------------------------------------- reference
def test_reference_lookup():
    assert bench.reference_seconds("dem", 30) == (0.64, False)
    assert bench.reference_seconds("dem", 100) == (1.66, False)
    assert bench.reference_seconds("dem", 300) == (5.11, False)
    ref, extrap = bench.reference_seconds("dem", 1000)
    assert ref == pytest.approx(17.0) and extrap
    ref, extrap = bench.reference_seconds("dem", 10000)
    assert ref == pytest.approx(170.0) and extrap
    assert bench.reference_seconds("dem", 50) == (None, False)
    assert bench.reference_seconds("dsgd", 30) == (None, False)
    assert bench.reference_seconds("dsgd", 10000) == (None, False)


def test_graph_and_test_size_per_n():
    assert bench.graph_for(300)["name"] == "erdos_renyi" and bench.graph_for(300)["p"] == 0.5
    assert bench.graph_for(1000) == {
        "name": "random_regular",
        "n": 1000,
        "d": 10,
        "mixing": "metropolis",
    }
    assert bench.default_n_test(300) == 5000 and bench.default_n_test(10000) == 100
    cfg = bench.bench_config(30, "dem")
    assert cfg["algorithm"]["components"] == 3 and cfg["data"]["dim"] == 150
    assert "components" not in bench.bench_config(30, "dsgd")["algorithm"]


# --------------------------------------------------------------------------- table
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
    }
    row.update(kw)
    return row


def test_table_cells_and_speedups():
    cells = bench.table_cells(_ok_row())
    assert cells["algorithm"] == "D-EM" and cells["graph"] == "ER p=0.5"
    assert cells["s_round"] == "0.1000" and cells["node_rounds"] == "300"
    assert cells["padding"] == "50.0 %" and cells["pct"] == "10.0 %"
    assert cells["ref"] == "0.640" and cells["speedup"] == "×6.40"
    big = bench.table_cells(_ok_row(n=1000, threads="all", cpus=2, s_per_round=2.0))
    assert big["graph"] == "10-regular" and big["threads"] == "all (2)"
    assert bench.table_cells(_ok_row(threads="devices", devices=2))["threads"] == "2 devices × 1"
    assert big["ref"] == "17.0 (extrap.)" and big["speedup"] == "×8.50 (extrap.)"
    assert bench.table_cells(_ok_row(cpu_per_wall=0.5))["cpu"] == "0.50 ⚠"
    assert bench.table_cells(_ok_row(threads="all", cpu_per_wall=0.5))["cpu"] == "0.50"
    assert bench.table_cells(_ok_row(threads="all", other_load=0.1))["cpu"] == "0.99"
    assert bench.table_cells(_ok_row(threads="all", other_load=0.9))["cpu"] == "0.99 ⚠"
    dsgd = bench.table_cells(_ok_row(algorithm="dsgd"))
    assert dsgd["ref"] == "–" and dsgd["speedup"] == "–"


def test_table_has_one_line_per_row_and_keeps_failures():
    failed = {"n": 300, "algorithm": "dsgd", "threads": "all", "status": "failed"}
    failed["reason"] = "timeout after 1200 s"
    text = bench.format_table([_ok_row(), failed])
    lines = text.splitlines()
    assert len(lines) == 4
    ncols = len(bench.TABLE_COLUMNS)
    assert all(line.count("|") == ncols + 1 for line in lines)
    assert "failed: timeout after 1200 s" in lines[3]
    md = bench.render_markdown(
        [_ok_row(), failed],
        bench.machine_description(),
        {"rounds_per_call": 2, "repeats": 3, "peak_size": 2048, "peak_repeats": 5},
    )
    assert text in md and "1 configuration(s) failed" in md


# --------------------------------------------------------------------------- file writer
def test_write_section_creates_replaces_and_keeps_the_rest(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    bench.write_section(path, "first")
    text = path.read_text()
    assert (
        text.startswith("# Benchmarks") and f"{bench.MARK_START}\nfirst\n{bench.MARK_END}" in text
    )

    path.write_text(
        f"# Title\n\nintro\n\n{bench.MARK_START}\nold\n{bench.MARK_END}\n\n## Other\nkeep\n"
    )
    bench.write_section(path, "new table")
    assert path.read_text() == (
        f"# Title\n\nintro\n\n{bench.MARK_START}\nnew table\n{bench.MARK_END}\n\n## Other\nkeep\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["BENCHMARKS.md"]  # no temp file left


def test_write_section_appends_to_a_file_without_markers_and_rejects_broken_ones(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\ntext\n")
    bench.write_section(path, "body")
    assert path.read_text() == f"# Notes\n\ntext\n\n{bench.MARK_START}\nbody\n{bench.MARK_END}\n"
    path.write_text(f"# Notes\n{bench.MARK_START}\nno end\n")
    with pytest.raises(UserError):
        bench.write_section(path, "body")
    assert path.read_text() == f"# Notes\n{bench.MARK_START}\nno end\n"


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


def test_bad_options_are_user_errors(capsys):
    assert bench.main(["--sizes", "8", "--set", "algorithm.lr=-1", "--quiet"]) == 2
    assert "algorithm.lr" in capsys.readouterr().err
    assert bench.main(["--repeats", "0", "--quiet"]) == 2
    with pytest.raises(SystemExit):
        bench.main(["--algorithms", "sgd"])


# --------------------------------------------------------------------------- one worker
def test_tiny_end_to_end_worker(tmp_path, capsys):
    try:
        from p2p_fmtl.runner import Simulation  # noqa: F401
    except ImportError as e:
        pytest.skip(f"p2p_fmtl.runner.Simulation not available: {e}")
    out, raw = tmp_path / "b.md", tmp_path / "rows.json"
    code = bench.main(
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
        "peak_rss_mb",
        "gflop_per_round",
        "achieved_gflops",
        "peak_gflops",
        "peak_pct",
        "gossip_nnz",
        "shared_values",
    ):
        assert row[key] > 0, key
    assert 0 <= row["padding_fraction"] < 1
    assert len(row["times_s"]) == 2
    assert row["other_load"] is None or row["other_load"] >= 0
    assert row["rounds_peak_rss_mb"] is None or 0 < row["rounds_peak_rss_mb"] <= row["peak_rss_mb"]
    assert row["shared_values"] == 3 * 21  # M * (d + 1)
    assert bench.MARK_START in out.read_text() and "| D-EM | 8 |" in out.read_text()
    assert "| D-EM | 8 |" in capsys.readouterr().out
