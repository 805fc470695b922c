"""The engine against independent references: spectral theory and numpy SGD."""

import numpy as np
import pytest

import topologies
from p2p_fmtl import load_config, run
from p2p_fmtl.data import fedem_synthetic


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _logistic_grad(w, b, x, y):
    r = _sigmoid(x @ w + b) - y
    return x.T @ r / len(y), r.mean()


SMALL_DATA = {"name": "fedem_synthetic", "dim": 10, "n_test": 50, "seed": 3}


@pytest.mark.parametrize(
    "topo",
    [{"name": "ring", "n": 16}, {"name": "torus", "n": 36}],
)
def test_average_decays_at_the_spectral_rate(topo):
    """Consensus distance falls by |λ₂(W)|² per round (within 10 %) over the tail."""
    cfg = load_config(
        {
            "run": {"rounds": 60, "eval_every": 1},
            "topology": {**topo, "mixing": "metropolis"},
            "algorithm": {"name": "average", "dim": 64},
        }
    )
    res = run(cfg)
    d = np.array([r["consensus_distance"] for r in res.metrics])
    G = topologies.build(topo["name"], topo["n"])
    W = topologies.mixing_matrix(G, rule="metropolis")
    lam2 = 1.0 - topologies.spectral_gap(W)
    t1, t2 = 20, 60
    rate = (d[t2] / d[t1]) ** (1.0 / (t2 - t1))
    assert d[t2] < 1e-3 * d[0]
    assert abs(rate - lam2**2) <= 0.1 * lam2**2, (rate, lam2**2)
    assert res.metrics[-1]["bytes_total"] == 60 * 2 * G.number_of_edges() * 64 * 4


def test_dsgd_on_complete_graph_is_fedavg():
    """D-SGD, complete graph, W = 11ᵀ/N == FedAvg with full participation (numpy)."""
    n, rounds, steps, lr = 6, 4, 3, 0.5
    base = {
        "run": {"rounds": 0, "seed": 1},
        "topology": {"name": "complete", "n": n, "mixing": "uniform"},
        "data": SMALL_DATA,
        "algorithm": {"name": "dsgd", "lr": lr, "local_steps": steps, "batch_size": 1000},
    }
    init = run(load_config(base)).params
    w, b = init["w"][0].astype(np.float64), init["b"][0].astype(np.float64)
    assert np.allclose(init["w"], init["w"][0])  # identical initialisation

    ds = fedem_synthetic(n, dim=10, n_test=50, seed=3)
    for _ in range(rounds):
        ws, bs = [], []
        for nd in ds.nodes:
            wi, bi = w.copy(), b.copy()
            for _ in range(steps):
                gw, gb = _logistic_grad(wi[:, 0], bi[0], nd.x_train.astype(np.float64), nd.y_train)
                wi[:, 0] -= lr * gw
                bi[0] -= lr * gb
            ws.append(wi)
            bs.append(bi)
        w, b = np.mean(ws, axis=0), np.mean(bs, axis=0)

    res = run(load_config(base, overrides={"run.rounds": rounds}))
    for i in range(n):
        np.testing.assert_allclose(res.params["w"][i], w, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(res.params["b"][i], b, rtol=2e-4, atol=2e-5)


def test_local_epochs_skip_padding_batches():
    """Nodes smaller than one batch take exactly one momentum step per epoch.

    The packed scan runs ceil(S/B) batches per epoch; the empty ones must leave
    parameters and momentum untouched, or momentum would keep moving the model.
    """
    n, epochs, lr, mom, wd, bsz = 8, 3, 0.2, 0.9, 1e-2, 120
    base = {
        "run": {"rounds": 0, "seed": 2},
        "topology": {"name": "ring", "n": n},
        "data": SMALL_DATA,
        "algorithm": {
            "name": "local",
            "lr": lr,
            "local_epochs": epochs,
            "batch_size": bsz,
            "momentum": mom,
            "weight_decay": wd,
        },
    }
    w0 = run(load_config(base)).params
    res = run(load_config(base, overrides={"run.rounds": 2}))
    ds = fedem_synthetic(n, dim=10, n_test=50, seed=3)
    small = [i for i, nd in enumerate(ds.nodes) if nd.n_train <= bsz]
    assert small and max(nd.n_train for nd in ds.nodes) > bsz  # padding batches exist
    for i in small:
        x, y = ds.nodes[i].x_train.astype(np.float64), ds.nodes[i].y_train
        w, b = w0["w"][i][:, 0].astype(np.float64), w0["b"][i][0].astype(np.float64)
        bw, bb = np.zeros_like(w), 0.0
        for _ in range(2 * epochs):
            gw, gb = _logistic_grad(w, b, x, y)
            gw, gb = gw + wd * w, gb + wd * b
            bw, bb = mom * bw + gw, mom * bb + gb
            w, b = w - lr * bw, b - lr * bb
        np.testing.assert_allclose(res.params["w"][i][:, 0], w, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(res.params["b"][i][0], b, rtol=2e-4, atol=2e-5)


def test_local_sends_nothing_and_dsgd_reaches_consensus():
    base = {
        "run": {"rounds": 20, "eval_every": 5},
        "topology": {"name": "erdos_renyi", "n": 10, "p": 0.5},
        "data": SMALL_DATA,
        "algorithm": {"name": "local", "lr": 0.1},
    }
    loc = run(load_config(base))
    assert loc.summary["bytes_total"] == 0
    assert all(r["bytes_sent"] == 0 for r in loc.nodes)
    ds = run(load_config(base, overrides={"algorithm.name": "dsgd"}))
    assert ds.summary["consensus_distance"] < 0.05 * loc.summary["consensus_distance"]
    assert ds.summary["bytes_total"] == sum(r["bytes_sent"] for r in ds.nodes) > 0
    # training helps: both beat the untrained model
    assert ds.metrics[-1]["test_acc"] > ds.metrics[0]["test_acc"]
    assert ds.metrics[-1]["train_loss"] < ds.metrics[0]["train_loss"]


def test_seed_determinism_and_no_recompilation():
    from p2p_fmtl.assemble import _ENGINES

    base = {
        "run": {"rounds": 6, "eval_every": 3, "seed": 5},
        "topology": {"name": "random_regular", "n": 12, "d": 3},
        "data": SMALL_DATA,
        "algorithm": {"name": "dsgd", "lr": 0.1, "batch_size": 16},
    }
    a = run(load_config(base))
    b = run(load_config(base))
    assert [r["test_acc"] for r in a.metrics] == [r["test_acc"] for r in b.metrics]
    engine = next(e for e in _ENGINES.values() if e.alg.name == "dsgd" and e.compilations)
    before = engine.compilations
    c = run(load_config(base, overrides={"run.seed": 6, "algorithm.lr": 0.05}))
    assert engine.compilations == before  # new seed, graph and lr: same programs
    assert c.metrics[-1]["test_acc"] != a.metrics[-1]["test_acc"]


def test_sparse_and_dense_gossip_agree():
    base = {
        "run": {"rounds": 5, "eval_every": 5},
        "topology": {"name": "small_world", "n": 20, "k": 4, "operator": "dense"},
        "data": SMALL_DATA,
        "algorithm": {"name": "dsgd", "lr": 0.1, "batch_size": 32},
    }
    dense = run(load_config(base))
    sparse = run(load_config(base, overrides={"topology.operator": "sparse"}))
    assert sparse.summary["gossip_operator"] == "sparse"
    np.testing.assert_allclose(dense.params["w"], sparse.params["w"], rtol=1e-5, atol=1e-6)


def test_neighbour_table_gossip_equals_the_matrix_product():
    """The sparse operator (neighbour table, fused sum) is W @ X, checked in numpy, on a
    graph with unequal degrees (padded slots) and on a multi-axis leaf."""
    import networkx as nx

    import topologies
    from p2p_fmtl.gossip import make_mixing, mix

    G = nx.barabasi_albert_graph(40, 2, seed=3)
    W = topologies.mixing_matrix(G, rule="metropolis")
    r, s = np.nonzero(W)
    kind, op = make_mixing(s, r, W[r, s], 40, "sparse")
    assert kind == "sparse" and op.dense is None
    degrees = np.count_nonzero(W, axis=1)
    assert op.senders.shape == (40, 1 << int(degrees.max() - 1).bit_length())
    x = np.random.default_rng(0).normal(size=(40, 3, 5)).astype(np.float32)
    got = np.asarray(mix({"a": x}, op)["a"])
    np.testing.assert_allclose(got, np.einsum("ij,jkl->ikl", W, x), rtol=1e-5, atol=1e-6)
