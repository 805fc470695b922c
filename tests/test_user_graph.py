"""A researcher's own graph and mixing matrix, straight into ``assemble`` (and ``run``)."""

import inspect

import networkx as nx
import numpy as np
import pytest

import p2p_fmtl
import topologies
from p2p_fmtl import UserError, load_config
from p2p_fmtl.assemble import assemble

RAW = {
    "run": {"rounds": 2, "eval_every": 1},
    "topology": {"name": "ring", "n": 8},
    "data": {"name": "clustered_linear", "dim": 4, "n_test": 5},
    "algorithm": {"name": "dsgd", "batch_size": 8},
}
FORWARDS = "graph" in inspect.signature(p2p_fmtl.run).parameters


def _letters_ring(n=8):
    """The ring 0-1-...-7-0 with nodes 'a'..'h', inserted in reverse order (so only sorting
    the labels gives the builder's node order)."""
    G = nx.Graph()
    G.add_nodes_from(chr(ord("a") + i) for i in reversed(range(n)))
    G.add_edges_from((chr(ord("a") + i), chr(ord("a") + (i + 1) % n)) for i in range(n))
    return G


def _no_n():
    raw = {s: dict(b) for s, b in RAW.items()}
    del raw["topology"]["n"]
    return raw


def _same_weights(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(a.network.mixing, b.network.mixing, strict=True)
    )


def test_a_graph_with_string_labels_is_the_builders_graph():
    built = assemble(load_config(RAW))
    given = assemble(load_config(_no_n()), graph=_letters_ring())
    assert given.node_labels == list("abcdefgh") and built.node_labels is None
    assert given.cfg["topology"]["name"] == "given" and given.cfg["topology"]["n"] == 8
    assert sorted(given.graph.edges()) == sorted(built.graph.edges())
    assert _same_weights(given, built)
    assert given.network.spectral_gap == pytest.approx(built.network.spectral_gap)
    # the graph decides the size: another topology.n in the config is replaced, with a note
    assert assemble(load_config(RAW), graph=_letters_ring()).n == 8
    with pytest.warns(UserWarning, match=r"^topology\.n: 10 replaced by the given graph's 8"):
        other = load_config({**RAW, "topology": {"name": "ring", "n": 10}})
        assert assemble(other, graph=_letters_ring()).n == 8


def test_unsortable_labels_keep_insertion_order_and_bad_graphs_are_refused():
    G = nx.Graph()
    G.add_nodes_from([3, "x", (1, 2), 0.5])
    G.add_edges_from([(3, "x"), ("x", (1, 2)), ((1, 2), 0.5), (0.5, 3)])
    parts = assemble(
        load_config({**_no_n(), "data": {"name": "clustered_linear", "dim": 3}}), graph=G
    )
    assert parts.node_labels == [3, "x", (1, 2), 0.5]
    with pytest.raises(
        UserError, match=r"^graph: the given graph is disconnected \(2 components\)"
    ):
        assemble(load_config(_no_n()), graph=nx.Graph([(0, 1), (2, 3)]))
    with pytest.raises(UserError, match=r"^graph: got list, expected a networkx graph"):
        assemble(load_config(_no_n()), graph=[(0, 1)])


def test_a_given_w_equal_to_the_builders_gives_the_same_network():
    built = assemble(load_config(RAW))
    W = built.network.mixing.dense(8)
    given = assemble(load_config(RAW), mixing=W)
    assert given.cfg["topology"]["mixing"] == "given" and _same_weights(given, built)
    both = assemble(load_config(_no_n()), graph=_letters_ring(), mixing=W)
    assert _same_weights(both, built)
    rule = assemble(load_config(RAW), mixing="max_degree")  # a rule's name replaces the rule
    assert rule.cfg["topology"]["mixing"] == "max_degree"


def _bad(W, pattern, raw=RAW):
    with pytest.raises(UserError, match=pattern) as e:
        assemble(load_config(raw), mixing=W)
    assert "\n" not in str(e.value)


def test_bad_mixing_matrices_are_refused_naming_the_worst_violation():
    W = topologies.mixing_matrix(topologies.build("ring", 8), "metropolis")
    asym = W.copy()
    asym[0, 1] += 0.01
    asym[2, 3] += 0.1  # the worst asymmetry: named, not the first one
    asym[2, 2] -= 0.1
    asym[0, 0] -= 0.01
    _bad(
        asym,
        r"^mixing: entry \(2, 3\) is 0\.433333 but entry \(3, 2\) is 0\.333333, expected symmetric",
    )
    rows = W.copy()
    rows[4, 4] += 0.2
    rows[1, 1] += 0.05
    _bad(rows, r"^mixing: row 4 sums to 1\.2, expected 1 \(doubly stochastic\)")
    off = W.copy()
    off[0, 4] = off[4, 0] = 0.1  # 0 and 4 are not neighbours on the ring
    off[0, 0] -= 0.1
    off[4, 4] -= 0.1
    _bad(off, r"^mixing: entry \(0, 4\) is 0\.1, expected 0 because 0 and 4 are not neighbours")
    neg = W.copy()
    neg[0, 1] = neg[1, 0] = -0.2
    neg[0, 0] += W[0, 1] + 0.2
    neg[1, 1] += W[0, 1] + 0.2
    _bad(neg, r"^mixing: entry \(0, 1\) is -0\.2, expected >= 0")
    _bad(np.eye(4), r"^mixing: got shape \(4, 4\) for a graph with 8 nodes")
    _bad("0.5", r"^topology\.mixing: unknown '0\.5'")
    _bad([["a"]], r"^mixing: got list, expected a square numeric matrix")


def test_a_given_w_needs_a_static_graph_and_the_whole_network():
    W = topologies.mixing_matrix(topologies.build("ring", 8), "metropolis")
    raw = {**RAW, "topology": {**RAW["topology"], "schedule": "random_matching"}}
    _bad(W, r"^mixing: a given matrix is the W of the static graph.*'random_matching'", raw)
    raw = {**RAW, "data": {**RAW["data"], "holdout_nodes": [3]}}
    _bad(W, r"^mixing: a given matrix cannot hold out nodes", raw)
    raw = {**RAW, "faults": {"node_drop": 0.2}}
    _bad(
        W, r"^faults\.reweight: got 'rule'.*a given matrix has no rule; allowed: 'self', 'metr", raw
    )
    assemble(load_config({**RAW, "faults": {"node_drop": 0.2, "reweight": "self"}}), mixing=W)


@pytest.mark.skipif(not FORWARDS, reason="p2p_fmtl.run does not take graph= / mixing= yet")
def test_runs_on_a_given_graph_and_w_give_the_builders_numbers():
    built = p2p_fmtl.run(load_config(RAW))
    W = assemble(load_config(RAW)).network.mixing.dense(8)
    by_graph = p2p_fmtl.run(load_config(_no_n()), graph=_letters_ring())
    by_w = p2p_fmtl.run(load_config(RAW), mixing=W)
    key = next(k for k in built.summary if k.startswith("test_"))
    for other in (by_graph, by_w):
        assert other.summary[key] == built.summary[key]
        assert [r["train_loss"] for r in other.metrics] == [r["train_loss"] for r in built.metrics]
    assert by_graph.summary["node_labels"] == list("abcdefgh")
