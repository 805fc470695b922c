"""EdgeGraph: the numpy-array graphs that the builders return from LARGE_GRAPH_NODES on.

The threshold is monkeypatched to small values, so every check runs on a few nodes
against networkx (the builders' own networkx path, or nx on the EdgeGraph's copy).
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

import topologies
from topologies import EdgeGraph, TopologyError, generators


@pytest.fixture
def large_from(monkeypatch):
    """Set LARGE_GRAPH_NODES; ``large_from(None)`` restores the networkx path everywhere."""

    def set_threshold(value: int | None) -> None:
        monkeypatch.setattr(generators, "LARGE_GRAPH_NODES", 10**18 if value is None else value)

    return set_threshold


def _both(large_from, name: str, n: int, **kw):
    large_from(None)
    G = topologies.build(name, n, **kw)
    large_from(4)
    E = topologies.build(name, n, **kw)
    assert isinstance(G, nx.Graph) and isinstance(E, EdgeGraph)
    return G, E


@pytest.mark.parametrize(
    ("name", "n", "kw"),
    [
        ("ring", 5, {}),
        ("ring", 8, {}),
        ("torus", 12, {}),
        ("torus", 12, {"rows": 2}),  # a side of length 2: the wrap edge is the same edge
        ("torus", 16, {}),
        ("grid", 12, {}),
        ("grid", 8, {"rows": 2}),
    ],
)
def test_deterministic_builders_give_the_networkx_edges(large_from, name, n, kw):
    G, E = _both(large_from, name, n, **kw)
    assert list(E.edges()) == sorted(tuple(sorted(e)) for e in G.edges())
    assert E.name == G.graph["name"] == E.graph["name"]
    assert E.number_of_nodes() == len(E) == G.number_of_nodes()
    assert E.number_of_edges() == G.number_of_edges()
    assert list(E.nodes) == list(G.nodes)
    assert dict(E.degree()) == dict(G.degree())
    np.testing.assert_array_equal(E.degrees(), topologies.degrees(G))
    u, v = topologies.edge_array(G)
    order = np.lexsort((v, u))
    np.testing.assert_array_equal(E.edge_array()[0], u[order])
    np.testing.assert_array_equal(E.edge_array()[1], v[order])
    assert nx.utils.graphs_equal(E.to_networkx(), nx.Graph(G))
    assert not E.is_directed() and not E.is_multigraph()


def test_below_the_threshold_the_builders_return_networkx(large_from):
    large_from(9)
    assert isinstance(topologies.build("ring", 8), nx.Graph)
    assert isinstance(topologies.build("ring", 9), EdgeGraph)
    assert isinstance(topologies.build("random_regular", 8, d=3, seed=0), nx.Graph)
    assert isinstance(topologies.build("erdos_renyi", 12, p=0.5, seed=0), nx.Graph)


@pytest.mark.parametrize("rule", ["metropolis", "max_degree", "uniform", "lazy_metropolis"])
@pytest.mark.parametrize(("name", "kw"), [("torus", {}), ("random_regular", {"d": 3, "seed": 1})])
def test_mixing_edges_equal_those_of_the_networkx_copy(large_from, rule, name, kw):
    large_from(4)
    E = topologies.build(name, 12, **kw)
    got = topologies.mixing_edges(E, rule)
    want = topologies.mixing_edges(E.to_networkx(), rule)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    W = topologies.mixing_matrix(E, rule)
    np.testing.assert_array_equal(W, topologies.mixing_matrix(E.to_networkx(), rule))
    topologies.validate_mixing(W, E)


def test_mixing_on_a_non_regular_edge_graph(large_from):
    large_from(4)
    E = topologies.build("grid", 6)
    with pytest.raises(TopologyError, match="'uniform' needs a regular graph"):
        topologies.mixing_edges(E, "uniform")
    W = topologies.mixing_matrix(E, "fmmc")
    np.testing.assert_allclose(W, topologies.mixing_matrix(E.to_networkx(), "fmmc"), atol=1e-9)
    bad = W.copy()
    bad[0, 5] = bad[5, 0] = 0.1  # nodes 0 and 5 are opposite corners of the 2 x 3 grid
    bad[0, 0] -= 0.1
    bad[5, 5] -= 0.1
    with pytest.raises(TopologyError, match="not neighbours"):
        topologies.validate_mixing(bad, E)


def test_describe_an_edge_graph(large_from):
    G, E = _both(large_from, "torus", 12)
    W = topologies.mixing_matrix(G)
    assert topologies.describe(E, W, "metropolis") == topologies.describe(G, W, "metropolis")


@pytest.mark.parametrize(("n", "d"), [(10, 3), (12, 4), (9, 4), (16, 5), (6, 2)])
def test_pairing_random_regular_is_a_connected_simple_regular_graph(large_from, n, d):
    large_from(4)
    E = topologies.build("random_regular", n, d=d, seed=3)
    assert isinstance(E, EdgeGraph)
    assert E.name == f"random_regular(n={n}, d={d}, seed=3)"
    assert (E.degrees() == d).all()
    u, v = E.edge_array()
    assert (u < v).all() and len(set(zip(u.tolist(), v.tolist(), strict=True))) == n * d // 2
    H = E.to_networkx()
    assert nx.is_connected(H) and all(deg == d for _, deg in H.degree())
    assert topologies.is_connected(E)


def test_pairing_random_regular_seeds(large_from):
    large_from(4)
    a = topologies.build("random_regular", 30, d=4, seed=0)
    b = topologies.build("random_regular", 30, d=4, seed=0)
    c = topologies.build("random_regular", 30, d=4, seed=1)
    assert list(a.edges()) == list(b.edges())
    assert list(a.edges()) != list(c.edges())


def test_pairing_random_regular_keeps_the_validation(large_from):
    large_from(4)
    with pytest.raises(TopologyError, match=r"^topology.d: got 3, expected an even d because n=9"):
        topologies.build("random_regular", 9, d=3, seed=0)
    with pytest.raises(TopologyError, match="never connected"):
        topologies.build("random_regular", 8, d=1, seed=0)
    with pytest.raises(TopologyError, match=r"disconnected in all 3 tries.*use d >= 3"):
        topologies.build("random_regular", 1000, d=2, seed=0, max_tries=3)  # cycles


def test_induced_subgraph_agrees_with_networkx_relabelling(large_from):
    G, E = _both(large_from, "torus", 16)
    keep = [15, 3, 2, 7, 8, 9, 3, 11]  # unsorted, with a repeat
    H = topologies.induced_subgraph(G, keep)
    F = topologies.induced_subgraph(E, keep)
    assert H.number_of_nodes() == F.number_of_nodes() == 7
    assert H.graph["name"] == F.name
    assert list(F.edges()) == sorted(tuple(sorted(e)) for e in H.edges())
    assert list(E.subgraph(np.array(keep)).edges()) == list(F.edges())
    assert nx.utils.graphs_equal(
        H, nx.convert_node_labels_to_integers(G.subgraph(keep), ordering="sorted")
    )


def test_is_connected_and_components():
    E = EdgeGraph(6, [0, 1, 3, 4], [1, 2, 4, 5])  # two paths
    assert not topologies.is_connected(E)
    assert topologies.number_connected_components(E) == 2
    assert not topologies.is_connected(EdgeGraph(0, [], []))
    assert topologies.is_connected(EdgeGraph(1, [], []))
    assert topologies.number_connected_components(nx.path_graph(3)) == 1
    with pytest.raises(TopologyError, match="disconnected"):
        topologies.validate_mixing(np.eye(6), E)
    with pytest.raises(TopologyError, match=r"the given graph is disconnected \(2 components\)"):
        topologies.from_graph(E)
    F = EdgeGraph(3, [0, 1], [1, 2], name="path")
    assert topologies.from_graph(F) is F


def test_edge_graph_normalises_its_input():
    E = EdgeGraph(5, [3, 1, 2, 2, 0, 4], [1, 3, 2, 4, 4, 0], name="x")
    assert list(E.edges()) == [(0, 4), (1, 3), (2, 4)]  # loop dropped, repeats kept once
    assert E.u.dtype == E.v.dtype == np.int64
    assert not E.u.flags.writeable
    with pytest.raises(TopologyError, match=r"EdgeGraph: node 5 is not in 0\.\.4"):
        EdgeGraph(5, [0], [5])
    with pytest.raises(TopologyError, match="equal lengths"):
        EdgeGraph(5, [0, 1], [2])


def test_helpers_on_networkx_graphs():
    G = nx.Graph([(2, 1), (0, 2)])
    u, v = topologies.edge_array(G)
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(0, 2), (1, 2)]
    np.testing.assert_array_equal(topologies.degrees(G), [dict(G.degree())[x] for x in G])
    assert topologies.as_networkx(G) is G
    assert topologies.is_connected(G) and not topologies.is_connected(nx.Graph())
    with pytest.raises(TopologyError, match="expected a networkx graph or a topologies.EdgeGraph"):
        topologies.degrees([(0, 1)])


def test_pairing_gives_up_with_a_clear_error_when_d_is_close_to_n(large_from):
    large_from(4)
    with pytest.raises(TopologyError, match=r"^topology.d: got 9, but the pairing model found no"):
        topologies.build("random_regular", 10, d=9, seed=0)  # K_10, the only 9-regular graph


def test_docstring_examples():
    import doctest

    import topologies.edgegraph

    result = doctest.testmod(topologies.edgegraph, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
