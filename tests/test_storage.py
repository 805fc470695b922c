"""data.storage: float features kept in 16 bits, computed in float32."""

from __future__ import annotations

import jax
import ml_dtypes
import numpy as np
import pytest

from p2p_fmtl import ConfigError, load_config
from p2p_fmtl.runner import Simulation


def _sim(storage: str, alg: str = "dem") -> Simulation:
    cfg = {
        "run": {"seed": 0, "rounds": 3, "eval_every": 3},
        "topology": {"name": "ring", "n": 5},
        "data": {"name": "fedem_synthetic", "dim": 6, "n_test": 30, "storage": storage},
        "algorithm": {"name": alg, "lr": 0.1, "batch_size": 32},
    }
    sim = Simulation(load_config(cfg))
    sim.advance(3)
    return sim


@pytest.mark.parametrize("storage", ["bfloat16", "float16"])
def test_sixteen_bit_features_halve_the_data_and_keep_float32_arithmetic(storage):
    ref, sim = _sim("float32"), _sim(storage)
    a, b = ref.packed.buckets[0], sim.packed.buckets[0]
    assert b.x_train.dtype == np.dtype(ml_dtypes.bfloat16 if storage == "bfloat16" else storage)
    assert b.x_train.nbytes * 2 == a.x_train.nbytes
    # the stored values are the float32 ones rounded once
    assert np.array_equal(b.x_train, a.x_train.astype(b.x_train.dtype))
    assert np.array_equal(b.y_train, a.y_train)
    # parameters stay float32 and near the float32 run (inputs in [-1, 1], 8- or 11-bit
    # mantissas: relative rounding 2^-9 or 2^-12 per feature)
    tol = 0.05 if storage == "bfloat16" else 0.01
    for x, y in zip(jax.tree.leaves(ref.state), jax.tree.leaves(sim.state), strict=True):
        assert y.dtype == x.dtype
        assert float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float)))) < tol
    assert abs(ref.evaluate()["test_acc"] - sim.evaluate()["test_acc"]) < 0.05


def test_storage_is_checked():
    with pytest.raises(ConfigError, match=r"data.storage.*'int8'.*bfloat16"):
        load_config({"data": {"storage": "int8"}})
