"""Network realism: schedules, faults, stragglers, pairwise gossip, compression, ledger."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import p2p_fmtl
import topologies
from p2p_fmtl.aggregation import decouple
from p2p_fmtl.netsim import round_matrices
from p2p_fmtl.runner import Simulation


def average_cfg(rounds=50, n=16, topo="torus", dim=10, seed=0, **sections):
    cfg = {
        "run": {"rounds": rounds, "eval_every": max(rounds, 1), "seed": seed},
        "topology": {"name": topo, "n": n},
        "algorithm": {"name": "average", "dim": dim},
    }
    for k, v in sections.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


def initial_and_final(cfg):
    """Initial vectors (a 0-round run) and the final ones."""
    x0 = p2p_fmtl.run({**cfg, "run": {**cfg["run"], "rounds": 0}}).params["x"]
    x1 = p2p_fmtl.run(cfg).params["x"]
    return np.asarray(x0, np.float64), np.asarray(x1, np.float64)


def consensus(x):
    return float(np.mean(np.sum((x - x.mean(0)) ** 2, axis=1)))


# ----------------------------------------------------------------------------- W properties
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    node_drop=st.floats(0.0, 0.9),
    link_drop=st.floats(0.0, 0.9),
    churn=st.sampled_from([0.0, 0.2]),
    reweight=st.sampled_from(["rule", "metropolis", "self"]),
    schedule=st.sampled_from(["static", "random_matching", "resample"]),
    seed=st.integers(0, 1000),
)
def test_every_round_w_is_doubly_stochastic_and_zero_on_dead_parts(
    node_drop, link_drop, churn, reweight, schedule, seed
):
    faults = {"node_drop": node_drop, "link_drop": link_drop, "churn": churn}
    faults["reweight"] = reweight
    cfg = average_cfg(n=12, topo="erdos_renyi", faults=faults, seed=seed, cost={"enabled": True})
    cfg["topology"].update(p=0.4, schedule=schedule, mixing="max_degree")
    if reweight == "self" and schedule == "resample":  # no rule weights for drawn edges
        with pytest.raises(p2p_fmtl.ConfigError, match="faults.reweight = 'self'"):
            Simulation(cfg)
        return
    sim = Simulation(cfg)
    net = sim.inputs.net
    Ws, alive, edges = round_matrices(sim.process, sim.inputs.static, net, sim.active, 8, seed)
    u, v = np.asarray(net.u), np.asarray(net.v)
    static_W = topologies.mixing_matrix(sim.parts.graph, "max_degree")
    for W, a, e in zip(Ws, alive, edges, strict=True):
        assert np.all(W >= -1e-7)
        np.testing.assert_allclose(W, W.T, atol=1e-6)
        np.testing.assert_allclose(W.sum(0), 1.0, atol=1e-5)
        np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-5)
        if not sim.process.changing:  # the static graph, nothing lost: the rule's W
            np.testing.assert_allclose(W, static_W, atol=1e-6)
            continue
        off = W - np.diag(np.diag(W))
        assert np.all(off[~a] == 0) and np.all(off[:, ~a] == 0)  # dead nodes: diagonal only
        live = np.zeros_like(W, bool)
        live[u[e], v[e]] = live[v[e], u[e]] = True
        assert np.all(off[~live] == 0)  # dead or absent links carry nothing
        if node_drop == 0 and churn == 0:
            assert a.all()
        n_edges = int(np.count_nonzero(static_W - np.diag(np.diag(static_W))) // 2)
        if reweight == "rule" and schedule == "static" and e.sum() == n_edges:
            np.testing.assert_allclose(W, static_W, atol=1e-6)  # nothing lost: the rule's W


def test_zero_fault_rates_are_the_fault_free_run():
    """The network-process path with nothing to simulate equals the plain path."""
    base = {
        "run": {"rounds": 6, "eval_every": 3},
        "topology": {"name": "ring", "n": 8},
        "data": {"name": "fedem_synthetic", "dim": 10, "n_test": 50},
        "algorithm": {"name": "dsgd", "lr": 0.05, "batch_size": 16},
    }
    plain = p2p_fmtl.run(base)
    # cost accounting forces the network-process code path without changing the maths;
    # so does a straggler fraction of 1 with all of its work
    forced = p2p_fmtl.run({**base, "cost": {"enabled": True}})
    full_work = p2p_fmtl.run({**base, "faults": {"straggler": 1.0, "straggler_work": [1.0, 1.0]}})
    for other in (forced, full_work):
        for k in plain.params:
            np.testing.assert_allclose(other.params[k], plain.params[k], atol=1e-6)
        assert other.metrics[-1]["bytes_total"] == plain.metrics[-1]["bytes_total"]
    # and zero rates do not even leave the plain path
    zero = p2p_fmtl.run({**base, "faults": {"node_drop": 0.0, "link_drop": 0.0}})
    for k in plain.params:
        np.testing.assert_array_equal(zero.params[k], plain.params[k])


# ----------------------------------------------------------------------------- consensus
@pytest.mark.parametrize(
    "extra",
    [
        {"faults": {"link_drop": 0.3}},
        {"topology": {"schedule": "random_matching"}},
        {"topology": {"schedule": "one_peer_exponential"}},
    ],
    ids=["link_drop_0.3", "random_matching", "one_peer_exponential"],
)
def test_average_still_reaches_consensus(extra):
    cfg = average_cfg(rounds=300, **extra)
    x0, x1 = initial_and_final(cfg)
    assert consensus(x1) <= 1e-6 * consensus(x0)
    np.testing.assert_allclose(x1.mean(0), x0.mean(0), atol=1e-4)  # the true average


@pytest.mark.parametrize("k", [3, 4, 5])
def test_one_peer_exponential_is_exact_in_log2_n_rounds(k):
    n = 2**k
    cfg = average_cfg(rounds=k, n=n, topo="ring", topology={"schedule": "one_peer_exponential"})
    x0, x1 = initial_and_final(cfg)
    np.testing.assert_allclose(x1, np.broadcast_to(x0.mean(0), x1.shape), atol=1e-5)
    cfg["run"]["rounds"] = k - 1  # one round short is not exact
    _, x_short = initial_and_final(cfg)
    assert consensus(x_short) > 1e-3


def test_effective_gaps():
    one_peer = Simulation(
        average_cfg(n=16, topo="ring", topology={"schedule": "one_peer_exponential"})
    )
    assert one_peer.effective_spectral_gap() == pytest.approx(1.0, abs=1e-6)
    static = Simulation(average_cfg(n=16, cost={"enabled": True}))  # process path, fixed W
    assert static.effective_spectral_gap() == pytest.approx(static.network.spectral_gap, rel=1e-4)
    matching = Simulation(average_cfg(n=16, topology={"schedule": "random_matching"}))
    assert 0 < matching.effective_spectral_gap() < static.network.spectral_gap


def test_pairwise_gossip_keeps_the_sum_and_converges():
    cfg = average_cfg(rounds=400, algorithm={"gossip": "pairwise", "gossip_ticks": 4})
    x0, x1 = initial_and_final(cfg)
    np.testing.assert_allclose(x1.mean(0), x0.mean(0), atol=1e-5)
    assert consensus(x1) <= 1e-6 * consensus(x0)
    r = p2p_fmtl.run({**cfg, "run": {"rounds": 10, "eval_every": 10}})
    assert sum(row["messages_sent"] for row in r.nodes) == 2 * 4 * 10  # both ends, each tick


# ----------------------------------------------------------------------------- faults
def test_dead_and_churned_nodes_do_nothing():
    base = {
        "run": {"rounds": 5, "eval_every": 5},
        "topology": {"name": "ring", "n": 6},
        "data": {"name": "fedem_synthetic", "dim": 8, "n_test": 20},
        "algorithm": {"name": "dsgd", "lr": 0.1, "batch_size": 16},
    }
    init = p2p_fmtl.run({**base, "run": {"rounds": 0, "eval_every": 1}})
    for faults in ({"churn": 1.0, "churn_rounds": 100},):  # node_drop = 1 is refused
        r = p2p_fmtl.run({**base, "faults": faults})
        for k in init.params:
            np.testing.assert_array_equal(r.params[k], init.params[k])
        assert r.metrics[-1]["bytes_total"] == 0


def test_a_straggler_does_its_fraction_of_the_steps():
    base = {
        "run": {"rounds": 3, "eval_every": 3},
        "topology": {"name": "ring", "n": 6},
        "data": {"name": "fedem_synthetic", "dim": 8, "n_test": 20},
        "algorithm": {"name": "local", "lr": 0.1, "batch_size": 8, "local_steps": 4},
    }
    half = p2p_fmtl.run({**base, "faults": {"straggler": 1.0, "straggler_work": [0.5, 0.5]}})
    two = p2p_fmtl.run({**base, "algorithm": {**base["algorithm"], "local_steps": 2}})
    for k in two.params:
        np.testing.assert_allclose(half.params[k], two.params[k], atol=1e-6)


# ----------------------------------------------------------------------------- compression
def test_choco_converges_to_the_average_and_plain_compression_does_not():
    comp = {"name": "top_k", "ratio": 0.1}
    choco = average_cfg(rounds=600, dim=50, compression={**comp, "gamma": 0.2})
    x0, x1 = initial_and_final(choco)
    assert consensus(x1) <= 1e-6 * consensus(x0)
    np.testing.assert_allclose(x1.mean(0), x0.mean(0), atol=1e-4)
    plain = average_cfg(rounds=600, dim=50, compression={**comp, "method": "plain"})
    _, xp = initial_and_final(plain)
    # plain compressed gossip agrees on a value, but not on the average
    assert np.abs(xp.mean(0) - x0.mean(0)).max() > 0.05


def test_ledger_equals_the_analytic_count():
    n, rounds, d = 6, 7, 50
    # per message: none d·4; top_k k·(4+4); random_k k·4 + 4 (seed); qsgd 4 + ⌈d·4/8⌉
    # (levels 7: 3 bits + sign); sign 4 + ⌈d/8⌉; float16 halves the values
    k = 5
    expected = {
        ("none", "float32"): d * 4,
        ("top_k", "float32"): k * 8,
        ("random_k", "float32"): k * 4 + 4,
        ("qsgd", "float32"): 4 + math.ceil(d * 4 / 8),
        ("sign", "float32"): 4 + math.ceil(d / 8),
        ("none", "float16"): d * 2,
        ("top_k", "bfloat16"): k * 6,
    }
    for (name, dtype), per_msg in expected.items():
        comp = {"name": name, "ratio": 0.1, "levels": 7, "dtype": dtype}
        cfg = average_cfg(rounds=rounds, n=n, topo="ring", dim=d, compression=comp)
        r = p2p_fmtl.run(cfg)
        assert r.summary["message_bytes"] == per_msg, name
        assert r.metrics[-1]["bytes_total"] == n * 2 * rounds * per_msg, name
        assert all(row["bytes_sent"] == 2 * rounds * per_msg for row in r.nodes)


def test_gossip_every_k_rounds_sends_every_k_rounds():
    cfg = average_cfg(rounds=12, n=6, topo="ring", dim=5, algorithm={"gossip_every": 3})
    r = p2p_fmtl.run(cfg)
    assert r.metrics[-1]["bytes_total"] == 6 * 2 * 4 * 5 * 4  # 4 gossip rounds of 12


def test_simulated_time_of_a_communication_round():
    cost = {"enabled": True, "latency_s": 0.02, "bandwidth_bytes_per_s": 1000.0}
    r = p2p_fmtl.run(average_cfg(rounds=10, n=6, topo="ring", dim=5, cost=cost))
    # every node sends 2 messages of 20 bytes each round: 2·20/1000 + 0.02 s
    assert r.metrics[-1]["sim_time_s"] == pytest.approx(10 * (0.04 + 0.02), rel=1e-5)


def test_simulated_time_charges_a_stragglers_mean_work():
    """No messages (local training): a round lasts max_i f · n_i · compute_s_per_sample,
    the mean of a straggler's stochastically rounded steps (f · T of T)."""
    cfg = {
        "run": {"rounds": 4, "eval_every": 4},
        "topology": {"name": "ring", "n": 6},
        "data": {"name": "fedem_synthetic", "dim": 5, "n_test": 20},
        "algorithm": {"name": "local", "lr": 0.1, "batch_size": 8, "local_epochs": 1},
        "faults": {"straggler": 1.0, "straggler_work": [0.3, 0.3]},
        "cost": {"enabled": True, "compute_s_per_sample": 1e-3},
    }
    r = p2p_fmtl.run(cfg)
    longest = max(row["n_train"] for row in r.nodes)
    assert r.metrics[-1]["sim_time_s"] == pytest.approx(4 * 0.3 * longest * 1e-3, abs=1e-6)


# ----------------------------------------------------------------------------- decoupled
def test_decouple_matches_numpy():
    rng = np.random.default_rng(0)
    old, new = rng.normal(size=20), rng.normal(size=20)
    got = np.asarray(decouple({"w": old}, {"w": new}, 0.25)["w"])
    delta = new - old
    keep = np.argsort(-np.abs(delta))[:5]
    sparse = np.zeros(20)
    sparse[keep] = delta[keep]
    want = old + sparse * np.linalg.norm(delta) / np.linalg.norm(sparse)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_decoupled_aggregation_with_rho_one_is_dsgd():
    base = {
        "run": {"rounds": 5, "eval_every": 5},
        "topology": {"name": "ring", "n": 8},
        "data": {"name": "fedem_synthetic", "dim": 10, "n_test": 40},
        "algorithm": {"name": "dsgd", "lr": 0.05, "batch_size": 16},
    }
    plain = p2p_fmtl.run(base)
    dec = p2p_fmtl.run(
        {**base, "algorithm": {**base["algorithm"], "aggregation": "decoupled", "rho": 1.0}}
    )
    for k in plain.params:
        np.testing.assert_allclose(dec.params[k], plain.params[k], atol=1e-5)
    sparse = p2p_fmtl.run(
        {**base, "algorithm": {**base["algorithm"], "aggregation": "decoupled", "rho": 0.1}}
    )
    assert not np.allclose(
        sparse.params["dense/w"] if "dense/w" in sparse.params else list(sparse.params.values())[0],
        list(plain.params.values())[0],
    )
