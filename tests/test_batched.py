"""Batched runs (one vmapped program) give the numbers of separate runs."""

import numpy as np
import pytest

from p2p_fmtl import UserError, load_config, run
from p2p_fmtl.batched import run_batch

BASE = {
    "run": {"rounds": 6, "eval_every": 3},
    "topology": {"name": "erdos_renyi", "n": 12, "p": 0.4},
    "data": {"name": "fedem_synthetic", "dim": 10, "n_test": 40},
    "algorithm": {"name": "dem", "batch_size": 32, "momentum": 0.9, "schedule": "multistep"},
}


def test_batched_seeds_equal_separate_runs():
    cfgs = [load_config(BASE, overrides={"run.seed": s}) for s in (0, 1, 2)]
    cfgs.append(load_config(BASE, overrides={"run.seed": 3, "algorithm.lr": 0.05}))
    batched = run_batch(cfgs)
    for cfg, b in zip(cfgs, batched, strict=True):
        alone = run(cfg)
        assert b.summary["batched"] == 4
        for k in alone.params:
            np.testing.assert_allclose(b.params[k], alone.params[k], rtol=1e-5, atol=1e-6)
        for ra, rb in zip(alone.metrics, b.metrics, strict=True):
            assert rb["test_acc"] == pytest.approx(ra["test_acc"], abs=1e-6)
            assert rb["consensus_distance"] == pytest.approx(ra["consensus_distance"], rel=1e-4)
    assert len({round(b.summary["test_acc"], 6) for b in batched}) > 1  # seeds matter


def test_batched_with_different_data_and_graphs():
    """Different data (same shapes) are stacked; different shapes are refused."""
    raw = load_config(BASE).raw
    raw["topology"] = {"name": "ring", "n": 12}
    raw["algorithm"] = {"name": "dsgd", "batch_size": 32}
    cfgs = [
        load_config(raw, overrides={"run.seed": s, "data.noise": z})
        for s, z in ((0, 0.1), (1, 0.3))
    ]
    for cfg, b in zip(cfgs, run_batch(cfgs), strict=True):
        np.testing.assert_allclose(b.params["w"], run(cfg).params["w"], rtol=1e-5, atol=1e-6)
    other_shape = [load_config(raw, overrides={"data.n_test": t}) for t in (40, 50)]
    with pytest.raises(UserError, match="cannot share one program: run 1: the shapes of"):
        run_batch(other_shape)
