"""Richer models (cnn, tiny_lm + LoRA, Flax / Equinox adapters) and the lm / multitask tasks."""

import csv
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from p2p_fmtl.cli import main
from p2p_fmtl.errors import ConfigError
from p2p_fmtl.models import MODELS, build_model, model_params
from p2p_fmtl.models.adapters import equinox_model, flax_model
from p2p_fmtl.models.cnn import cnn
from p2p_fmtl.models.tiny_lm import tiny_lm
from p2p_fmtl.sharing import check_shared, leaf_paths, select
from p2p_fmtl.tasks import make_task, token_accuracy

KEY = jax.random.PRNGKey(0)
CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "flax_mlp.toml"


def _fit(init, apply, x, y, loss_fn, steps=60, lr=0.05):
    """Plain Adam on one batch; returns (first loss, last loss)."""
    params = init(KEY)
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(lambda p: loss_fn(apply(p, x), y).mean())(params)
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state, loss

    losses = []
    for _ in range(steps):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    return losses[0], losses[-1]


# ------------------------------------------------------------------------------ cnn
@pytest.mark.parametrize(
    "shape, dims, first_w",
    [((40,), 0, (5, 1, 8)), ((40, 3), 1, (5, 3, 8)), ((8, 8, 3), 0, (3, 3, 3, 8))],
)
def test_cnn_shapes_1d_and_2d(shape, dims, first_w):
    init, apply = cnn(shape, 10, channels=(8, 4), hidden=16, dims=dims)
    assert jax.eval_shape(init, KEY)["conv_0"]["w"].shape == first_w
    out = jax.jit(lambda k, x: apply(init(k), x))(KEY, jnp.ones((5, *shape)))
    assert out.shape == (5, 10) and np.all(np.isfinite(np.asarray(out)))
    # vmapped over nodes, as the engine does
    p_nodes = jax.eval_shape(jax.vmap(init), jax.random.split(KEY, 3))
    out = jax.eval_shape(jax.vmap(apply), p_nodes, jnp.ones((3, 5, *shape)))
    assert out.shape == (3, 5, 10)


def test_cnn_pool_flatten_size_and_errors():
    params = jax.eval_shape(cnn((40,), 3, channels=(4, 4), pool=2, hidden=0)[0], KEY)
    assert params["dense_0"]["w"].shape == (10 * 4, 3)  # 40 -> 20 -> 10
    init, apply = cnn((8, 8), 3, channels=(4,), pool=1, hidden=0)
    params = jax.eval_shape(init, KEY)
    assert params["conv_0"]["w"].shape == (3, 3, 1, 4)
    assert params["dense_0"]["w"].shape == (64 * 4, 3)
    assert jax.eval_shape(apply, params, jnp.ones((2, 8, 8))).shape == (2, 3)
    with pytest.raises(ConfigError, match="model.channels"):
        cnn((40,), 3, channels=())
    with pytest.raises(ConfigError, match="model.activation"):
        cnn((40,), 3, activation="swish")
    with pytest.raises(ConfigError, match="model.dims"):
        cnn((4, 4, 4, 4), 3)
    keys = model_params("cnn")
    assert keys["channels"] == (32, 32) and keys["kernel"] == 0 and keys["pool"] == 2


def test_cnn_learns_a_shift_invariant_pattern():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 24)).astype(np.float32) * 0.3
    y = rng.integers(0, 2, 64)
    pos = rng.integers(0, 20, 64)
    for i in range(64):  # class 1: a bump at a random position; class 0: a dip
        x[i, pos[i] : pos[i] + 4] += 2.0 if y[i] else -2.0
    init, apply = cnn((24,), 2, channels=(8,), hidden=16)
    first, last = _fit(init, apply, x, y, optax.softmax_cross_entropy_with_integer_labels)
    assert last < 0.1 * first


# ------------------------------------------------------------------------------ tiny_lm
V, T = 11, 8


@functools.cache
def _lm(**kw):
    init, apply = tiny_lm((T,), V, **kw)
    return jax.jit(init), jax.jit(apply)


def _tokens(b=3, seed=0):
    return jax.random.randint(jax.random.PRNGKey(seed), (b, T), 0, V)


def test_tiny_lm_shapes_and_param_tree():
    init, apply = _lm()
    params = init(KEY)
    assert set(params) == {"base", "lora"}
    assert apply(params, _tokens()).shape == (3, T, V)
    lora_paths = leaf_paths(params["lora"])
    for t in ("q", "k", "v", "o", "mlp_in", "mlp_out"):
        assert f"block_0/{t}/a" in lora_paths and f"block_1/{t}/b" in lora_paths
    assert params["lora"]["block_0"]["q"]["a"].shape == (32, 4)
    assert params["lora"]["block_0"]["mlp_out"]["b"].shape == (4, 32)
    # float inputs (packed data) are cast to tokens
    x = _tokens()
    np.testing.assert_allclose(apply(params, x.astype(jnp.float32)), apply(params, x))


def test_tiny_lm_is_causal():
    init, apply = _lm()
    params = init(KEY)
    # make the adapters non-trivial so the LoRA path is exercised too
    params["lora"] = jax.tree.map(lambda a: a + 0.1, params["lora"])
    x = _tokens(b=2)
    base = apply(params, x)
    for t in range(T - 1):
        x2 = x.at[:, t + 1 :].set((x[:, t + 1 :] + 3) % V)
        out = apply(params, x2)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(out[:, t + 1], base[:, t + 1])


def test_lora_with_b_zero_is_the_base_model():
    init, apply = _lm()
    params = init(KEY)
    plain_init, plain_apply = _lm(lora_rank=0)
    plain = plain_init(KEY)
    assert plain["lora"] == {}
    x = _tokens()
    np.testing.assert_allclose(apply(params, x), plain_apply(plain, x), atol=1e-6)
    assert all(
        np.all(np.asarray(v) == 0) for k, v in select(params, ["lora"]).items() if k[-1] == "b"
    )
    # a non-zero B changes the outputs, scaled by alpha / rank
    p2 = jax.tree.map(lambda a: a, params)
    p2["lora"]["block_0"]["q"]["b"] = jnp.ones((4, 32))
    assert not np.allclose(apply(p2, x), apply(params, x))


def test_frozen_base_is_identical_across_nodes_and_gets_zero_gradient():
    init, apply = _lm()
    p_nodes = jax.vmap(init)(jax.random.split(KEY, 4))
    for leaf in jax.tree.leaves(jax.device_get(p_nodes["base"])):
        assert np.all(leaf == leaf[0])
    a = p_nodes["lora"]["block_0"]["q"]["a"]
    assert not np.allclose(a[0], a[1])  # adapters do differ per node
    task = make_task("lm", V)
    params = init(KEY)
    x = _tokens()
    y = jnp.roll(x, -1, axis=1)
    grads = jax.jit(jax.grad(lambda p: task.loss(apply(p, x), y).mean()))(params)
    grads = jax.device_get(grads)
    assert all(np.all(g == 0) for g in jax.tree.leaves(grads["base"]))
    assert any(np.any(g != 0) for g in jax.tree.leaves(grads["lora"]))
    # unfrozen: the base depends on the node key
    init_u, _ = _lm(freeze_base=False)
    w0, w1 = (init_u(jax.random.PRNGKey(s))["base"]["head"]["w"] for s in (0, 1))
    assert not np.allclose(w0, w1)


def test_select_lora_picks_only_the_adapters():
    init, _ = _lm()
    params = init(KEY)
    check_shared(["lora"], params)
    shared = select(params, ["lora"])
    assert shared and all(k.startswith("lora/") for k in shared)
    assert sum(v.size for v in shared.values()) == sum(
        v.size for v in jax.tree.leaves(params["lora"])
    )


def test_tiny_lm_lora_learns_and_options():
    init, apply = _lm(lora_targets="q,v,head", lora_rank=2)
    params = init(KEY)
    assert set(params["lora"]) == {"block_0", "block_1", "head"}
    assert set(params["lora"]["block_0"]) == {"q", "v"}
    x = jnp.tile(jnp.arange(T) % V, (4, 1))  # a deterministic sequence: learnable
    y = jnp.roll(x, -1, axis=1)
    task = make_task("lm", V)
    first, last = _fit(init, apply, x, y, task.loss, steps=80, lr=0.05)
    assert last < 0.5 * first
    with pytest.raises(ConfigError, match="model.lora_targets"):
        _lm(lora_targets="q,x")
    with pytest.raises(ConfigError, match="model.heads"):
        _lm(d_model=30, heads=4)
    with pytest.raises(ConfigError, match="model.max_len"):
        tiny_lm((100,), V, max_len=64)


# ------------------------------------------------------------------------------ adapters
EX = "p2p_fmtl.models.flax_example"


def _not_a_module(out_dim, key):
    return jnp.zeros(out_dim)


def _data(n=32, d=6, k=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = np.argmax(x[:, :k], axis=1)
    return jnp.asarray(x), jnp.asarray(y)


def test_flax_linen_adapter_matches_the_module_and_trains():
    from p2p_fmtl.models.flax_example import FlaxMLP

    x, y = _data()
    init, apply = flax_model((6,), 3, module=f"{EX}:FlaxMLP", kwargs='{"hidden": 16}')
    params = init(KEY)
    mod = FlaxMLP(out_dim=3, hidden=16)
    direct = mod.apply(mod.init(KEY, jnp.zeros((1, 6))), x)
    np.testing.assert_allclose(apply(params, x), direct, atol=1e-6)
    assert params["Dense_0"]["kernel"].shape == (6, 16)
    first, last = _fit(init, apply, x, y, optax.softmax_cross_entropy_with_integer_labels)
    assert last < 0.5 * first


def test_flax_nnx_adapter_matches_the_module_and_trains():
    from flax import nnx

    from p2p_fmtl.models.flax_example import NNXMLP

    x, y = _data()
    init, apply = flax_model((6,), 3, module=f"{EX}:NNXMLP", kwargs='{"hidden": 16}')
    params = init(KEY)
    assert leaf_paths(params) == ["fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel"]
    direct = NNXMLP(3, input_shape=(6,), hidden=16, rngs=nnx.Rngs(KEY))(x)
    np.testing.assert_allclose(apply(params, x), direct, atol=1e-6)
    p_nodes = jax.vmap(init)(jax.random.split(KEY, 3))
    assert jax.vmap(apply)(p_nodes, jnp.stack([x] * 3)).shape == (3, 32, 3)
    first, last = _fit(init, apply, x, y, optax.softmax_cross_entropy_with_integer_labels)
    assert last < 0.5 * first


def test_equinox_adapter_matches_the_module_and_trains():
    from p2p_fmtl.models.flax_example import EqxMLP

    x, y = _data()
    init, apply = equinox_model((6,), 3, module=f"{EX}:EqxMLP", kwargs='{"hidden": 16}')
    params = init(KEY)
    direct = jax.vmap(EqxMLP(3, input_shape=(6,), hidden=16, key=KEY))(x)
    np.testing.assert_allclose(apply(params, x), direct, atol=1e-6)
    assert "mlp/layers/0/weight" in leaf_paths(params)
    p_nodes = jax.vmap(init)(jax.random.split(KEY, 3))
    assert jax.vmap(apply)(p_nodes, jnp.stack([x] * 3)).shape == (3, 32, 3)
    first, last = _fit(init, apply, x, y, optax.softmax_cross_entropy_with_integer_labels)
    assert last < 0.5 * first


def test_adapter_config_errors():
    assert {"flax", "equinox", "cnn", "tiny_lm"} <= set(MODELS)
    assert model_params("flax") == {"module": "", "kwargs": "{}", "api": "auto"}
    with pytest.raises(ConfigError, match="model.module: got ''"):
        build_model({"name": "flax", **model_params("flax")}, (6,), 3)
    with pytest.raises(ConfigError, match="No module named 'nope'"):
        flax_model((6,), 3, module="nope.mod:X")
    with pytest.raises(ConfigError, match="has no attribute 'Missing'"):
        flax_model((6,), 3, module=f"{EX}:Missing")
    with pytest.raises(ConfigError, match="model.kwargs: got"):
        flax_model((6,), 3, module=f"{EX}:FlaxMLP", kwargs="[1]")
    with pytest.raises(ConfigError, match="unexpected keyword argument 'hiden'"):
        flax_model((6,), 3, module=f"{EX}:FlaxMLP", kwargs='{"hiden": 3}')
    with pytest.raises(ConfigError, match="FlaxMLP.*unexpected keyword argument 'key'"):
        equinox_model((6,), 3, module=f"{EX}:FlaxMLP")
    with pytest.raises(ConfigError, match="expected an equinox.Module"):
        equinox_model((6,), 3, module=f"{__name__}:_not_a_module")


# ------------------------------------------------------------------------------ tasks
def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_lm_task_matches_numpy_cross_entropy():
    rng = np.random.default_rng(0)
    out = rng.normal(size=(4, 5, 7)).astype(np.float32)
    y = rng.integers(0, 7, (4, 5))
    y[1, 3:] = -1  # ignored (padding) tokens
    task = make_task("lm", 7)
    assert task.metric == "loss" and task.out_dim == 7 and task.heads == ()
    nll = -np.take_along_axis(_log_softmax(out), np.maximum(y, 0)[..., None], -1)[..., 0]
    valid = y >= 0
    ref = (nll * valid).sum(-1) / valid.sum(-1)
    loss, score, probs, tok_acc = jax.jit(
        lambda o, y: (task.loss(o, y), task.score(o, y), task.probs(o), token_accuracy(o, y))
    )(out, y)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)
    np.testing.assert_allclose(score, ref, rtol=1e-4)
    assert probs.shape == (4, 5, 7)
    acc = (out.argmax(-1) == y) * valid
    np.testing.assert_allclose(tok_acc, acc.sum(-1) / valid.sum(-1))
    with pytest.raises(ConfigError, match="model.loss"):
        make_task("lm", 7, "squared")


HEADS = [
    {"name": "digit", "kind": "multiclass", "classes": 3},
    {"name": "odd", "kind": "binary", "classes": 2},
    {"name": "size", "kind": "regression", "classes": 1},
]


def _multitask_reference(out, y):
    loss, score = [], []
    for o, (t, h) in zip(out, y, strict=True):
        h = int(h)
        if h == 2:
            loss.append(0.5 * (o[5] - t) ** 2)
            score.append((o[5] - t) ** 2)
        else:
            block = o[0:3] if h == 0 else o[3:5]
            loss.append(-_log_softmax(block)[int(t)])
            score.append(float(np.argmax(block) == int(t)))
    return np.array(loss), np.array(score)


def test_multitask_loss_and_score_match_numpy():
    task = make_task("multitask", 0, heads=HEADS)
    assert task.metric == "score" and task.out_dim == 6 and task.num_classes == 6
    assert [(h["offset"], h["width"]) for h in task.heads] == [(0, 3), (3, 2), (5, 1)]
    out = np.array(
        [
            [2.0, 0.1, -1.0, 0.0, 0.0, 9.0],  # head 0, label 0: correct
            [2.0, 0.1, -1.0, 0.0, 0.0, 9.0],  # head 0, label 2: wrong
            [0.0, 0.0, 0.0, -1.0, 1.0, 9.0],  # head 1, label 1: correct
            [0.0, 0.0, 0.0, 3.0, -2.0, 9.0],  # head 1, label 1: wrong
            [5.0, 5.0, 5.0, 5.0, 5.0, 1.5],  # head 2, target 0.5
            [5.0, 5.0, 5.0, 5.0, 5.0, -2.0],  # head 2, target 1.0
        ],
        np.float32,
    )
    y = np.array([[0, 0], [2, 0], [1, 1], [1, 1], [0.5, 2], [1.0, 2]], np.float32)
    ref_loss, ref_score = _multitask_reference(out, y)
    loss, score, p = jax.jit(lambda o, y: (task.loss(o, y), task.score(o, y), task.probs(o)))(
        out, y
    )
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(score, ref_score, rtol=1e-5)
    np.testing.assert_allclose(score, [1, 0, 1, 0, 1.0, 9.0], rtol=1e-5)
    # probs: per-head softmax blocks, regression passed through
    p = np.asarray(p)
    np.testing.assert_allclose(p[:, :3].sum(-1), 1, rtol=1e-5)
    np.testing.assert_allclose(p[:, 3:5].sum(-1), 1, rtol=1e-5)
    np.testing.assert_allclose(p[:, 5], out[:, 5])


def test_tasks_jit_vmap_and_grads():
    rng = np.random.default_rng(1)
    task = make_task("multitask", 0, heads=HEADS)
    out = jnp.asarray(rng.normal(size=(3, 8, 6)), jnp.float32)
    heads = rng.integers(0, 3, (3, 8))
    target = np.where(heads == 0, rng.integers(0, 3, (3, 8)), rng.integers(0, 2, (3, 8)))
    target = np.where(heads == 2, rng.normal(size=(3, 8)), target)
    y = jnp.asarray(np.stack([target, heads], -1), jnp.float32)
    loss = jax.jit(jax.vmap(task.loss))(out, y)
    score = jax.jit(jax.vmap(task.score))(out, y)
    out_np, y_np = np.asarray(out), np.asarray(y)
    for i in range(3):
        ref_loss, ref_score = _multitask_reference(out_np[i], y_np[i])
        np.testing.assert_allclose(loss[i], ref_loss, rtol=1e-5)
        np.testing.assert_allclose(score[i], ref_score, rtol=1e-5)
    g = np.asarray(jax.jit(jax.grad(lambda o: jax.vmap(task.loss)(o, y).sum()))(out))
    assert np.all(np.isfinite(g))
    # a sample only moves its own head's columns
    for i, j in np.ndindex(3, 8):
        cols = {0: slice(0, 3), 1: slice(3, 5), 2: slice(5, 6)}[int(heads[i, j])]
        mask = np.ones(6, bool)
        mask[cols] = False
        assert np.all(g[i, j][mask] == 0)
    lm = make_task("lm", 5)
    o = jnp.asarray(rng.normal(size=(2, 4, 3, 5)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 5, (2, 4, 3)))
    assert jax.jit(jax.vmap(lm.loss))(o, t).shape == (2, 4)
    with pytest.raises(ConfigError, match="data.heads"):
        make_task("multitask", 0)
    with pytest.raises(ConfigError, match=r"data.heads\[0\].kind"):
        make_task("multitask", 0, heads=[{"name": "a", "kind": "ordinal", "classes": 3}])
    # existing kinds are unchanged
    assert make_task("binary", 2).metric == "acc" and make_task("regression", 1).metric == "mse"
    assert make_task("multiclass", 4).heads == ()


# ------------------------------------------------------------------------------ end to end
def test_cli_runs_the_flax_config(tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            str(CONFIG),
            "--set",
            "run.rounds=4",
            "--set",
            "run.eval_every=2",
            "--set",
            "topology.n=6",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["round"]) for r in rows] == [0, 2, 4]
    assert all(np.isfinite(float(r["test_acc"])) for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" or "status" in summary
    assert 'name = "flax"' in (out / "config.toml").read_text()
