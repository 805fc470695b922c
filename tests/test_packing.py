"""Bucketed packing: less padding, the same numbers, no recompilation."""

import itertools

import numpy as np
import pytest

from p2p_fmtl import load_config, run
from p2p_fmtl.data import fedem_synthetic, pack
from p2p_fmtl.data.packing import bucket_groups, padded_work


def test_full_bucketing_keeps_padding_under_a_quarter_on_the_reference_recipe():
    ds = fedem_synthetic(300, n_test=1)
    none = pack(ds, batch_size=128, bucketing="none")
    full = pack(ds, batch_size=128, bucketing="full")
    assert none.padding_fraction > 0.7
    assert full.padding_fraction < 0.25
    assert sorted(np.concatenate([b.nodes for b in full.buckets]).tolist()) == list(range(300))
    for b in full.buckets:  # each bucket is padded only to its own largest node
        assert b.x_train.shape[1] == b.n_train.max()
        np.testing.assert_array_equal(b.n_train, ds_sizes(ds)[b.nodes])


def ds_sizes(ds):
    return np.array([nd.n_train for nd in ds.nodes])


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_bucket_groups_are_optimal_contiguous_splits(k):
    """The DP's padded work equals the best of all contiguous splits of the sorted keys."""
    rng = np.random.default_rng(k)
    n_train = rng.integers(1, 700, size=40)
    keys = np.unique(-(-n_train // 100))
    groups = bucket_groups(n_train, 100, k)
    best = min(
        padded_work(
            [np.flatnonzero(np.isin(-(-n_train // 100), part)) for part in parts], n_train, 100
        )
        for cuts in itertools.combinations(range(1, len(keys)), min(k, len(keys)) - 1)
        for parts in [np.split(keys, cuts)]
    )
    assert padded_work(groups, n_train, 100) == best


def test_bucketed_and_unbucketed_runs_give_the_same_numbers():
    base = {
        "run": {"rounds": 6, "eval_every": 3, "seed": 3},
        "topology": {"name": "erdos_renyi", "n": 16, "p": 0.4},
        "data": {"name": "fedem_synthetic", "dim": 10, "n_test": 50, "bucketing": "none"},
        "algorithm": {"name": "dem", "batch_size": 32, "momentum": 0.9, "weight_decay": 5e-4},
    }
    flat = run(load_config(base))
    bucketed = run(load_config(base, overrides={"data.bucketing": "full"}))
    assert flat.summary["buckets"] == 1 and bucketed.summary["buckets"] > 2
    assert bucketed.summary["padding_fraction"] < flat.summary["padding_fraction"]
    np.testing.assert_allclose(bucketed.params["w"], flat.params["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bucketed.params["pi"], flat.params["pi"], rtol=1e-5, atol=1e-6)
    assert bucketed.summary["test_acc"] == pytest.approx(flat.summary["test_acc"], abs=1e-6)
    chunked = run(load_config(base, overrides={"data.bucketing": "full", "run.node_chunk": 3}))
    np.testing.assert_allclose(chunked.params["w"], flat.params["w"], rtol=1e-5, atol=1e-6)


def test_no_recompilation_when_graph_weights_or_seed_change():
    """Same n and degree bound: new graph, new weights, new seed reuse the programs."""
    from p2p_fmtl.runner import _ENGINES

    base = {
        "run": {"rounds": 4, "eval_every": 2, "seed": 0},
        "topology": {"name": "random_regular", "n": 300, "d": 4, "operator": "sparse"},
        "data": {"name": "clustered_linear", "dim": 5, "samples": [5, 8], "n_test": 5},
        "algorithm": {"name": "dsgd", "lr": 0.1, "batch_size": 8},
    }
    run(load_config(base))
    engine = next(e for e in _ENGINES.values() if e.alg.name == "dsgd" and e.compilations)
    before = engine.compilations
    variations = [
        {"run.seed": 1},
        {"topology.seed": 7},  # another random 4-regular graph
        {"topology.mixing": "max_degree"},  # other weights
        {"topology.d": 6},  # denser, but degree + 1 still rounds up to the same bound (8)
    ]
    for over in variations:
        raw = load_config(base).raw
        for key, value in over.items():
            section, name = key.split(".")
            raw[section][name] = value
        res = run(load_config(raw))
        assert res.summary["gossip_operator"] == "sparse"
    assert engine.compilations == before
