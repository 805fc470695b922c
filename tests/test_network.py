"""Who trains and how they mix: held-out nodes, borrow matrix, server weighting."""

import networkx as nx
import numpy as np
import pytest

import topologies
from p2p_fmtl import ConfigError
from p2p_fmtl.network import borrow_edges, build_network, holdout_mask, training_degrees


def test_holdout_mask_from_fraction_and_list():
    m = holdout_mask(0.25, 20, seed=0)
    assert m.sum() == 5
    assert np.array_equal(m, holdout_mask(0.25, 20, seed=0))  # deterministic per seed
    assert not holdout_mask(0.0, 20, seed=0).any()
    assert holdout_mask(0.01, 20, seed=0).sum() == 1  # a positive fraction holds out >= 1
    assert np.flatnonzero(holdout_mask([3, 7], 10, seed=0)).tolist() == [3, 7]


@pytest.mark.parametrize(
    "value, message",
    [
        (1.0, r"got 1\.0, expected a fraction in \[0, 1\)"),
        (-0.1, "expected a fraction"),
        ([0, 10], r"expected node ids in \[0, 9\]"),
        ([1, 1], "must be distinct"),
        (True, "expected a fraction"),
        ("all", "expected a fraction"),
        (list(range(9)), "at least two nodes must train"),
    ],
)
def test_holdout_mistakes(value, message):
    with pytest.raises(ConfigError, match=message):
        holdout_mask(value, 10, seed=0)


def _W(G, rule, hold, n_train=None):
    return build_network(G, rule, hold, n_train).mixing.dense(G.number_of_nodes())


def test_training_mixing_is_the_rule_on_the_induced_subgraph():
    G = topologies.build("erdos_renyi", 12, p=0.5, seed=3)
    hold = np.zeros(12, bool)
    hold[[2, 8]] = True
    W = _W(G, "metropolis", hold)
    train = np.flatnonzero(~hold)
    H = nx.convert_node_labels_to_integers(G.subgraph(train.tolist()), ordering="sorted")
    np.testing.assert_allclose(W[np.ix_(train, train)], topologies.mixing_matrix(H))
    np.testing.assert_array_equal(W[2], np.eye(12)[2])
    np.testing.assert_allclose(W.sum(0), 1.0)
    np.testing.assert_allclose(W, W.T)
    deg = training_degrees(G, hold)
    assert deg[2] == deg[8] == 0
    assert deg[train].tolist() == [H.degree(i) for i in range(len(train))]
    net = build_network(G, "metropolis", hold, None)
    assert net.spectral_gap == pytest.approx(topologies.spectral_gap(W[np.ix_(train, train)]))
    full = _W(G, "metropolis", np.zeros(12, bool))
    np.testing.assert_allclose(full, topologies.mixing_matrix(G))


def test_holding_out_a_cut_vertex_is_refused():
    ring = topologies.build("ring", 6)
    with pytest.raises(ConfigError, match="disconnects the training graph"):
        build_network(ring, "metropolis", np.isin(np.arange(6), [0, 3]), None)


def test_borrow_edges_average_training_neighbours():
    G = topologies.build("ring", 6)
    hold = np.zeros(6, bool)
    hold[[0, 1]] = True
    B = borrow_edges(build_network(G, "metropolis", hold, None)).dense(6)
    assert B[0].tolist() == [0, 0, 0, 0, 0, 1]  # node 0's only training neighbour is 5
    assert B[1].tolist() == [0, 0, 1, 0, 0, 0]
    np.testing.assert_array_equal(B[2:], np.eye(6)[2:])
    path = nx.path_graph(4)
    with pytest.raises(ConfigError, match="no training neighbour"):
        borrow_edges(build_network(path, "metropolis", np.array([True, True, False, False]), None))
    star = topologies.build("star", 5)
    hold = np.array([False, True, False, False, False])
    assert borrow_edges(build_network(star, "metropolis", hold, None)).dense(5)[1, 0] == 1.0


def test_sample_weighted_rows_are_the_size_weighted_average():
    G = topologies.build("complete", 4)
    n = np.array([10, 30, 20, 40])
    W = _W(G, "sample_weighted", np.zeros(4, bool), n)
    np.testing.assert_allclose(W, np.tile(n / n.sum(), (4, 1)))
    with pytest.raises(ConfigError, match="needs topology.name = 'complete'"):
        _W(topologies.build("ring", 4), "sample_weighted", np.zeros(4, bool), n)


def test_edge_list_validation_for_large_graphs():
    from p2p_fmtl.network import Edges, check_doubly_stochastic

    s, r, w = topologies.mixing_edges(topologies.build("ring", 10))
    check_doubly_stochastic(Edges(s, r, w), 10)
    with pytest.raises(Exception, match="row 0 sums to"):
        check_doubly_stochastic(Edges(s, r, w * np.where(r == 0, 0.5, 1.0)), 10)
