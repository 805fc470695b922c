"""A graph stored as two numpy edge arrays, for networks of ``10^5`` nodes and more.

A ``networkx.Graph`` keeps one Python dict per node and per edge endpoint: a
4-regular graph on ``10^6`` nodes takes 1-2 GB and minutes to build.
:class:`EdgeGraph` keeps the same simple undirected graph on nodes ``0 .. n-1`` as
two ``int64`` arrays ``u < v`` (about 32 bytes per edge) and answers the parts of
the ``networkx.Graph`` interface that the simulator uses, so callers that count
nodes and edges, iterate over edges or degrees, or take a subgraph work on
either type.  The builders of :mod:`topologies.generators` return one from
``LARGE_GRAPH_NODES`` nodes on.

The module-level helpers (:func:`edge_array`, :func:`degrees`, :func:`is_connected`,
:func:`induced_subgraph`, :func:`as_networkx`) take either type, using array code
for an :class:`EdgeGraph` and networkx for a ``networkx.Graph``.  scipy is imported
only inside :func:`is_connected`, on an :class:`EdgeGraph`: importing the package
stays light.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import networkx as nx
import numpy as np

from .errors import TopologyError, fmt

__all__ = [
    "EdgeGraph",
    "as_networkx",
    "degrees",
    "edge_array",
    "induced_subgraph",
    "is_connected",
    "number_connected_components",
]


_MAX_NODES = 3_037_000_499  # n * n fits in int64: edges are sorted by the key u * n + v


class EdgeGraph:
    """A simple undirected graph on nodes ``0 .. n-1`` stored as numpy edge arrays.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 0``.
    u, v : array_like of int
        Endpoints of the edges, each in ``0 .. n-1``, in any order and either
        orientation.  Self-loops are dropped and repeated edges kept once.
    name : str, optional
        Name of the graph, as ``networkx.Graph.name`` (default ``""``).

    Attributes
    ----------
    n : int
        Number of nodes.
    u, v : numpy.ndarray of int64
        One entry per edge, ``u < v``, sorted by ``(u, v)``; read-only.
    name : str
        Name of the graph (also ``graph["name"]``, as in networkx).

    Notes
    -----
    Building sorts the ``m`` edges: time ``O(m log m)``, memory ``O(n + m)``.
    :meth:`edges` and :meth:`degree` yield Python tuples, as networkx does; they
    are slow for millions of edges, where :meth:`edge_array` and :meth:`degrees`
    are the fast paths.  :meth:`subgraph` relabels the kept nodes to
    ``0 .. k-1`` (networkx keeps the labels).

    Examples
    --------
    >>> G = EdgeGraph(4, [1, 0, 3, 2, 2], [0, 3, 2, 1, 2], name="ring(n=4)")
    >>> G.number_of_nodes(), G.number_of_edges(), list(G.edges())
    (4, 4, [(0, 1), (0, 3), (1, 2), (2, 3)])
    >>> G.degrees().tolist()
    [2, 2, 2, 2]
    """

    __slots__ = ("n", "u", "v", "name")

    def __init__(self, n: int, u: Any, v: Any, name: str = "") -> None:
        if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 0:
            raise TopologyError(f"EdgeGraph: n: got {fmt(n)}, expected an integer >= 0")
        n = int(n)
        if n > _MAX_NODES:
            raise TopologyError(f"EdgeGraph: n: got {n}, expected at most {_MAX_NODES}")
        a = np.asarray(u, dtype=np.int64).ravel()
        b = np.asarray(v, dtype=np.int64).ravel()
        if a.shape != b.shape:
            raise TopologyError(
                f"EdgeGraph: u has {a.size} entries but v has {b.size}, expected equal lengths"
            )
        if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n):
            bad = np.concatenate([a, b])
            bad = bad[(bad < 0) | (bad >= n)][0]
            raise TopologyError(f"EdgeGraph: node {int(bad)} is not in 0..{n - 1}")
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        keep = lo != hi
        key = lo[keep] * n + hi[keep]
        del lo, hi, keep
        key.sort()  # by (u, v); faster than np.unique, which hashes first
        key = key[np.concatenate([[True], key[1:] != key[:-1]])] if key.size else key
        self.n = n
        self.u = key // n if n else key
        self.v = key % n if n else key
        self.u.flags.writeable = False
        self.v.flags.writeable = False
        self.name = str(name)

    # ------------------------------------------------------------ the networkx interface
    @property
    def graph(self) -> dict[str, str]:
        """``{"name": name}``, as ``networkx.Graph.graph`` after a builder."""
        return {"name": self.name}

    @property
    def nodes(self) -> range:
        """The nodes ``0 .. n-1``."""
        return range(self.n)

    def number_of_nodes(self) -> int:
        return self.n

    def number_of_edges(self) -> int:
        return int(self.u.size)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __contains__(self, node: object) -> bool:
        return isinstance(node, int | np.integer) and 0 <= int(node) < self.n  # type: ignore[arg-type]

    def edges(self) -> Iterator[tuple[int, int]]:
        """The edges ``(u, v)``, ``u < v``, as Python ints, sorted (slow for large graphs)."""
        return zip(self.u.tolist(), self.v.tolist(), strict=True)

    def degree(self) -> Iterator[tuple[int, int]]:
        """``(node, degree)`` pairs in node order, as Python ints (like ``G.degree()``)."""
        return zip(range(self.n), self.degrees().tolist(), strict=True)

    def is_directed(self) -> bool:
        return False

    def is_multigraph(self) -> bool:
        return False

    def subgraph(self, nodes: Iterable[int]) -> EdgeGraph:
        """The subgraph induced by ``nodes``, relabelled to ``0 .. k-1`` in sorted order.

        Unlike ``networkx.Graph.subgraph``, which keeps the labels, node ``i`` of the
        result is the ``i``-th smallest kept node.  See :func:`induced_subgraph`.
        """
        kept = _node_array(nodes, self.n)
        index = np.full(self.n, -1, dtype=np.int64)
        index[kept] = np.arange(kept.size)
        a, b = index[self.u], index[self.v]
        inside = (a >= 0) & (b >= 0)
        return EdgeGraph(int(kept.size), a[inside], b[inside], name=self.name)

    def to_networkx(self) -> nx.Graph:
        """The same graph as a ``networkx.Graph`` (nodes and edges in sorted order)."""
        G = nx.Graph(name=self.name)
        G.add_nodes_from(range(self.n))
        G.add_edges_from(self.edges())
        return G

    # ------------------------------------------------------------ fast array accessors
    def edge_array(self) -> tuple[np.ndarray, np.ndarray]:
        """The endpoint arrays ``(u, v)``: int64, ``u < v``, sorted by ``(u, v)``."""
        return self.u, self.v

    def degrees(self) -> np.ndarray:
        """Degree of each node, an int64 array of shape ``(n,)``."""
        return (
            np.bincount(self.u, minlength=self.n) + np.bincount(self.v, minlength=self.n)
        ).astype(np.int64)

    def __repr__(self) -> str:
        return f"EdgeGraph(name={self.name!r}, n={self.n}, edges={self.u.size})"


def _node_array(nodes: Iterable[int], n: int) -> np.ndarray:
    """Sorted distinct nodes of ``nodes`` that are in ``0 .. n-1`` (others are ignored,
    as ``networkx.Graph.subgraph`` ignores nodes not in the graph)."""
    if isinstance(nodes, np.ndarray):
        arr = nodes.astype(np.int64, copy=False).ravel()
    else:
        arr = np.fromiter((int(x) for x in nodes), dtype=np.int64)
    arr = np.unique(arr)
    return arr[(arr >= 0) & (arr < n)]


# --------------------------------------------------------------------------------------
# Helpers for either graph type
# --------------------------------------------------------------------------------------


def _check_graph(G: object, who: str) -> None:
    if not isinstance(G, EdgeGraph | nx.Graph):
        raise TopologyError(
            f"{who}: got {type(G).__name__}, expected a networkx graph or a topologies.EdgeGraph"
        )


def edge_array(G: nx.Graph | EdgeGraph) -> tuple[np.ndarray, np.ndarray]:
    """Return the edges of ``G`` as two int64 arrays ``u < v`` (self-loops dropped).

    For an :class:`EdgeGraph` these are its arrays, sorted by ``(u, v)``.  For a
    ``networkx.Graph`` on integer nodes they follow ``G.edges()`` order.

    Examples
    --------
    >>> u, v = edge_array(nx.Graph([(2, 1), (0, 2), (1, 1)]))
    >>> u.tolist(), v.tolist()
    ([1, 0], [2, 2])
    """
    _check_graph(G, "edge_array")
    if isinstance(G, EdgeGraph):
        return G.edge_array()
    m = G.number_of_edges()
    e = np.fromiter((x for edge in G.edges() for x in edge), dtype=np.int64, count=2 * m)
    e = e.reshape(m, 2)
    e = e[e[:, 0] != e[:, 1]]
    return np.minimum(e[:, 0], e[:, 1]), np.maximum(e[:, 0], e[:, 1])


def degrees(G: nx.Graph | EdgeGraph) -> np.ndarray:
    """Return the degree of each node of ``G`` in node order, as an int64 array.

    For a ``networkx.Graph`` these are the values of ``G.degree()`` (a self-loop
    counts twice there; an :class:`EdgeGraph` has none).
    """
    _check_graph(G, "degrees")
    if isinstance(G, EdgeGraph):
        return G.degrees()
    return np.fromiter((d for _, d in G.degree()), dtype=np.int64, count=len(G))


def number_connected_components(G: nx.Graph | EdgeGraph) -> int:
    """Return the number of connected components of ``G`` (0 for an empty graph)."""
    _check_graph(G, "number_connected_components")
    if not isinstance(G, EdgeGraph):
        return nx.number_connected_components(G) if len(G) else 0
    if G.n == 0:
        return 0
    import scipy.sparse
    import scipy.sparse.csgraph

    A = scipy.sparse.coo_matrix(
        (np.ones(G.u.size, dtype=np.int8), (G.u, G.v)), shape=(G.n, G.n)
    ).tocsr()
    k, _ = scipy.sparse.csgraph.connected_components(A, directed=False)
    return int(k)


def is_connected(G: nx.Graph | EdgeGraph) -> bool:
    """Return whether ``G`` is connected (False for a graph without nodes).

    An :class:`EdgeGraph` is checked with ``scipy.sparse.csgraph.connected_components``
    (time and memory ``O(n + m)``), a ``networkx.Graph`` with ``nx.is_connected``.
    """
    _check_graph(G, "is_connected")
    if not isinstance(G, EdgeGraph):
        return len(G) > 0 and nx.is_connected(G)
    return number_connected_components(G) == 1


def as_networkx(G: nx.Graph | EdgeGraph) -> nx.Graph:
    """Return ``G`` itself if it is a networkx graph, else :meth:`EdgeGraph.to_networkx`."""
    _check_graph(G, "as_networkx")
    return G.to_networkx() if isinstance(G, EdgeGraph) else G


def induced_subgraph(G: nx.Graph | EdgeGraph, nodes: Iterable[Any]) -> nx.Graph | EdgeGraph:
    """Return the subgraph of ``G`` induced by ``nodes``, relabelled to ``0 .. k-1``.

    Node ``i`` of the result is the ``i``-th smallest of the kept nodes; nodes
    not in ``G`` are ignored.  For a ``networkx.Graph`` this is
    ``nx.convert_node_labels_to_integers(G.subgraph(nodes), ordering="sorted")``
    (a new ``networkx.Graph``); for an :class:`EdgeGraph`, an :class:`EdgeGraph`
    with the same edges.

    Examples
    --------
    >>> G = EdgeGraph(5, [0, 1, 2, 3], [1, 2, 3, 4])
    >>> list(induced_subgraph(G, [4, 2, 3]).edges())
    [(0, 1), (1, 2)]
    """
    _check_graph(G, "induced_subgraph")
    if isinstance(G, EdgeGraph):
        return G.subgraph(nodes)
    return nx.convert_node_labels_to_integers(G.subgraph(nodes), ordering="sorted")
