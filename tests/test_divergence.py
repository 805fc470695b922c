"""The divergence guard: non-finite values, and blow-ups that logistic and softmax losses
hide (they never become NaN, so a far too large step used to end "complete")."""

import json
import math

import pytest

from p2p_fmtl import DivergenceError, load_config, run
from p2p_fmtl.cli import main
from p2p_fmtl.runner import Simulation

BASE = {
    "run": {"rounds": 4, "eval_every": 2, "seed": 0},
    "topology": {"name": "ring", "n": 6},
    "algorithm": {"name": "dsgd", "batch_size": 16},
}
DATA = {
    "logistic": {"name": "clustered_linear", "dim": 5, "n_test": 20, "task": "classification"},
    "softmax": {"name": "digits"},
    "squared": {"name": "clustered_linear", "dim": 5, "n_test": 20},
}


def _cfg(loss: str, lr: float, **run_keys):
    raw = {**BASE, "data": DATA[loss]}
    raw["run"] = {**raw["run"], **run_keys}
    raw["algorithm"] = {**raw["algorithm"], "lr": lr}
    return load_config(raw)


@pytest.mark.parametrize("loss", list(DATA))
@pytest.mark.parametrize("lr", [1e4, 1e30])
def test_a_far_too_large_step_stops_every_task_kind(loss, lr, tmp_path):
    out = tmp_path / "r"
    with pytest.raises(DivergenceError) as e:
        run(_cfg(loss, lr), out=out)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("run diverged: algorithm 'dsgd' produced")
    assert "try a smaller algorithm.lr" in msg and f"partial results in {out}" in msg
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "incomplete" and summary["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no checkpoint is kept
    if loss == "squared":  # squared loss overflows within the first rounds
        assert "non-finite losses or parameters in round" in msg
        return
    # the task really is what the test says
    assert Simulation(_cfg(loss, lr)).task.loss_name == loss
    # the named loss and bound are those of the metrics written: round 2, > 100 x round 0
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("train_loss")
    first, last = float(rows[1][col]), float(rows[-1][col])
    assert rows[-1][0] == "2" and last > 100 * first
    assert f"a mean train loss of {last:.4g} in round 2" in msg
    assert f"run.max_loss_growth = 100 times its round-0 value {first:.4g}" in msg


@pytest.mark.parametrize("loss", list(DATA))
def test_a_normal_run_is_not_stopped(loss):
    result = run(_cfg(loss, 0.1))
    assert result.summary["status"] == "complete" and "error" not in result.summary
    losses = [m["train_loss"] for m in result.metrics]
    assert losses[-1] < losses[0]


def test_the_bounds_can_be_turned_off_but_overflow_always_stops():
    """With run.max_loss_growth = 0 a logistic run at lr 1e4 ends complete with its loss
    far past the bound (what the bound caught); at lr 1e30 the consensus distance
    overflows to infinity, which stops the run whatever the bounds."""
    result = run(_cfg("logistic", 1e4, max_loss_growth=0))
    losses = [m["train_loss"] for m in result.metrics]
    assert result.summary["status"] == "complete" and losses[-1] > 100 * losses[0]
    with pytest.raises(DivergenceError, match="an infinite consensus distance in round 2"):
        run(_cfg("logistic", 1e30, max_loss_growth=0, max_consensus_growth=0))


@pytest.fixture(scope="module")
def sim():
    return Simulation(_cfg("squared", 0.1, max_loss_growth=10, max_consensus_growth=1e3))


def _judge(sim, history):
    sim.history = history
    return sim.divergence()


def test_growth_bounds_compare_with_the_right_reference(sim):
    """Loss against its round-0 value; consensus distance against its first positive
    value after round 0 (round 0 of identical models is rounding noise)."""
    r0 = {"round": 0, "train_loss": 0.5, "consensus_distance": 1e-15}
    r2 = {"round": 2, "train_loss": 0.4, "consensus_distance": 0.2}
    assert _judge(sim, [r0, r2]) is None
    assert _judge(sim, [r0, r2, {**r2, "round": 4, "train_loss": 5.0}]) is None  # = 10 x
    what, error = _judge(sim, [r0, r2, {**r2, "round": 4, "train_loss": 5.001}])
    assert what.startswith("a mean train loss of 5.001 in round")
    assert "run.max_loss_growth = 10 times its round-0 value 0.5" in what
    assert "run.max_loss_growth" in error
    assert _judge(sim, [r0, r2, {**r2, "round": 4, "consensus_distance": 200.0}]) is None
    what, _ = _judge(sim, [r0, r2, {**r2, "round": 4, "consensus_distance": 200.1}])
    assert "run.max_consensus_growth = 1000 times its value 0.2 in round 2" in what
    what, _ = _judge(sim, [r0, {**r2, "consensus_distance": math.inf}])
    assert what.startswith("an infinite consensus distance")
    what, _ = _judge(sim, [r0, {**r2, "train_loss": math.nan}])
    assert what.startswith("a non-finite mean train loss")


def test_divergence_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[run]\nrounds = 4\neval_every = 2\n[topology]\nname = "ring"\nn = 6\n'
        '[data]\nname = "digits"\n[algorithm]\nname = "dsgd"\nlr = 1e4\nbatch_size = 16\n'
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "run diverged" in err and "round 2" in err and "run.max_loss_growth" in err
