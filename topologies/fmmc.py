"""Fastest-mixing weights of a graph: a first-order solver (numpy and scipy only).

The fastest-mixing Markov chain (FMMC) problem of Boyd, Diaconis and Xiao (2004) is

.. math::

    \\min_W \\ \\| W - J \\|_2 \\quad \\text{s.t.} \\quad W \\in \\mathcal P = \\{
    W = W^T,\\ W 1 = 1,\\ W \\ge 0,\\ W_{ij} = 0 \\ (i \\ne j,\\ i \\not\\sim j) \\}

with ``J = 11ᵀ/n``; ``‖W − J‖₂`` is the second-largest eigenvalue modulus (SLEM) of
``W``.  The zero-diagonal variant (the reference FedEM code's) adds ``diag(W) = 0``.
Interior-point solvers go through an ``m x m`` Schur complement (``m`` edges: 22,000
at 300 nodes of ``G(n, 1/2)``), which is what made the cvxpy route slow and run out of
memory; the optimum of such a graph has almost every eigenvalue at ``±SLEM``, so
methods that smooth the few largest eigenvalues do not help either.

Method: split the problem as ``min f(X) + g(W) s.t. X = W`` with ``f(X) = ‖X − J‖₂``
and ``g`` the indicator of ``𝒫``, and run Douglas–Rachford splitting (ADMM) on
``z``, accelerated by Anderson mixing (Walker & Ni 2011; as in SCS 3):

* ``x = prox_{f/ρ}(z)``: one symmetric eigendecomposition; the eigenvalues of ``z − J``
  are clipped to ``±τ`` where the clipped parts sum to ``1/ρ`` (the ℓ∞ norm's prox);
* ``W = Π_𝒫(2x − z)``: a projection on the edge weights ``w`` and the diagonal ``d``,
  a strictly convex QP with one equality per node, solved exactly by a semismooth
  Newton method on its ``n`` multipliers (warm-started: about one ``n x n`` solve);
* ``z ← z + W − x``, or Anderson's extrapolation of the last 5 steps when it reduces
  the fixed-point residual.

Every ``W`` is feasible, so its SLEM bounds the optimum from above.  ``Y = ρ (z − x)``
has nuclear norm at most 1, so ``tr(Y (W' − J)) <= ‖W' − J‖₂`` for every ``W'``, and
minimising that linear function over ``𝒫`` (a fractional-matching linear program on
the edges, solved with scipy's HiGHS and made rigorous from its dual) bounds the
optimum from below.  The solver stops when the two bounds are within ``tol`` and
returns both, so the accuracy it reports is proven, not assumed.

Cost per iteration: one symmetric eigenproblem of size ``n``.  On the dense path
(default below 1,000 nodes or on dense graphs) the iterates are ``n x n`` arrays, the
matrix is reduced to tridiagonal form once and only the clipped eigenvectors are
computed: ``O(n³)`` time, about 22 dense ``n x n`` float64 arrays of memory
(:func:`fmmc_memory_bytes`).  On large sparse graphs few eigenvalues sit at ``±SLEM``
(about 40 of 1,000 on a random 10-regular graph), so the iterates are kept as a sparse
matrix plus a low-rank one and ARPACK finds the clipped eigenpairs with ``O(m + n k)``
products: ``O(n k)`` memory (:class:`_LowRankSpace`).  Measured numbers are in
experiments/BENCHMARKS.md (``G(300, 1/2)``: about 60 iterations, a few seconds).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import TopologyError

# scipy is imported inside the functions that use it: importing topologies stays light
if TYPE_CHECKING:
    import scipy.sparse

__all__ = [
    "SOLVERS",
    "FMMCReport",
    "cvxpy_weights",
    "first_order_weights",
    "fmmc_memory_bytes",
    "solve_fmmc",
]

SOLVERS = ("first_order", "cvxpy")
"""Values of the ``solver`` option of the ``fmmc`` mixing rules."""

ANDERSON_MEMORY = 5
BALANCE = 5.0
BALANCE_EVERY = 20
ARPACK_TOL = 1e-10
ARPACK_NCV = 2.0
DENSE_ARRAYS = 2 * ANDERSON_MEMORY + 12
"""Dense ``n x n`` float64 arrays alive at once in the first-order solver (Anderson's
history, the iterate and its image, the eigendecomposition and LAPACK's workspace,
temporaries), rounded up."""


@dataclass(frozen=True)
class FMMCReport:
    """What a solve achieved.

    Attributes
    ----------
    solver : str
        ``"first_order"`` or ``"cvxpy"``.
    slem : float
        SLEM of the returned weights, recomputed from them (``‖W − J‖₂``).
    lower_bound : float
        Certified lower bound on the optimal SLEM (first-order solver; ``nan`` for
        cvxpy, whose own optimal value is in ``solver_value``).
    gap : float
        ``slem − lower_bound``: the returned weights are at most this far from optimal.
    iterations : int
        Iterations of the solver.
    seconds : float
        Wall-clock time of the solve.
    converged : bool
        Whether ``gap <= tol`` was certified (first-order) or the SDP solver reported
        an optimal status (cvxpy).
    tol : float
        The tolerance asked for (first-order solver; ``nan`` for cvxpy).
    solver_value : float
        The optimal value the SDP solver reported (cvxpy only; ``nan`` otherwise).
    """

    solver: str
    slem: float
    lower_bound: float
    gap: float
    iterations: int
    seconds: float
    converged: bool
    tol: float = math.nan
    solver_value: float = math.nan


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


def fmmc_memory_bytes(n: int, m: int, solver: str = "first_order") -> int:
    """Estimated peak bytes of a solve on ``n`` nodes and ``m`` edges.

    ``"first_order"``: :data:`DENSE_ARRAYS` dense ``n x n`` float64 arrays plus ``O(m)``
    on the dense path; on the low-rank path (large sparse graphs, :func:`_use_low_rank`)
    ``O(m)`` plus the stored factors, a few hundred columns of length ``n``.
    ``"cvxpy"`` (W-matrix formulation, SCS): fitted to the peak RSS measured at 30, 100
    and 300 nodes (139, 179, 511 MiB): about 4,500 bytes per matrix entry (cvxpy's
    canonicalisation and SCS's factorised KKT system) plus 150 MiB for the runtime.
    """
    if solver == "cvxpy":
        return int(4500 * n * n + 150 * 2**20)
    return _memory_bytes(n, m, _use_low_rank(n, m))


def _memory_bytes(n: int, m: int, low_rank: bool) -> int:
    if low_rank:  # factors of ~50 columns, kept for 2 × ANDERSON_MEMORY + 4 iterations
        return int(8 * n * (4 * (2 * ANDERSON_MEMORY + 4) * 50 + 200) + 400 * m)
    return int(DENSE_ARRAYS * 8 * n * n + 400 * m + 200 * n)


def _available_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo (Linux), else None (no check)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(n: int, m: int, what: str, solver: str = "first_order", need: int = 0) -> None:
    """Raise a one-line :class:`TopologyError` when a solve cannot fit in memory.

    ``need`` overrides the estimate of :func:`fmmc_memory_bytes`.
    """
    need = need or fmmc_memory_bytes(n, m, solver)
    have = _available_bytes()
    if have is not None and need > have:
        advice = (
            "use solver 'first_order'"
            if solver == "cvxpy"
            else "use 'metropolis' (no solve) or a graph with fewer nodes"
        )
        raise TopologyError(
            f"topology.mixing: {what} with solver {solver!r} on {n} nodes needs about "
            f"{need / 2**30:.1f} GiB, but only {have / 2**30:.1f} GiB is available; {advice}"
        )


# --------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------


def _dense(n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``diag(d)`` plus ``w`` on both triangles."""
    W = np.zeros((n, n))
    W[u, v] = w
    W[v, u] = w
    W[np.diag_indices(n)] = d
    return W


def _slem(n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray, d: np.ndarray) -> float:
    """``‖W − J‖₂``: the SLEM of ``W`` when ``W 1 = 1``."""
    import scipy.linalg

    if n == 1:
        return 0.0
    M = _dense(n, u, v, w, d)
    M -= 1.0 / n
    lam = scipy.linalg.eigvalsh(M, overwrite_a=True, check_finite=False)
    return float(max(-lam[0], lam[-1], 0.0))


def _clip_threshold(lam: np.ndarray, budget: float) -> float:
    """``τ >= 0`` with ``Σ max(|λ| − τ, 0) = budget`` (0 if ``Σ|λ| <= budget``)."""
    a = np.sort(np.abs(lam))[::-1]
    if a.sum() <= budget:
        return 0.0
    excess = np.cumsum(a) - budget
    k = np.nonzero(a * np.arange(1, len(a) + 1) > excess)[0][-1]
    return float(excess[k] / (k + 1.0))


def _clipped_part(M: np.ndarray, budget: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The part of the symmetric ``M`` that the ℓ∞ prox removes: ``M − prox(M)``.

    Returns ``(excess, Qb, lam)`` with ``M − prox(M) = Qb diag(excess) Qbᵀ``: the
    eigenpairs of ``M`` outside ``[−τ, τ]``, their eigenvalues moved by ``τ`` towards 0,
    where ``Σ (|λ| − τ)⁺ = budget``; ``lam`` are all eigenvalues.  ``M`` is reduced to
    tridiagonal form once (LAPACK ``sytrd``); all eigenvalues come from the tridiagonal
    matrix, and only the eigenvectors outside ``[−τ, τ]`` are computed (``stemr``) and
    transformed back (``ormqr``): a sparse graph has few of them (about 35 of 1,000 on
    a random 8-regular graph), which makes this 3 to 4 times faster than a full ``eigh``.
    """
    import scipy.linalg
    import scipy.linalg.lapack

    n = len(M)
    if n < 3:
        lam, Q = scipy.linalg.eigh(M, check_finite=False)
        tau = _clip_threshold(lam, budget)
        big = np.abs(lam) > tau
        return lam[big] - np.sign(lam[big]) * tau, Q[:, big], lam
    lwork, _ = scipy.linalg.lapack.dsytrd_lwork(n, lower=1)
    c, diag, off, taus, info = scipy.linalg.lapack.dsytrd(M, lower=1, lwork=int(lwork))
    if info != 0:
        raise np.linalg.LinAlgError(f"dsytrd failed with info = {info}")
    lam = scipy.linalg.eigvalsh_tridiagonal(diag, off, check_finite=False)
    tau = _clip_threshold(lam, budget)
    low = int(np.count_nonzero(lam < -tau))
    high = int(np.count_nonzero(lam > tau))
    values, vectors = [], []
    for first, last in ((0, low - 1), (n - high, n - 1)):
        if last >= first:
            val, vec = scipy.linalg.eigh_tridiagonal(
                diag,
                off,
                select="i",
                select_range=(first, last),
                lapack_driver="stemr",
                check_finite=False,
            )
            values.append(val)
            vectors.append(vec)
    if not values:
        return np.zeros(0), np.zeros((n, 0)), lam
    val = np.concatenate(values)
    V = np.hstack(vectors)
    k = V.shape[1]
    # Q = diag(1, Q̃) with Q̃ the product of the reflectors below the first subdiagonal
    QV, _, info = scipy.linalg.lapack.dormqr(
        "L", "N", c[1:, : n - 1], taus, V[1:], lwork=max(1, 64 * k), overwrite_c=1
    )
    if info != 0:
        raise np.linalg.LinAlgError(f"dormqr failed with info = {info}")
    Qb = np.vstack([V[:1], QV])
    return val - np.sign(val) * tau, Qb, lam


class _Projector:
    """Frobenius projection onto ``𝒫`` in edge coordinates.

    Minimises ``2 Σ_e (w_e − a_e)² + Σ_i (d_i − b_i)²`` over ``w >= 0``, ``d >= 0`` with
    ``A w + d = 1`` (``A`` the unsigned incidence matrix; ``d = 0`` for a zero
    diagonal).  For multipliers ``y`` of the equalities the minimisers are
    ``w_e = max(0, a_e − (y_u + y_v)/4)`` and ``d_i = max(0, b_i − y_i/2)``; the concave
    dual ``φ(y)`` is piecewise quadratic and is maximised by Newton's method with a
    backtracking line search, warm-started from the previous call's ``y``.
    """

    def __init__(self, n: int, u: np.ndarray, v: np.ndarray, zero_diagonal: bool) -> None:
        self.n, self.u, self.v, self.zero = n, u, v, zero_diagonal
        self.y = np.zeros(n)
        self.sparse = 10 * (2 * len(u) + n) < n * n
        self.steps = 0

    def _primal(self, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[Any, ...]:
        n = self.n
        w = np.maximum(a - (y[self.u] + y[self.v]) / 4.0, 0.0)
        rows = np.bincount(self.u, w, n) + np.bincount(self.v, w, n)
        phi = 2.0 * (a @ a - w @ w) - y.sum()
        if self.zero:
            d = np.zeros(n)
        else:
            d = np.maximum(b - y / 2.0, 0.0)
            rows += d
            phi += b @ b - d @ d
        return w, d, rows - 1.0, float(phi)

    def _newton_step(self, w: np.ndarray, d: np.ndarray, g: np.ndarray) -> np.ndarray:
        import scipy.linalg
        import scipy.sparse
        import scipy.sparse.linalg

        n, u, v = self.n, self.u, self.v
        act = np.where(w > 0.0, 0.25, 0.0)
        diag = np.bincount(u, act, n) + np.bincount(v, act, n)
        if not self.zero:
            diag += np.where(d > 0.0, 0.5, 0.0)
        diag += 1e-12 + 1e-9 * (diag == 0.0)  # a node with nothing active
        if self.sparse:
            # conjugate gradients: a sparse Cholesky of this signless Laplacian fills in
            # on expanders (random regular graphs), CG needs a few dozen products
            H = scipy.sparse.coo_matrix(
                (
                    np.concatenate([act, act, diag]),
                    (np.concatenate([u, v, np.arange(n)]), np.concatenate([v, u, np.arange(n)])),
                ),
                shape=(n, n),
            ).tocsr()
            jacobi = scipy.sparse.diags(1.0 / diag)
            step, info = scipy.sparse.linalg.cg(
                H, g, rtol=1e-12, atol=0.0, maxiter=10 * n, M=jacobi
            )
            if info == 0:
                return step
            return scipy.sparse.linalg.spsolve(H.tocsc(), g)
        H = np.zeros((n, n))
        H[u, v] = act
        H[v, u] = act
        H[np.diag_indices(n)] = diag
        try:
            return scipy.linalg.solve(H, g, assume_a="pos", check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            return scipy.linalg.lstsq(H, g, check_finite=False)[0]

    def __call__(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = self.y
        w, d, g, phi = self._primal(y, a, b)
        for _ in range(100):
            gmax = np.abs(g).max()
            if gmax <= 1e-12:
                break
            step = self._newton_step(w, d, g)
            slope = float(g @ step)
            t = 1.0
            while t >= 1e-10:  # Armijo on the dual, or a halved residual (rounding level)
                y_new = y + t * step
                w_new, d_new, g_new, phi_new = self._primal(y_new, a, b)
                if phi_new >= phi + 1e-4 * t * slope or np.abs(g_new).max() <= 0.5 * gmax:
                    break
                t *= 0.5
            else:
                break
            y, w, d, g, phi = y_new, w_new, d_new, g_new, phi_new
            self.steps += 1
        self.y = y
        return w, d


def _incidence(n: int, u: np.ndarray, v: np.ndarray) -> scipy.sparse.csr_matrix:
    import scipy.sparse

    m = len(u)
    rows = np.concatenate([u, v])
    cols = np.concatenate([np.arange(m), np.arange(m)])
    return scipy.sparse.csr_matrix((np.ones(2 * m), (rows, cols)), shape=(n, m))


def _lp_bound(
    c: np.ndarray, A: scipy.sparse.csr_matrix, u: np.ndarray, v: np.ndarray, zero: bool
) -> float | None:
    """A rigorous upper bound on ``max cᵀw`` over ``w >= 0``, ``A w <= 1`` (``= 1`` for
    a zero diagonal); None when the equality version is infeasible.

    HiGHS solves the LP; its node potentials ``z`` (``z >= 0`` for ``<=``) give
    ``cᵀw <= Σ z + Σ_e w_e (c_e − z_u − z_v)⁺ <= Σ z + ½ Σ_i max_{e∋i} (c_e − z_u − z_v)⁺``,
    which stays valid whatever the LP solver's tolerances.
    """
    import scipy.optimize

    n = A.shape[0]
    scale = float(np.abs(c).max())
    if scale == 0.0 and not zero:
        return 0.0
    cs = c / scale if scale > 0 else c
    ones = np.ones(n)
    if zero:
        res = scipy.optimize.linprog(-cs, A_eq=A, b_eq=ones, bounds=(0, None), method="highs")
    else:
        res = scipy.optimize.linprog(-cs, A_ub=A, b_ub=ones, bounds=(0, None), method="highs")
    if res.status == 2:
        return None
    if res.status != 0:
        raise TopologyError(f"topology.mixing: 'fmmc': the bound's LP failed: {res.message}")
    if zero:
        z = -np.asarray(res.eqlin.marginals) * scale
    else:
        z = np.maximum(-np.asarray(res.ineqlin.marginals), 0.0) * scale
    excess = np.maximum(c - z[u] - z[v], 0.0)
    worst = np.zeros(n)
    np.maximum.at(worst, u, excess)
    np.maximum.at(worst, v, excess)
    return float(z.sum() + 0.5 * worst.sum())


# --------------------------------------------------------------------------------------
# Solvers on edge arrays
# --------------------------------------------------------------------------------------


def _what(zero_diagonal: bool) -> str:
    return "'fmmc' with zero_diagonal=true" if zero_diagonal else "'fmmc'"


def _infeasible(what: str) -> TopologyError:
    return TopologyError(
        f"topology.mixing: {what} is infeasible on this graph (no zero-diagonal doubly "
        "stochastic matrix on its edges); use zero_diagonal=false or 'metropolis'"
    )


class _DenseSpace:
    """DR iterates ``z`` as dense ``n x n`` arrays; the prox by :func:`_clipped_part`."""

    def __init__(self, n: int, u: np.ndarray, v: np.ndarray, project: _Projector) -> None:
        self.n, self.u, self.v, self.project = n, u, v, project

    def start(self, w: np.ndarray, d: np.ndarray) -> np.ndarray:
        return _dense(self.n, self.u, self.v, w, d)

    def step(self, z: np.ndarray, rho: float) -> tuple[Any, ...]:
        """``T(z)``, ``T(z) − z``, ``W``'s weights and the prox's ``z − x`` (``Y / ρ``)."""
        n, u, v = self.n, self.u, self.v
        excess, Qb, _ = _clipped_part(z - 1.0 / n, 1.0 / rho)
        Yr = (Qb * excess) @ Qb.T
        r = z - 2.0 * Yr  # 2x − z
        w, d = self.project((r[u, v] + r[v, u]) / 2.0, np.diagonal(r).copy())
        plain = _dense(n, u, v, w, d)
        plain += Yr
        return plain, plain - z, w, d, (Yr, len(excess))

    def dual_terms(self, dual: Any, rho: float) -> tuple[np.ndarray, float, float]:
        """For ``Y = ρ (z − x)``: ``Y_uu + Y_vv − 2 Y_uv`` per edge, ``tr Y`` and ``1ᵀY1``."""
        Y = rho * dual[0]
        diag = np.diagonal(Y)
        return (
            diag[self.u] + diag[self.v] - 2.0 * Y[self.u, self.v],
            float(diag.sum()),
            float(Y.sum()),
        )

    def rescale(self, z: np.ndarray, dual: Any, factor: float) -> np.ndarray:
        return z + dual[0] * (factor - 1.0)

    def dot(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.vdot(a, b))

    def combine(self, base: np.ndarray, terms: list[tuple[float, np.ndarray]]) -> np.ndarray:
        out = base.copy()
        for c, x in terms:
            out -= c * x
        return (out + out.T) / 2.0

    def slem(self, w: np.ndarray, d: np.ndarray) -> float:
        return _slem(self.n, self.u, self.v, w, d)


class _LowRankSpace:
    """DR iterates as sparse plus low rank, for large sparse graphs: ``O(n k)`` memory.

    ``T(z) = W + (z − x)`` where ``W`` lives on the graph's edges and diagonal and
    ``z − x`` has the rank ``k`` of the clipped eigenvalues (a few dozen on a sparse
    graph), and Anderson's ``z`` is a combination of recent ``T(z)``.  So an iterate is
    ``(S, c)``: values ``S`` on the edges and diagonal, plus ``Σ_f c_f Q_f diag(E_f) Q_fᵀ``
    over stored factors.  Inner products need the factors' values on the support and
    their Gram matrix, and the prox needs only the eigenpairs of ``z − J`` outside
    ``[−τ, τ]``, from ARPACK (``eigsh``) with matrix-vector products in ``O(m + n k)``.
    """

    def __init__(self, n: int, u: np.ndarray, v: np.ndarray, project: _Projector) -> None:
        import scipy.sparse

        self.n, self.u, self.v, self.project = n, u, v, project
        m = len(u)
        self.m = m
        self.weight = np.concatenate([np.full(m, 2.0), np.ones(n)])  # Frobenius weights
        rows = np.concatenate([u, v, np.arange(n)])
        cols = np.concatenate([v, u, np.arange(n)])
        pattern = scipy.sparse.csr_matrix(
            (np.arange(1, 2 * m + n + 1, dtype=np.float64), (rows, cols)), shape=(n, n)
        )
        self.order = pattern.data.astype(np.int64) - 1  # csr slot -> entry of [w, w, d]
        self.indices, self.indptr = pattern.indices, pattern.indptr
        self.factors: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.gram: dict[tuple[int, int], float] = {}
        self.keep = 2 * ANDERSON_MEMORY + 4  # factors that live iterates may refer to
        self.next_id = 0
        self.blocks = [10, 10]  # eigenpairs asked for at the bottom and the top
        self.starts: list[np.ndarray | None] = [None, None]

    # -- elements (S, c) --------------------------------------------------------------
    def start(self, w: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, dict[int, float]]:
        return np.concatenate([w, d]), {}

    def _matrix(self, S: np.ndarray):
        import scipy.sparse

        full = np.concatenate([S[: self.m], S[: self.m], S[self.m :]])
        return scipy.sparse.csr_matrix(
            (full[self.order], self.indices, self.indptr), shape=(self.n, self.n)
        )

    def dot(self, a: tuple, b: tuple) -> float:
        (Sa, ca), (Sb, cb) = a, b
        wa, wb = self.weight * Sa, self.weight * Sb
        total = float(wa @ Sb)
        for f, c in cb.items():
            total += c * float(wa @ self.factors[f][2])
        for f, c in ca.items():
            total += c * float(wb @ self.factors[f][2])
            for g, c2 in cb.items():
                total += c * c2 * self.gram[min(f, g), max(f, g)]
        return total

    def combine(self, base: tuple, terms: list[tuple[float, tuple]]) -> tuple:
        S, coef = base[0].copy(), dict(base[1])
        for c, (S2, c2) in terms:
            S -= c * S2
            for f, x in c2.items():
                coef[f] = coef.get(f, 0.0) - c * x
        return S, coef

    # -- the DR step ----------------------------------------------------------------------
    def _operator(self, z: tuple):
        import scipy.sparse.linalg

        S, coef = z
        M = self._matrix(S)
        parts = [(c, *self.factors[f][:2]) for f, c in coef.items() if c != 0.0]
        n = self.n

        def apply(x: np.ndarray) -> np.ndarray:
            x2 = x.reshape(n, -1)
            out = M @ x2 - x2.sum(axis=0, keepdims=True) / n
            for c, Q, E in parts:
                out += Q @ ((c * E)[:, None] * (Q.T @ x2))
            return out.reshape(x.shape)

        return (
            scipy.sparse.linalg.LinearOperator(
                (n, n), matvec=apply, matmat=apply, dtype=np.float64
            ),
            M,
            parts,
        )

    def _outside(self, z: tuple, budget: float) -> tuple[np.ndarray, np.ndarray]:
        """The eigenpairs of ``z − J`` outside ``[−τ, τ]``, moved by ``τ`` towards 0."""
        import scipy.sparse.linalg

        n = self.n
        op, M, parts = self._operator(z)
        while True:
            bottom, top = self.blocks
            if bottom + top >= n // 3:  # ARPACK is no help for that many: a dense eigh
                check_memory(n, self.m, "'fmmc'", need=6 * 8 * n * n)
                dense = M.toarray() - 1.0 / n
                for c, Q, E in parts:
                    dense += (Q * (c * E)) @ Q.T
                excess, Qb, _ = _clipped_part(dense, budget)
                return excess, Qb
            found = []
            for end, (k, which) in enumerate(((bottom, "SA"), (top, "LA"))):
                val, vec = scipy.sparse.linalg.eigsh(
                    op,
                    k=k,
                    which=which,
                    tol=ARPACK_TOL,
                    v0=self.starts[end],
                    ncv=min(n, int(ARPACK_NCV * k) + 20),
                )
                found.append((val, vec))
            lam = np.concatenate([found[0][0], found[1][0]])
            tau = _clip_threshold(lam, budget)
            short = [found[0][0].max() < -tau, found[1][0].min() > tau]  # more may lie beyond
            if not any(short):
                break
            self.blocks = [
                int(b * 1.5) + 5 if s else b for b, s in zip(self.blocks, short, strict=True)
            ]
        vec = np.hstack([found[0][1], found[1][1]])
        big = np.abs(lam) > tau
        counts = [
            int(np.count_nonzero(found[0][0] < -tau)),
            int(np.count_nonzero(found[1][0] > tau)),
        ]
        self.blocks = [c + max(5, c // 4) for c in counts]
        for end in range(2):
            sel = found[end][1][:, np.abs(found[end][0]) > tau]
            self.starts[end] = sel.sum(axis=1) if sel.shape[1] else None
        return lam[big] - np.sign(lam[big]) * tau, vec[:, big]

    def _add_factor(self, Q: np.ndarray, E: np.ndarray) -> int:
        """Store ``Q diag(E) Qᵀ``: its values on the support and its Gram entries."""
        u, v = self.u, self.v
        QE = Q * E
        values = np.concatenate([(QE[u] * Q[v]).sum(axis=1), (QE * Q).sum(axis=1)])
        f = self.next_id
        self.next_id += 1
        self.factors[f] = (Q, E, values)
        for g, (Q2, E2, _) in self.factors.items():
            G = Q.T @ Q2
            self.gram[min(f, g), max(f, g)] = float(E @ (G * G) @ E2)
        for g in [g for g in self.factors if g <= f - self.keep]:
            del self.factors[g]
        self.gram = {k: x for k, x in self.gram.items() if k[0] in self.factors}
        return f

    def step(self, z: tuple, rho: float) -> tuple[Any, ...]:
        excess, Qb = self._outside(z, 1.0 / rho)
        f = self._add_factor(Qb, excess)
        S, coef = z
        r = S.copy()  # values of 2x − z = z − 2 (z − x) on the support
        for g, c in coef.items():
            r += c * self.factors[g][2]
        r -= 2.0 * self.factors[f][2]
        w, d = self.project(r[: self.m], r[self.m :])
        plain = (np.concatenate([w, d]), {f: 1.0})
        return plain, self.combine(plain, [(1.0, z)]), w, d, (f, len(excess))

    def dual_terms(self, dual: Any, rho: float) -> tuple[np.ndarray, float, float]:
        Q, E, values = self.factors[dual[0]]
        m, u, v = self.m, self.u, self.v
        diag = values[m:]
        c = rho * (diag[u] + diag[v] - 2.0 * values[:m])
        return c, rho * float(E.sum()), rho * float(E @ (Q.sum(axis=0) ** 2))

    def rescale(self, z: tuple, dual: Any, factor: float) -> tuple:
        S, coef = z[0], dict(z[1])
        coef[dual[0]] = coef.get(dual[0], 0.0) + factor - 1.0
        return S, coef

    def slem(self, w: np.ndarray, d: np.ndarray) -> float:
        """``‖W − J‖₂`` from both ends of the spectrum (ARPACK, blocks as large as the
        prox's, which converge where a single extreme eigenvalue in a cluster does not);
        ``inf`` when ARPACK fails, which only skips that upper bound."""
        import scipy.sparse.linalg

        n = self.n
        if n < 50:
            return _slem(n, self.u, self.v, w, d)
        M = self._matrix(np.concatenate([w, d]))
        op = scipy.sparse.linalg.LinearOperator(
            (n, n), matvec=lambda x: M @ x - x.sum() / n, dtype=np.float64
        )
        ends = []
        for k, which in zip(self.blocks, ("SA", "LA"), strict=True):
            k = min(max(k, 6), n // 3)
            try:
                val = scipy.sparse.linalg.eigsh(
                    op,
                    k=k,
                    which=which,
                    tol=1e-10,
                    ncv=min(n, 2 * k + 20),
                    return_eigenvectors=False,
                )
            except scipy.sparse.linalg.ArpackNoConvergence:
                return math.inf
            ends.append(val)
        return float(max(-ends[0].min(), ends[1].max(), 0.0))


def _use_low_rank(n: int, m: int) -> bool:
    """Sparse and large: few eigenvalues sit at ±SLEM, and dense ``n x n`` work is the cost."""
    return n >= 1000 and 2 * m <= n * n // 50


def first_order_weights(
    n: int,
    u: np.ndarray,
    v: np.ndarray,
    *,
    zero_diagonal: bool = False,
    tol: float = 1e-5,
    max_iter: int = 5000,
    time_limit: float | None = None,
    check_every: int = 10,
    verbose: bool = False,
    rho: float | None = None,
    anderson: bool = True,
    low_rank: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, FMMCReport]:
    """Fastest-mixing weights of the graph with edges ``(u[e], v[e])`` on ``n`` nodes.

    Parameters
    ----------
    n : int
        Number of nodes.
    u, v : numpy.ndarray of int
        Endpoints of the ``m >= 1`` edges, ``u[e] != v[e]``, each edge once.
    zero_diagonal : bool, optional
        Add ``diag(W) = 0``.
    tol : float, optional
        Stop once the SLEM is certified within ``tol`` of the optimum (default ``1e-5``).
    max_iter : int, optional
        Most iterations (default 5000).  It also stops when neither bound has moved by
        ``tol / 10`` over 20 certificates (then ``report.converged`` is False).
    time_limit : float or None, optional
        Most seconds; the best weights found so far are returned when it runs out.
    check_every : int, optional
        Iterations between two certificates (each one SLEM and one LP).
    verbose : bool, optional
        Print the bounds at every certificate.
    rho : float or None, optional
        ADMM's initial step ``ρ`` (default ``2.5 / (k s₀)``, ``s₀`` the SLEM of the
        starting point, ``k = n`` on the dense path and 3 × the mean degree on the
        low-rank one); every 20 iterations it is rescaled by the square root of the
        ratio of primal to dual residuals when that is outside ``[1/5, 5]`` (as OSQP does).
    anderson : bool, optional
        Use Anderson acceleration (default True; without it the sparse graphs of the
        benchmarks need 2 to 5 times more iterations).
    low_rank : bool or None, optional
        Keep iterates as sparse plus low rank and use ARPACK instead of dense
        eigensolvers (:class:`_LowRankSpace`); default: for ``n >= 1000`` nodes of mean
        degree below ``n / 50``.

    Returns
    -------
    w : numpy.ndarray
        Edge weights ``W_{u[e] v[e]} >= 0``.
    d : numpy.ndarray
        Diagonal ``W_ii >= 0`` (exactly 0 for a zero diagonal); rows sum to 1 within
        ``1e-12``.
    report : FMMCReport
        Achieved SLEM, certified lower bound and gap, iterations, seconds.

    Raises
    ------
    TopologyError
        When the zero-diagonal problem has no feasible point, or the work arrays cannot
        fit in memory (checked before anything is allocated).
    """
    start = time.perf_counter()
    what = _what(zero_diagonal)
    m = len(u)
    if low_rank is None:
        low_rank = _use_low_rank(n, m)
    check_memory(n, m, what, need=_memory_bytes(n, m, low_rank))
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    A = _incidence(n, u, v)
    if zero_diagonal and _lp_bound(np.zeros(m), A, u, v, True) is None:
        raise _infeasible(what)
    project = _Projector(n, u, v, zero_diagonal)
    space = (_LowRankSpace if low_rank else _DenseSpace)(n, u, v, project)
    deg = np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
    w0 = 1.0 / (1.0 + np.maximum(deg[u], deg[v]))  # Metropolis, projected onto 𝒫
    w, d = project(w0, 1.0 - (np.bincount(u, w0, n) + np.bincount(v, w0, n)))
    z = space.start(w, d)
    best_slem, best_w, best_d = space.slem(w, d), w, d
    if rho is None:
        # the dual Y spreads its unit nuclear norm over the k eigenvalues at ±s, and
        # ADMM's residuals balance near ρ ≈ 2.5 / (k s): k = n on a dense graph; on the
        # large sparse graphs of the low-rank path k ≈ 3 × the mean degree (measured:
        # 24 of 300 nodes of a random 8-regular graph, 41 of 1,000 of a 10-regular one);
        # the balancing below corrects the guess
        k_guess = min(n, 6.0 * m / n) if low_rank else n
        rho = 2.5 / (k_guess * max(best_slem, 1e-3))
    lower = -math.inf
    history: list[tuple[Any, Any]] = []  # Anderson: differences of T(z) and of residuals
    prev = None  # (z, T(z), residual, its norm) of the last plain step
    stalled = 0
    w_prev, d_prev = w, d
    r_primal = r_dual = 0.0
    it = 0
    converged = False
    while it < max_iter:
        it += 1
        plain, g, w, d, dual = space.step(z, rho)
        g_norm = math.sqrt(max(space.dot(g, g), 0.0))
        if it % check_every == 0 or it == max_iter:
            feasible = np.abs(np.bincount(u, w, n) + np.bincount(v, w, n) + d - 1.0).max() < 1e-9
            slem = space.slem(w, d) if feasible else math.inf
            improved = slem < best_slem - tol / 10
            if slem < best_slem:
                best_slem, best_w, best_d = slem, w, d
            c, trace, total = space.dual_terms(dual, rho)
            lp = _lp_bound(c, A, u, v, zero_diagonal)
            if lp is not None:
                bound = trace - total / n - lp
                improved |= bound > lower + tol / 10
                lower = max(lower, bound)
            stalled = 0 if improved else stalled + 1
            if verbose:
                print(
                    f"fmmc: it {it:5d}  slem {best_slem:.9f}  lower {lower:.9f}  gap "
                    f"{best_slem - lower:.2e}  residual {g_norm:.2e}  rho {rho:.3g}  "
                    f"clipped {dual[1]}  {time.perf_counter() - start:.1f} s",
                    flush=True,
                )
            if best_slem - lower <= tol:
                converged = True
                break
            if stalled >= 20:
                break
            if time_limit is not None and time.perf_counter() - start > time_limit:
                break
        moved = 2.0 * float(np.sum((w - w_prev) ** 2)) + float(np.sum((d - d_prev) ** 2))
        w_prev, d_prev = w, d
        r_primal += g_norm
        r_dual += rho * math.sqrt(moved)
        if it % BALANCE_EVERY == 0:
            ratio = math.sqrt(r_primal / max(r_dual, 1e-300))
            r_primal = r_dual = 0.0
            if ratio > BALANCE or ratio < 1.0 / BALANCE:  # as OSQP does
                new_rho = rho * min(max(ratio, 0.1), 10.0)
                # the same prox point x and dual Y under the new ρ
                z = space.rescale(z, dual, rho / new_rho)
                rho = new_rho
                history, prev = [], None
                continue
        if anderson and history and prev is not None and g_norm > prev[3]:
            # Anderson's extrapolation made things worse: take the plain step instead
            z, history, prev = prev[1], [], None
            continue
        if prev is not None:
            history.append(
                (space.combine(plain, [(1.0, prev[1])]), space.combine(g, [(1.0, prev[2])]))
            )
            history = history[-ANDERSON_MEMORY:]
        prev = (z, plain, g, g_norm)
        z = plain
        if history and anderson:
            k = len(history)
            M = np.array(
                [[space.dot(history[i][1], history[j][1]) for j in range(k)] for i in range(k)]
            )
            rhs = np.array([space.dot(history[i][1], g) for i in range(k)])
            # regularised as in Zhang, O'Donoghue & Boyd (2020): a step that barely moved
            # the residual must not get a huge coefficient
            M[np.diag_indices(k)] += 1e-8 * (np.trace(M) + sum(space.dot(t, t) for t, _ in history))
            try:
                gamma = np.linalg.solve(M, rhs)
            except np.linalg.LinAlgError:  # nothing moved: a fixed point already
                gamma = np.full(k, np.inf)
            if np.all(np.isfinite(gamma)) and np.abs(gamma).sum() < 1e3:
                z = space.combine(plain, [(gamma[i], history[i][0]) for i in range(k)])
            else:
                history = []
    report = FMMCReport(
        solver="first_order",
        slem=best_slem,
        lower_bound=lower,
        gap=best_slem - lower,
        iterations=it,
        seconds=time.perf_counter() - start,
        converged=converged,
        tol=tol,
    )
    return best_w, best_d, report


def cvxpy_weights(
    n: int, u: np.ndarray, v: np.ndarray, *, zero_diagonal: bool = False, eps: float = 1e-7
) -> tuple[np.ndarray, np.ndarray, FMMCReport]:
    """The same problem as an SDP in cvxpy, on the matrix ``W`` (the reference FedEM
    code's formulation, solved with SCS): an exact check of :func:`first_order_weights`.

    SCS's answer is feasible only to about ``eps``; it is made exactly feasible
    (negative weights dropped, rows rescaled or, for a zero diagonal, corrected by a
    least-squares step) before its SLEM is recomputed.  Needs the optional cvxpy.
    """
    start = time.perf_counter()
    what = _what(zero_diagonal)
    try:
        import cvxpy as cp
    except ImportError:
        raise TopologyError(
            f"topology.mixing: {what} with solver 'cvxpy' needs the optional dependency cvxpy "
            "(pip install 'p2p-fmtl[fmmc]'), or use solver 'first_order'"
        ) from None
    check_memory(n, len(u), what, "cvxpy")
    if "SCS" not in cp.installed_solvers():
        raise TopologyError(
            f"topology.mixing: {what} with solver 'cvxpy' needs SCS (pip install scs)"
        )
    mask = np.ones((n, n))
    mask[u, v] = mask[v, u] = 0.0
    if not zero_diagonal:
        mask[np.diag_indices(n)] = 0.0
    W = cp.Variable((n, n), symmetric=True)
    s = cp.Variable()
    X = W - np.full((n, n), 1.0 / n)
    eye = np.eye(n)
    constraints = [
        W @ np.ones(n) == np.ones(n),
        cp.multiply(W, mask) == 0,
        W >= 0,
        X << s * eye,
        X >> -s * eye,
    ]
    problem = cp.Problem(cp.Minimize(s), constraints)
    try:
        problem.solve(solver="SCS", eps_abs=eps, eps_rel=eps, max_iters=200_000)
    except cp.error.SolverError as exc:
        raise TopologyError(f"topology.mixing: {what}: the SDP solver failed: {exc}") from None
    if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        raise _infeasible(what)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or W.value is None:
        raise TopologyError(
            f"topology.mixing: {what}: the SDP solver ended with {problem.status!r}"
        )
    Wv = np.asarray(W.value)
    x = np.clip((Wv[u, v] + Wv[v, u]) / 2.0, 0.0, None)
    A = _incidence(n, u, v)
    if zero_diagonal:
        for _ in range(10):  # onto {A x = 1}, then clip, a few rounds
            r = A @ x - 1.0
            if np.abs(r).max() < 1e-13:
                break
            AAt = (A @ A.T).toarray()
            x = np.clip(x - A.T @ np.linalg.lstsq(AAt, r, rcond=None)[0], 0.0, None)
        if np.abs(A @ x - 1.0).max() > 1e-7:
            raise _infeasible(what)
        d = np.zeros(n)
    else:
        x /= max(1.0, float((A @ x).max()))  # keep every W_ii >= 0
        d = np.maximum(1.0 - A @ x, 0.0)
    slem = _slem(n, u, v, x, d)
    stats = problem.solver_stats
    return (
        x,
        d,
        FMMCReport(
            solver="cvxpy",
            slem=slem,
            lower_bound=math.nan,
            gap=math.nan,
            iterations=int(stats.num_iters or 0),
            seconds=time.perf_counter() - start,
            converged=problem.status == cp.OPTIMAL,
            solver_value=float(problem.value),
        ),
    )


def solve_fmmc(
    n: int,
    u: np.ndarray,
    v: np.ndarray,
    *,
    zero_diagonal: bool = False,
    solver: str = "first_order",
    **options: Any,
) -> tuple[np.ndarray, np.ndarray, FMMCReport]:
    """Fastest-mixing edge weights and diagonal with ``solver`` (see :data:`SOLVERS`).

    ``options`` go to :func:`first_order_weights` (``tol``, ``max_iter``, ``time_limit``,
    ``check_every``, ``verbose``) or :func:`cvxpy_weights` (``eps``).  The zero-diagonal
    problem is refused when it has no feasible point or when its optimum does not
    converge (``SLEM = 1``, as on every bipartite graph).
    """
    what = _what(zero_diagonal)
    if len(u) == 0:
        raise TopologyError(f"topology.mixing: {what} needs a graph with at least one edge")
    if solver == "first_order":
        w, d, report = first_order_weights(n, u, v, zero_diagonal=zero_diagonal, **options)
    elif solver == "cvxpy":
        w, d, report = cvxpy_weights(n, u, v, zero_diagonal=zero_diagonal, **options)
    else:
        from .errors import unknown_name

        raise unknown_name("topology.fmmc_solver", solver, SOLVERS)
    if zero_diagonal and report.slem > 1.0 - 1e-7:
        raise TopologyError(
            f"topology.mixing: {what} has no converging matrix on this graph (SLEM = "
            f"{report.slem:.6g}, as on any bipartite graph or one with a leaf); use "
            "zero_diagonal=false or 'metropolis'"
        )
    return w, d, report
