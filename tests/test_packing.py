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
    full = {"data.bucketing": "full", "data.max_buckets": 3}  # 3 copies of the round: compile time
    bucketed = run(load_config(base, overrides=full))
    assert flat.summary["buckets"] == 1 and bucketed.summary["buckets"] > 2
    assert bucketed.summary["padding_fraction"] < flat.summary["padding_fraction"]
    np.testing.assert_allclose(bucketed.params["w"], flat.params["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bucketed.params["pi"], flat.params["pi"], rtol=1e-5, atol=1e-6)
    assert bucketed.summary["test_acc"] == pytest.approx(flat.summary["test_acc"], abs=1e-6)
    chunked = run(load_config(base, overrides={**full, "run.node_chunk": 3}))
    np.testing.assert_allclose(chunked.params["w"], flat.params["w"], rtol=1e-5, atol=1e-6)


def test_no_recompilation_when_graph_weights_or_seed_change():
    """Same n and degree bound: new graph, new weights, new seed reuse the programs."""
    from p2p_fmtl.assemble import _ENGINES

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


def test_chunk_size_takes_the_budget_and_few_dummies():
    from p2p_fmtl.data.packing import chunk_size, padded_nodes

    # 1000 nodes of 100 kB with a 1 MB budget: about 10 per chunk, 1000 = 100 · 10
    assert chunk_size(1000, 100_000, 1_000_000) == 10
    # 581 nodes: the size in [5, 20] with the fewest dummies (581 = 7 · 83 is out of range)
    c = chunk_size(581, 100_000, 1_000_000)
    assert 5 <= c <= 20
    assert padded_nodes(581, c) - 581 == min(-(-581 // k) * k - 581 for k in range(5, 21))
    assert chunk_size(15, 100_000, 1_000_000) == 0  # fits in two chunks: not cut
    assert chunk_size(1000, 100_000, 0) == 0  # budget 0: off
    # several devices: chunks per device, and the bucket pads to devices · k · c
    c4 = chunk_size(1000, 100_000, 1_000_000, devices=4)
    assert padded_nodes(1000, c4, 4) % (4 * c4) == 0 and padded_nodes(1000, c4, 4) >= 1000
    assert padded_nodes(10, 0, 4) == 12  # no chunks: a multiple of the devices


def test_chunked_packing_pads_with_dummy_nodes_and_counts_them():
    ds = fedem_synthetic(300, n_test=1)
    plain = pack(ds, batch_size=128, bucketing="full")
    chunked = pack(ds, batch_size=128, bucketing="full", chunk_bytes=1 << 20)
    assert plain.dummy_nodes == 0 and all(c == 0 for c in plain.chunks)
    assert any(c > 0 for c in chunked.chunks)
    for b in chunked.buckets:
        real = b.nodes >= 0
        assert (b.n_train[~real] == 0).all() and not b.x_train[~real].any()
        if b.chunk:
            assert len(b.nodes) % b.chunk == 0
    ids = np.concatenate([b.nodes for b in chunked.buckets])
    assert sorted(ids[ids >= 0].tolist()) == list(range(300))
    assert chunked.dummy_nodes == int((ids < 0).sum())
    # dummies are padding: they count, and the recipe stays under a quarter
    assert plain.padding_fraction <= chunked.padding_fraction < 0.25


@pytest.mark.parametrize(
    "alg,extra,chunking",
    [
        ("dem", {}, [{"run.chunking": "on", "run.chunk_kib": 8}, {"run.node_chunk": 5}]),
        ("dsgd", {"faults.straggler": 0.5, "faults.node_drop": 0.1}, [{"run.node_chunk": 5}]),
        (
            "graph_mtl",
            {"algorithm.relation": "uniform", "algorithm.lam": 0.1},
            [{"run.node_chunk": 5}],
        ),
    ],
)
def test_chunked_local_work_gives_the_unchunked_numbers(alg, extra, chunking):
    """Chunks with dummy nodes (automatic budget and a fixed node count) change nothing:
    D-EM, the network process (stragglers' budgets, dropped nodes) and an inbox."""
    base = {
        "run": {"rounds": 4, "eval_every": 2, "seed": 2, "chunking": "off"},
        "topology": {"name": "random_regular", "n": 48, "d": 4},
        "data": {
            "name": "fedem_synthetic",
            "dim": 10,
            "n_test": 20,
            "bucketing": "full",
            "max_buckets": 2,
        },
        "algorithm": {"name": alg, "batch_size": 32, "momentum": 0.9, "weight_decay": 5e-4},
    }
    plain = run(load_config(base, overrides=extra))
    assert plain.summary["dummy_nodes"] == 0
    for over in chunking:
        chunked = run(load_config(base, overrides={**extra, "run.chunking": "auto", **over}))
        assert any(chunked.summary["node_chunks"]), over
        assert chunked.summary["dummy_nodes"] > 0 or "run.chunk_kib" in over
        for k in plain.params:
            np.testing.assert_allclose(chunked.params[k], plain.params[k], rtol=1e-5, atol=1e-6)
        assert chunked.summary["test_acc"] == pytest.approx(plain.summary["test_acc"], abs=1e-6)
        assert [r["bytes_total"] for r in chunked.metrics] == [
            r["bytes_total"] for r in plain.metrics
        ]
