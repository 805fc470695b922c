"""Consensus analysis (numpy curves vs spectra vs the simulator) and the run-directory plots."""

import shutil
import warnings

import numpy as np
import pytest

import p2p_fmtl
import topologies
from p2p_fmtl import UserError
from p2p_fmtl.consensus import consensus_curve, decay_rate, spectral_prediction
from p2p_fmtl.plots import KINDS, find_runs, plot

# ----------------------------------------------------------------------------- consensus


def _ring16():
    return topologies.mixing_matrix(topologies.build("ring", 16), "metropolis")


def test_ring_decay_rate_matches_slem_squared():
    W = _ring16()
    x0 = np.random.default_rng(0).normal(size=(16, 5))
    curve = consensus_curve(W, x0, 60)
    pred = spectral_prediction(W, x0, 60)
    slem = topologies.second_largest_eigenvalue_modulus(W)
    rate = decay_rate(curve, 20, 60)
    assert rate == pytest.approx(slem**2, rel=0.1)
    assert decay_rate(pred, 20, 60) == pytest.approx(slem**2, rel=1e-9)
    assert rate == pytest.approx(decay_rate(pred, 20, 60), rel=0.02)
    assert curve.shape == pred.shape == (61,)
    assert curve[0] == pytest.approx(pred[0])
    assert np.all(curve <= pred * (1 + 1e-9))  # symmetric W: the spectral bound holds


def _shift(n, k):
    return np.roll(np.eye(n), k, axis=1)  # (P x)_i = x_{i+k}


@pytest.mark.parametrize("kind", ["one_peer_exponential", "hypercube_matchings"])
def test_schedules_reach_exact_average(kind):
    n = 8
    if kind == "one_peer_exponential":  # i averages with i + 2^t (mod 8)
        mats = [(np.eye(n) + _shift(n, 2**t)) / 2 for t in range(3)]
    else:  # i averages with i XOR 2^t: a perfect matching per round
        mats = []
        for t in range(3):
            P = np.zeros((n, n))
            P[np.arange(n), np.arange(n) ^ (1 << t)] = 1
            mats.append((np.eye(n) + P) / 2)
    x0 = np.random.default_rng(1).normal(size=(n, 4))
    curve = consensus_curve(mats, x0, 5)
    assert np.all(curve[:3] > 1e-3)
    assert np.all(curve[3:] < 1e-25 * curve[0])
    # a callable and a (K, N, N) array give the same curve; the list is cycled
    np.testing.assert_allclose(consensus_curve(lambda t: mats[t % 3], x0, 5), curve)
    np.testing.assert_allclose(consensus_curve(np.stack(mats), x0, 5), curve)
    assert consensus_curve(mats[:1], x0, 3)[3] == pytest.approx(consensus_curve(mats[0], x0, 3)[3])


def test_consensus_helpers_validate_input():
    W = _ring16()
    with pytest.raises(UserError, match=r"expected a \(8, 8\) matrix \(x0 has 8 rows\)"):
        consensus_curve(W, np.ones((8, 2)), 3)
    with pytest.raises(UserError, match="rounds: got -1"):
        consensus_curve(W, np.ones((16, 2)), -1)
    with pytest.raises(UserError, match="schedule is empty"):
        consensus_curve([], np.ones((16, 2)), 3)
    with pytest.raises(UserError, match="start < stop"):
        decay_rate([1.0, 0.5], 1, 1)
    assert decay_rate([4.0, 1.0, 0.0], 0, 2) == 0.0
    assert consensus_curve([[0.5, 0.5], [0.5, 0.5]], [1.0, -1.0], 1).tolist() == [1.0, 0.0]


def test_average_algorithm_matches_numpy_curve():
    cfg = {
        "run": {"rounds": 40, "eval_every": 1},
        "topology": {"name": "ring", "n": 16},
        "algorithm": {"name": "average", "dim": 32},
    }
    x0 = p2p_fmtl.run({**cfg, "run": {"rounds": 0, "eval_every": 1}}).params["x"]
    res = p2p_fmtl.run(cfg)
    sim = np.array([r["consensus_distance"] for r in res.metrics])
    assert [r["round"] for r in res.metrics] == list(range(41))
    expected = consensus_curve(_ring16(), x0, 40)
    np.testing.assert_allclose(sim, expected, rtol=1e-3)
    assert res.summary["spectral_gap"] == pytest.approx(
        topologies.spectral_gap(_ring16()), rel=1e-6
    )


# ----------------------------------------------------------------------------- plots


def _cfg(alg, topology="ring", **data):
    return {
        "run": {"rounds": 6, "eval_every": 1},
        "topology": {"name": topology, "n": 8},
        "data": {"name": "fedem_synthetic", "dim": 10, "n_test": 20, **data},
        "algorithm": {"name": alg, "lr": 0.1, "batch_size": 32},
    }


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    p2p_fmtl.run(_cfg("dsgd"), out=root / "runs" / "dsgd_ring")
    p2p_fmtl.run(_cfg("local"), out=root / "runs" / "local_ring")
    p2p_fmtl.run(
        {
            "run": {"rounds": 6, "eval_every": 1},
            "topology": {"name": "ring", "n": 8},
            "algorithm": {"name": "average", "dim": 10},
        },
        out=root / "runs" / "average_ring",
    )
    return root


def _assert_png(path):
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 5000
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_an_image(runs_dir, kind, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = plot(runs_dir / "runs", kind, out=tmp_path / f"{kind}.png")
    assert out == tmp_path / f"{kind}.png"
    _assert_png(out)
    if kind in ("accuracy", "tradeoff", "fairness"):  # the average run has no accuracy
        assert any("average_ring" in str(w.message) for w in caught)


def test_default_output_svg_and_single_run(runs_dir, tmp_path):
    run = runs_dir / "runs" / "dsgd_ring"
    out = plot(run, "accuracy")
    assert out == run / "accuracy.png"
    _assert_png(out)
    svg = plot(run, "consensus", out=tmp_path / "c.svg")
    text = svg.read_text()
    assert "<svg" in text and len(text) > 5000


def test_sweep_layout_and_many_topology_panels(runs_dir, tmp_path):
    sweep = tmp_path / "sweep"
    for i in range(7):
        shutil.copytree(runs_dir / "runs" / "dsgd_ring", sweep / "runs" / f"r{i}")
    (sweep / "sweep.csv").write_text("run_id\n")
    assert len(find_runs(sweep)) == 7
    assert len({r.label for r in find_runs(sweep)}) == 7  # identical configs: dir names added
    _assert_png(plot(sweep, "topology"))
    _assert_png(plot(sweep, "consensus"))  # > 6 legend entries: legend outside


def test_plot_errors_are_user_errors(runs_dir, tmp_path):
    with pytest.raises(UserError, match="no run directories found"):
        plot(tmp_path, "accuracy")
    with pytest.raises(UserError, match="not a directory"):
        plot(tmp_path / "missing", "accuracy")
    with pytest.raises(
        UserError, match="unknown 'acuracy'; allowed: consensus, accuracy, tradeoff, fairness"
    ):
        plot(runs_dir / "runs", "acuracy")
    with pytest.raises(UserError, match=r"unsupported extension '\.jpg'"):
        plot(runs_dir / "runs", "accuracy", out=tmp_path / "a.jpg")
    with pytest.raises(UserError, match="none of the 1 run"):
        plot(runs_dir / "runs" / "average_ring", "accuracy", out=tmp_path / "a.png")
