"""Stragglers: a fraction f of a node's T steps, stochastically rounded (unbiased at any T)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import p2p_fmtl
from p2p_fmtl.runner import Simulation
from p2p_fmtl.training import LocalWork, local_sgd, straggler_steps

DRAWS = 4000


def _keys(n: int, seed: int = 0):
    return jax.random.split(jax.random.PRNGKey(seed), n)


def _binomial_ok(mean: float, p: float, n: int) -> bool:
    """``mean`` of n Bernoulli(p) draws is within 5 standard deviations of p."""
    return abs(mean - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9


@pytest.mark.parametrize("total", [1, 2, 3, 7, 10])
@pytest.mark.parametrize("f", [0.3, 0.55, 0.9])
def test_straggler_steps_are_f_times_t_rounded_stochastically(f, total):
    steps = np.asarray(
        jax.jit(jax.vmap(lambda k: straggler_steps(jnp.float32(f), total, k)))(_keys(DRAWS))
    )
    lo = math.floor(f * total)
    assert set(np.unique(steps)) <= {lo, lo + 1}  # within one step of f·T
    # one more step with probability frac(f·T), so E[steps] = f·T
    assert _binomial_ok(float(np.mean(steps == lo + 1)), f * total - lo, DRAWS)


def test_integral_work_is_exact_and_full_work_is_all_steps():
    keys = _keys(DRAWS)
    half = jax.vmap(lambda k: straggler_steps(jnp.float32(0.5), 4, k))(keys)
    full = jax.vmap(lambda k: straggler_steps(jnp.float32(1.0), 5, k))(keys)
    none = jax.vmap(lambda k: straggler_steps(jnp.float32(0.0), 5, k))(keys)
    assert np.all(np.asarray(half) == 2) and np.all(np.asarray(full) == 5)
    assert np.all(np.asarray(none) == 0)


@pytest.mark.parametrize(
    "work, count, total",
    [
        (LocalWork(batch_size=4, epochs=0, steps=5), 8, 5),
        (LocalWork(batch_size=4, epochs=2, steps=0), 10, 6),  # 3 batches (4, 4, 2) an epoch
    ],
    ids=["5_steps", "2_epochs"],
)
def test_local_sgd_takes_the_rounded_number_of_steps(work, count, total):
    """A loss with gradient 1 and plain SGD at lr 1: the parameter falls by 1 per step."""
    f = 0.3
    x = jnp.zeros((12, 2))
    y = jnp.zeros((12,))
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)
    params = {"w": jnp.float32(0.0)}

    def one(key):
        out, _, _ = local_sgd(
            params,
            opt.init(params),
            x,
            y,
            jnp.int32(count),
            None,
            key,
            jnp.float32(1.0),
            per_sample_loss=lambda p, xb, yb: p["w"] * jnp.ones(xb.shape[0]),
            optimizer=opt,
            work=work,
            budget=jnp.float32(f),
        )
        return -out["w"]

    steps = np.asarray(jax.jit(jax.vmap(one))(_keys(DRAWS, seed=1)))
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-5)
    lo = math.floor(f * total)
    assert set(np.round(steps).astype(int)) <= {lo, lo + 1}
    assert _binomial_ok(float(np.mean(np.round(steps) == lo + 1)), f * total - lo, DRAWS)
    # without a budget every step is taken
    full, _, _ = local_sgd(
        params,
        opt.init(params),
        x,
        y,
        jnp.int32(count),
        None,
        _keys(1)[0],
        jnp.float32(1.0),
        per_sample_loss=lambda p, xb, yb: p["w"] * jnp.ones(xb.shape[0]),
        optimizer=opt,
        work=work,
    )
    assert float(full["w"]) == -total


def _local(**algorithm):
    return {
        "run": {"rounds": 1, "eval_every": 1},
        "topology": {"name": "ring", "n": 8},
        "data": {"name": "fedem_synthetic", "dim": 5, "n_test": 20},
        "algorithm": {"name": "local", "lr": 0.1, **algorithm},
        "faults": {"straggler": 1.0, "straggler_work": [0.3, 0.3]},
    }


@pytest.mark.parametrize(
    "algorithm",
    [{"local_steps": 1, "batch_size": 8}, {"local_epochs": 1, "batch_size": 10_000}],
    ids=["one_step", "one_epoch_of_one_batch"],
)
def test_one_step_nodes_straggle_in_a_fraction_f_of_their_rounds(algorithm):
    """Was: ceil(0.3 · 1) = 1, a node with one step per round could not be slowed."""
    sim = Simulation(_local(**algorithm))
    rounds, trained = 40, []
    for _ in range(rounds):
        before = [np.asarray(x) for x in jax.tree.leaves(sim.state.params)]
        sim.advance(1)
        after = [np.asarray(x) for x in jax.tree.leaves(sim.state.params)]
        changed = np.zeros(sim.n_nodes, bool)
        for a, b in zip(before, after, strict=True):
            changed |= np.any((a != b).reshape(sim.n_nodes, -1), axis=1)
        trained.append(changed)
    assert _binomial_ok(float(np.mean(trained)), 0.3, rounds * sim.n_nodes)


def test_no_stragglers_is_bitwise_the_fault_free_run():
    base = {
        "run": {"rounds": 3, "eval_every": 3},
        "topology": {"name": "ring", "n": 6},
        "data": {"name": "fedem_synthetic", "dim": 5, "n_test": 20},
        "algorithm": {"name": "dsgd", "lr": 0.1, "batch_size": 8, "local_steps": 3},
    }
    plain = p2p_fmtl.run(base)
    zero = p2p_fmtl.run({**base, "faults": {"straggler": 0.0, "straggler_work": [0.3, 0.3]}})
    for k in plain.params:
        np.testing.assert_array_equal(zero.params[k], plain.params[k])
