"""Regression tests of the combinations that gave silently wrong numbers, one per bug."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import p2p_fmtl
from p2p_fmtl import ConfigError, load_config, run
from p2p_fmtl.batched import run_batch
from p2p_fmtl.metrics import delta_m
from p2p_fmtl.runner import Simulation

DATA = {"name": "fedem_synthetic", "dim": 6, "n_test": 20}


def base(alg: str = "dsgd", rounds: int = 4, n: int = 8, **sections):
    cfg = {
        "run": {"rounds": rounds, "eval_every": rounds, "seed": 0},
        "topology": {"name": "ring", "n": n, "seed": 0},
        "data": dict(DATA),
        "algorithm": {"name": alg, "batch_size": 16, "local_steps": 2, "lr": 0.05},
    }
    for section, keys in sections.items():
        cfg.setdefault(section, {}).update(keys)
    return cfg


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(a.params[k] - b.params[k]))) for k in a.params)


def messages_from_trace(sim, kind: str) -> int:
    """Messages that crossed an edge, recounted from the run's replayed network."""
    tr = sim.network_trace()
    u, v = np.asarray(sim.inputs.net.u), np.asarray(sim.inputs.net.v)
    total = 0
    for t in np.flatnonzero(tr["gossip"]):
        if kind == "inbox":
            a = tr["alive"][t]
            total += 2 * int(np.sum(tr["edge_alive"][t] & a[u] & a[v]))
        else:
            W = tr["W"][t]
            total += int(np.count_nonzero(W - np.diag(np.diag(W)) > 0))
    return total


# ------------------------------------------------------------------ batched runs
def test_batched_runs_simulate_the_network():
    """Was: a batch with faults.node_drop = 0.9 equalled the run without drops, with
    bytes_total = 0."""
    drop = base(faults={"node_drop": 0.5})
    cfgs = [load_config(drop, overrides={"run.seed": s}) for s in (0, 1)]
    batched = run_batch(cfgs)
    for cfg, b in zip(cfgs, batched, strict=True):
        alone = run(cfg)
        assert max_diff(alone, b) <= 1e-6
        assert b.metrics[-1]["bytes_total"] == alone.metrics[-1]["bytes_total"]
    no_drop = run(load_config(base()))
    assert max_diff(no_drop, batched[0]) > 1e-3
    assert 0 < batched[0].metrics[-1]["bytes_total"] < no_drop.metrics[-1]["bytes_total"]


@pytest.mark.parametrize(
    "extra",
    [
        {"faults": {"straggler": 0.8}},
        {"compression": {"name": "top_k", "ratio": 0.3}},
        {"topology": {"schedule": "random_matching"}},
    ],
    ids=["stragglers", "compression", "schedule"],
)
def test_batched_runs_keep_stragglers_compression_and_schedules(extra):
    cfg = load_config(base(**extra))
    b = run_batch([cfg, load_config(base(**extra), overrides={"run.seed": 1})])[0]
    alone = run(cfg)
    assert max_diff(alone, b) <= 1e-6
    assert b.metrics[-1]["bytes_total"] == alone.metrics[-1]["bytes_total"] > 0
    assert max_diff(alone, run(load_config(base()))) > 1e-4  # the setting matters


def test_a_batch_of_different_programs_is_refused_in_one_line():
    cfgs = [load_config(base()), load_config(base(faults={"node_drop": 0.1}))]
    with pytest.raises(p2p_fmtl.UserError) as e:
        run_batch(cfgs)
    msg = str(e.value)
    assert "\n" not in msg and "network process differs" in msg and "node_drop" in msg


# ------------------------------------------------------------------ graph_mtl and the network
@pytest.mark.parametrize(
    "extra",
    [
        {"faults": {"node_drop": 0.3}},
        {"faults": {"straggler": 0.5}},
        {"cost": {"enabled": True}},
        {"algorithm": {"gossip_every": 2}},
    ],
    ids=["node_drop", "straggler", "cost", "gossip_every"],
)
def test_graph_mtl_counts_what_it_sends_under_any_network(extra):
    """Was: graph_mtl (joint) with any network-process feature sent 0 bytes."""
    sim = Simulation(load_config(base("graph_mtl", **extra)))
    sim.advance(sim.rounds)
    sent = int(sim.msgs_sent.sum())
    assert sent > 0 and sent == messages_from_trace(sim, "inbox")
    values = 6 + 1  # the linear model's shared values
    sim.evaluate()
    assert sim.history[-1]["bytes_total"] == sent * values * 4
    if "cost" in extra:  # transfers are in the simulated time
        assert sim.sim_time > sim.rounds * sim.cfg["cost"]["latency_s"]


def test_graph_mtl_gossip_every_is_not_ignored():
    every5 = run(load_config(base("graph_mtl", rounds=6, algorithm={"gossip_every": 5})))
    every1 = run(load_config(base("graph_mtl", rounds=6)))
    assert max_diff(every5, every1) > 1e-4
    assert every5.metrics[-1]["bytes_total"] * 6 == every1.metrics[-1]["bytes_total"]


# ------------------------------------------------------------------ decoupled aggregation
def test_decoupled_aggregation_compresses_its_messages():
    """Was: top_k left the parameters unchanged and the byte count wrong."""
    dec = {"aggregation": "decoupled", "rho": 0.5}
    dense = run(load_config(base(algorithm=dec)))
    top = run(load_config(base(algorithm=dec, compression={"name": "top_k", "ratio": 0.3})))
    assert max_diff(dense, top) > 1e-4
    k = round(0.3 * 6)  # per leaf: w (6 values) and b (1)
    per_msg = k * 8 + 1 * 8
    assert top.summary["message_bytes"] == per_msg
    assert top.metrics[-1]["bytes_total"] == 8 * 2 * 4 * per_msg  # ring: 2 per node, 4 rounds


@pytest.mark.parametrize(
    "extra, names",
    [
        ({"algorithm": {"gossip": "pairwise"}}, ("algorithm.gossip", "algorithm.name")),
        (
            {"topology": {"schedule": "one_peer_exponential"}},
            ("topology.schedule", "algorithm.name"),
        ),
    ],
    ids=["pairwise", "one_peer"],
)
def test_decoupled_aggregation_refuses_what_it_cannot_do(extra, names):
    """Was: pairwise gossip ignored, one-peer exponential a raw IndexError."""
    cfg = base(algorithm={"aggregation": "decoupled"})
    for section, keys in extra.items():
        cfg[section].update(keys)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert "\n" not in str(e.value) and all(n in str(e.value) for n in names)


# ------------------------------------------------------------------ devices
def test_learned_relations_on_two_devices_finish_and_match():
    """Was: graph_mtl with relation = "learned" and run.devices = 2 hung at 0 % CPU
    (batched LAPACK eigh on CPU devices waiting on each other's thread pools)."""
    script = r"""
import json, numpy as np
from p2p_fmtl import load_config, run
cfg = {"run": {"rounds": 2, "eval_every": 2}, "topology": {"name": "erdos_renyi", "n": 30},
       "data": {"name": "fedem_synthetic", "dim": 5, "n_test": 10},
       "algorithm": {"name": "graph_mtl", "relation": "learned", "batch_size": 32}}
one = run(load_config(cfg))
two = run(load_config(cfg, overrides={"run.devices": 2}))
print(json.dumps(max(float(np.max(np.abs(one.params[k] - two.params[k]))) for k in one.params)))
"""
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the learned weights come from an eigendecomposition of near-singular Gram matrices,
    # which amplifies the devices' different summation orders a little
    assert json.loads(proc.stdout.strip().splitlines()[-1]) < 1e-4


# ------------------------------------------------------------------ directed schedules
def _average(extra_faults, rounds):
    return {
        "run": {"rounds": rounds, "eval_every": rounds, "seed": 3},
        "topology": {"name": "ring", "n": 16, "schedule": "one_peer_exponential"},
        "algorithm": {"name": "average", "dim": 5},
        "faults": extra_faults,
    }


def test_one_peer_exponential_under_drops_runs_push_sum():
    """Was: each round's W only row stochastic, the network average drifted by 0.2."""
    cfg = load_config(_average({"node_drop": 0.2, "link_drop": 0.2}, 80))
    sim = Simulation(cfg)
    assert sim.exchange.name == "gossip" and sim.exchange.push_sum
    x0 = np.asarray(sim.state, np.float64)
    trace = sim.network_trace()
    for W in trace["W"]:  # column stochastic: what a node sends or keeps adds up to 1
        np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-6)
    assert any(np.abs(W.sum(axis=1) - 1).max() > 0.1 for W in trace["W"])  # rows are not
    sim.advance(cfg["run"]["rounds"])
    x1 = np.asarray(sim.state, np.float64)
    y = np.asarray(sim.carry.exchange, np.float64)
    np.testing.assert_allclose((y[:, None] * x1).sum(0), x0.sum(0), atol=1e-4)  # Σ y x kept
    np.testing.assert_allclose(y.sum(), 16.0, atol=1e-4)
    # and the nodes reach the true average of the starting values
    np.testing.assert_allclose(x1, np.broadcast_to(x0.mean(0), x1.shape), atol=1e-3)


def test_one_peer_exponential_without_drops_is_unchanged():
    """No losses: plain doubly stochastic ½(I + P) rounds, exact in log2 n rounds."""
    sim = Simulation(load_config(_average({}, 4)))
    assert not sim.exchange.push_sum
    x0 = np.asarray(sim.state, np.float64)
    sim.advance(4)
    np.testing.assert_allclose(
        np.asarray(sim.state), np.broadcast_to(x0.mean(0), x0.shape), atol=1e-5
    )


def test_sample_weighted_is_not_doubly_stochastic_by_design():
    """The FedEM server's weighted average keeps the sample-weighted mean, not the mean."""
    cfg = load_config(
        {
            "run": {"rounds": 1, "eval_every": 1},
            "topology": {"name": "complete", "n": 6, "mixing": "sample_weighted"},
            "data": dict(DATA),
            "algorithm": {"name": "dsgd", "batch_size": 16, "local_steps": 1},
        }
    )
    sim = Simulation(cfg)
    W = sim.network_trace()["W"][0]
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-6)
    assert np.abs(W.sum(axis=0) - 1).max() > 0.05
    with pytest.raises(ConfigError, match="sample_weighted.*faults.node_drop"):
        load_config(cfg.override({"faults.node_drop": 0.1}).raw)


# ------------------------------------------------------------------ multitask metrics
def test_multitask_reports_each_head_and_never_mixes_accuracy_with_error():
    cfg = {
        "run": {"rounds": 2, "eval_every": 2},
        "topology": {"name": "ring", "n": 6},
        "data": {"name": "digits_multitask"},
        "model": {"name": "mlp", "hidden": [8]},
        "algorithm": {"name": "dsgd", "batch_size": 32},
    }
    res = run(load_config(cfg))
    row = res.metrics[-1]
    assert "test_score" not in row and "test_acc" not in row
    assert res.summary["heads"] == {"class": "acc", "parity": "acc", "ink": "mse"}
    for head, metric in res.summary["heads"].items():
        nodes = [r for r in res.nodes if r["task"] == head]
        scores = np.array([r[f"test_{metric}"] for r in nodes])
        sizes = np.array([r["n_test"] for r in nodes])
        assert row[f"test_{head}_{metric}"] == pytest.approx(np.sum(scores * sizes) / sizes.sum())
        assert all(r[f"test_{'mse' if metric == 'acc' else 'acc'}"] is None for r in nodes)
    local = run(load_config(cfg, overrides={"algorithm.name": "local"}))
    want = np.mean(
        [
            (row["test_class_acc"] - local.summary["test_class_acc"])
            / local.summary["test_class_acc"],
            (row["test_parity_acc"] - local.summary["test_parity_acc"])
            / local.summary["test_parity_acc"],
            -(row["test_ink_mse"] - local.summary["test_ink_mse"]) / local.summary["test_ink_mse"],
        ]
    )
    got = delta_m(res.summary, local.summary, res.summary["heads"])
    assert math.isclose(got, 100 * want, rel_tol=1e-9)


# ------------------------------------------------------------------ the algorithm contract
def test_a_new_algorithm_joins_by_its_file_and_the_registry():
    """FedProx is one file in p2p_fmtl/algorithms/ and one registry entry: its declared
    needs choose its exchange, it joins the combination matrix, and with μ = 0 it is D-SGD
    step for step."""
    import combinations as matrix

    from p2p_fmtl.algorithms import ALGORITHMS, needs_of

    assert "fedprox" in ALGORITHMS and "fedprox" in matrix._algorithm_variants()
    assert needs_of(load_config(base("fedprox"))["algorithm"]).exchange == "average"
    dsgd = run(load_config(base("dsgd")))
    prox0 = run(load_config(base("fedprox", algorithm={"mu": 0.0})))
    for k in dsgd.params:
        np.testing.assert_array_equal(prox0.params[k], dsgd.params[k])
    assert prox0.metrics[-1]["bytes_total"] == dsgd.metrics[-1]["bytes_total"]
    # a strong pull keeps the local steps near the last gossiped model (round 1 of
    # gossip_every = 2 has local work only)
    local_moves = {}
    for mu in (0.0, 100.0):
        cfg = base(
            "fedprox",
            rounds=1,
            algorithm={"mu": mu, "lr": 0.005, "local_steps": 10, "gossip_every": 2},
        )
        sim = Simulation(load_config(cfg))
        w0 = np.asarray(sim.state.params["w"])
        sim.advance(1)
        local_moves[mu] = float(np.abs(np.asarray(sim.state.params["w"]) - w0).mean())
    assert local_moves[100.0] < 0.5 * local_moves[0.0]
