"""Spectral quantities of a mixing matrix: SLEM, spectral gap, mixing time.

For a doubly stochastic ``W`` with eigenvalues ``1 = λ_1, λ_2, ..., λ_n``
(``λ_1`` belonging to the consensus vector ``1``), the second-largest
eigenvalue modulus ``SLEM = max_{i >= 2} |λ_i|`` sets the consensus rate:
``‖W^t x − x̄ 1‖ <= SLEM^t ‖x − x̄ 1‖`` for symmetric ``W``.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import numpy as np

from .edgegraph import EdgeGraph, degrees, is_connected
from .errors import TopologyError

__all__ = ["describe", "mixing_time", "second_largest_eigenvalue_modulus", "spectral_gap"]


def _square(W: Any) -> np.ndarray:
    A = np.asarray(W, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise TopologyError(f"mixing matrix: got shape {A.shape}, expected a square (n, n) array")
    if not np.isfinite(A).all():
        raise TopologyError("mixing matrix: has non-finite entries, expected finite numbers")
    return A


def second_largest_eigenvalue_modulus(W: Any) -> float:
    """Return the second-largest eigenvalue modulus (SLEM) of ``W``.

    ``SLEM = max_{i >= 2} |λ_i|``: the largest modulus over all eigenvalues
    but the single eigenvalue 1 of the consensus vector.  For symmetric ``W``
    (within ``1e-12``) the eigenvalues ``λ_1 >= ... >= λ_n`` come from
    ``np.linalg.eigvalsh`` and ``SLEM = max(|λ_2|, |λ_n|)``; otherwise from
    ``np.linalg.eigvals``, dropping once the eigenvalue closest to 1.

    Parameters
    ----------
    W : array_like
        ``(n, n)`` stochastic matrix.

    Returns
    -------
    float
        The SLEM; 0 for ``n = 1``.  It is 1 for a disconnected or periodic chain.

    Notes
    -----
    Time ``O(n^3)``, memory ``O(n^2)``.

    Examples
    --------
    >>> round(second_largest_eigenvalue_modulus([[0.5, 0.5], [0.5, 0.5]]), 12)
    0.0
    """
    A = _square(W)
    n = A.shape[0]
    if n == 1:
        return 0.0
    if np.allclose(A, A.T, rtol=0.0, atol=1e-12):
        lam = np.linalg.eigvalsh((A + A.T) / 2.0)[::-1]  # descending
        return float(max(abs(lam[1]), abs(lam[-1])))
    lam = np.linalg.eigvals(A)
    rest = np.delete(lam, np.argmin(np.abs(lam - 1.0)))
    return float(np.abs(rest).max())


def spectral_gap(W: Any) -> float:
    """Return the spectral gap ``1 − SLEM(W)``.

    Parameters
    ----------
    W : array_like
        ``(n, n)`` stochastic matrix.

    Returns
    -------
    float
        In ``[0, 1]`` for a doubly stochastic ``W``; 1 means exact averaging in
        one step (``W = 11ᵀ / n``), 0 means no convergence.

    Notes
    -----
    Time ``O(n^3)``.

    Examples
    --------
    >>> import numpy as np
    >>> round(spectral_gap(np.full((4, 4), 0.25)), 12)
    1.0
    """
    return 1.0 - second_largest_eigenvalue_modulus(W)


def mixing_time(W: Any, eps: float = 1e-3) -> float:
    """Estimate the number of gossip steps to shrink the disagreement by ``eps``.

    ``t(eps) = ⌈ log(1 / eps) / −log(SLEM) ⌉`` (at least 1), and ``inf`` when
    ``SLEM >= 1``.

    Parameters
    ----------
    W : array_like
        ``(n, n)`` stochastic matrix.
    eps : float, optional
        Target contraction factor in ``(0, 1)`` (default ``1e-3``).

    Returns
    -------
    float
        An integer number of steps (as ``int``), or ``math.inf``.

    Notes
    -----
    Time ``O(n^3)``.

    Examples
    --------
    >>> mixing_time([[2/3, 1/3], [1/3, 2/3]], eps=1e-3)  # SLEM = 1/3
    7
    """
    if not (isinstance(eps, int | float) and not isinstance(eps, bool) and 0 < eps < 1):
        raise TopologyError(f"mixing_time: eps: got {eps!r}, expected a number in (0, 1)")
    slem = second_largest_eigenvalue_modulus(W)
    if slem >= 1.0:
        return math.inf
    if slem <= 0.0:
        return 1
    return max(1, math.ceil(math.log(1.0 / eps) / -math.log(slem)))


def describe(G: nx.Graph | EdgeGraph, W: Any, rule: str) -> dict[str, Any]:
    """Summarise a topology and its mixing matrix (e.g. for a run's log).

    Parameters
    ----------
    G : networkx.Graph or EdgeGraph
        The graph.
    W : array_like or None
        Its mixing matrix; ``None`` skips the spectral entries (set to None),
        which are ``O(n^3)`` to compute.
    rule : str
        Name of the mixing rule, copied into the result.

    Returns
    -------
    dict
        Keys ``nodes``, ``edges``, ``mixing``, ``spectral_gap``, ``slem``,
        ``min_degree``, ``max_degree``, ``mean_degree``, ``diameter`` (None when
        ``n > 2000`` or the graph is disconnected) and ``is_connected``; values
        are plain Python numbers.

    Notes
    -----
    Time ``O(n^3)`` for the spectrum, ``O(n m)`` for the diameter (of a networkx copy
    for an :class:`~topologies.edgegraph.EdgeGraph`); ``O(n + m)`` for the rest.

    Examples
    --------
    >>> from topologies.generators import ring
    >>> from topologies.mixing import mixing_matrix
    >>> G = ring(8)
    >>> d = describe(G, mixing_matrix(G), "metropolis")
    >>> d["diameter"], round(d["spectral_gap"], 5)
    (4, 0.19526)
    """
    n = G.number_of_nodes()
    deg = degrees(G)
    connected = is_connected(G)
    slem = None if W is None else second_largest_eigenvalue_modulus(W)
    diameter = None
    if connected and n <= 2000:
        diameter = nx.diameter(G.to_networkx() if isinstance(G, EdgeGraph) else G)
    return {
        "nodes": n,
        "edges": G.number_of_edges(),
        "mixing": rule,
        "spectral_gap": None if slem is None else 1.0 - slem,
        "slem": slem,
        "min_degree": int(deg.min()) if n else 0,
        "max_degree": int(deg.max()) if n else 0,
        "mean_degree": float(np.mean(deg)) if n else 0.0,
        "diameter": diameter,
        "is_connected": bool(connected),
    }
