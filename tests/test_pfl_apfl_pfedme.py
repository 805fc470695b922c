"""APFL and pFedMe: their exact limits (D-SGD, local training) on whole runs, and one
node's update against numpy on least squares (closed forms where they exist)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from p2p_fmtl import ConfigError, load_config, run
from p2p_fmtl.algorithms import ALGORITHMS, Context, NodeData
from p2p_fmtl.algorithms.apfl import APFLState, Models
from p2p_fmtl.models import build_model
from p2p_fmtl.optim import make_optimizer
from p2p_fmtl.runner import Simulation
from p2p_fmtl.tasks import make_task
from p2p_fmtl.training import LocalWork

DATA = {"name": "fedem_synthetic", "dim": 5, "n_test": 20}
# FedEM's `sgd` (momentum 0.9, weight decay 5e-4): the limits hold for any optimizer
OPT = {"momentum": 0.9, "weight_decay": 5e-4}


def base(alg: str, rounds: int = 4, **keys):
    return {
        "run": {"rounds": rounds, "eval_every": rounds, "seed": 0},
        "topology": {"name": "ring", "n": 8, "seed": 0},
        "data": dict(DATA),
        "algorithm": {"name": alg, "batch_size": 16, "local_steps": 1, "lr": 0.05, **keys},
    }


def scores(res) -> np.ndarray:
    return np.array([r["test_acc"] for r in res.nodes])


@pytest.fixture(scope="module")
def dsgd():
    return run(load_config(base("dsgd", **OPT)))


# ------------------------------------------------------------------ APFL
def test_apfl_with_alpha_0_is_dsgd(dsgd):
    """v̄ = w, and w is trained and gossiped as D-SGD's model: bit for bit."""
    apfl = run(load_config(base("apfl", alpha=0.0, **OPT)))
    for k in dsgd.params:
        np.testing.assert_array_equal(apfl.params[f"shared/{k}"], dsgd.params[k])
    np.testing.assert_array_equal(scores(apfl), scores(dsgd))
    assert apfl.metrics[-1]["bytes_total"] == dsgd.metrics[-1]["bytes_total"] > 0
    np.testing.assert_array_equal(apfl.params["alpha"], 0.0)


def test_apfl_with_alpha_1_trains_v_as_local_trains_its_model():
    """v̄ = v with gradient ∇f(v): the personal model is local's model, bit for bit, while
    w is still gossiped (it differs from v)."""
    local = run(load_config(base("local", local_steps=2, **OPT)))
    apfl = run(load_config(base("apfl", alpha=1.0, local_steps=2, **OPT)))
    for k in local.params:
        np.testing.assert_array_equal(apfl.params[f"personal/{k}"], local.params[k])
        assert np.abs(apfl.params[f"shared/{k}"] - local.params[k]).max() > 1e-4
    np.testing.assert_array_equal(scores(apfl), scores(local))


def _least_squares_node(seed=0, n=12, size=16, dim=3):
    """One node of a least-squares task: ``n`` real rows padded to ``size`` with garbage
    rows (which must not count), the whole of it one batch."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, dim)).astype(np.float32)
    y = (x @ rng.normal(size=dim) + 0.1 * rng.normal(size=size)).astype(np.float32)
    x[n:], y[n:] = 100.0, -100.0
    x, y = jnp.asarray(x), jnp.asarray(y)
    data = NodeData(x, y, jnp.int32(n), x[:4], y[:4], jnp.int32(4), 1.0)
    xa = np.hstack([np.asarray(x[:n]), np.ones((n, 1))]).astype(np.float64)  # rows [x, 1]
    return data, xa, np.asarray(y[:n], np.float64)


def _context(name, size, lr, **keys):
    model = build_model({"name": "linear"}, (3,), 1)
    task = make_task("regression", 1)
    alg = {"lr": lr, "optimizer": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}
    work = LocalWork(batch_size=size, epochs=0, steps=1, rng_size=size)
    spec = ALGORITHMS[name]
    config = {**{k: v.default for k, v in spec.keys.items()}, **keys}
    return spec.build(Context(model, task, make_optimizer(alg), work, config))


def _flat(p) -> np.ndarray:
    return np.concatenate([np.ravel(p["w"]), np.ravel(p["b"])]).astype(np.float64)


def test_apfl_step_with_adaptive_alpha_against_numpy():
    """One full-batch step: w on ∇f(w), v on α ∇f(v̄), α on ⟨v − w, ∇f(v̄)⟩ (projected)."""
    data, xa, y = _least_squares_node()
    eta, a_lr, a0 = 0.1, 0.05, 0.3
    alg = _context("apfl", 16, eta, alpha=a0, alpha_lr=a_lr)
    state = alg.init(jax.random.PRNGKey(0), data)
    v0 = jax.tree.map(lambda a: a + 0.5, state.models.w)  # v ≠ w
    state = APFLState(Models(state.models.w, v0, state.models.alpha), state.opt_state)
    new, _ = alg.local_update(state, data, jax.random.PRNGKey(1), jnp.float32(eta))

    def grad(theta):  # ∇ of mean ½ (x·θ − y)² over the real rows
        return xa.T @ (xa @ theta - y) / len(y)

    w, v = _flat(state.models.w), _flat(v0)
    vbar = a0 * v + (1 - a0) * w
    g = grad(vbar)
    np.testing.assert_allclose(_flat(new.models.w), w - eta * grad(w), atol=1e-6)
    np.testing.assert_allclose(_flat(new.models.v), v - eta * a0 * g, atol=1e-6)
    alpha = np.clip(a0 - a_lr * (v - w) @ g, 0.0, 1.0)
    assert 0.0 < alpha < 1.0 and abs(alpha - a0) > 1e-3  # a real, unclipped move
    np.testing.assert_allclose(float(new.models.alpha), alpha, atol=1e-6)
    # scores and losses are v̄'s
    w1, v1 = _flat(new.models.w), _flat(new.models.v)
    vbar1 = alpha * v1 + (1 - alpha) * w1
    loss = np.asarray(alg.loss(new, data.x_train[:12], data.y_train[:12]))
    np.testing.assert_allclose(loss, 0.5 * (xa @ vbar1 - y) ** 2, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ pFedMe
@pytest.mark.parametrize("inner", [3, 300], ids=["K=3", "K=300"])
def test_pfedme_step_against_numpy_and_the_closed_form_prox(inner):
    """θ: K gradient steps on f(θ) + λ/2 ‖θ − w‖² from θ = w (K = 300: the closed-form
    proximal point (A + λI)⁻¹(c + λw)); then w ← w − η λ (w − θ)."""
    data, xa, y = _least_squares_node(seed=1)
    eta, lam, p = 0.05, 2.0, 0.1
    alg = _context("pfedme", 16, eta, mu=lam, personal_lr=p, inner_steps=inner)
    state = alg.init(jax.random.PRNGKey(0), data)
    new, _ = alg.local_update(state, data, jax.random.PRNGKey(1), jnp.float32(eta))

    w = _flat(state.w)
    a, c = xa.T @ xa / len(y), xa.T @ y / len(y)
    theta = w.copy()
    for _ in range(inner):
        theta = theta - p * (a @ theta - c + lam * (theta - w))
    np.testing.assert_allclose(_flat(new.theta), theta, atol=1e-6)
    if inner == 300:
        prox = np.linalg.solve(a + lam * np.eye(len(w)), c + lam * w)
        np.testing.assert_allclose(_flat(new.theta), prox, atol=1e-5)
    np.testing.assert_allclose(_flat(new.w), w - eta * lam * (w - theta), atol=1e-6)
    # scores and losses are θ's
    loss = np.asarray(alg.loss(new, data.x_train[:12], data.y_train[:12]))
    np.testing.assert_allclose(loss, 0.5 * (xa @ theta - y) ** 2, rtol=1e-5, atol=1e-6)


def test_pfedme_with_one_inner_step_of_size_one_over_lambda_is_dsgd(dsgd):
    """K = 1, p λ = 1, one local step a round: θ = w − p ∇f(w), so the envelope gradient
    λ (w − θ) is ∇f(w) and w moves as D-SGD's model (to rounding: w − θ is not exactly
    p ∇f(w) in floating point), on the same batches, through the same optimizer."""
    pf = run(load_config(base("pfedme", mu=4.0, personal_lr=0.25, inner_steps=1, **OPT)))
    for k in dsgd.params:
        np.testing.assert_allclose(pf.params[f"shared/{k}"], dsgd.params[k], rtol=0, atol=1e-6)
    assert pf.metrics[-1]["bytes_total"] == dsgd.metrics[-1]["bytes_total"]


def test_pfedme_beta_mixes_the_gossiped_model_with_the_last_one():
    """Round 1: the same local work and mixing, then w = (1 − β) w_0 + β Σ_j W_ij w_j."""
    beta = 0.5
    sims = {b: Simulation(load_config(base("pfedme", rounds=1, beta=b))) for b in (1.0, beta)}
    w0 = np.asarray(sims[beta].state.w["w"])
    for sim in sims.values():
        sim.advance(1)
    gossiped = np.asarray(sims[1.0].state.w["w"])
    np.testing.assert_allclose(
        np.asarray(sims[beta].state.w["w"]), (1 - beta) * w0 + beta * gossiped, atol=1e-6
    )
    assert np.abs(gossiped - w0).max() > 1e-3


def test_keys_out_of_range_are_refused_in_one_line():
    for alg, key, value in [("apfl", "alpha", 1.5), ("pfedme", "inner_steps", 0)]:
        with pytest.raises(ConfigError) as e:
            load_config(base(alg, **{key: value}))
        msg = str(e.value)
        assert "\n" not in msg and f"algorithm.{key}" in msg and str(value) in msg
