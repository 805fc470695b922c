"""Graph builders for gossip topologies.

Every builder has the signature ``f(n, *, <params>, seed=None) -> nx.Graph``
and returns an undirected simple graph whose nodes are the integers
``0 .. n-1`` (in that order), without self-loops, and connected.  From
:data:`LARGE_GRAPH_NODES` nodes on, ``ring``, ``torus``, ``grid`` and
``random_regular`` return a :class:`~topologies.edgegraph.EdgeGraph` instead (the
same kind of graph as numpy edge arrays, built without networkx): a networkx graph
of ``10^6`` nodes takes gigabytes and minutes.  A builder
that cannot produce a connected graph raises :class:`TopologyError`.
Deterministic builders accept ``seed`` too and ignore it, so that all
builders can be called the same way through :func:`build`.

Random builders derive the seeds of successive tries deterministically from
``seed``: the same ``seed`` always gives the same graph.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import networkx as nx
import numpy as np

from .edgegraph import EdgeGraph, is_connected, number_connected_components
from .errors import TopologyError, fmt, unknown_key, unknown_name

__all__ = [
    "BUILDERS",
    "LARGE_GRAPH_NODES",
    "barabasi_albert",
    "build",
    "builder_params",
    "complete",
    "edgelist",
    "erdos_renyi",
    "exponential",
    "from_graph",
    "grid",
    "hypercube",
    "planted_partition",
    "random_geometric",
    "random_regular",
    "ring",
    "small_world",
    "star",
    "torus",
    "two_cliques",
]

LARGE_GRAPH_NODES = 100_000
"""From this many nodes on, ``ring``, ``torus``, ``grid`` and ``random_regular`` return an
:class:`~topologies.edgegraph.EdgeGraph` built with numpy (below it, the networkx graphs,
unchanged)."""

# --------------------------------------------------------------------------------------
# Validation helpers (shared by the builders and by `build`)
# --------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _check_int(
    key: str, value: object, lo: int | None = None, hi: int | None = None, what: str = ""
) -> int:
    """Return ``value`` as an ``int`` if it is an integer in ``[lo, hi]``."""
    if _is_int(value):
        v = int(value)  # type: ignore[arg-type]
        if (lo is None or v >= lo) and (hi is None or v <= hi):
            return v
    if what:
        expected = what
    elif lo is not None and hi is not None:
        expected = f"an integer with {lo} <= {key.rsplit('.', 1)[-1]} <= {hi}"
    elif lo is not None:
        expected = f"an integer >= {lo}"
    elif hi is not None:
        expected = f"an integer <= {hi}"
    else:
        expected = "an integer"
    raise TopologyError(f"{key}: got {fmt(value)}, expected {expected}")


def _check_n(n: object, name: str, minimum: int = 2) -> int:
    return _check_int("topology.n", n, lo=minimum, what=f"an integer >= {minimum} for {name!r}")


def _check_probability(key: str, value: object, *, allow_zero: bool = False) -> float:
    interval = "[0, 1]" if allow_zero else "(0, 1]"
    if _is_real(value):
        v = float(value)  # type: ignore[arg-type]
        if math.isfinite(v) and (v >= 0 if allow_zero else v > 0) and v <= 1:
            return v
    raise TopologyError(f"{key}: got {fmt(value)}, expected a probability in {interval}")


def _check_positive(key: str, value: object) -> float:
    if _is_real(value):
        v = float(value)  # type: ignore[arg-type]
        if math.isfinite(v) and v > 0:
            return v
    raise TopologyError(f"{key}: got {fmt(value)}, expected a finite number > 0")


def _check_seed(seed: object) -> int | None:
    if seed is None:
        return None
    return _check_int("topology.seed", seed, lo=0, what="a non-negative integer or None")


def _try_seeds(seed: int | None, tries: int) -> Iterator[int]:
    """Seeds of successive tries: ``seed`` itself first, then seeds derived from it (drawn
    as needed, in blocks: a huge ``max_tries`` costs nothing up front)."""
    rng = np.random.default_rng(seed)
    if seed is not None:
        yield seed
        tries -= 1
    while tries > 0:
        block = min(tries, 1024)
        yield from (int(s) for s in rng.integers(0, 2**32, size=block, dtype=np.uint64))
        tries -= block


def _finish(G: nx.Graph, name: str) -> nx.Graph:
    """Return ``G`` with nodes in sorted order (copying only if needed), and check it.

    Drops self-loops and raises :class:`TopologyError` if the result is disconnected.
    """
    if type(G) is nx.Graph and list(G) == list(range(len(G))):
        H = G  # already in order: skip the copy (matters for n ~ 1e5)
        H.remove_edges_from(list(nx.selfloop_edges(H)))
        H.graph = {"name": name}
    else:
        H = nx.Graph(name=name)
        H.add_nodes_from((v, G.nodes[v]) for v in sorted(G.nodes))
        H.add_edges_from(sorted((min(u, v), max(u, v)) for u, v in G.edges() if u != v))
    if H.number_of_nodes() == 0 or not nx.is_connected(H):
        k = nx.number_connected_components(H)
        raise TopologyError(f"topology: {name} is disconnected ({k} components)")
    return H


def _finish_edges(G: EdgeGraph) -> EdgeGraph:
    """Return ``G`` if it is connected, else raise :class:`TopologyError` (as :func:`_finish`)."""
    k = number_connected_components(G)
    if k != 1:
        raise TopologyError(f"topology: {G.name} is disconnected ({k} components)")
    return G


def _factor(n: int, rows: object, name: str) -> tuple[int, int]:
    """Pick ``rows x cols = n`` with both sides >= 2 (largest rows <= sqrt(n) by default)."""
    if rows is None:
        r = max((d for d in range(2, math.isqrt(n) + 1) if n % d == 0), default=None)
        if r is None:
            why = "it is prime" if n >= 2 else "it is too small"
            raise TopologyError(
                f"topology.n: got {n}, expected a number of nodes that factors as rows x cols "
                f"with both sides >= 2 for {name!r} ({why}; e.g. 4, 6, 8, 9)"
            )
        return r, n // r
    r = _check_int("topology.rows", rows, lo=2)
    if n % r != 0 or n // r < 2:
        divisors = [d for d in range(2, n // 2 + 1) if n % d == 0]
        allowed = ", ".join(map(str, divisors)) if divisors else "none"
        raise TopologyError(
            f"topology.rows: got {r}, expected a divisor of n={n} that leaves cols >= 2 "
            f"(allowed: {allowed})"
        )
    return r, n // r


# --------------------------------------------------------------------------------------
# Deterministic builders
# --------------------------------------------------------------------------------------


def ring(n: int, *, seed: int | None = None) -> nx.Graph | EdgeGraph:
    """Return the ring (cycle) on ``n`` nodes: ``i ~ (i + 1) mod n``.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 2``.  ``n = 2`` gives a single edge (the cycle
        on two nodes collapses to one edge in a simple graph).
    seed : int or None, optional
        Ignored; accepted so that all builders share one signature.

    Returns
    -------
    networkx.Graph or EdgeGraph
        The 2-regular cycle ``C_n`` on nodes ``0 .. n-1`` (1-regular for ``n = 2``);
        an :class:`~topologies.edgegraph.EdgeGraph` with the same edges when
        ``n >= LARGE_GRAPH_NODES``.

    Notes
    -----
    Time and memory ``O(n)``.

    Examples
    --------
    >>> G = ring(5)
    >>> sorted(G.edges())
    [(0, 1), (0, 4), (1, 2), (2, 3), (3, 4)]
    """
    n = _check_n(n, "ring")
    _check_seed(seed)
    if n >= LARGE_GRAPH_NODES:
        nodes = np.arange(n, dtype=np.int64)
        return _finish_edges(EdgeGraph(n, nodes, (nodes + 1) % n, name=f"ring(n={n})"))
    return _finish(nx.cycle_graph(n), f"ring(n={n})")


def _lattice(n: int, rows: int | None, periodic: bool, name: str) -> nx.Graph | EdgeGraph:
    r, c = _factor(n, rows, name)
    if n >= LARGE_GRAPH_NODES:
        idx = np.arange(n, dtype=np.int64).reshape(r, c)  # node (i, j) is i * c + j
        us, vs = [idx[:, :-1], idx[:-1, :]], [idx[:, 1:], idx[1:, :]]
        if periodic:  # a side of length 2 repeats an edge, which EdgeGraph keeps once
            us += [idx[:, -1], idx[-1, :]]
            vs += [idx[:, 0], idx[0, :]]
        u = np.concatenate([a.ravel() for a in us])
        v = np.concatenate([b.ravel() for b in vs])
        return _finish_edges(EdgeGraph(n, u, v, name=f"{name}(n={n}, rows={r}, cols={c})"))
    G = nx.grid_2d_graph(r, c, periodic=periodic)
    G = nx.relabel_nodes(G, {(i, j): i * c + j for i, j in G.nodes})
    return _finish(G, f"{name}(n={n}, rows={r}, cols={c})")


def torus(n: int, *, rows: int | None = None, seed: int | None = None) -> nx.Graph | EdgeGraph:
    """Return the 2-D periodic grid (torus) with ``rows x cols = n`` nodes.

    Node ``(i, j)`` of the ``rows x cols`` grid is node ``i * cols + j`` (row-major);
    it is joined to ``(i ± 1 mod rows, j)`` and ``(i, j ± 1 mod cols)``.

    Parameters
    ----------
    n : int
        Number of nodes; must factor as ``rows x cols`` with both sides ``>= 2``.
    rows : int or None, optional
        Number of rows, a divisor of ``n`` with ``2 <= rows <= n / 2``.  ``None``
        (default) picks the largest divisor of ``n`` that is ``<= sqrt(n)``, the
        most square torus.
    seed : int or None, optional
        Ignored; accepted so that all builders share one signature.

    Returns
    -------
    networkx.Graph or EdgeGraph
        The torus; 4-regular when both sides are ``>= 3`` (a side of length 2
        contributes one neighbour instead of two).  An
        :class:`~topologies.edgegraph.EdgeGraph` with the same edges when
        ``n >= LARGE_GRAPH_NODES``.

    Notes
    -----
    Time and memory ``O(n)``.  Built with ``nx.grid_2d_graph(periodic=True)`` below
    ``LARGE_GRAPH_NODES``, with numpy index arithmetic from there on.

    Examples
    --------
    >>> G = torus(12)
    >>> G.graph["name"], sorted(G[0])
    ('torus(n=12, rows=3, cols=4)', [1, 3, 4, 8])
    """
    n = _check_n(n, "torus", minimum=4)
    _check_seed(seed)
    return _lattice(n, rows, True, "torus")


def grid(n: int, *, rows: int | None = None, seed: int | None = None) -> nx.Graph | EdgeGraph:
    """Return the 2-D (non-periodic) grid with ``rows x cols = n`` nodes.

    Node ``(i, j)`` is node ``i * cols + j`` (row-major); it is joined to
    ``(i ± 1, j)`` and ``(i, j ± 1)`` where those exist.

    Parameters
    ----------
    n : int
        Number of nodes; must factor as ``rows x cols`` with both sides ``>= 2``.
    rows : int or None, optional
        Number of rows, a divisor of ``n`` with ``2 <= rows <= n / 2``.  ``None``
        (default) picks the largest divisor of ``n`` that is ``<= sqrt(n)``.
    seed : int or None, optional
        Ignored; accepted so that all builders share one signature.

    Returns
    -------
    networkx.Graph or EdgeGraph
        The grid graph; degrees 2 (corners), 3 (sides) and 4 (inside).  An
        :class:`~topologies.edgegraph.EdgeGraph` with the same edges when
        ``n >= LARGE_GRAPH_NODES``.

    Notes
    -----
    Time and memory ``O(n)``.

    Examples
    --------
    >>> G = grid(6)
    >>> sorted(G.edges())
    [(0, 1), (0, 3), (1, 2), (1, 4), (2, 5), (3, 4), (4, 5)]
    """
    n = _check_n(n, "grid", minimum=4)
    _check_seed(seed)
    return _lattice(n, rows, False, "grid")


def complete(n: int, *, seed: int | None = None) -> nx.Graph:
    """Return the complete graph ``K_n``: every pair of nodes is joined.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 2``.
    seed : int or None, optional
        Ignored; accepted so that all builders share one signature.

    Returns
    -------
    networkx.Graph
        ``K_n``, ``(n - 1)``-regular with ``n (n - 1) / 2`` edges.

    Notes
    -----
    Time and memory ``O(n^2)``.

    Examples
    --------
    >>> complete(4).number_of_edges()
    6
    """
    n = _check_n(n, "complete")
    _check_seed(seed)
    return _finish(nx.complete_graph(n), f"complete(n={n})")


def star(n: int, *, seed: int | None = None) -> nx.Graph:
    """Return the star on ``n`` nodes: node 0 (the hub) is joined to every other node.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 2`` (the hub and ``n - 1`` leaves).
    seed : int or None, optional
        Ignored; accepted so that all builders share one signature.

    Returns
    -------
    networkx.Graph
        The star ``K_{1, n-1}`` with hub 0.

    Notes
    -----
    Time and memory ``O(n)``.

    Examples
    --------
    >>> sorted(star(4).edges())
    [(0, 1), (0, 2), (0, 3)]
    """
    n = _check_n(n, "star")
    _check_seed(seed)
    return _finish(nx.star_graph(n - 1), f"star(n={n})")


def hypercube(n: int, *, seed: int | None = None) -> nx.Graph:
    """Return the hypercube on ``n = 2^d`` nodes: ``i ~ i XOR 2^k`` for ``k < d``.

    Node ``i`` is the vertex whose bit string is the binary expansion of ``i``;
    two nodes are joined when their bit strings differ in exactly one bit.

    Parameters
    ----------
    n : int
        Number of nodes, a power of two ``>= 2``.
    seed : int or None, optional
        Ignored; accepted so that all builders share one signature.

    Returns
    -------
    networkx.Graph
        The ``d``-dimensional hypercube ``Q_d``, ``d``-regular with ``n d / 2`` edges.

    Notes
    -----
    Time and memory ``O(n log n)``.

    Examples
    --------
    >>> sorted(hypercube(8)[5])
    [1, 4, 7]
    """
    n = _check_n(n, "hypercube")
    if n & (n - 1):
        lo = 1 << (n.bit_length() - 1)
        raise TopologyError(
            f"topology.n: got {n}, expected a power of two >= 2 for 'hypercube' "
            f"(nearest: {lo} or {2 * lo})"
        )
    _check_seed(seed)
    d = n.bit_length() - 1
    nodes = np.arange(n)
    G = nx.Graph()
    G.add_nodes_from(range(n))
    for k in range(d):
        low = nodes[(nodes >> k) & 1 == 0]
        G.add_edges_from(zip(low.tolist(), (low | (1 << k)).tolist(), strict=True))
    return _finish(G, f"hypercube(n={n}, d={d})")


def exponential(n: int, *, seed: int | None = None) -> nx.Graph:
    """Return the static exponential graph: ``i ~ (i ± 2^k) mod n``, ``0 <= k <= ⌊log2(n-1)⌋``.

    The undirected version of the exponential graph of Ying et al. (2021),
    "Exponential Graph is Provably Efficient for Decentralized Deep Training".

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 2``.
    seed : int or None, optional
        Ignored; accepted so that all builders share one signature.

    Returns
    -------
    networkx.Graph
        A circulant graph with ``O(log n)`` neighbours per node (at most
        ``2 (⌊log2(n-1)⌋ + 1)``; fewer when ``i + 2^k`` and ``i - 2^k`` coincide).

    Notes
    -----
    Time and memory ``O(n log n)``.

    Examples
    --------
    >>> sorted(exponential(8)[0])
    [1, 2, 4, 6, 7]
    """
    n = _check_n(n, "exponential")
    _check_seed(seed)
    G = nx.Graph()
    G.add_nodes_from(range(n))
    nodes = np.arange(n)
    for k in range((n - 1).bit_length()):  # k = 0 .. floor(log2(n - 1))
        G.add_edges_from(zip(nodes.tolist(), ((nodes + (1 << k)) % n).tolist(), strict=True))
    return _finish(G, f"exponential(n={n})")


def two_cliques(n: int, *, bridges: int = 1, seed: int | None = None) -> nx.Graph:
    """Return two cliques of sizes ``⌊n/2⌋`` and ``⌈n/2⌉`` joined by ``bridges`` edges.

    Nodes ``0 .. a-1`` form the first clique and ``a .. n-1`` the second, with
    ``a = ⌊n/2⌋`` and ``b = ⌈n/2⌉``.  Bridge ``j`` (``0 <= j < bridges``) joins
    node ``i = j mod a`` to node ``a + (i + ⌊j / a⌋) mod b``, so bridges spread
    over distinct nodes before any node gets a second one.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 2``.
    bridges : int, optional
        Number of edges between the cliques, ``1 <= bridges <= a * b`` (default 1).
    seed : int or None, optional
        Ignored; accepted so that all builders share one signature.

    Returns
    -------
    networkx.Graph
        A graph with a bottleneck: a small spectral gap when ``bridges`` is small.

    Notes
    -----
    Time and memory ``O(n^2)``.

    Examples
    --------
    >>> G = two_cliques(6, bridges=2)
    >>> sorted(e for e in G.edges() if e[0] < 3 <= e[1])
    [(0, 3), (1, 4)]
    """
    n = _check_n(n, "two_cliques")
    a, b = n // 2, n - n // 2
    bridges = _check_int("topology.bridges", bridges, lo=1, hi=a * b)
    _check_seed(seed)
    G = nx.complete_graph(a)
    G.add_edges_from((a + i, a + j) for i in range(b) for j in range(i + 1, b))
    G.add_nodes_from(range(a, n))
    for j in range(bridges):
        i = j % a
        G.add_edge(i, a + (i + j // a) % b)
    return _finish(G, f"two_cliques(n={n}, bridges={bridges})")


# --------------------------------------------------------------------------------------
# Random builders
# --------------------------------------------------------------------------------------


def erdos_renyi(
    n: int, *, p: float = 0.5, seed: int | None = None, max_tries: int = 100
) -> nx.Graph:
    """Return a connected Erdős–Rényi graph ``G(n, p)``.

    Each of the ``n (n - 1) / 2`` possible edges is present independently with
    probability ``p``.  The graph is resampled (with seeds derived from ``seed``)
    until it is connected.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 2``.
    p : float, optional
        Edge probability in ``(0, 1]`` (default 0.5).  ``G(n, p)`` is connected
        with high probability only above the threshold ``ln(n) / n``.
    seed : int or None, optional
        Seed of the random draws; the same seed gives the same graph.
    max_tries : int, optional
        Number of samples to draw before giving up (default 100).

    Returns
    -------
    networkx.Graph
        The first connected sample.

    Raises
    ------
    TopologyError
        If no sample out of ``max_tries`` is connected.

    Notes
    -----
    Expected time ``O(n + m)`` per try (``nx.fast_gnp_random_graph``), with
    ``m ≈ p n (n - 1) / 2`` edges; memory ``O(n + m)``.

    Examples
    --------
    >>> G = erdos_renyi(20, p=0.3, seed=1)
    >>> G.number_of_nodes(), nx.is_connected(G)
    (20, True)
    """
    n = _check_n(n, "erdos_renyi")
    p = _check_probability("topology.p", p)
    seed = _check_seed(seed)
    max_tries = _check_int("topology.max_tries", max_tries, lo=1)
    for s in _try_seeds(seed, max_tries):
        # nx.gnp_random_graph is nx.binomial_graph, the call of the reference FedEM code:
        # for n <= 2000 the first try with a given seed is the reference's graph.
        gnp = nx.gnp_random_graph if n <= 2000 else nx.fast_gnp_random_graph
        G = gnp(n, p, seed=s)
        if nx.is_connected(G):
            return _finish(G, f"erdos_renyi(n={n}, p={p:g}, seed={seed})")
    raise TopologyError(
        f"topology.p: got {p:g}, but G(n={n}, p) was disconnected in all {max_tries} tries "
        f"(seed={seed}); use a larger p, above the connectivity threshold ln(n)/n = "
        f"{math.log(n) / n:.4g}"
    )


_PAIRING_ROUNDS = 1000
"""Re-pairing rounds of :func:`_pairing_regular` before it gives up."""


def _pairing_conflicts(pairs: np.ndarray, n: int) -> np.ndarray:
    """Indices of the rows of ``pairs`` that are self-loops or one of several copies of an edge."""
    lo = pairs.min(axis=1)
    hi = pairs.max(axis=1)
    key = lo * n + hi
    del lo
    ordered = np.sort(key)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])  # few: O(d^2) expected
    del ordered
    return np.flatnonzero((pairs[:, 0] == pairs[:, 1]) | np.isin(key, repeated))


def _pairing_regular(n: int, d: int, rng: np.random.Generator) -> np.ndarray | None:
    """Pair ``d`` stubs per node into the edges of a simple ``d``-regular graph.

    The ``n d`` stubs are shuffled and paired consecutively (the configuration model).
    Each round takes the conflicting pairs (self-loops, all copies of a repeated edge)
    and as many other pairs chosen at random, shuffles their stubs and pairs them
    again, until no conflict is left.  Returns the ``(n d / 2, 2)`` pairs, or ``None`` after
    :data:`_PAIRING_ROUNDS` rounds.
    """
    pairs = np.repeat(np.arange(n, dtype=np.int64), d)
    rng.shuffle(pairs)
    pairs = pairs.reshape(-1, 2)
    m = len(pairs)
    for _ in range(_PAIRING_ROUNDS):
        bad = _pairing_conflicts(pairs, n)
        if bad.size == 0:
            return pairs
        ok = np.ones(m, dtype=bool)
        ok[bad] = False
        good = np.flatnonzero(ok)
        extra = good[rng.choice(good.size, size=min(bad.size, good.size), replace=False)]
        redo = np.concatenate([bad, extra])
        stubs = pairs[redo].ravel()
        rng.shuffle(stubs)
        pairs[redo] = stubs.reshape(-1, 2)
    return None


def random_regular(
    n: int, *, d: int = 4, seed: int | None = None, max_tries: int = 100
) -> nx.Graph | EdgeGraph:
    """Return a connected random ``d``-regular graph on ``n`` nodes.

    Below :data:`LARGE_GRAPH_NODES` nodes: drawn uniformly-ish with
    ``nx.random_regular_graph`` (Steger–Wormald pairing) and resampled, with seeds
    derived from ``seed``, until connected.

    From ``LARGE_GRAPH_NODES`` on (``nx.random_regular_graph`` is pure Python: minutes
    and gigabytes at ``10^6`` nodes): a numpy pairing (configuration) model, returned
    as an :class:`~topologies.edgegraph.EdgeGraph`.  The ``n d`` stubs
    (``d`` copies of each node) are shuffled with ``np.random.default_rng(s)`` and
    paired consecutively; the pairs that make a self-loop or repeat an edge are
    re-paired together with as many other pairs drawn at random, round after round,
    until none is left (at most 1000 rounds); a disconnected result is redrawn with
    the next seed derived from ``seed``, as below the threshold.  This is not exactly
    uniform over the ``d``-regular graphs: the local re-pairing favours some graphs
    slightly, a bias that vanishes as ``n`` grows for fixed ``d`` (only ``O(d^2)``
    pairs conflict in expectation).  The two paths give different graphs for the same
    seed.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 2``; ``n * d`` must be even.
    d : int, optional
        Degree of every node, ``1 <= d < n`` (default 4).  ``d = 1`` is connected
        only for ``n = 2``; ``d >= 3`` is connected with high probability.
    seed : int or None, optional
        Seed of the random draws; the same seed gives the same graph.
    max_tries : int, optional
        Number of samples to draw before giving up (default 100).

    Returns
    -------
    networkx.Graph or EdgeGraph
        The first connected sample (an :class:`~topologies.edgegraph.EdgeGraph` when
        ``n >= LARGE_GRAPH_NODES``).

    Raises
    ------
    TopologyError
        If no sample out of ``max_tries`` is connected, or (pairing model) the
        conflicts do not resolve within 1000 rounds (possible only for ``d`` close to ``n``).

    Notes
    -----
    Expected time ``O(n d^2)`` per try below the threshold; ``O(n d log(n d))`` per
    try (a few rounds of sorting the ``n d / 2`` pairs) from it on.  Memory ``O(n d)``:
    about 0.2 GB in all for ``n = 10^6``, ``d = 4``.

    Examples
    --------
    >>> G = random_regular(10, d=3, seed=0)
    >>> sorted({deg for _, deg in G.degree()})
    [3]
    """
    n = _check_n(n, "random_regular")
    d = _check_int("topology.d", d, lo=1, hi=n - 1)
    if (n * d) % 2:
        raise TopologyError(
            f"topology.d: got {d}, expected an even d because n={n} is odd (n * d must be even)"
        )
    if d == 1 and n > 2:
        raise TopologyError(
            f"topology.d: got 1, but a 1-regular graph on n={n} > 2 nodes is never connected; "
            "use d >= 2"
        )
    seed = _check_seed(seed)
    max_tries = _check_int("topology.max_tries", max_tries, lo=1)
    name = f"random_regular(n={n}, d={d}, seed={seed})"
    for s in _try_seeds(seed, max_tries):
        if n >= LARGE_GRAPH_NODES:
            pairs = _pairing_regular(n, d, np.random.default_rng(s))
            if pairs is None:
                raise TopologyError(
                    f"topology.d: got {d}, but the pairing model found no simple {d}-regular "
                    f"graph on n={n} nodes in {_PAIRING_ROUNDS} re-pairing rounds "
                    f"(seed={seed}); use a smaller d"
                )
            E = EdgeGraph(n, pairs[:, 0], pairs[:, 1], name=name)
            del pairs
            if is_connected(E):
                return E
            continue
        G = nx.random_regular_graph(d, n, seed=s)
        if nx.is_connected(G):
            return _finish(G, name)
    raise TopologyError(
        f"topology.d: got {d}, but the random {d}-regular graph on n={n} nodes was disconnected "
        f"in all {max_tries} tries (seed={seed}); use d >= 3"
    )


def small_world(n: int, *, k: int = 4, beta: float = 0.1, seed: int | None = None) -> nx.Graph:
    """Return a connected Watts–Strogatz small-world graph.

    Start from the ring lattice where each node is joined to its ``k / 2``
    nearest neighbours on each side, then rewire each edge with probability
    ``beta``; resample (``nx.connected_watts_strogatz_graph``, 100 tries) until
    connected.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 3``.
    k : int, optional
        Even number of lattice neighbours, ``2 <= k < n`` (default 4).
    beta : float, optional
        Rewiring probability in ``[0, 1]`` (default 0.1); 0 keeps the lattice.
    seed : int or None, optional
        Seed of the random draws; the same seed gives the same graph.

    Returns
    -------
    networkx.Graph
        A connected graph with ``n k / 2`` edges.

    Notes
    -----
    Time and memory ``O(n k)`` per try.

    Examples
    --------
    >>> G = small_world(12, k=4, beta=0.2, seed=3)
    >>> G.number_of_edges()
    24
    """
    n = _check_n(n, "small_world", minimum=3)
    k = _check_int("topology.k", k)
    if k < 2 or k >= n or k % 2:
        raise TopologyError(f"topology.k: got {k}, expected an even integer with 2 <= k < n={n}")
    beta = _check_probability("topology.beta", beta, allow_zero=True)
    seed = _check_seed(seed)
    try:
        G = nx.connected_watts_strogatz_graph(n, k, beta, tries=100, seed=seed)
    except nx.NetworkXError as exc:
        raise TopologyError(
            f"topology.beta: got {beta:g}, but small_world(n={n}, k={k}) was disconnected in "
            f"100 tries (seed={seed}); use a smaller beta or a larger k"
        ) from exc
    return _finish(G, f"small_world(n={n}, k={k}, beta={beta:g}, seed={seed})")


def barabasi_albert(n: int, *, m: int = 2, seed: int | None = None) -> nx.Graph:
    """Return a Barabási–Albert preferential-attachment graph.

    Each new node attaches to ``m`` existing nodes chosen with probability
    proportional to their degree; the result is always connected.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 2``.
    m : int, optional
        Edges added per new node, ``1 <= m < n`` (default 2).  ``m = 1`` gives a tree.
    seed : int or None, optional
        Seed of the random draws; the same seed gives the same graph.

    Returns
    -------
    networkx.Graph
        A connected graph with ``(n - m) m`` edges and a heavy-tailed degree
        distribution.

    Notes
    -----
    Time and memory ``O(n m)``.

    Examples
    --------
    >>> barabasi_albert(10, m=2, seed=0).number_of_edges()
    16
    """
    n = _check_n(n, "barabasi_albert")
    m = _check_int("topology.m", m, lo=1, hi=n - 1)
    seed = _check_seed(seed)
    G = nx.barabasi_albert_graph(n, m, seed=seed)
    return _finish(G, f"barabasi_albert(n={n}, m={m}, seed={seed})")


def random_geometric(
    n: int, *, radius: float | None = None, seed: int | None = None, max_tries: int = 100
) -> nx.Graph:
    """Return a connected random geometric graph in the unit square.

    ``n`` points are drawn uniformly in ``[0, 1]^2`` and two nodes are joined
    when their Euclidean distance is at most ``radius``; the points are redrawn,
    with seeds derived from ``seed``, until the graph is connected.  The
    positions are kept in the node attribute ``"pos"``.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 2``.
    radius : float or None, optional
        Connection radius ``> 0``.  ``None`` (default) uses
        ``min(sqrt(2 ln(n) / (pi n)), sqrt(2))``, a factor ``sqrt(2)`` above the
        connectivity threshold ``sqrt(ln(n) / (pi n))``.
    seed : int or None, optional
        Seed of the random draws; the same seed gives the same graph.
    max_tries : int, optional
        Number of samples to draw before giving up (default 100).

    Returns
    -------
    networkx.Graph
        The first connected sample.

    Notes
    -----
    Time ``O(n log n + m)`` per try when SciPy's KD-tree is available
    (networkx uses it), ``O(n^2)`` otherwise; memory ``O(n + m)``.

    Examples
    --------
    >>> G = random_geometric(30, seed=0)
    >>> nx.is_connected(G), len(G.nodes[0]["pos"])
    (True, 2)
    """
    n = _check_n(n, "random_geometric")
    if radius is None:
        r = min(math.sqrt(2 * math.log(n) / (math.pi * n)), math.sqrt(2))
    else:
        r = _check_positive("topology.radius", radius)
    seed = _check_seed(seed)
    max_tries = _check_int("topology.max_tries", max_tries, lo=1)
    for s in _try_seeds(seed, max_tries):
        G = nx.random_geometric_graph(n, r, seed=s)
        if nx.is_connected(G):
            return _finish(G, f"random_geometric(n={n}, radius={r:.4g}, seed={seed})")
    raise TopologyError(
        f"topology.radius: got {r:.4g}, but random_geometric(n={n}) was disconnected in all "
        f"{max_tries} tries (seed={seed}); use a larger radius, above the connectivity "
        f"threshold sqrt(ln(n)/(pi n)) = {math.sqrt(math.log(n) / (math.pi * n)):.4g}"
    )


def _bernoulli_indices(rng: np.random.Generator, size: int, p: float) -> np.ndarray:
    """Sorted indices in ``[0, size)``, each present independently with probability ``p``.

    Skips over the absent indices with geometric gaps, so the cost is ``O(size p + 1)``
    rather than ``O(size)``.
    """
    if size == 0 or p == 0.0:
        return np.zeros(0, dtype=np.int64)
    if p == 1.0:
        return np.arange(size, dtype=np.int64)
    chunks: list[np.ndarray] = []
    last = -1  # the last index drawn so far
    while True:
        expected = (size - 1 - last) * p
        batch = int(expected + 4 * math.sqrt(expected) + 16)
        idx = last + np.cumsum(rng.geometric(p, size=batch).astype(np.int64))
        inside = idx[idx < size]
        chunks.append(inside)
        if len(inside) < batch:
            return np.concatenate(chunks)
        last = int(idx[-1])


def _pairs_within(t: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Map ranks ``t`` of the pairs ``u < v`` of ``0 .. b-1`` (in lexicographic order) to ``u, v``.

    Row ``u`` holds the ``b - 1 - u`` pairs ``(u, u+1) .. (u, b-1)``.  Counted from the
    end, ``r = total - 1 - t`` lies in row ``b - 2 - k`` for the largest ``k`` with
    ``k (k + 1) / 2 <= r``, because the last ``k`` rows hold ``k (k + 1) / 2`` pairs.
    """
    total = b * (b - 1) // 2
    r = total - 1 - t
    k = np.floor((np.sqrt(8.0 * r + 1.0) - 1.0) / 2.0).astype(np.int64)
    k += (k + 1) * (k + 2) // 2 <= r  # fix float rounding in both directions
    k -= k * (k + 1) // 2 > r
    u = b - 2 - k
    v = t - (total - (b - u) * (b - u - 1) // 2) + u + 1
    return u, v


def planted_partition(
    n: int,
    *,
    groups: int = 4,
    p_in: float = 0.5,
    p_out: float = 0.02,
    seed: int | None = None,
    max_tries: int = 100,
) -> nx.Graph:
    """Return a connected planted-partition graph (a stochastic block model).

    The nodes are split into ``groups`` contiguous blocks with the sizes that
    ``np.array_split`` gives (the first ``n mod groups`` blocks have one node
    more): nodes ``0 .. b_0 - 1`` form group 0, the next ``b_1`` nodes group 1,
    and so on.  Two nodes of the same group are joined with probability
    ``p_in``, two nodes of different groups with probability ``p_out``, all
    independently.  The graph is resampled, with seeds derived from ``seed``,
    until it is connected.  The group of each node is kept in the node
    attribute ``"group"``.

    Parameters
    ----------
    n : int
        Number of nodes, ``n >= 2``.
    groups : int, optional
        Number of groups, ``1 <= groups <= n`` (default 4).  ``groups = 1`` is
        ``G(n, p_in)``.
    p_in : float, optional
        Edge probability within a group, in ``[0, 1]`` (default 0.5).
    p_out : float, optional
        Edge probability across groups, in ``[0, 1]`` (default 0.02); must be
        ``> 0`` when ``groups > 1``.
    seed : int or None, optional
        Seed of the random draws; the same seed gives the same graph.
    max_tries : int, optional
        Number of samples to draw before giving up (default 100).

    Returns
    -------
    networkx.Graph
        The first connected sample, with node attribute ``"group"`` (an int in
        ``0 .. groups-1``).

    Raises
    ------
    TopologyError
        If no sample out of ``max_tries`` is connected, or if the parameters can
        never give a connected graph.

    Notes
    -----
    Each try draws, for every pair of blocks, the present pairs by skipping
    over the absent ones with geometric gaps (numpy ``default_rng``): expected
    time ``O(n + groups^2 + m)`` per try for ``m`` edges, memory ``O(n + m)``.
    The planted partition is the relation structure of
    :func:`p2p_fmtl.data.clustered_linear` with ``assignment = "contiguous"``:
    both split the nodes with ``np.array_split``.

    Examples
    --------
    >>> G = planted_partition(10, groups=3, p_in=0.9, p_out=0.1, seed=0)
    >>> [G.nodes[v]["group"] for v in G]
    [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    >>> nx.is_connected(G)
    True
    """
    n = _check_n(n, "planted_partition")
    groups = _check_int("topology.groups", groups, lo=1, hi=n)
    p_in = _check_probability("topology.p_in", p_in, allow_zero=True)
    p_out = _check_probability("topology.p_out", p_out, allow_zero=True)
    seed = _check_seed(seed)
    max_tries = _check_int("topology.max_tries", max_tries, lo=1)
    if groups > 1 and p_out == 0:
        raise TopologyError(
            f"topology.p_out: got 0, but with groups={groups} > 1 the groups are never joined; "
            "use p_out > 0"
        )
    if groups == 1 and p_in == 0:
        raise TopologyError(
            "topology.p_in: got 0, but with groups=1 no edge is ever drawn; use p_in > 0"
        )
    sizes = [len(b) for b in np.array_split(np.arange(n), groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    group_of = np.repeat(np.arange(groups), sizes)
    name = f"planted_partition(n={n}, groups={groups}, p_in={p_in:g}, p_out={p_out:g}, seed={seed})"
    for s in _try_seeds(seed, max_tries):
        rng = np.random.default_rng(s)
        us: list[np.ndarray] = []
        vs: list[np.ndarray] = []
        for i in range(groups):
            b = sizes[i]
            t = _bernoulli_indices(rng, b * (b - 1) // 2, p_in)
            u, v = _pairs_within(t, b)
            us.append(starts[i] + u)
            vs.append(starts[i] + v)
            for j in range(i + 1, groups):
                t = _bernoulli_indices(rng, b * sizes[j], p_out)
                us.append(starts[i] + t // sizes[j])
                vs.append(starts[j] + t % sizes[j])
        G = nx.Graph()
        G.add_nodes_from((v, {"group": int(g)}) for v, g in enumerate(group_of))
        G.add_edges_from(zip(np.concatenate(us).tolist(), np.concatenate(vs).tolist(), strict=True))
        if nx.is_connected(G):
            return _finish(G, name)
    what = "p_in" if groups == 1 else "p_out"
    value = p_in if groups == 1 else p_out
    raise TopologyError(
        f"topology.{what}: got {value:g}, but planted_partition(n={n}, groups={groups}, "
        f"p_in={p_in:g}, p_out={p_out:g}) was disconnected in all {max_tries} tries "
        f"(seed={seed}); use a larger p_in or p_out"
    )


# --------------------------------------------------------------------------------------
# Graphs from elsewhere
# --------------------------------------------------------------------------------------


def _sorted_labels(labels: list[Hashable]) -> list[Hashable]:
    try:
        return sorted(labels)  # type: ignore[type-var]
    except TypeError:
        return labels


def edgelist(
    n: int | None = None, *, path: str | os.PathLike[str], seed: int | None = None
) -> nx.Graph:
    """Read a graph from a whitespace-separated edge list file.

    Each non-empty line is ``u v`` or ``u v weight``; everything after ``#`` is
    a comment; the weight column is ignored.  Labels that all parse as integers
    are sorted numerically, otherwise as strings; they are relabelled to
    ``0 .. k-1`` in that order and kept in the node attribute ``"label"``.
    Self-loops and repeated edges are dropped.

    Parameters
    ----------
    n : int or None, optional
        Expected number of nodes; ``None`` (default) accepts any.
    path : str or os.PathLike
        Path of the edge list file.
    seed : int or None, optional
        Ignored; accepted so that all builders share one signature.

    Returns
    -------
    networkx.Graph
        The graph of the file (must be connected).

    Notes
    -----
    Time ``O(m log m)`` for ``m`` lines; memory ``O(n + m)``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "g.txt"
    >>> _ = f.write_text("# a path\\n10 20\\n20 30 0.5\\n")
    >>> G = edgelist(path=f)
    >>> sorted(G.edges()), G.nodes[2]["label"]
    ([(0, 1), (1, 2)], 30)
    """
    if not isinstance(path, str | os.PathLike):
        raise TopologyError(f"topology.path: got {fmt(path)}, expected a file path")
    if n is not None:
        n = _check_int("topology.n", n, lo=2, what="an integer >= 2 or None for 'edgelist'")
    _check_seed(seed)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        raise TopologyError(f"topology.path: file not found: {os.fspath(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"topology.path: cannot read {os.fspath(path)!r}: {exc}") from None
    pairs: list[tuple[str, str]] = []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise TopologyError(
                f"topology.path: {os.fspath(path)!r} line {lineno}: got {len(fields)} columns, "
                "expected 'u v' or 'u v weight'"
            )
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise TopologyError(f"topology.path: {os.fspath(path)!r} has no edges")
    tokens = {t for pair in pairs for t in pair}
    try:
        as_int = {t: int(t) for t in tokens}
        labels: list[Any] = sorted(set(as_int.values()))
        key = as_int
    except ValueError:
        labels = sorted(tokens)
        key = {t: t for t in tokens}
    if len(labels) != len(tokens):  # e.g. "1" and "01"
        raise TopologyError(
            f"topology.path: {os.fspath(path)!r} spells one integer label in two ways"
        )
    index = {lab: i for i, lab in enumerate(labels)}
    k = len(labels)
    if n is not None and n != k:
        raise TopologyError(
            f"topology.n: got {n}, but {os.fspath(path)!r} has {k} nodes; "
            "set n to match the file or leave it unset"
        )
    G = nx.Graph()
    G.add_nodes_from((i, {"label": lab}) for i, lab in enumerate(labels))
    G.add_edges_from((index[key[u]], index[key[v]]) for u, v in pairs)
    name = f"edgelist(path={os.fspath(path)!r})"
    try:
        return _finish(G, name)
    except TopologyError:
        c = nx.number_connected_components(nx.Graph(G))
        raise TopologyError(
            f"topology.path: the graph in {os.fspath(path)!r} is disconnected ({c} components)"
        ) from None


def from_graph(G: nx.Graph | EdgeGraph) -> nx.Graph | EdgeGraph:
    """Convert any networkx graph to the form the simulator uses.

    Directed graphs become undirected, multi-edges collapse to one edge,
    self-loops are dropped, and nodes are relabelled to ``0 .. n-1`` in sorted
    order of their labels (insertion order when the labels cannot be sorted).
    The original label is kept in the node attribute ``"label"``; other node
    and edge attributes are kept as well.

    An :class:`~topologies.edgegraph.EdgeGraph` is already in that form (nodes
    ``0 .. n-1``, simple, undirected): it is checked and returned itself, not
    converted (a networkx copy of a large graph is what it exists to avoid).  Its
    labels are its node numbers; it has no node attributes.

    Parameters
    ----------
    G : networkx.Graph or EdgeGraph
        Any graph (``Graph``, ``DiGraph``, ``MultiGraph``, ``MultiDiGraph``, or an
        ``EdgeGraph``) with at least 2 nodes.

    Returns
    -------
    networkx.Graph or EdgeGraph
        A new undirected simple graph on ``0 .. n-1``, or the given ``EdgeGraph``.

    Raises
    ------
    TopologyError
        If ``G`` is not a networkx graph or an ``EdgeGraph``, has fewer than 2 nodes,
        or is disconnected (once undirected).

    Notes
    -----
    Time and memory ``O(n log n + m)``.

    Examples
    --------
    >>> H = from_graph(nx.DiGraph([("b", "a"), ("b", "c"), ("c", "c")]))
    >>> sorted(H.edges()), [H.nodes[i]["label"] for i in H]
    ([(0, 1), (1, 2)], ['a', 'b', 'c'])
    """
    if isinstance(G, EdgeGraph):
        if G.n < 2:
            raise TopologyError(f"topology.n: got a graph with {G.n} nodes, expected >= 2")
        k = number_connected_components(G)
        if k != 1:
            raise TopologyError(f"topology: the given graph is disconnected ({k} components)")
        return G
    if not isinstance(G, nx.Graph):
        raise TopologyError(f"topology: got {type(G).__name__}, expected a networkx graph")
    if G.number_of_nodes() < 2:
        raise TopologyError(
            f"topology.n: got a graph with {G.number_of_nodes()} nodes, expected >= 2"
        )
    labels = _sorted_labels(list(G.nodes))
    index = {lab: i for i, lab in enumerate(labels)}
    H = nx.Graph()
    H.add_nodes_from((index[lab], {**G.nodes[lab], "label": lab}) for lab in labels)
    edges = G.edges(data=True)
    H.add_edges_from((index[u], index[v], dict(d)) for u, v, d in edges if u != v)
    if not nx.is_connected(H):
        raise TopologyError(
            f"topology: the given graph is disconnected ({nx.number_connected_components(H)} "
            "components)"
        )
    out = nx.Graph(name=str(G.graph.get("name") or "from_graph"))
    out.add_nodes_from((i, H.nodes[i]) for i in range(len(labels)))
    out.add_edges_from(
        sorted(
            ((min(u, v), max(u, v), d) for u, v, d in H.edges(data=True)),
            key=lambda e: (e[0], e[1]),
        )
    )
    return out


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[..., nx.Graph | EdgeGraph]] = {
    "ring": ring,
    "torus": torus,
    "grid": grid,
    "complete": complete,
    "star": star,
    "erdos_renyi": erdos_renyi,
    "random_regular": random_regular,
    "small_world": small_world,
    "barabasi_albert": barabasi_albert,
    "random_geometric": random_geometric,
    "hypercube": hypercube,
    "exponential": exponential,
    "two_cliques": two_cliques,
    "edgelist": edgelist,
    "planted_partition": planted_partition,
}
"""Builders by name, as used in the ``[topology]`` config section (``name = "ring"``)."""


def _builder(name: object) -> Callable[..., nx.Graph | EdgeGraph]:
    if not isinstance(name, str) or name not in BUILDERS:
        raise unknown_name("topology.name", name, BUILDERS)
    return BUILDERS[name]


def builder_params(name: str) -> dict[str, Any]:
    """Return the keyword parameters of builder ``name`` with their defaults.

    ``n`` and ``seed`` are left out.  A parameter without a default (only
    ``edgelist``'s ``path``) maps to ``inspect.Parameter.empty``.

    Parameters
    ----------
    name : str
        A key of :data:`BUILDERS`.

    Returns
    -------
    dict
        Parameter name -> default, in signature order.

    Examples
    --------
    >>> builder_params("erdos_renyi")
    {'p': 0.5, 'max_tries': 100}
    >>> builder_params("ring")
    {}
    """
    sig = inspect.signature(_builder(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "seed"
    }


def build(
    name: str, n: int | None = None, *, seed: int | None = None, **params: Any
) -> nx.Graph | EdgeGraph:
    """Build the topology ``name`` on ``n`` nodes.

    Validates the name (with a did-you-mean suggestion), rejects keywords that
    the builder does not take, then calls the builder, which validates the
    types and ranges of ``n`` and of its parameters.

    Parameters
    ----------
    name : str
        A key of :data:`BUILDERS`.
    n : int or None, optional
        Number of nodes; required by every builder except ``edgelist``.
    seed : int or None, optional
        Seed for random builders (ignored by deterministic ones).
    **params
        Builder parameters; see :func:`builder_params`.

    Returns
    -------
    networkx.Graph or EdgeGraph
        A connected undirected simple graph on nodes ``0 .. n-1`` (an
        :class:`~topologies.edgegraph.EdgeGraph` for ``ring``, ``torus``, ``grid`` and
        ``random_regular`` from :data:`LARGE_GRAPH_NODES` nodes on).

    Raises
    ------
    TopologyError
        For an unknown name or key, a missing required key, or a value out of range.

    Examples
    --------
    >>> build("torus", 9).number_of_edges()
    18
    >>> build("rign", 9)
    Traceback (most recent call last):
      ...
    topologies.errors.TopologyError: topology.name: unknown 'rign'; allowed: ring, torus, grid, \
complete, star, erdos_renyi, random_regular, small_world, barabasi_albert, random_geometric, \
hypercube, exponential, two_cliques, edgelist, planted_partition (did you mean 'ring'?)
    """
    builder = _builder(name)
    allowed = builder_params(name)
    for key in params:
        if key not in allowed:
            raise unknown_key(key, repr(name), allowed)
    for key, default in allowed.items():
        if default is inspect.Parameter.empty and key not in params:
            raise TopologyError(f"topology.{key}: missing; {name!r} needs it")
    if n is None:
        if inspect.signature(builder).parameters["n"].default is inspect.Parameter.empty:
            raise TopologyError(
                f"topology.n: missing; {name!r} needs the number of nodes (an integer >= 2)"
            )
        return builder(seed=seed, **params)
    return builder(n, seed=seed, **params)
