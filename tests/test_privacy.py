"""DP-SGD local training and each node's ε (p2p_fmtl.privacy, p2p_fmtl.training)."""

from __future__ import annotations

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from p2p_fmtl import ConfigError, load_config, run
from p2p_fmtl.batched import run_batch
from p2p_fmtl.privacy import node_epsilons
from p2p_fmtl.training import LocalWork, local_sgd, poisson_sample, private_gradient

BASE = {
    "run": {"rounds": 3, "eval_every": 3},
    "topology": {"name": "ring", "n": 6},
    "data": {"name": "fedem_synthetic", "dim": 5, "n_test": 20},
    "algorithm": {"name": "dsgd", "lr": 0.1, "batch_size": 8, "local_epochs": 1},
    "privacy": {"enabled": True, "noise_multiplier": 1.0, "clip_norm": 1.0},
}


def _config(algorithm=None, privacy=None, **sections):
    raw = {**BASE, **sections}
    raw["algorithm"] = {**BASE["algorithm"], **(algorithm or {})}
    raw["privacy"] = {**BASE["privacy"], **(privacy or {})}
    return load_config(raw)


def _direct(q, sigma, steps, delta, accountant):
    """ε straight from dp_accounting."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    acc = (
        dp_accounting.rdp.RdpAccountant()
        if accountant == "rdp"
        else dp_accounting.pld.PLDAccountant()
    )
    return acc.compose(event).get_epsilon(delta)


# ---------------------------------------------------------------- the accountant


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_epsilon_is_dp_accountings_for_the_nodes_rate_noise_and_steps(accountant):
    cfg = _config(
        algorithm={"local_epochs": 2},
        privacy={"accountant": accountant, "noise_multiplier": 1.3, "delta": 1e-6},
    )
    n_train = np.array([5, 40, 40, 100, 0, 100])
    holdout = np.array([False, False, False, False, False, True])
    eps = node_epsilons(cfg, n_train, 3, holdout)
    for i in (0, 1, 3):  # q = 1 (5 ≤ B); q = 8/40 with 2·5 steps a round; q = 8/100
        n = n_train[i]
        steps = 3 * 2 * math.ceil(n / 8)
        want = _direct(min(1.0, 8 / n), 1.3, steps, 1e-6, accountant)
        assert eps[i] == pytest.approx(want, rel=1e-12)
    assert eps[2] == eps[1]  # same (q, T): same ε
    assert eps[4] == 0.0 and eps[5] == 0.0  # no data; held out (never trains)


def test_epsilon_counts_local_steps_shared_samples_and_extra_epochs():
    # local steps: K a round whatever n_i
    cfg = _config(algorithm={"local_epochs": 0, "local_steps": 7})
    eps = node_epsilons(cfg, np.array([30]), 4)
    assert eps[0] == pytest.approx(_direct(8 / 30, 1.0, 28, 1e-5, "rdp"), rel=1e-12)
    # Ditto: w and v on the same Poisson samples, noises of their own: σ/√2 per step
    cfg = _config(algorithm={"name": "ditto"})
    eps = node_epsilons(cfg, np.array([30]), 2)
    assert eps[0] == pytest.approx(_direct(8 / 30, 1 / math.sqrt(2), 8, 1e-5, "rdp"), rel=1e-12)
    # FedRep: head_epochs more epochs of DP-SGD a round, on samples of their own
    cfg = _config(algorithm={"name": "fedrep", "head_epochs": 3})
    eps = node_epsilons(cfg, np.array([30]), 2)
    assert eps[0] == pytest.approx(_direct(8 / 30, 1.0, 2 * 4 * 4, 1e-5, "rdp"), rel=1e-12)
    # off: no ε
    assert node_epsilons(_config(privacy={"enabled": False}), np.array([30]), 2) is None


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    n = np.array([50])
    eps = [node_epsilons(_config(), n, r)[0] for r in (1, 2, 4)]
    assert eps[0] < eps[1] < eps[2]
    quiet = node_epsilons(_config(privacy={"noise_multiplier": 3.0}), n, 4)[0]
    assert quiet < eps[2]


# ---------------------------------------------------------------- config checks


def test_noise_multiplier_zero_is_refused_with_privacy_on():
    with pytest.raises(ConfigError) as err:
        _config(privacy={"noise_multiplier": 0.0})
    msg = str(err.value)
    assert "privacy.noise_multiplier" in msg and "privacy.enabled" in msg and "\n" not in msg
    _config(privacy={"enabled": False, "noise_multiplier": 0.0})  # off: fine


@pytest.mark.parametrize(
    "algorithm, data",
    [
        ({"name": "ifca"}, True),
        ({"name": "pfedme"}, True),
        ({"name": "dem", "warm_start": "hard_node"}, True),
        ({"name": "average"}, False),
    ],
    ids=["ifca", "pfedme", "dem_warm_start", "average"],
)
def test_an_algorithm_that_does_not_declare_dp_sgd_is_refused(algorithm, data):
    raw = {**BASE, "algorithm": algorithm}
    if not data:
        raw.pop("data")
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    msg = str(err.value)
    assert msg.startswith("privacy.enabled: got true, but algorithm.name = ")
    assert repr(algorithm["name"]) in msg and "\n" not in msg


def test_declared_algorithms_are_accepted_and_similarity_is_refused():
    for name in ("local", "dsgd", "fedprox", "ditto", "apfl", "fedrep", "graph_mtl"):
        _config(algorithm={"name": name})
    _config(algorithm={"name": "ifca", "clusters": 1})  # one model: D-SGD
    _config(algorithm={"name": "dsgd", "finetune_epochs": 1})  # evaluation only
    with pytest.raises(ConfigError, match=r"algorithm\.relation = 'similarity'"):
        _config(algorithm={"name": "graph_mtl", "relation": "similarity"})


# ---------------------------------------------------------------- the DP-SGD step

SIZE, COUNT = 12, 9  # padded rows, real rows


def _linear_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SIZE, 3)).astype(np.float32)
    y = rng.normal(size=(SIZE,)).astype(np.float32)
    x[COUNT:] = 100.0  # padding: any contribution would show
    return x, y


def _sq_loss(p, xb, yb):
    return 0.5 * (xb @ p["w"] + p["b"] - yb) ** 2


def _params():
    return {"w": jnp.array([0.3, -0.2, 0.5], jnp.float32), "b": jnp.float32(0.1)}


def _one_step(work, x, y, key=0, lr=0.5, count=COUNT, noise_stream=0, budget=None):
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=lr)
    params = _params()
    out, _, _ = local_sgd(
        params,
        opt.init(params),
        jnp.asarray(x),
        jnp.asarray(y),
        jnp.int32(count),
        None,
        jax.random.PRNGKey(key),
        jnp.float32(lr),
        per_sample_loss=_sq_loss,
        optimizer=opt,
        work=work,
        budget=budget,
        noise_stream=noise_stream,
    )
    return {k: np.asarray(v) for k, v in out.items()}


def _numpy_grads(x, y):
    """Per-sample gradients (n, 4) of the squared loss: (r x, r), r the residual."""
    p = {k: np.asarray(v, np.float64) for k, v in _params().items()}
    r = x[:COUNT] @ p["w"] + p["b"] - y[:COUNT]
    return np.concatenate([r[:, None] * x[:COUNT], r[:, None]], axis=1)


def test_dp_step_with_q_one_no_noise_and_no_clipping_is_the_full_batch_gradient_step():
    x, y = _linear_data()
    work = LocalWork(batch_size=16, epochs=0, steps=1, clip_norm=float("inf"), noise=0.0)
    out = _one_step(work, x, y)
    g = _numpy_grads(x, y).mean(axis=0)  # q = 1: every real row, divided by n
    p = _params()
    np.testing.assert_allclose(out["w"], np.asarray(p["w"]) - 0.5 * g[:3], rtol=1e-5)
    np.testing.assert_allclose(out["b"], float(p["b"]) - 0.5 * g[3], rtol=1e-5)


def test_each_samples_gradient_is_clipped_over_the_whole_pytree():
    x, y = _linear_data()
    clip = 0.5
    work = LocalWork(batch_size=16, epochs=0, steps=1, clip_norm=clip, noise=0.0)
    out = _one_step(work, x, y)
    g = _numpy_grads(x, y)
    norms = np.linalg.norm(g, axis=1)
    assert np.any(norms > clip) and np.any(norms < clip)  # both cases occur
    clipped = g * np.minimum(1.0, clip / norms)[:, None]
    step = clipped.sum(axis=0) / COUNT
    p = _params()
    np.testing.assert_allclose(out["w"], np.asarray(p["w"]) - 0.5 * step[:3], rtol=1e-5)
    np.testing.assert_allclose(out["b"], float(p["b"]) - 0.5 * step[3], rtol=1e-5)
    # one sample's contribution to the update is at most lr · C / (q n)
    x2, y2 = x.copy(), y.copy()
    y2[0] += 1e3
    moved = _one_step(work, x2, y2)
    diff = np.concatenate([moved["w"] - out["w"], [moved["b"] - out["b"]]])
    assert np.linalg.norm(diff) <= 0.5 * clip / COUNT * 2 + 1e-6  # old and new, each ≤ C


def test_poisson_samples_rows_at_rate_q_and_never_padding():
    work = LocalWork(batch_size=3, epochs=1, steps=0, rng_size=SIZE, clip_norm=1.0, noise=1.0)
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    masks = np.asarray(jax.vmap(lambda k: poisson_sample(k, COUNT, SIZE, work)[0])(keys))
    q = 3 / COUNT
    rate = masks[:, :COUNT].mean(axis=0)
    assert np.all(np.abs(rate - q) < 5 * math.sqrt(q * (1 - q) / 4000))
    assert masks[:, COUNT:].sum() == 0
    # rows are drawn independently: the sample size is Binomial(n, q)
    sizes = masks.sum(axis=1)
    assert abs(sizes.var() - COUNT * q * (1 - q)) < 0.15 * COUNT * q * (1 - q)


def test_noise_has_std_sigma_c_over_the_expected_batch_size():
    work = LocalWork(batch_size=4, epochs=0, steps=1, clip_norm=2.0, noise=1.5)
    x, y = jnp.zeros((SIZE, 3)), jnp.zeros((SIZE,))
    params = {"w": jnp.zeros((500,))}
    zero_loss = lambda p, xb, yb: 0.0 * jnp.sum(p["w"]) * jnp.ones(xb.shape[0])  # noqa: E731
    mask = jnp.ones((SIZE,))
    g, _ = private_gradient(
        zero_loss, params, x, y, jnp.ones((SIZE,)), mask, jax.random.PRNGKey(0), COUNT, work
    )
    std = float(np.std(np.asarray(g["w"])))
    assert std == pytest.approx(1.5 * 2.0 / 4, rel=0.1)  # σ C / min(B, n)


def test_dp_training_is_deterministic_per_key_and_independent_of_padding():
    x, y = _linear_data()
    work = LocalWork(batch_size=4, epochs=2, steps=0, rng_size=20, clip_norm=1.0, noise=0.5)
    a, b = _one_step(work, x, y, key=1), _one_step(work, x, y, key=1)
    c = _one_step(work, x, y, key=2)
    np.testing.assert_array_equal(a["w"], b["w"])
    assert not np.allclose(a["w"], c["w"])
    # the same node padded to 20 rows (same rng_size): the same samples and noise
    xp = np.concatenate([x, np.full((8, 3), 100.0, np.float32)])
    yp = np.concatenate([y, np.zeros(8, np.float32)])
    np.testing.assert_allclose(_one_step(work, xp, yp, key=1)["w"], a["w"], rtol=1e-6)
    # another noise stream: other noise, same samples (equal without noise)
    assert not np.allclose(_one_step(work, x, y, key=1, noise_stream=1)["w"], a["w"])
    quiet = work._replace(noise=0.0)
    np.testing.assert_array_equal(
        _one_step(quiet, x, y, key=1, noise_stream=1)["w"], _one_step(quiet, x, y, key=1)["w"]
    )


def test_a_straggler_with_no_budget_takes_no_dp_step():
    x, y = _linear_data()
    work = LocalWork(batch_size=4, epochs=1, steps=0, clip_norm=1.0, noise=1.0)
    out = _one_step(work, x, y, budget=jnp.float32(0.0))
    np.testing.assert_array_equal(out["w"], np.asarray(_params()["w"]))
    assert not np.array_equal(_one_step(work, x, y)["w"], out["w"])


def test_from_config_carries_privacy_only_when_enabled():
    alg = {"batch_size": 8, "local_epochs": 1, "local_steps": 0}
    on = {"enabled": True, "clip_norm": 0.7, "noise_multiplier": 1.1}
    assert LocalWork.from_config(alg, 5, on)[4:] == (0.7, 1.1)
    assert not LocalWork.from_config(alg, 5, {**on, "enabled": False}).private
    assert not LocalWork.from_config(alg, 5).private


# ---------------------------------------------------------------- end to end


def test_private_dsgd_trains_at_small_noise_and_noise_changes_the_model():
    raw = {**BASE, "run": {"rounds": 4, "eval_every": 4}}
    raw["privacy"] = {"enabled": True, "noise_multiplier": 0.05, "clip_norm": 5.0}
    private = run(load_config(raw))
    assert private.metrics[-1]["train_loss"] < 0.8 * private.metrics[0]["train_loss"]
    plain = run(load_config({**raw, "privacy": {"enabled": False}}))
    assert not np.allclose(private.params["w"], plain.params["w"])


def test_private_batched_seeds_equal_separate_runs():
    cfgs = [_config(run={"rounds": 2, "eval_every": 2, "seed": s}) for s in (0, 1)]
    for cfg, b in zip(cfgs, run_batch(cfgs), strict=True):
        np.testing.assert_allclose(b.params["w"], run(cfg).params["w"], rtol=1e-5, atol=1e-6)


def test_oracle_dem_is_private_with_one_mechanism_per_step():
    """A sample's gradient reaches only its own component: sensitivity C, σ as given."""
    cfg = _config(algorithm={"name": "dem", "responsibilities": "oracle"})
    eps = node_epsilons(cfg, np.array([40]), 2)
    assert eps[0] == pytest.approx(_direct(8 / 40, 1.0, 2 * 5, 1e-5, "rdp"), rel=1e-12)
    run(cfg)


def test_run_records_each_nodes_epsilon_and_the_largest(tmp_path):
    """nodes.csv `epsilon` and summary.json `epsilon_max`: dp_accounting's value for each
    node's sampling rate (batch / n_i), noise multiplier and steps (ceil(n_i / B) per epoch
    and round)."""
    import csv
    import json

    res = run(_config(), out=tmp_path / "r")
    with open(tmp_path / "r" / "nodes.csv", newline="") as f:
        nodes = list(csv.DictReader(f))
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    eps = [float(r["epsilon"]) for r in nodes]
    for r, e in zip(nodes, eps, strict=True):
        n = int(r["n_train"])
        steps = 3 * math.ceil(n / 8)
        assert e == pytest.approx(_direct(min(1.0, 8 / n), 1.0, steps, 1e-5, "rdp"), rel=1e-9)
    assert summary["epsilon_max"] == pytest.approx(max(eps)) == res.summary["epsilon_max"]


def test_estimated_dem_counts_m_models_and_one_release_of_pi_per_round():
    """Estimated responsibilities: each step is a Poisson-subsampled Gaussian mechanism
    with σ / √M (a sample reaches all M components), and each round one Gaussian release
    of π with σ; the accountant composes them (dp_accounting directly)."""
    cfg = _config(algorithm={"name": "dem", "components": 3})
    eps = node_epsilons(cfg, np.array([40]), 2)
    sub = dp_accounting.PoissonSampledDpEvent(
        8 / 40, dp_accounting.GaussianDpEvent(1.0 / math.sqrt(3))
    )
    event = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(sub, 2 * 5),
            dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.0), 2),
        ]
    )
    direct = dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(1e-5)
    assert eps[0] == pytest.approx(direct, rel=1e-12)
    res = run(cfg)  # trains, π stays a distribution
    pi = np.asarray(res.params["pi"])
    assert np.allclose(pi.sum(axis=1), 1.0, atol=1e-5) and (pi > 0).all()
    assert res.summary["epsilon_max"] > 0
