"""D-EM's fused local update (one scan: E-step + all M components) against the separate
E-step pass followed by vmapped local SGD (``algorithm.fused = false``)."""

import numpy as np
import pytest

from p2p_fmtl import load_config, run

BASE = {
    "run": {"rounds": 3, "eval_every": 3, "seed": 1},
    "topology": {"name": "erdos_renyi", "n": 7, "p": 0.5},
    "data": {"name": "fedem_synthetic", "dim": 5, "n_test": 20, "seed": 3},
    "algorithm": {"name": "dem", "lr": 0.1, "batch_size": 16},
}

CASES = {
    # momentum + weight decay, two epochs, stragglers, a held-out node
    "momentum_epochs_stragglers": {
        "algorithm.momentum": 0.9,
        "algorithm.weight_decay": 5e-4,
        "algorithm.local_epochs": 2,
        "faults.straggler": 0.5,
        "data.holdout_nodes": [2],
    },
    # every node a straggler that skips most steps (π must still see every row), M = 2,
    # unbucketed padding, batches that do not divide the node sizes
    "heavy_stragglers_unbucketed": {
        "algorithm.components": 2,
        "algorithm.batch_size": 12,
        "faults.straggler": 1.0,
        "faults.straggler_work": [0.05, 0.3],
        "data.bucketing": "none",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_update_matches_the_separate_e_step(case):
    over = CASES[case]
    fused = run(load_config(BASE, overrides=over))
    plain = run(load_config(BASE, overrides={**over, "algorithm.fused": False}))
    for name in ("w", "b", "pi"):
        np.testing.assert_allclose(fused.params[name], plain.params[name], rtol=1e-5, atol=1e-5)
    pi = np.asarray(fused.params["pi"])
    np.testing.assert_allclose(pi.sum(-1), 1.0, rtol=1e-5)
    assert not np.allclose(pi, pi.flat[0])  # π moved off uniform: the E-step ran
    for a, b in zip(fused.metrics, plain.metrics, strict=True):
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_copy_floor_of_a_bench_row():
    """The harness's copy floor: real rows × row bytes × epochs / copy bandwidth."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"))
    import harness

    row = {"copy_gbs": 10.0, "train_row_bytes": 604, "n_train_total": 1000}
    row["s_per_round"] = 1.208e-3
    harness.add_copy_floor(row, local_epochs=2)  # 1000 · 604 B · 2 = 1.208 MB at 10 GB/s
    assert row["stream_mb_per_round"] == pytest.approx(1.208)
    assert row["floor_s"] == pytest.approx(1.208e-4)
    assert row["floor_pct"] == pytest.approx(10.0)
    assert "floor_s" not in harness.add_copy_floor({"s_per_round": 1.0}, 1)  # no copy probe
