"""Gossip (mixing) matrices of a graph and their validation.

A mixing matrix ``W`` of a graph ``G`` on nodes ``0 .. n-1`` is symmetric,
non-negative, doubly stochastic (``W 1 = 1``, ``1ᵀ W = 1ᵀ``) and supported on
the edges of ``G`` plus the diagonal.  One gossip step is ``x ← W x``: node
``i`` receives ``W_ij x_j`` from each neighbour ``j`` and keeps ``W_ii x_i``.

Notation: ``d_i`` is the degree of node ``i`` (self-loops of ``G`` are
ignored), ``d_max = max_i d_i``, ``i ~ j`` means ``{i, j}`` is an edge, and
``W_ij = 0`` for ``i ≠ j`` not adjacent.  Every rule sets the diagonal to
``W_ii = 1 − Σ_{j≠i} W_ij``.

:func:`mixing_edges` computes the weights as an edge list without the dense
``n x n`` matrix (except ``fmmc``, which solves a semidefinite program on dense arrays),
so that graphs with ``10^5`` nodes or more are cheap.  Every function that takes a
graph accepts a ``networkx.Graph`` or a :class:`~topologies.edgegraph.EdgeGraph`
(whose edge arrays are used as they are).  ``fmmc`` solves the
fastest-mixing problem with the first-order solver of :mod:`topologies.fmmc`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np

from .edgegraph import EdgeGraph, number_connected_components
from .errors import TopologyError, fmt, unknown_key, unknown_name
from .fmmc import SOLVERS as FMMC_SOLVERS
from .fmmc import FMMCReport, solve_fmmc

__all__ = [
    "MIXING_RULES",
    "fastest_mixing",
    "fmmc",
    "lazy_metropolis",
    "max_degree",
    "metropolis",
    "mixing_edges",
    "mixing_matrix",
    "uniform",
    "validate_mixing",
]

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]
Graph = nx.Graph | EdgeGraph

# --------------------------------------------------------------------------------------
# Graph -> edge arrays
# --------------------------------------------------------------------------------------


def _edge_arrays(G: Graph) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``n``, the endpoints ``u < v`` of each edge (no self-loops) and degrees."""
    if isinstance(G, EdgeGraph):
        if G.n == 0:
            raise TopologyError("mixing: got a graph with 0 nodes, expected at least 1")
        u, v = G.edge_array()
        return G.n, u, v, G.degrees()
    if not isinstance(G, nx.Graph):
        raise TopologyError(
            f"mixing: got {type(G).__name__}, expected a networkx graph or a topologies.EdgeGraph"
        )
    if G.is_directed() or G.is_multigraph():
        raise TopologyError(
            f"mixing: got a {type(G).__name__}, expected an undirected simple nx.Graph "
            "(convert it with topologies.from_graph)"
        )
    n = G.number_of_nodes()
    if n == 0:
        raise TopologyError("mixing: got a graph with 0 nodes, expected at least 1")
    if set(G.nodes) != set(range(n)):
        bad = next(v for v in G.nodes if not (isinstance(v, int) and 0 <= v < n))
        raise TopologyError(
            f"mixing: graph node {fmt(bad)} is not in 0..{n - 1}; nodes must be the integers "
            "0..n-1 (relabel with topologies.from_graph)"
        )
    m = G.number_of_edges()
    e = np.fromiter((x for edge in G.edges() for x in edge), dtype=np.int64, count=2 * m)
    e = e.reshape(m, 2)
    e = e[e[:, 0] != e[:, 1]]
    u = np.minimum(e[:, 0], e[:, 1])
    v = np.maximum(e[:, 0], e[:, 1])
    deg = np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
    return n, u, v, deg


def _assemble(
    n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray, diag: np.ndarray | None = None
) -> Edges:
    """Both directions of each edge plus the diagonal, sorted by (receiver, sender).

    The diagonal is ``1 − Σ_{j≠i} W_ij`` unless ``diag`` is given.
    """
    w = np.asarray(w, dtype=np.float64)
    if diag is None:
        diag = 1.0 - (
            np.bincount(u, weights=w, minlength=n) + np.bincount(v, weights=w, minlength=n)
        )
    nodes = np.arange(n, dtype=np.int64)
    # Entries (receiver, sender): (u, v), (v, u), (i, i).  They are distinct, so sorting
    # the key receiver * n + sender gives the one order of a lexsort by (receiver, sender),
    # faster and with fewer n-sized temporaries (this runs on graphs of 10^6 nodes).
    key = np.concatenate([u * n + v, v * n + u, nodes * (n + 1)])
    order = np.argsort(key)
    senders = key[order]
    del key
    senders %= n
    weights = np.concatenate([w, w, diag])[order]
    del order
    counts = np.bincount(u, minlength=n) + np.bincount(v, minlength=n) + 1
    receivers = np.repeat(nodes, counts)  # sorted: node i receives from its d_i neighbours and i
    return senders, receivers, weights


def _densify(n: int, edges: Edges) -> np.ndarray:
    senders, receivers, weights = edges
    W = np.zeros((n, n), dtype=np.float64)
    W[receivers, senders] = weights
    return W


# --------------------------------------------------------------------------------------
# Rules on edge arrays: (n, u, v, deg, **kw) -> (senders, receivers, weights)
# --------------------------------------------------------------------------------------


def _metropolis_edges(n: int, u: np.ndarray, v: np.ndarray, deg: np.ndarray) -> Edges:
    return _assemble(n, u, v, 1.0 / (1.0 + np.maximum(deg[u], deg[v])))


def _max_degree_edges(n: int, u: np.ndarray, v: np.ndarray, deg: np.ndarray) -> Edges:
    return _assemble(n, u, v, np.full(len(u), 1.0 / (1.0 + deg.max())))


def _uniform_edges(n: int, u: np.ndarray, v: np.ndarray, deg: np.ndarray) -> Edges:
    if deg.min() != deg.max():
        raise TopologyError(
            f"topology.mixing: 'uniform' needs a regular graph, but degrees range from "
            f"{deg.min()} to {deg.max()}; use 'metropolis' or 'max_degree'"
        )
    return _assemble(n, u, v, np.full(len(u), 1.0 / (1.0 + deg.max())))


def _lazy_metropolis_edges(n: int, u: np.ndarray, v: np.ndarray, deg: np.ndarray) -> Edges:
    return _assemble(n, u, v, 0.5 / (1.0 + np.maximum(deg[u], deg[v])))


def _fmmc_edges(
    n: int,
    u: np.ndarray,
    v: np.ndarray,
    deg: np.ndarray,
    *,
    zero_diagonal: bool = False,
    solver: str = "first_order",
) -> Edges:
    if not isinstance(zero_diagonal, bool | np.bool_):
        raise TopologyError(
            f"topology.zero_diagonal: got {fmt(zero_diagonal)}, expected true or false"
        )
    if not isinstance(solver, str) or solver not in FMMC_SOLVERS:
        raise unknown_name("topology.solver", solver, FMMC_SOLVERS)
    if len(u) == 0:
        if zero_diagonal:
            raise TopologyError(
                "topology.mixing: 'fmmc' with zero_diagonal=true is infeasible on a graph "
                "without edges"
            )
        return _assemble(n, u, v, np.zeros(0))
    w, _, report = solve_fmmc(n, u, v, zero_diagonal=bool(zero_diagonal), solver=solver)
    if report.solver == "first_order" and report.gap > 10 * report.tol:
        warnings.warn(
            f"topology.mixing: 'fmmc' stopped {report.gap:.2g} from the optimum (SLEM "
            f"{report.slem:.6g} after {report.iterations} iterations); the weights are valid",
            RuntimeWarning,
            stacklevel=4,
        )
    if zero_diagonal:
        return _assemble(n, u, v, w, diag=np.zeros(n))
    senders, receivers, weights = _assemble(n, u, v, w)
    return senders, receivers, np.where((senders == receivers) & (weights < 0), 0.0, weights)


def _fmmc_zero_diagonal_edges(
    n: int, u: np.ndarray, v: np.ndarray, deg: np.ndarray, *, solver: str = "first_order"
) -> Edges:
    return _fmmc_edges(n, u, v, deg, zero_diagonal=True, solver=solver)


_EDGE_RULES: dict[str, Callable[..., Edges]] = {
    "metropolis": _metropolis_edges,
    "max_degree": _max_degree_edges,
    "uniform": _uniform_edges,
    "lazy_metropolis": _lazy_metropolis_edges,
    "fmmc": _fmmc_edges,
    "fmmc_zero_diagonal": _fmmc_zero_diagonal_edges,
}


def _rule_edges(G: Graph, rule: object, kw: dict[str, Any]) -> tuple[int, Edges]:
    if not isinstance(rule, str) or rule not in _EDGE_RULES:
        raise unknown_name("topology.mixing", rule, _EDGE_RULES)
    fn = _EDGE_RULES[rule]
    allowed = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for key in kw:
        if key not in allowed:
            raise unknown_key(key, f"mixing rule {rule!r}", allowed)
    n, u, v, deg = _edge_arrays(G)
    return n, fn(n, u, v, deg, **kw)


# --------------------------------------------------------------------------------------
# Public rules (dense)
# --------------------------------------------------------------------------------------


def metropolis(G: Graph) -> np.ndarray:
    """Return the Metropolis–Hastings mixing matrix of ``G``.

    .. math::

        W_{ij} = \\frac{1}{1 + \\max(d_i, d_j)} \\ (i \\sim j), \\qquad
        W_{ii} = 1 - \\sum_{j \\ne i} W_{ij}.

    Parameters
    ----------
    G : networkx.Graph or EdgeGraph
        Undirected simple graph on nodes ``0 .. n-1``.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64, symmetric, doubly stochastic, ``W_ii >= 1/(1+d_i) > 0``.

    Notes
    -----
    Needs only local degree information.  Time ``O(n^2)`` (dense output);
    use :func:`mixing_edges` for ``O(n + m)``.

    Examples
    --------
    >>> from topologies.generators import ring
    >>> metropolis(ring(4)).round(3)[0]
    array([0.333, 0.333, 0.   , 0.333])
    """
    return mixing_matrix(G, "metropolis")


def max_degree(G: Graph) -> np.ndarray:
    """Return the maximum-degree mixing matrix of ``G``.

    .. math::

        W_{ij} = \\frac{1}{1 + d_{max}} \\ (i \\sim j), \\qquad
        W_{ii} = 1 - \\frac{d_i}{1 + d_{max}},

    that is ``W = I − L / (1 + d_max)`` with ``L`` the graph Laplacian.

    Parameters
    ----------
    G : networkx.Graph or EdgeGraph
        Undirected simple graph on nodes ``0 .. n-1``.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64, symmetric, doubly stochastic.

    Notes
    -----
    Needs the global maximum degree.  Time ``O(n^2)`` (dense output).

    Examples
    --------
    >>> from topologies.generators import star
    >>> max_degree(star(3))
    array([[0.33333333, 0.33333333, 0.33333333],
           [0.33333333, 0.66666667, 0.        ],
           [0.33333333, 0.        , 0.66666667]])
    """
    return mixing_matrix(G, "max_degree")


def uniform(G: Graph) -> np.ndarray:
    """Return the uniform (simple random walk on the closed neighbourhood) matrix.

    .. math::

        W_{ij} = \\frac{1}{1 + d_i} \\ (j = i \\text{ or } i \\sim j).

    This is symmetric (hence doubly stochastic) only for regular graphs, so a
    non-regular ``G`` raises :class:`TopologyError`.  On the complete graph it
    is ``11ᵀ / n`` (exact averaging in one step).

    Parameters
    ----------
    G : networkx.Graph or EdgeGraph
        Regular undirected simple graph on nodes ``0 .. n-1``.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64.

    Notes
    -----
    Time ``O(n^2)`` (dense output).

    Examples
    --------
    >>> from topologies.generators import complete
    >>> uniform(complete(4))[0]
    array([0.25, 0.25, 0.25, 0.25])
    """
    return mixing_matrix(G, "uniform")


def lazy_metropolis(G: Graph) -> np.ndarray:
    """Return the lazy Metropolis matrix ``(I + W_metropolis) / 2``.

    .. math::

        W_{ij} = \\frac{1}{2 (1 + \\max(d_i, d_j))} \\ (i \\sim j), \\qquad
        W_{ii} = 1 - \\sum_{j \\ne i} W_{ij} \\ge \\tfrac12.

    All eigenvalues lie in ``[0, 1]``, so the spectral gap is governed by the
    second-largest eigenvalue (never by a negative one).

    Parameters
    ----------
    G : networkx.Graph or EdgeGraph
        Undirected simple graph on nodes ``0 .. n-1``.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64, symmetric, doubly stochastic, positive semidefinite.

    Notes
    -----
    Time ``O(n^2)`` (dense output).

    Examples
    --------
    >>> from topologies.generators import ring
    >>> lazy_metropolis(ring(3))[0]
    array([0.66666667, 0.16666667, 0.16666667])
    """
    return mixing_matrix(G, "lazy_metropolis")


def fmmc(G: Graph, *, zero_diagonal: bool = False, solver: str = "first_order") -> np.ndarray:
    """Return the fastest-mixing Markov chain matrix (Boyd, Diaconis & Xiao, 2004).

    Solves the semidefinite program

    .. math::

        \\min_W \\ \\| W - 11^T / n \\|_2 \\quad \\text{s.t.} \\quad
        W = W^T,\\ W 1 = 1,\\ W \\ge 0,\\ W_{ij} = 0 \\ (i \\ne j,\\ i \\not\\sim j),

    i.e. minimises the second-largest eigenvalue modulus.  It is parametrised
    by one weight ``w_e >= 0`` per edge, ``W = I − B diag(w) Bᵀ`` with ``B``
    the signed incidence matrix, and ``Σ_{j~i} w_ij <= 1`` (so ``W_ii >= 0``).

    Parameters
    ----------
    G : networkx.Graph or EdgeGraph
        Undirected simple graph on nodes ``0 .. n-1``.
    zero_diagonal : bool, optional
        Add the constraint ``diag(W) = 0`` (``Σ_{j~i} w_ij = 1``), as in the FMMC
        matrix of the reference FedEM code.  Raises :class:`TopologyError` when
        that is infeasible (e.g. on a star) or when the best such matrix does not
        converge (``SLEM = 1``, e.g. on any bipartite graph).
    solver : {"first_order", "cvxpy"}, optional
        ``"first_order"`` (default): the ADMM solver of :mod:`topologies.fmmc`
        (numpy and scipy only), which stops once its SLEM is certified within
        ``1e-5`` of the optimum.  ``"cvxpy"``: the SDP on the matrix ``W`` with SCS,
        an exact check that needs the optional cvxpy (``pip install 'p2p-fmtl[fmmc]'``).

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64, symmetric, doubly stochastic; its spectral gap is at
        least that of every other rule here (up to the solver's tolerance).

    Notes
    -----
    The first-order solver costs one ``n x n`` symmetric eigenproblem per iteration
    and about ``22 · 8 n²`` bytes; it refuses, before allocating, a graph whose work
    arrays do not fit in the available memory.  A 300-node ``G(n, 1/2)`` takes a few
    seconds (experiments/BENCHMARKS.md).  :func:`topologies.fmmc.solve_fmmc` also
    returns the achieved SLEM and its certified distance to the optimum.

    Examples
    --------
    >>> from topologies.generators import ring
    >>> fmmc(ring(4)).round(3)[0]
    array([0.333, 0.333, 0.   , 0.333])
    """
    return mixing_matrix(G, "fmmc", zero_diagonal=zero_diagonal, solver=solver)


def fmmc_zero_diagonal(G: Graph, *, solver: str = "first_order") -> np.ndarray:
    r"""Return the fastest-mixing matrix with ``W_ii = 0`` (the reference FedEM's choice).

    .. math::

        \min_W \|W - \tfrac{1}{n}\mathbf 1\mathbf 1^\top\|_2 \quad\text{s.t.}\quad
        W = W^\top,\ W\mathbf 1 = \mathbf 1,\ W \ge 0,\ W_{ij} = 0 \ (i \ne j,\ ij \notin E),
        \ W_{ii} = 0

    :func:`fmmc` with the extra constraint ``diag(W) = 0``: the SDP of the official
    FedEM code (``utils/decentralized.py``), whose edge mask ``1 − A`` also masks the
    diagonal.  Infeasible on some graphs (a star, a grid) and non-convergent on
    bipartite graphs; both raise :class:`TopologyError`.  ``solver`` as in :func:`fmmc`.
    """
    return fmmc(G, zero_diagonal=True, solver=solver)


def fastest_mixing(
    G: Graph, *, zero_diagonal: bool = False, solver: str = "first_order", **options: Any
) -> tuple[np.ndarray, FMMCReport]:
    """Return the :func:`fmmc` matrix of ``G`` with the solver's report.

    Parameters
    ----------
    G : networkx.Graph or EdgeGraph
        Undirected simple graph on nodes ``0 .. n-1`` with at least one edge.
    zero_diagonal, solver
        As in :func:`fmmc`.
    **options
        Options of the solver: ``tol``, ``max_iter``, ``time_limit``, ``verbose``, ...
        (:func:`topologies.fmmc.first_order_weights`) or ``eps``
        (:func:`topologies.fmmc.cvxpy_weights`).

    Returns
    -------
    W : numpy.ndarray
        ``(n, n)`` float64 mixing matrix.
    report : topologies.fmmc.FMMCReport
        Its SLEM, the certified lower bound on the optimum (first-order solver),
        iterations and seconds.

    Examples
    --------
    >>> from topologies.generators import complete
    >>> W, report = fastest_mixing(complete(5), zero_diagonal=True)
    >>> print(round(report.slem, 6), round(float(W[0, 1]), 6), report.converged)
    0.25 0.25 True
    """
    n, u, v, _ = _edge_arrays(G)
    if not isinstance(solver, str) or solver not in FMMC_SOLVERS:
        raise unknown_name("topology.solver", solver, FMMC_SOLVERS)
    w, d, report = solve_fmmc(n, u, v, zero_diagonal=bool(zero_diagonal), solver=solver, **options)
    return _densify(n, _assemble(n, u, v, w, diag=d)), report


MIXING_RULES: dict[str, Callable[..., np.ndarray]] = {
    "metropolis": metropolis,
    "max_degree": max_degree,
    "uniform": uniform,
    "lazy_metropolis": lazy_metropolis,
    "fmmc": fmmc,
    "fmmc_zero_diagonal": fmmc_zero_diagonal,
}
"""Mixing rules by name, as set by ``mixing = "..."`` in the ``[topology]`` config section."""


def mixing_matrix(G: Graph, rule: str = "metropolis", **kw: Any) -> np.ndarray:
    """Return the dense mixing matrix of ``G`` under ``rule``.

    Parameters
    ----------
    G : networkx.Graph or EdgeGraph
        Undirected simple graph on nodes ``0 .. n-1``; row ``i`` belongs to node ``i``.
    rule : str, optional
        A key of :data:`MIXING_RULES` (default ``"metropolis"``).
    **kw
        Options of the rule (only the ``fmmc`` rules have any: ``zero_diagonal``
        and ``solver``).

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64 matrix; equal to :func:`mixing_edges` scattered into
        a dense array.

    Examples
    --------
    >>> from topologies.generators import complete
    >>> mixing_matrix(complete(2), "max_degree")
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
    n, edges = _rule_edges(G, rule, kw)
    return _densify(n, edges)


def mixing_edges(G: Graph, rule: str = "metropolis", **kw: Any) -> Edges:
    """Return the mixing weights of ``G`` as an edge list, without a dense matrix.

    Parameters
    ----------
    G : networkx.Graph or EdgeGraph
        Undirected simple graph on nodes ``0 .. n-1``.
    rule : str, optional
        A key of :data:`MIXING_RULES` (default ``"metropolis"``).
    **kw
        Options of the rule (only the ``fmmc`` rules have any: ``zero_diagonal``
        and ``solver``).

    Returns
    -------
    senders, receivers : numpy.ndarray of int64
        One entry per ordered pair ``(i, j)`` with ``i ~ j`` (both directions of
        every edge) and one ``(i, i)`` per node, sorted by ``(receiver, sender)``.
    weights : numpy.ndarray of float64
        ``weights[e] = W[receivers[e], senders[e]]``; a gossip step is
        ``x_new[r] = Σ_e weights[e] x[senders[e]]`` over ``e`` with
        ``receivers[e] = r``.  Entries may be 0 (e.g. a zero diagonal).

    Notes
    -----
    Time and memory ``O(n + m)`` (plus sorting) for every rule but ``fmmc``;
    a ring of ``10^5`` nodes takes well under a second.

    Examples
    --------
    >>> from topologies.generators import ring
    >>> s, r, w = mixing_edges(ring(3))
    >>> s.tolist(), r.tolist()
    ([0, 1, 2, 0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    """
    _, edges = _rule_edges(G, rule, kw)
    return edges


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _worst(score: np.ndarray) -> tuple[int, int]:
    """Position of the largest entry (the first of equal ones, in row-major order)."""
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(i), int(j)


def _unreached_from_0(adj: np.ndarray) -> int | None:
    """First node that node 0 cannot reach in the boolean adjacency ``adj``, or None."""
    n = adj.shape[0]
    seen = np.zeros(n, dtype=bool)
    seen[0] = True
    frontier = np.array([0])
    while frontier.size:  # breadth-first search; each row is read once: O(n^2)
        new = adj[frontier].any(axis=0) & ~seen
        seen |= new
        frontier = np.flatnonzero(new)
    return None if seen.all() else int(np.flatnonzero(~seen)[0])


def validate_mixing(
    W: Any, G: Graph | None = None, *, atol: float = 1e-8, require_connected: bool = True
) -> None:
    """Check that ``W`` is a valid gossip matrix (for ``G``, when given).

    Checks, in order: ``W`` is a square 2-D array (of ``G``'s size), all entries
    are finite, ``W_ij >= −atol``, ``|W_ij − W_ji| <= atol``, every row and
    every column sums to 1 within ``atol``, ``W_ij <= atol`` off the diagonal
    where ``i`` and ``j`` are not adjacent in ``G``, and (``require_connected``)
    both ``G`` and the support graph ``{i ~ j : W_ij > atol}`` are connected.
    A failed check names its worst violation (the most negative entry, the largest
    asymmetry, the row or column sum furthest from 1, the largest weight off the graph).

    Parameters
    ----------
    W : array_like
        Candidate ``(n, n)`` mixing matrix.
    G : networkx.Graph or EdgeGraph or None, optional
        Graph on nodes ``0 .. n-1`` that ``W`` must be supported on.
    atol : float, optional
        Absolute tolerance (default ``1e-8``).
    require_connected : bool, optional
        Whether to require a connected graph and support (default True).

    Raises
    ------
    TopologyError
        Naming the worst offending entry, row or column.

    Examples
    --------
    >>> validate_mixing([[0.5, 0.5], [0.5, 0.5]])
    >>> validate_mixing([[0.5, 0.45], [0.45, 0.5]])
    Traceback (most recent call last):
      ...
    topologies.errors.TopologyError: mixing matrix: row 0 sums to 0.95, expected 1 \
(doubly stochastic)
    """
    try:
        A = np.asarray(W, dtype=np.float64)
    except (TypeError, ValueError):
        raise TopologyError(
            f"mixing matrix: got {type(W).__name__}, expected a square numeric array"
        ) from None
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise TopologyError(f"mixing matrix: got shape {A.shape}, expected a square (n, n) array")
    n = A.shape[0]
    if G is not None:
        if not isinstance(G, nx.Graph | EdgeGraph):
            raise TopologyError(
                f"mixing: got {type(G).__name__}, expected a networkx graph or a "
                "topologies.EdgeGraph"
            )
        if G.number_of_nodes() != n:
            raise TopologyError(
                f"mixing matrix: got shape {A.shape} for a graph with {G.number_of_nodes()} nodes"
            )
    bad = np.argwhere(~np.isfinite(A))
    if len(bad):
        i, j = bad[0]
        raise TopologyError(f"mixing matrix: entry ({i}, {j}) is {A[i, j]}, expected finite")
    if A.min() < -atol:
        i, j = _worst(-A)
        raise TopologyError(
            f"mixing matrix: entry ({i}, {j}) is {A[i, j]:.6g}, expected >= 0 (non-negative)"
        )
    asym = np.abs(A - A.T)
    if asym.max() > atol:
        i, j = _worst(asym)
        raise TopologyError(
            f"mixing matrix: entry ({i}, {j}) is {A[i, j]:.6g} but entry ({j}, {i}) is "
            f"{A[j, i]:.6g}, expected symmetric"
        )
    for axis, what in ((1, "row"), (0, "column")):
        sums = A.sum(axis=axis)
        off_one = np.abs(sums - 1.0)
        if off_one.max() > atol:
            i = int(np.argmax(off_one))
            raise TopologyError(
                f"mixing matrix: {what} {i} sums to {sums[i]:.6g}, expected 1 (doubly stochastic)"
            )
    off = A > atol
    np.fill_diagonal(off, False)
    if G is not None:
        _, u, v, _ = _edge_arrays(G)
        adj = np.zeros((n, n), dtype=bool)
        adj[u, v] = adj[v, u] = True
        outside = np.where(off & ~adj, A, 0.0)
        if outside.max() > atol:
            i, j = _worst(outside)
            raise TopologyError(
                f"mixing matrix: entry ({i}, {j}) is {A[i, j]:.6g}, expected 0 because "
                f"{i} and {j} are not neighbours in the graph"
            )
    if require_connected and n > 1:
        k = 1 if G is None else number_connected_components(G)
        if k != 1:
            raise TopologyError(f"mixing: the graph is disconnected ({k} components)")
        j = _unreached_from_0(off | off.T)
        if j is not None:
            raise TopologyError(
                f"mixing matrix: its support is disconnected (node 0 cannot reach node {j}), "
                "so gossip cannot reach consensus"
            )
