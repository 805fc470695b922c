"""Ditto, FedRep and IFCA against their definitions: exact limits and hand-written rounds.

Limits (bit for bit): Ditto's w is D-SGD and with λ = 0 its v is ``local``; FedRep with
no head is D-SGD; IFCA with one cluster is D-SGD.  References: one or two rounds with
full-batch steps (batch order then does not matter) recomputed here with plain gradient
descent on the node's own rows, the model written out by hand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from p2p_fmtl import ConfigError, load_config, run
from p2p_fmtl.algorithms import NodeData, needs_of
from p2p_fmtl.algorithms.fedrep import default_head, head_paths
from p2p_fmtl.runner import Simulation

DATA = {"name": "fedem_synthetic", "dim": 5, "n_test": 20}
FULL_BATCH = 10_000  # larger than any node's training set: one step = the full gradient


def base(alg: str, rounds: int = 4, **keys):
    return {
        "run": {"rounds": rounds, "eval_every": rounds, "seed": 0},
        "topology": {"name": "ring", "n": 8, "seed": 0},
        "data": dict(DATA),
        "algorithm": {
            "name": alg,
            "batch_size": 16,
            "local_steps": 2,
            "lr": 0.05,
            "momentum": 0.5,
            **keys,
        },
    }


@pytest.fixture(scope="module")
def dsgd():
    return run(load_config(base("dsgd")))


def node_rows(sim):
    """Each node's real training rows, (x, y) as float64 arrays, in node order."""
    rows = {}
    for b in sim.packed.buckets:
        for j, i in enumerate(b.nodes):
            if i >= 0:
                n = int(b.n_train[j])
                rows[int(i)] = (np.float64(b.x_train[j, :n]), np.float64(b.y_train[j, :n]))
    return [rows[i] for i in range(len(rows))]


def node_data(sim, i: int) -> NodeData:
    """Node i's padded data, as the engine hands it to the algorithm's functions."""
    for b in sim.packed.buckets:
        if i in b.nodes:
            j = int(np.flatnonzero(b.nodes == i)[0])
            fields = ("x_train", "y_train", "n_train", "x_test", "y_test", "n_test")
            return NodeData(*(jnp.asarray(getattr(b, f)[j]) for f in fields), b.size_fraction[j])
    raise KeyError(i)


def held_out_rows(sim, i: int):
    d = node_data(sim, i)
    n = int(d.n_test)
    return np.float64(d.x_test[:n]), np.float64(d.y_test[:n])


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def linear_loss(p, x, y):
    z = (x @ p["w"] + p["b"])[:, 0]
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def linear_grad(p, x, y):
    """Gradient of the mean logistic loss of x w + b."""
    r = (sigmoid((x @ p["w"] + p["b"])[:, 0]) - y) / len(y)
    return {"w": x.T @ r[:, None], "b": np.array([r.sum()])}


def mlp_grads(body, head, x, y):
    """Gradients (body, head) of the mean logistic loss of relu(x W0 + b0) W1 + b1."""
    a = x @ body["w"] + body["b"]
    h = np.maximum(a, 0.0)
    r = (sigmoid((h @ head["w"] + head["b"])[:, 0]) - y) / len(y)
    da = (r[:, None] @ head["w"].T) * (a > 0)
    return {"w": x.T @ da, "b": da.sum(0)}, {"w": h.T @ r[:, None], "b": np.array([r.sum()])}


def gd(grad, params, steps: int, lr: float):
    for _ in range(steps):
        g = grad(params)
        params = {k: params[k] - lr * g[k] for k in params}
    return params


def node(tree, i):
    return jax.tree.map(lambda a: np.float64(a[i]), tree)


def assert_close(a, b, tol=1e-5):
    for k in b:
        np.testing.assert_allclose(np.asarray(a[k]), b[k], rtol=tol, atol=tol, err_msg=k)


# ---------------------------------------------------------------------------- Ditto
def test_ditto_global_model_is_dsgd_and_without_pull_personal_is_local(dsgd):
    ditto = run(load_config(base("ditto", lam=0.0)))
    local = run(load_config(base("local")))
    for k in dsgd.params:
        np.testing.assert_array_equal(ditto.params[f"global/{k}"], dsgd.params[k])
        np.testing.assert_array_equal(ditto.params[f"personal/{k}"], local.params[k])
    # scored with v: the local model's scores; only w is sent
    assert ditto.summary["test_acc"] == pytest.approx(local.summary["test_acc"], abs=1e-9)
    assert ditto.metrics[-1]["bytes_total"] == dsgd.metrics[-1]["bytes_total"]
    assert needs_of(load_config(base("ditto"))["algorithm"]).copies == 2


def test_ditto_personal_steps_pull_towards_w_at_the_start_of_the_round():
    lam, lr, steps = 0.5, 0.1, 3
    cfg = base("ditto", rounds=2, lam=lam, lr=lr, momentum=0.0, batch_size=FULL_BATCH)
    cfg["algorithm"]["local_steps"] = steps
    sim = Simulation(load_config(cfg))
    rows = node_rows(sim)
    states = [sim.state]
    for _ in range(2):
        sim.advance(1)
        states.append(sim.state)
    for t in range(2):  # v ← steps of GD on f_i(v) + (λ/2)‖v − w‖², w = w_i before round t
        before, after = states[t], states[t + 1]
        for i, (x, y) in enumerate(rows):
            w_ref = node(before.params, i)

            def grad(v, w_ref=w_ref, x=x, y=y):
                g = linear_grad(v, x, y)
                return {k: g[k] + lam * (v[k] - w_ref[k]) for k in v}

            assert_close(node(after.personal, i), gd(grad, node(before.personal, i), steps, lr))
    # the pull mattered: v differs from the plain local steps it would take with λ = 0
    x, y = rows[0]
    free = gd(lambda v: linear_grad(v, x, y), node(states[1].personal, 0), steps, lr)
    assert np.abs(free["w"] - node(states[2].personal, 0)["w"]).max() > 1e-4


# ---------------------------------------------------------------------------- FedRep
def test_fedrep_without_a_head_is_dsgd(dsgd):
    fedrep = run(load_config(base("fedrep", head=[])))
    for k in dsgd.params:
        np.testing.assert_array_equal(fedrep.params[k], dsgd.params[k])
    assert fedrep.metrics[-1]["bytes_total"] == dsgd.metrics[-1]["bytes_total"]


def test_fedrep_trains_the_head_then_the_body_and_sends_only_the_body():
    lr, head_epochs, body_steps = 0.2, 3, 2
    cfg = base(
        "fedrep",
        rounds=1,
        lr=lr,
        momentum=0.0,
        batch_size=FULL_BATCH,
        head_epochs=head_epochs,
        gossip_every=2,  # round 1: local work only
    )
    cfg["algorithm"]["local_steps"] = body_steps
    cfg["model"] = {"name": "mlp", "hidden": [3]}
    sim = Simulation(load_config(cfg))
    assert list(sim.alg.shared(sim.state)) == ["dense_0/b", "dense_0/w"]  # default head: last
    assert sim.msg_bytes == 4 * (5 * 3 + 3)
    rows = node_rows(sim)
    start = sim.state.params
    sim.advance(1)
    for i, (x, y) in enumerate(rows):
        p = node(start, i)
        body, head = p["dense_0"], p["dense_1"]
        head = gd(lambda h, b=body, x=x, y=y: mlp_grads(b, h, x, y)[1], head, head_epochs, lr)
        body = gd(lambda b, h=head, x=x, y=y: mlp_grads(b, h, x, y)[0], body, body_steps, lr)
        after = node(sim.state.params, i)
        assert_close(after["dense_1"], head)
        assert_close(after["dense_0"], body)
    # a new node fits only its head, head_epochs full-batch steps at lr, on its own rows
    adapted = sim.alg.adapt(jax.tree.map(lambda a: a[0], sim.state), node_data(sim, 0)).params
    p, (x, y) = node(sim.state.params, 0), rows[0]
    head = gd(lambda h: mlp_grads(p["dense_0"], h, x, y)[1], p["dense_1"], head_epochs, lr)
    assert_close(adapted["dense_1"], head)
    assert_close(adapted["dense_0"], p["dense_0"], tol=0.0)


def test_fedrep_default_head_and_refusals():
    shapes = {f"dense_{i}": {"w": np.zeros((2, 2)), "b": np.zeros(2)} for i in range(11)}
    assert default_head(shapes) == ["dense_10/b", "dense_10/w"]  # natural order
    assert default_head({"w": np.zeros((5, 1)), "b": np.zeros(1)}) == ["b"]  # linear: bias
    lm = {"base": {"head": {"w": np.zeros((2, 2))}, "tok_emb": np.zeros((3, 2))}}
    assert default_head(lm) == ["base/head/w"]
    assert head_paths(["dense_3/w"], shapes) == ["dense_3/w"]
    with pytest.raises(ConfigError, match=r"^algorithm\.head: .*no body to share"):
        head_paths(["w", "b"], {"w": np.zeros((5, 1)), "b": np.zeros(1)})
    with pytest.raises(ConfigError, match=r"^algorithm\.head: 'nope' names no parameter"):
        head_paths(["nope"], shapes)
    with pytest.raises(ConfigError, match=r"^algorithm\.head: got 'first', expected"):
        load_config(base("fedrep", head="first"))


# ---------------------------------------------------------------------------- IFCA
def test_ifca_with_one_cluster_is_dsgd(dsgd):
    ifca = run(load_config(base("ifca", clusters=1)))
    for k in dsgd.params:
        np.testing.assert_array_equal(ifca.params[k][:, 0], dsgd.params[k])
    np.testing.assert_array_equal(ifca.params["cluster"], 0)
    assert ifca.summary["test_acc"] == pytest.approx(dsgd.summary["test_acc"], abs=1e-9)


def test_ifca_trains_only_the_model_with_the_lowest_training_loss():
    lr, steps, k = 0.3, 2, 3
    cfg = base("ifca", rounds=1, clusters=k, lr=lr, momentum=0.0, batch_size=FULL_BATCH)
    cfg["algorithm"].update(local_steps=steps, gossip_every=2)  # round 1: local work only
    sim = Simulation(load_config(cfg))
    rows = node_rows(sim)
    start = sim.state.params
    sim.advance(1)
    chosen = []
    for i, (x, y) in enumerate(rows):
        models = [jax.tree.map(lambda a, j=j: a[j], node(start, i)) for j in range(k)]
        after = [jax.tree.map(lambda a, j=j: a[j], node(sim.state.params, i)) for j in range(k)]
        pick = int(np.argmin([linear_loss(m, x, y) for m in models]))
        chosen.append(pick)
        for j in range(k):
            if j == pick:
                expect = gd(lambda p, x=x, y=y: linear_grad(p, x, y), models[j], steps, lr)
                assert_close(after[j], expect)
            else:
                assert_close(after[j], models[j], tol=0.0)  # untouched
    np.testing.assert_array_equal(np.asarray(sim.state.cluster), chosen)
    assert len(set(chosen)) > 1  # the nodes do not all pick the same model
    # each node is scored with the model it chose (its accuracy on its test rows)
    sim.evaluate()
    for i, j in enumerate(chosen):
        x, y = held_out_rows(sim, i)
        m = jax.tree.map(lambda a, j=j: a[j], node(sim.state.params, i))
        acc = np.mean(((x @ m["w"] + m["b"])[:, 0] > 0) == y)
        assert sim.last_eval["test_score"][i] == pytest.approx(acc, abs=1e-6)
    # a new node picks, among the models it holds, the one of lowest training loss
    state = jax.tree.map(lambda a: a[0], sim.state)
    models = [jax.tree.map(lambda a, j=j: a[j], node(sim.state.params, 0)) for j in range(k)]
    x, y = rows[0]
    expect = int(np.argmin([linear_loss(m, x, y) for m in models]))
    assert int(sim.alg.adapt(state._replace(cluster=-1), node_data(sim, 0)).cluster) == expect
