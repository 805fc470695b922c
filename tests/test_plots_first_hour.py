"""Plots, a new user's first hour: mean ± band over seeds, --select, nested run folders,
every graph of a sweep in the topology figure, bad output places refused before drawing, the
``plot`` command's arguments, and the consensus marks of the trade-off study."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import shutil
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from p2p_fmtl import plots
from p2p_fmtl.errors import UserError
from p2p_fmtl.plots import add_arguments, find_runs, plot, plot_command
from p2p_fmtl.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "run": {"rounds": 4, "eval_every": 1},
    "topology": {"n": 8, "name": "ring"},
    "data": {"name": "fedem_synthetic", "dim": 5, "n_test": 20},
    "algorithm": {"name": "dsgd", "batch_size": 16},
}


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    """A 2 lr x 2 seed sweep, two folders deep, plus a hidden copy that must be ignored."""
    root = tmp_path_factory.mktemp("first_hour_plots")
    sweep = root / "study" / "week1" / "lr"
    res = run_sweep(
        {"base": BASE, "grid": {"algorithm.lr": [0.05, 0.2], "run.seed": [0, 1]}},
        out=sweep,
        quiet=True,
    )
    assert res.ok
    shutil.copytree(sweep / "runs", root / "study" / ".tmp-copy")
    return root


def _metric(run_dir: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([float(r["round"]) for r in rows]), np.array([float(r[column]) for r in rows])


def _lr(run) -> float:
    return run.config["algorithm"]["lr"]


def test_nested_runs_are_found_and_hidden_folders_skipped(nested):
    runs = find_runs(nested)
    assert len(runs) == 4
    assert all(r.name.startswith("study/week1/lr/runs/") for r in runs)
    assert find_runs(nested / "study" / "week1" / "lr" / "runs" / runs[0].path.name)[0].path == (
        runs[0].path
    )


def test_seeds_are_one_line_with_a_min_max_band(nested):
    runs = find_runs(nested)
    fig = plots._accuracy(runs, [], aggregate=True)
    try:
        ax = fig.axes[0]
        drawn = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata())]
        assert len(drawn) == 2  # one solid line per learning rate
        bands = [c for c in ax.collections if not c.get_label().startswith("line:")]
        assert len(bands) == 2  # and the legend's entry for the bands
        for line, band in zip(drawn, bands, strict=True):
            lr = 0.05 if "lr=0.05" in line.get_label() else 0.2
            members = [r.path for r in runs if _lr(r) == lr]
            ys = np.stack([_metric(p, "test_acc")[1] for p in members])
            np.testing.assert_allclose(line.get_ydata(), ys.mean(0), rtol=1e-12)
            verts = band.get_paths()[0].vertices[:, 1]
            assert verts.min() == pytest.approx(ys.min()) and verts.max() == pytest.approx(ys.max())
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "line: mean over 2 seeds; shaded: min–max over the seeds" in labels
    finally:
        plt.close(fig)

    fig = plots._accuracy(runs, [], aggregate=False)
    try:
        ax = fig.axes[0]
        solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata())]
        assert len(solid) == 4 and not ax.collections  # no bands, no band legend
        assert len({ln.get_label() for ln in solid}) == 4  # seeds tell them apart
    finally:
        plt.close(fig)


def test_select_keeps_runs_by_their_config(nested, tmp_path):
    runs = plots._select(find_runs(nested), {"algorithm.lr": 0.05})
    assert len(runs) == 2 and {_lr(r) for r in runs} == {0.05}
    assert len(plots._select(find_runs(nested), {"run.seed": 1.0, "algorithm.lr": 0.2})) == 1
    with pytest.raises(UserError, match=r"--select algorithm.lrr: no run's config.toml has .*"):
        plots._select(find_runs(nested), {"algorithm.lrr": 0.05})
    with pytest.raises(
        UserError, match=r"^--select algorithm.lr=0.1: no run has this value; the runs have 0.05"
    ):
        plots._select(find_runs(nested), {"algorithm.lr": 0.1})
    out = plot(nested, "tradeoff", tmp_path / "t.png", select={"algorithm.lr": 0.2})
    assert out.is_file() and out.stat().st_size > 5000


def test_topology_shows_every_distinct_graph(tmp_path):
    base = {
        "run": {"rounds": 1},
        "topology": {"n": 8, "name": "erdos_renyi", "p": 0.5},
        "algorithm": {"name": "average", "dim": 2},
    }
    res = run_sweep(
        {
            "base": base,
            "grid": {"topology.name": ["ring", "erdos_renyi"], "run.seed": [0, 1, 2, 3]},
        },
        out=tmp_path / "s",
        quiet=True,
    )
    assert res.ok
    runs = find_runs(tmp_path / "s")
    assert len(runs) == 8

    def panels(aggregate: bool) -> list[str]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig = plots._topology(runs, [], aggregate)
        try:
            return [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
        finally:
            plt.close(fig)

    # the ring is the same graph for every seed; Erdős–Rényi graphs differ per seed
    titles = panels(aggregate=True)
    assert len(titles) == 5
    assert sum(t.startswith("ring (n=8): 4 runs") for t in titles) == 1  # seeds 0-3
    assert len(panels(aggregate=False)) == 8  # all runs, not the first 6


def test_bad_output_places_are_refused_before_drawing(nested, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("drew a figure")

    monkeypatch.setitem(plots._PLOTTERS, "accuracy", boom)
    with pytest.raises(UserError, match=r"the folder .*missing does not exist; create it first"):
        plot(nested, "accuracy", tmp_path / "missing" / "a.png")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"the folder .*file is not a directory"):
        plot(nested, "accuracy", tmp_path / "file" / "a.png")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(UserError, match=r"is a directory; give a file name"):
        plot(nested, "accuracy", tmp_path / "d.png")
    monkeypatch.setattr(plots.os, "access", lambda *a, **k: False)
    with pytest.raises(UserError, match=rf"--out {tmp_path / 'a.png'}: the folder .* not writable"):
        plot(nested, "accuracy", tmp_path / "a.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "file"]


def test_plot_command_arguments(nested, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "acc.svg"
    args = parser.parse_args(
        [str(nested), "--out", str(out), "--select", "algorithm.lr=0.05", "--no-aggregate"]
    )
    assert args.aggregate is False and args.kind == "accuracy"
    assert plot_command(args) == 0
    assert capsys.readouterr().out.strip() == f"figure: {out}"
    assert "<svg" in out.read_text()
    args = parser.parse_args([str(nested), "--select", "algorithm.lr"])
    with pytest.raises(UserError, match=r"^--select algorithm.lr: expected KEY=VALUE"):
        plot_command(args)
    assert parser.parse_args([str(nested)]).aggregate is True


# --------------------------------------------------------------------------- trade-off study
def _tradeoff_module():
    spec = importlib.util.spec_from_file_location(
        "comm_accuracy_tradeoff", ROOT / "experiments" / "comm_accuracy_tradeoff.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tradeoff_marks_runs_whose_nodes_stay_apart(tmp_path):
    """Two compressed runs beside an uncompressed one (peak consensus distance 0.04): one
    ends at 0.001 (consensus), one at 3.0 (apart) and scores higher while apart."""
    mod = _tradeoff_module()
    head = [
        "run_id",
        "algorithm.name",
        "algorithm.local_epochs",
        "algorithm.gossip_every",
        "compression.name",
        "compression.ratio",
        "compression.gamma",
        "round",
        "test_acc",
        "consensus_distance",
        "bytes_total",
    ]
    runs = {
        ("none", 1.0): ([0.0, 0.04, 0.01, 1e-5], [0.60, 0.66, 0.68, 0.68]),
        ("qsgd", 0.1): ([0.0, 0.6, 0.002, 0.001], [0.60, 0.71, 0.69, 0.68]),
        ("top_k", 0.01): ([0.0, 5.0, 4.0, 3.0], [0.60, 0.69, 0.70, 0.70]),
    }
    path = tmp_path / "history.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for (name, ratio), (cons, acc) in runs.items():
            for t, (c, a) in enumerate(zip(cons, acc, strict=True)):
                w.writerow([name, "dsgd", 1, 1, name, ratio, 0.2, 10 * t, a, c, 1000 * t * 1000])
    recs = {r["wire"]: r for r in mod.analyse(path)}
    assert recs["none"]["ref_cons"] == pytest.approx(0.04)
    assert recs["none"]["apart"].tolist() == [False] * 4
    assert recs["qsgd 4-bit"]["apart"].tolist() == [False, True, False, False]
    assert recs["top_k 1%"]["apart"].tolist() == [False, True, True, True]
    table = mod.table(list(recs.values()))
    row = {line.split("|")[4].strip(): line for line in table.splitlines()[2:]}
    assert row["top_k 1% (0.2)"].rstrip().endswith("| 3 (75×) **apart** |")
    assert row["qsgd 4-bit (0.2)"].rstrip().endswith("| 0.001 (0.025×) |")
    assert "| 2.00 † |" in row["top_k 1% (0.2)"]  # 70 % first reached while apart
    mod.figure(list(recs.values()), tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10000
