"""Server case = the reference: D-EM on the complete graph with ``mixing = "sample_weighted"``
is the official FedEM's centralized algorithm (omarfoq/FedEM, ``CentralizedAggregator``),
step for step.

The fixture ``data/fedem_reference_steps.npz`` was written by the reference's own classes
(PyTorch; ``experiments/reference/fedem_steps.py``, which documents how), on the data of its
own generator (30 clients, seed 12345), for 3 rounds from D-EM's initial components: per
round, the averaged components and every client's π.  Here our D-EM runs the same recipe
from the fixture's initial components through :class:`p2p_fmtl.runner.Simulation` on data
from our generator.  One full batch per local epoch (batch 1000 >= every training set), so
the two sides see the same samples in every step whatever their shuffling.  What must agree
for this to pass: the aggregation weights (n_j / Σ n), that only parameters are averaged,
per-client momentum buffers that persist across rounds and are never averaged, coupled
weight decay, the E-step (on the round's incoming models, with the previous π) before π's
update and before local training, and the loss Σ q ℓ / batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from p2p_fmtl.runner import Simulation

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "fedem_reference_steps.npz"
ATOL = 1e-5  # float32; the two agree to about 1e-7


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def ours(reference):
    sys.path.insert(0, str(ROOT / "experiments" / "reference"))
    try:
        from fedem_steps import OUR_CONFIG  # the recipe the fixture was made with
    finally:
        sys.path.pop(0)
    rounds = []
    with jax.default_matmul_precision("highest"):  # no reduced-precision matmuls on GPUs
        sim = Simulation(OUR_CONFIG)
        st = sim.state
        w0 = jnp.asarray(reference["init_w"])[None, :, :, None]  # (1, M, d, 1)
        b0 = jnp.asarray(reference["init_b"])[None, :, None]  # (1, M, 1)
        params = {
            "w": jnp.broadcast_to(w0, st.params["w"].shape),
            "b": jnp.broadcast_to(b0, st.params["b"].shape),
        }
        sim.state = st._replace(params=params)
        for _ in range(len(reference["w"])):
            sim.advance(1)
            p, pi = sim.state.params, sim.state.pi
            rounds.append((np.asarray(p["w"])[..., 0], np.asarray(p["b"])[..., 0], np.asarray(pi)))
    return sim, rounds, OUR_CONFIG


def test_same_recipe_clients_and_aggregation_weights(reference, ours):
    sim, _, cfg = ours
    alg = cfg["algorithm"]
    recipe = [
        alg["lr"],
        alg["momentum"],
        alg["weight_decay"],
        alg["batch_size"],
        cfg["run"]["rounds"],
    ]
    np.testing.assert_array_equal(reference["recipe"], recipe)
    assert alg["batch_size"] >= reference["n_train"].max()  # one full batch per epoch
    n = np.asarray(sim.n_train)
    np.testing.assert_array_equal(n, reference["n_train"])
    np.testing.assert_allclose(n / n.sum(), reference["client_weights"], rtol=1e-6)
    W = sim.network.mixing.dense(sim.n_nodes)  # sample_weighted: W = 1 pᵀ
    np.testing.assert_allclose(W, np.tile(n / n.sum(), (len(n), 1)), rtol=1e-12)


@pytest.mark.parametrize("r", [0, 1, 2])
def test_round_matches_reference(reference, ours, r):
    _, rounds, _ = ours
    w, b, pi = rounds[r]
    # every node holds the server's average after the round (all nodes identical) ...
    np.testing.assert_array_equal(w, np.broadcast_to(w[:1], w.shape))
    np.testing.assert_array_equal(b, np.broadcast_to(b[:1], b.shape))
    # ... and it is the reference's, component by component
    np.testing.assert_allclose(w[0], reference["w"][r], rtol=0, atol=ATOL)
    np.testing.assert_allclose(b[0], reference["b"][r], rtol=0, atol=ATOL)
    np.testing.assert_allclose(pi, reference["pi"][r], rtol=0, atol=ATOL)


def test_rounds_move_well_beyond_the_tolerance(reference):
    """The check is not vacuous: each round moves the components and π by far more than
    ATOL (a wrong aggregation weight or a reset momentum shows up at 1e-4 and above)."""
    w = np.concatenate([reference["init_w"][None], reference["w"]])
    steps = np.abs(np.diff(w, axis=0)).max(axis=(1, 2))
    assert (steps > 50 * ATOL).all(), steps
    assert (np.abs(reference["pi"] - 1 / 3).max(axis=(1, 2)) > 1000 * ATOL).all()
