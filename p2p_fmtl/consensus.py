"""Consensus analysis: exact gossip-averaging curves and their spectral prediction.

A gossip step mixes the rows of ``X_t`` (one row per node) with a stochastic matrix::

    X_{t+1} = W_t X_t

and the disagreement is measured by the consensus distance (the quantity written to
``metrics.csv`` as ``consensus_distance``)::

    d_t = (1/N) Σ_i ‖x_i^t − x̄^t‖²,   x̄^t = (1/N) Σ_i x_i^t.

For a fixed symmetric doubly stochastic ``W`` with second-largest eigenvalue modulus
``λ = SLEM(W)`` the distance obeys ``d_t <= d_0 λ^(2t)``, with equality in the limit
(up to a constant) for a generic ``X_0``.  These helpers are plain numpy (float64):
they are meant to check the simulator and to annotate plots, not to be fast.

>>> import numpy as np, topologies
>>> W = topologies.mixing_matrix(topologies.build("ring", 8), "metropolis")
>>> x0 = np.arange(8.0)
>>> curve = consensus_curve(W, x0, 30)
>>> bool(np.all(curve <= spectral_prediction(W, x0, 30) * (1 + 1e-9)))
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import topologies

from .errors import UserError

__all__ = ["consensus_curve", "consensus_distance", "decay_rate", "spectral_prediction"]


def _as_rows(x0: Any) -> np.ndarray:
    X = np.asarray(x0, dtype=np.float64)
    if X.ndim == 0:
        raise UserError("x0: expected an array with one row per node, got a scalar")
    return X.reshape(X.shape[0], -1)


def consensus_distance(X: Any) -> float:
    """Return ``(1/N) Σ_i ‖x_i − x̄‖²`` for the rows ``x_i`` of ``X``.

    Parameters
    ----------
    X : array_like
        ``(N, ...)`` values, one entry of the leading axis per node.

    Returns
    -------
    float
        The mean squared distance of the nodes to their (unweighted) average.
    """
    X = _as_rows(X)
    return float(np.mean(np.sum((X - X.mean(axis=0)) ** 2, axis=1)))


def _schedule(W_or_schedule: Any, n: int) -> Callable[[int], np.ndarray]:
    def check(W: Any, where: str) -> np.ndarray:
        A = np.asarray(W, dtype=np.float64)
        if A.shape != (n, n):
            raise UserError(
                f"{where}: expected a ({n}, {n}) matrix (x0 has {n} rows), got shape {A.shape}"
            )
        return A

    if callable(W_or_schedule):
        f = W_or_schedule
        return lambda t: check(f(t), f"W({t})")
    if isinstance(W_or_schedule, np.ndarray) and W_or_schedule.ndim == 2:
        W = check(W_or_schedule, "W")
        return lambda t: W
    if isinstance(W_or_schedule, np.ndarray) and W_or_schedule.ndim == 3:
        mats = [check(W, f"W[{k}]") for k, W in enumerate(W_or_schedule)]
    elif isinstance(W_or_schedule, Sequence) and not isinstance(W_or_schedule, str):
        arr = np.asarray(W_or_schedule[0], dtype=np.float64) if len(W_or_schedule) else None
        if arr is not None and arr.ndim == 1:  # a nested list: one matrix
            W = check(W_or_schedule, "W")
            return lambda t: W
        mats = [check(W, f"W[{k}]") for k, W in enumerate(W_or_schedule)]
    else:
        raise UserError(
            "W: expected an (N, N) matrix, a sequence of matrices or a callable t -> W, "
            f"got {type(W_or_schedule).__name__}"
        )
    if not mats:
        raise UserError("W: the schedule is empty")
    return lambda t: mats[t % len(mats)]


def consensus_curve(
    W_or_schedule: np.ndarray | Sequence[np.ndarray] | Callable[[int], np.ndarray],
    x0: np.ndarray,
    rounds: int,
) -> np.ndarray:
    """Consensus distance of exact gossip averaging for rounds ``t = 0 .. rounds``.

    Iterates ``X_{t+1} = W_t X_t`` from ``X_0 = x0`` and records

    .. math:: d_t = \\frac{1}{N} \\sum_{i=1}^{N} \\lVert x_i^t - \\bar{x}^t \\rVert^2,
              \\qquad \\bar{x}^t = \\frac{1}{N} \\sum_i x_i^t .

    Parameters
    ----------
    W_or_schedule : array_like or sequence of array_like or callable
        One ``(N, N)`` mixing matrix used every round; a sequence of matrices (or an
        ``(K, N, N)`` array) cycled as ``W_t = W[t mod K]``; or a callable ``t -> W_t``.
    x0 : array_like
        ``(N, ...)`` initial values, one row per node (trailing axes are flattened).
    rounds : int
        Number of gossip rounds ``T >= 0``.

    Returns
    -------
    numpy.ndarray
        ``(T + 1,)`` float64 array ``[d_0, d_1, ..., d_T]``.

    Raises
    ------
    p2p_fmtl.errors.UserError
        For a negative ``rounds`` or matrices whose shape does not match ``x0``.

    Examples
    --------
    >>> import numpy as np
    >>> consensus_curve(np.full((2, 2), 0.5), np.array([1.0, -1.0]), 2).tolist()
    [1.0, 0.0, 0.0]
    """
    rounds = _check_rounds(rounds)
    X = _as_rows(x0)
    W_at = _schedule(W_or_schedule, X.shape[0])
    out = np.empty(rounds + 1)
    out[0] = consensus_distance(X)
    for t in range(rounds):
        X = W_at(t) @ X
        out[t + 1] = consensus_distance(X)
    return out


def spectral_prediction(W: Any, x0: np.ndarray, rounds: int) -> np.ndarray:
    """Spectral bound on the consensus distance: ``d_0 · λ^(2t)`` for ``t = 0 .. rounds``.

    .. math:: \\hat d_t = \\frac{\\lVert X_0 - \\mathbf{1}\\bar{x}_0^\\top \\rVert_F^2}{N}
              \\, \\lvert \\lambda_2(W) \\rvert^{2t}

    with ``|λ₂(W)|`` the second-largest eigenvalue modulus
    (:func:`topologies.second_largest_eigenvalue_modulus`).  For a symmetric doubly
    stochastic ``W`` this is an upper bound on :func:`consensus_curve` and its
    per-round rate ``|λ₂|²`` is the curve's asymptotic rate.

    Parameters
    ----------
    W : array_like
        ``(N, N)`` mixing matrix.
    x0 : array_like
        ``(N, ...)`` initial values.
    rounds : int
        Number of rounds ``T >= 0``.

    Returns
    -------
    numpy.ndarray
        ``(T + 1,)`` float64 array.
    """
    rounds = _check_rounds(rounds)
    X = _as_rows(x0)
    A = np.asarray(W, dtype=np.float64)
    if A.shape != (X.shape[0], X.shape[0]):
        n = X.shape[0]
        raise UserError(f"W: expected a ({n}, {n}) matrix, got shape {A.shape}")
    slem = topologies.second_largest_eigenvalue_modulus(A)
    return consensus_distance(X) * slem ** (2.0 * np.arange(rounds + 1))


def decay_rate(curve: Any, start: int, stop: int) -> float:
    """Geometric-mean per-round contraction of ``curve`` between two rounds.

    .. math:: \\rho = \\left( \\frac{d_{stop}}{d_{start}} \\right)^{1 / (stop - start)}

    For exact gossip with a fixed ``W`` this tends to ``|λ₂(W)|²``.

    Parameters
    ----------
    curve : array_like
        Consensus distances indexed by round (as from :func:`consensus_curve`).
    start, stop : int
        Rounds with ``0 <= start < stop < len(curve)``.

    Returns
    -------
    float
        ``ρ``; 0 when ``d_stop = 0`` (exact consensus reached).

    Raises
    ------
    p2p_fmtl.errors.UserError
        For rounds out of range or a non-positive ``d_start``.

    Examples
    --------
    >>> decay_rate([8.0, 4.0, 2.0, 1.0], 0, 3)
    0.5
    """
    c = np.asarray(curve, dtype=np.float64).ravel()
    if not (0 <= start < stop < len(c)):
        raise UserError(
            f"decay_rate: expected 0 <= start < stop < {len(c)}, got start={start}, stop={stop}"
        )
    if not c[start] > 0:
        raise UserError(f"decay_rate: curve[{start}] = {c[start]!r} must be positive")
    return float(max(c[stop], 0.0) / c[start]) ** (1.0 / (stop - start))


def _check_rounds(rounds: Any) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 0:
        raise UserError(f"rounds: got {rounds!r}, expected an integer >= 0")
    return int(rounds)
