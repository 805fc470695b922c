"""Graph-regularized MTL and model propagation against closed forms (numpy)."""

import networkx as nx
import numpy as np
import pytest

import topologies
from p2p_fmtl import ConfigError, load_config, run
from p2p_fmtl.data import load_dataset

DATA = {
    "name": "clustered_linear",
    "clusters": 2,
    "dim": 4,
    "task": "regression",
    "samples": [12, 30],
    "n_test": 20,
    "noise": 0.5,
    "seed": 0,
}


def _augmented(ds):
    """Per-node (X̃ᵀX̃/n, X̃ᵀy/n) with a column of ones for the bias."""
    grams, rhs = [], []
    for nd in ds.nodes:
        x = np.hstack([nd.x_train.astype(np.float64), np.ones((nd.n_train, 1))])
        grams.append(x.T @ x / nd.n_train)
        rhs.append(x.T @ nd.y_train.astype(np.float64) / nd.n_train)
    return grams, rhs


def closed_form(ds, A, lam):
    """argmin Σ_i ½‖X̃_i w_i − y_i‖²/n_i + (λ/2) Σ_{ij∈E} a_ij‖w_i − w_j‖²:
    (blockdiag(X̃ᵢᵀX̃ᵢ/nᵢ) + λ L_A ⊗ I) w = (X̃ᵢᵀyᵢ/nᵢ)_i."""
    grams, rhs = _augmented(ds)
    n, p = len(grams), grams[0].shape[0]
    L = np.diag(A.sum(1)) - A
    H = np.zeros((n * p, n * p))
    for i, g in enumerate(grams):
        H[i * p : (i + 1) * p, i * p : (i + 1) * p] = g
    H += lam * np.kron(L, np.eye(p))
    return np.linalg.solve(H, np.concatenate(rhs)).reshape(n, p)


def _model_matrix(params):
    return np.concatenate([params["w"][..., 0], params["b"]], axis=1).astype(np.float64)


@pytest.mark.parametrize("graph", [{"name": "ring"}, {"name": "erdos_renyi", "p": 0.5}])
@pytest.mark.parametrize("lam", [0.1, 2.0])
def test_converges_to_the_closed_form_optimum(graph, lam):
    n = 8
    cfg = load_config(
        {
            "run": {"rounds": 3000, "eval_every": 3000, "seed": 1},
            "topology": {**graph, "n": n},
            "data": DATA,
            "algorithm": {
                "name": "graph_mtl",
                "lam": lam,
                "relation": "uniform",
                "order": "joint",
                "local_steps": 1,
                "batch_size": 1000,
                "lr": 0.05,
                "momentum": 0.9,
            },
        }
    )
    res = run(cfg)
    G = topologies.build(
        graph["name"], n, seed=1, **{k: v for k, v in graph.items() if k != "name"}
    )
    A = nx.to_numpy_array(G, nodelist=range(n))
    expect = closed_form(load_dataset(cfg["data"], n), A, lam)
    got = _model_matrix(res.params)
    assert np.linalg.norm(got - expect) / np.linalg.norm(expect) < 1e-4


def test_graph_relation_uses_the_mixing_weights():
    n, lam = 8, 1.0
    cfg = load_config(
        {
            "run": {"rounds": 3000, "eval_every": 3000, "seed": 1},
            "topology": {"name": "erdos_renyi", "n": n, "p": 0.5, "mixing": "metropolis"},
            "data": DATA,
            "algorithm": {
                "name": "graph_mtl",
                "lam": lam,
                "relation": "graph",
                "local_steps": 1,
                "batch_size": 1000,
                "lr": 0.05,
                "momentum": 0.9,
            },
        }
    )
    W = topologies.mixing_matrix(topologies.build("erdos_renyi", n, p=0.5, seed=1))
    expect = closed_form(load_dataset(cfg["data"], n), W - np.diag(np.diag(W)), lam)
    got = _model_matrix(run(cfg).params)
    assert np.linalg.norm(got - expect) / np.linalg.norm(expect) < 1e-4


BASE = {
    "run": {"rounds": 40, "eval_every": 20, "seed": 3},
    "topology": {"name": "ring", "n": 8},
    "data": DATA,
    "algorithm": {
        "name": "graph_mtl",
        "lam": 0.0,
        "lr": 0.05,
        "batch_size": 8,
        "local_epochs": 2,
        "momentum": 0.9,
    },
}


@pytest.mark.parametrize("order", ["joint", "local_then_laplacian"])
def test_lambda_zero_is_local_training(order):
    mtl = run(load_config(BASE, overrides={"algorithm.order": order}))
    local = {**BASE, "algorithm": {k: v for k, v in BASE["algorithm"].items() if k != "lam"}}
    local["algorithm"]["name"] = "local"
    loc = run(load_config(local))
    np.testing.assert_allclose(mtl.params["w"], loc.params["w"], rtol=1e-5, atol=1e-6)
    assert mtl.summary["test_mse"] == pytest.approx(loc.summary["test_mse"], rel=1e-5)


def test_large_lambda_drives_consensus():
    over = {
        "algorithm.lr": 0.002,
        "algorithm.local_steps": 1,
        "algorithm.local_epochs": 0,
        "algorithm.batch_size": 1000,
        "algorithm.momentum": 0.0,
        "run.rounds": 3000,
        "run.eval_every": 1000,
    }
    loose = run(load_config(BASE, overrides={**over, "algorithm.lam": 0.0}))
    tight = run(load_config(BASE, overrides={**over, "algorithm.lam": 100.0}))
    d = [r["consensus_distance"] for r in tight.metrics]
    assert tight.summary["consensus_distance"] < 1e-3 * loose.summary["consensus_distance"]
    assert d[-1] < d[1]


def test_propagation_reaches_its_linear_system():
    """(D(I + μC) − A) Θ = μ D C Θ^loc, with c_i = n_i / max n and converged local models."""
    n, mu = 8, 0.5
    cfg = load_config(
        {
            "run": {"rounds": 1500, "eval_every": 1500, "seed": 2},
            "topology": {"name": "erdos_renyi", "n": n, "p": 0.4},
            "data": DATA,
            "algorithm": {
                "name": "propagation",
                "mu": mu,
                "local_steps": 1,
                "batch_size": 1000,
                "lr": 0.1,
                "momentum": 0.9,
            },
        }
    )
    res = run(cfg)
    ds = load_dataset(cfg["data"], n)
    grams, rhs = _augmented(ds)
    local_opt = np.stack([np.linalg.solve(g, r) for g, r in zip(grams, rhs, strict=True)])
    loc = np.concatenate([res.params["local/w"][..., 0], res.params["local/b"]], 1)
    np.testing.assert_allclose(loc, local_opt, rtol=1e-3, atol=1e-4)  # θ^loc converged
    A = nx.to_numpy_array(topologies.build("erdos_renyi", n, p=0.4, seed=2), nodelist=range(n))
    D = np.diag(A.sum(1))
    sizes = np.array([nd.n_train for nd in ds.nodes])
    C = np.diag(sizes / sizes.max())
    expect = np.linalg.solve(D @ (np.eye(n) + mu * C) - A, mu * D @ C @ loc)
    got = _model_matrix(res.params)
    assert np.linalg.norm(got - expect) / np.linalg.norm(expect) < 1e-4


def test_partial_sharing_gossips_only_the_trunk():
    cfg = {
        "run": {"rounds": 10, "eval_every": 10},
        "topology": {"name": "ring", "n": 6},
        "data": {**DATA, "task": "classification"},
        "model": {"name": "mlp", "hidden": [8]},
        "algorithm": {"name": "graph_mtl", "lam": 1.0, "shared": ["dense_0"], "batch_size": 16},
    }
    res = run(load_config(cfg))
    values = 4 * 8 + 8  # dense_0: w (4, 8) and b (8,)
    assert res.summary["bytes_total"] == 10 * 6 * 2 * values * 4
    assert set(res.params) == {"dense_0/w", "dense_0/b", "dense_1/w", "dense_1/b"}
    dsgd = run(
        load_config(
            {
                **cfg,
                "algorithm": {"name": "dsgd", "shared": ["dense_0"], "batch_size": 16, "lr": 0.1},
            },
            overrides={"run.rounds": 30, "run.eval_every": 30},
        )
    )
    trunk = dsgd.params["dense_0/w"]
    heads = dsgd.params["dense_1/w"]
    assert np.abs(trunk - trunk.mean(0)).max() < 0.1 * np.abs(heads - heads.mean(0)).max()
    with pytest.raises(ConfigError, match=r"algorithm\.shared: 'dense_7' names no parameter"):
        run(load_config({**cfg, "algorithm": {"name": "graph_mtl", "shared": ["dense_7"]}}))
