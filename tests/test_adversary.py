"""Byzantine nodes and robust gossip aggregation (p2p_fmtl/adversary.py) against numpy
references, end-to-end identities without attackers, refusals, batched and 2-device runs,
and the issue's must-show: sign-flip attackers break plain D-SGD, ClippedGossip holds."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from p2p_fmtl import ConfigError, load_config
from p2p_fmtl import adversary as A
from p2p_fmtl.gossip import Mixing
from p2p_fmtl.runner import Simulation

TINY = {"dim": 5, "n_test": 20}


def _table(seed=0, n=7, k=4):
    """A random neighbour table: slot 0 is the node itself, some slots padding (self,
    weight 0), some dead (weight 0), the rest live neighbours."""
    rng = np.random.default_rng(seed)
    senders = np.tile(np.arange(n)[:, None], (1, k))
    weights = np.zeros((n, k), np.float32)
    for i in range(n):
        others = rng.choice([j for j in range(n) if j != i], size=k - 1, replace=False)
        senders[i, 1:] = others
        weights[i, 1:] = rng.uniform(0.05, 0.2, k - 1) * (rng.uniform(size=k - 1) > 0.25)
        weights[i, 0] = 1 - weights[i, 1:].sum()
    senders[0, 3], weights[0, 3] = 0, 0.0  # a padding slot
    return senders, weights


def _live_sets(senders, weights):
    return [
        [int(j) for j, w in zip(s, ws, strict=True) if j != i and w > 0]
        for i, (s, ws) in enumerate(zip(senders, weights, strict=True))
    ]


def test_trimmed_mean_and_median_match_numpy():
    senders, weights = _table()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 3, 2)).astype(np.float32)
    own = rng.normal(size=(7, 3, 2)).astype(np.float32)
    op = Mixing(None, jnp.asarray(senders), jnp.asarray(weights))
    live = A.table_neighbours(op)
    for b in (0, 1, 2):
        got = np.asarray(A.trimmed_mean(x, own, op.senders, live, jnp.full((7,), b)))
        for i, nbrs in enumerate(_live_sets(senders, weights)):
            vals = np.sort(np.concatenate([own[i][None], x[nbrs]]), axis=0)
            bb = min(b, (len(vals) - 1) // 2)
            ref = vals[bb : len(vals) - bb].mean(axis=0)
            np.testing.assert_allclose(got[i], ref, rtol=1e-5, atol=1e-6)
    inp = A.AttackInputs(None, 0.0, 1.0, 0.0, jnp.int32(1), jnp.float32(0.0))
    med = np.asarray(A.robust_mix(A.Adversary(robust="median"), inp, x, own, op, None))
    for i, nbrs in enumerate(_live_sets(senders, weights)):
        ref = np.median(np.concatenate([own[i][None], x[nbrs]]), axis=0)
        np.testing.assert_allclose(med[i], ref, rtol=1e-5, atol=1e-6)


def _clip_ref(x, own, senders, weights, tau):
    out = own.copy()
    for i, nbrs in enumerate(_live_sets(senders, weights)):
        for j in nbrs:
            w = weights[i][list(senders[i]).index(j)]
            d = x[j] - own[i]
            nrm = np.linalg.norm(d)
            out[i] += w * d * min(1.0, tau[i] / nrm)
    return out


def test_clipped_gossip_matches_numpy():
    senders, weights = _table(2)
    rng = np.random.default_rng(3)
    x = {"a": rng.normal(size=(7, 3)).astype(np.float32), "b": rng.normal(size=(7,))}
    x["b"] = x["b"].astype(np.float32)
    own = {"a": rng.normal(size=(7, 3)).astype(np.float32), "b": np.zeros(7, np.float32)}
    flat = np.concatenate([x["a"], x["b"][:, None]], axis=1)  # the norm spans all leaves
    flat_own = np.concatenate([own["a"], own["b"][:, None]], axis=1)
    op = Mixing(None, jnp.asarray(senders), jnp.asarray(weights))
    live = A.table_neighbours(op)
    byz = np.zeros(7, bool)
    byz[[1, 4]] = True
    sets = _live_sets(senders, weights)
    dist = [{j: np.linalg.norm(flat[j] - flat_own[i]) for j in s} for i, s in enumerate(sets)]
    theorem, farthest = [], []
    for i, s in enumerate(sets):
        w = {j: weights[i][list(senders[i]).index(j)] for j in s}
        delta = sum(w[j] for j in s if byz[j])
        honest = sum(w[j] * dist[i][j] ** 2 for j in s if not byz[j])
        theorem.append(np.sqrt(honest / delta) if delta > 0 else np.inf)
        d = sorted(dist[i].values())  # the paper's code: sorted(distances)[-2] (b = 1)
        farthest.append(d[-2] if len(d) >= 2 else (d[-1] if d else np.inf))
    for radius, rule, tau in (
        (0.3, "theorem", [0.3] * 7),
        (0.0, "theorem", theorem),
        (0.0, "farthest", farthest),
    ):
        got = A.clipped_gossip(x, own, op, live, jnp.float32(radius), 1, jnp.asarray(byz), rule)
        got = np.concatenate([np.asarray(got["a"]), np.asarray(got["b"])[:, None]], axis=1)
        ref = _clip_ref(flat, flat_own, senders, weights, tau)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=rule)


def test_attack_messages_match_numpy():
    senders, weights = _table(4)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    byz = np.zeros(7, bool)
    byz[[2, 5]] = True
    op = Mixing(None, jnp.asarray(senders), jnp.asarray(weights))
    live = A.table_neighbours(op)
    sets = _live_sets(senders, weights)
    for kind, z in (("sign_flip", 0.0), ("alie", 1.5), ("alie", 0.0)):
        inp = A.AttackInputs(None, 0.0, jnp.float32(3.0), jnp.float32(z), 1, 0.0)
        got = np.asarray(
            A.corrupt(A.Adversary(kind), inp, x, jnp.asarray(byz), None, op.senders, live)
        )
        for i in range(7):
            if not byz[i]:
                ref = x[i]
            elif kind == "sign_flip":
                ref = -3.0 * x[i]
            else:
                nb = x[sets[i]]
                n, f = len(sets[i]) + 1, 1 + sum(byz[j] for j in sets[i])
                s = max(np.floor(n / 2 + 1) - f, 1)
                zz = z if z > 0 else max(norm.ppf((n - s) / n), 0.0)
                ref = nb.mean(0) - zz * nb.std(0)
            np.testing.assert_allclose(got[i], ref, rtol=1e-5, atol=1e-5, err_msg=kind)


def test_byzantine_draw_is_a_fixed_share_of_training_nodes():
    active = np.ones(30, bool)
    active[[3, 7]] = False
    a = A.fixed_byzantine(0, active, 0.2)
    assert a.sum() == round(0.2 * 28) and not a[[3, 7]].any()
    assert (a == A.fixed_byzantine(0, active, 0.2)).all()
    assert (a != A.fixed_byzantine(1, active, 0.2)).any()
    assert A.fixed_byzantine(0, active, 0.0).sum() == 0


def _cfg(overrides=None, **sections):
    base = {
        "run": {"rounds": 3, "eval_every": 3, "seed": 1},
        "topology": {"name": "erdos_renyi", "n": 8, "p": 0.5},
        "data": dict(TINY),
        "algorithm": {"name": "dsgd"},
    }
    for k, v in sections.items():  # a topology with a name replaces the default one
        base[k] = dict(v) if k == "topology" and "name" in v else {**base.get(k, {}), **v}
    return load_config(base, overrides=overrides or {})


def _params(cfg):
    sim = Simulation(cfg)
    sim.advance(cfg["run"]["rounds"])
    return np.asarray(sim.state.params["w"]), sim


def test_without_attackers_robust_rules_are_gossip_where_their_rule_says():
    complete = {"name": "complete", "n": 6}
    plain, _ = _params(_cfg(topology={**complete, "mixing": "uniform"}))
    tm, sim = _params(
        _cfg(
            topology={**complete, "mixing": "uniform"},
            algorithm={"robust": "trimmed_mean", "trim": 0},
        )
    )
    assert sim.gossip_operator == "sparse"
    np.testing.assert_allclose(tm, plain, atol=1e-6)
    plain, _ = _params(_cfg())
    for radius in (1e30, 0.0):  # infinite, and the theorem's radius without Byzantine nodes
        clipped, _ = _params(_cfg(algorithm={"robust": "clipped_gossip", "clip_radius": radius}))
        np.testing.assert_allclose(clipped, plain, atol=1e-6)
    attacked, _ = _params(_cfg(attack={"kind": "sign_flip", "fraction": 0.25}))
    assert np.abs(attacked - plain).max() > 1e-3


def test_label_flip_poisons_the_fixed_set_only():
    clean = Simulation(_cfg())
    sim = Simulation(_cfg(attack={"kind": "label_flip", "fraction": 0.25}))
    byz = sim.parts.byzantine
    assert byz.sum() == 2
    for b0, b1 in zip(clean.packed.buckets, sim.packed.buckets, strict=True):
        for row, node in enumerate(b1.nodes):
            n = b1.n_train[row]
            want = 1 - b0.y_train[row, :n] if byz[node] else b0.y_train[row, :n]
            np.testing.assert_array_equal(b1.y_train[row, :n], want)


def test_redraw_counts_rounds_and_keeps_the_share():
    sim = Simulation(_cfg(attack={"kind": "gaussian", "fraction": 0.25, "redraw": True}))
    sim.advance(3)
    counts = np.asarray(sim.carry.exchange)
    assert counts.sum() == 3 * 2 and not sim.parts.byzantine.any()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            {"attack.kind": "sign_flip", "algorithm.gossip": "pairwise"},
            r"attack\.kind = 'sign_flip'.*pairwise",
        ),
        (
            {"algorithm.robust": "median", "compression.name": "top_k"},
            r"algorithm\.robust = 'median'.*compression\.name",
        ),
        (
            {
                "algorithm.robust": "median",
                "topology.schedule": "one_peer_exponential",
                "faults.node_drop": 0.1,
            },
            r"algorithm\.robust = 'median'.*push-sum",
        ),
        (
            {"attack.kind": "alie", "algorithm.name": "local"},
            r"attack\.kind = 'alie'.*'local' sends none",
        ),
        (
            {"attack.kind": "label_flip", "attack.redraw": True},
            r"attack\.redraw = true.*label_flip",
        ),
        (
            {"algorithm.robust": "median", "algorithm.name": "graph_mtl"},
            r"algorithm\.robust = 'median'.*graph_mtl",
        ),
    ],
)
def test_refusals_name_both_settings(overrides, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(overrides)


def test_label_flip_on_regression_is_refused():
    cfg = _cfg(
        {"attack.kind": "label_flip", "attack.fraction": 0.25},
        data={"name": "clustered_linear", "task": "regression", "n_test": 10},
    )
    with pytest.raises(ConfigError, match=r"attack\.kind: got 'label_flip'.*regression"):
        Simulation(cfg)


def test_inbox_algorithm_receives_the_attack():
    clean, _ = _params(_cfg(algorithm={"name": "graph_mtl"}))
    hit, _ = _params(
        _cfg(algorithm={"name": "graph_mtl"}, attack={"kind": "sign_flip", "fraction": 0.25})
    )
    assert np.abs(hit - clean).max() > 1e-4


ATTACKED = {
    "attack": {"kind": "alie", "fraction": 0.25},
    "algorithm": {"robust": "clipped_gossip"},
}


def test_batched_runs_equal_single_runs():
    from p2p_fmtl.batched import run_batch

    cfgs = [_cfg({"run.seed": s}, **ATTACKED) for s in (1, 2)]
    batch = run_batch(cfgs)
    for cfg, res in zip(cfgs, batch, strict=True):
        single, _ = _params(cfg)
        np.testing.assert_allclose(res.params["w"], single, atol=1e-6)


SCRIPT = r"""
import json, sys
import numpy as np
from p2p_fmtl import load_config, run
base = json.loads(sys.argv[1])
one = run(load_config(base))
two = run(load_config(base, overrides={"run.devices": 2}))
print(json.dumps({"diff": float(np.max(np.abs(one.params["w"] - two.params["w"]))),
                  "shards": len(two.state.params["w"].sharding.device_set)}))
"""


def test_two_devices_equal_one_device():
    from combinations import FAST_COMPILE

    base = {
        "run": {"rounds": 3, "eval_every": 3, "seed": 1},
        "topology": {"name": "erdos_renyi", "n": 8, "p": 0.5},
        "data": TINY,
        "attack": {"kind": "sign_flip", "fraction": 0.25, "redraw": True},
        "algorithm": {"name": "dsgd", "robust": "trimmed_mean"},
    }
    flags = os.environ.get("XLA_FLAGS", "") + FAST_COMPILE
    flags += " --xla_force_host_platform_device_count=2"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(base)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shards"] == 2 and out["diff"] < 1e-5, out


def _honest_acc(overrides):
    cfg = load_config(
        {
            "run": {"rounds": 30, "eval_every": 30, "seed": 0},
            "topology": {"name": "erdos_renyi", "n": 30, "p": 0.3},
            "data": {"name": "fedem_synthetic"},
            "algorithm": {"name": "dsgd"},
        },
        overrides=overrides,
    )
    sim = Simulation(cfg)
    sim.advance(30)
    ev = sim.engine.evaluate(sim.state, sim.layout, sim.active)
    honest = ~sim.parts.byzantine & ~sim.holdout
    n_test = sim.packed.n_test[honest]
    acc = float(np.sum(ev["test_score"][honest] * n_test) / np.sum(n_test))
    assert sim.evaluate()["test_acc"] == pytest.approx(acc, abs=1e-6)  # the run's metric
    return acc


def test_sign_flip_breaks_plain_gossip_and_clipped_gossip_holds():
    """FedEM synthetic, 30 nodes, ER p = 0.3, D-SGD (reference defaults), 30 rounds;
    20 % of the nodes send −10 × their model."""
    attack = {"attack.kind": "sign_flip", "attack.fraction": 0.2, "attack.scale": 10.0}
    clean = _honest_acc({})
    plain = _honest_acc(attack)
    clipped = _honest_acc({**attack, "algorithm.robust": "clipped_gossip"})
    assert clean - plain > 0.10, (clean, plain)
    assert abs(clean - clipped) < 0.04, (clean, clipped)


def test_run_marks_attackers_and_scores_the_honest_nodes(tmp_path):
    """nodes.csv marks the Byzantine nodes; test_acc is over the others only."""
    import csv

    from p2p_fmtl import run

    cfg = _cfg(attack={"kind": "label_flip", "fraction": 0.25})
    res = run(cfg, out=tmp_path / "r")
    with open(tmp_path / "r" / "nodes.csv", newline="") as f:
        nodes = list(csv.DictReader(f))
    byz = [int(r["byzantine"]) for r in nodes]
    assert sum(byz) == 2 and res.summary["byzantine_nodes"] == [i for i, b in enumerate(byz) if b]
    honest = [r for r, b in zip(nodes, byz, strict=True) if not b]
    acc = sum(float(r["test_acc"]) * int(r["n_test"]) for r in honest)
    acc /= sum(int(r["n_test"]) for r in honest)
    assert res.summary["test_acc"] == pytest.approx(acc, abs=1e-6)
