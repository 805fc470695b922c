"""The first-order fastest-mixing solver (topologies.fmmc): closed forms, feasibility,
certificates, refusals, and (where cvxpy is installed) the SDP itself."""

from __future__ import annotations

import math
import sys

import networkx as nx
import numpy as np
import pytest

import topologies.fmmc as fmmc_module
from topologies import (
    TopologyError,
    build,
    complete,
    fastest_mixing,
    hypercube,
    mixing_edges,
    mixing_matrix,
    ring,
    second_largest_eigenvalue_modulus,
    star,
    validate_mixing,
)
from topologies.mixing import _edge_arrays

TOL = 1e-7  # tighter than the default, so that closed forms can be checked to 1e-6


def slem(W: np.ndarray) -> float:
    """An independent SLEM: numpy's eigenvalues of the dense matrix, the 1 dropped."""
    lam = np.sort(np.linalg.eigvalsh(W))
    return float(max(abs(lam[0]), abs(lam[-2])))


def solve(G: nx.Graph, **kw):
    W, report = fastest_mixing(G, tol=TOL, **kw)
    assert report.solver == "first_order" and report.converged
    # the report's numbers are those of W, and the certificate brackets them
    assert report.slem == pytest.approx(slem(W), abs=1e-10)
    assert report.lower_bound <= report.slem + 1e-12
    assert report.gap <= TOL
    return W, report


# --------------------------------------------------------------------------------------
# Closed forms (Boyd, Diaconis & Xiao 2004, and symmetry: averaging an optimum over the
# graph's automorphisms keeps it optimal, so vertex- and edge-transitive graphs have an
# optimum with one weight per edge, and then the SLEM is a function of that weight)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 8])
def test_complete_graph_averages_in_one_step(n):
    W, report = solve(complete(n))
    np.testing.assert_allclose(W, np.full((n, n), 1.0 / n), atol=1e-6)
    assert report.slem <= 1e-6


@pytest.mark.parametrize("n", [3, 6])
def test_complete_graph_with_zero_diagonal(n):
    # W = (11ᵀ − I)/(n − 1): eigenvalues 1 and −1/(n − 1); it is the only feasible W
    # symmetric under all permutations, hence optimal
    W, report = solve(complete(n), zero_diagonal=True)
    np.testing.assert_allclose(W, (np.ones((n, n)) - np.eye(n)) / (n - 1), atol=1e-6)
    assert report.slem == pytest.approx(1.0 / (n - 1), abs=1e-6)
    assert np.all(np.diag(W) == 0.0)


@pytest.mark.parametrize("n", [4, 7])
def test_path_has_weight_one_half_and_slem_cos_pi_over_n(n):
    # Boyd, Diaconis & Xiao (2004), section 6.1: the FMMC on a path puts 1/2 on every
    # edge; W is then the lazy walk with eigenvalues cos(πk/n)
    W, report = solve(nx.path_graph(n))
    assert report.slem == pytest.approx(math.cos(math.pi / n), abs=1e-6)
    np.testing.assert_allclose(np.diag(W, 1), 0.5, atol=1e-4)


@pytest.mark.parametrize("n", [10, 30])
def test_even_ring(n):
    # one weight p on every edge: eigenvalues 1 − 2p(1 − cos(2πk/n)); the second largest
    # (k = 1) and the smallest (k = n/2: 1 − 4p) balance at p = 1/(3 − cos(2π/n))
    c = math.cos(2 * math.pi / n)
    W, report = solve(ring(n))
    assert report.slem == pytest.approx((1 + c) / (3 - c), abs=1e-6)
    assert W[0, 1] == pytest.approx(1 / (3 - c), abs=1e-4)


def test_star_and_hypercube():
    # star on n nodes: the hub's W_ii >= 0 caps the leaf weight at 1/(n − 1), which is
    # optimal: SLEM (n − 2)/(n − 1).  d-cube: weight 1/(d + 1), SLEM (d − 1)/(d + 1).
    assert solve(star(7))[1].slem == pytest.approx(5 / 6, abs=1e-6)
    assert solve(hypercube(32))[1].slem == pytest.approx(4 / 6, abs=1e-6)


def test_odd_ring_with_zero_diagonal_is_forced():
    # Σ_j W_ij = 1 with W_ii = 0 on an odd cycle has the single solution W_ij = 1/2
    W, report = solve(ring(7), zero_diagonal=True)
    np.testing.assert_allclose(W[0, [1, 6]], 0.5, atol=1e-9)
    assert report.slem == pytest.approx(math.cos(math.pi / 7), abs=1e-9)


# --------------------------------------------------------------------------------------
# Feasibility, and never worse than the local rules
# --------------------------------------------------------------------------------------


GRAPHS = {
    "er20": lambda: build("erdos_renyi", 20, p=0.3, seed=1),
    "regular16": lambda: build("random_regular", 16, d=3, seed=2),
    "two_cliques12": lambda: build("two_cliques", 12),
    "tree15": lambda: build("barabasi_albert", 15, m=1, seed=3),
    "grid12": lambda: build("grid", 12),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_valid_and_at_least_as_fast_as_local_rules(name):
    G = GRAPHS[name]()
    W = mixing_matrix(G, "fmmc")
    validate_mixing(W, G, atol=1e-10)
    assert np.all(W >= 0.0)  # exactly, not just within atol
    best = second_largest_eigenvalue_modulus(W)
    for rule in ["metropolis", "max_degree", "lazy_metropolis"]:
        assert best <= second_largest_eigenvalue_modulus(mixing_matrix(G, rule)) + 1e-5, rule


def test_mixing_edges_gives_the_same_weights():
    G = GRAPHS["two_cliques12"]()
    s, r, w = mixing_edges(G, "fmmc")
    dense = np.zeros((12, 12))
    dense[r, s] = w
    np.testing.assert_allclose(dense, mixing_matrix(G, "fmmc"), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_zero_diagonal_on_random_graphs(seed):
    G = build("erdos_renyi", 24, p=0.4, seed=seed)
    W, report = solve(G, zero_diagonal=True)
    validate_mixing(W, G, atol=1e-10)
    assert np.all(np.diag(W) == 0.0) and np.all(W >= 0.0)
    W_free, report_free = solve(G)
    assert report_free.slem <= report.slem + 1e-6  # one constraint fewer
    assert report.lower_bound <= report.slem


def test_low_rank_path_agrees_with_the_dense_one():
    # the path for large sparse graphs (sparse plus low-rank iterates, ARPACK), forced on
    # a small graph: the two certificates must bracket each other's SLEM
    G = build("random_regular", 90, d=3, seed=0)
    n, u, v, _ = _edge_arrays(G)
    runs = [
        fmmc_module.first_order_weights(n, u, v, tol=1e-4, low_rank=flag) for flag in (False, True)
    ]
    (_, _, dense), (w, d, low) = runs
    assert dense.converged and low.converged
    assert low.lower_bound <= dense.slem + 1e-12 and dense.lower_bound <= low.slem + 1e-12
    W = np.diag(d)
    W[u, v] = W[v, u] = w
    validate_mixing(W, G, atol=1e-10)
    assert slem(W) == pytest.approx(low.slem, abs=1e-9)


def test_certificate_bounds_the_optimum_of_a_known_case():
    # the lower bound never passes the true optimum cos(π/n) of a path, even when
    # the solver is stopped early
    n = 9
    _, _, report = fmmc_module.first_order_weights(
        n, np.arange(n - 1), np.arange(1, n), max_iter=15, check_every=5
    )
    assert report.lower_bound <= math.cos(math.pi / n) + 1e-12 <= report.slem + 1e-12
    assert report.iterations == 15 and not report.converged


# --------------------------------------------------------------------------------------
# Refusals and options
# --------------------------------------------------------------------------------------


def test_zero_diagonal_refusals():
    with pytest.raises(TopologyError, match=r"zero_diagonal=true is infeasible on this graph"):
        mixing_matrix(star(5), "fmmc_zero_diagonal")
    with pytest.raises(TopologyError, match=r"no converging matrix on this graph \(SLEM = 1"):
        mixing_matrix(ring(6), "fmmc", zero_diagonal=True)  # bipartite: eigenvalue −1


def test_memory_is_estimated_before_solving(monkeypatch):
    monkeypatch.setattr(fmmc_module, "_available_bytes", lambda: 10 * 2**20)
    with pytest.raises(TopologyError) as err:
        mixing_matrix(ring(400), "fmmc")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("topology.mixing: 'fmmc' with solver 'first_order' on 400 nodes")
    assert "GiB, but only 0.0 GiB is available; use 'metropolis'" in message
    # the estimate: 22 dense n x n float64 arrays, but O(n + m) on a large sparse graph
    dense = fmmc_module.fmmc_memory_bytes(2000, 100_000)
    assert dense == pytest.approx(22 * 8 * 2000**2, rel=0.1)
    assert fmmc_module.fmmc_memory_bytes(2000, 10_000) < dense / 10


def test_unknown_solver_and_missing_cvxpy(monkeypatch):
    with pytest.raises(TopologyError, match=r"topology.solver: unknown 'cvx'; allowed: "):
        mixing_matrix(ring(5), "fmmc", solver="cvx")
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # makes `import cvxpy` fail
    with pytest.raises(TopologyError) as err:
        mixing_matrix(ring(5), "fmmc_zero_diagonal", solver="cvxpy")
    assert str(err.value) == (
        "topology.mixing: 'fmmc' with zero_diagonal=true with solver 'cvxpy' needs the "
        "optional dependency cvxpy (pip install 'p2p-fmtl[fmmc]'), or use solver 'first_order'"
    )
    W = mixing_matrix(ring(5), "fmmc")  # the default needs no cvxpy
    validate_mixing(W, ring(5))


# --------------------------------------------------------------------------------------
# Against the SDP (cvxpy, W-matrix formulation with SCS), where it is installed
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("zero_diagonal", [False, True])
def test_matches_the_sdp_on_a_30_node_erdos_renyi_graph(zero_diagonal):
    pytest.importorskip("cvxpy")
    G = build("erdos_renyi", 30, p=0.5, seed=0)
    n, u, v, _ = _edge_arrays(G)
    _, _, first = fmmc_module.solve_fmmc(n, u, v, zero_diagonal=zero_diagonal, tol=1e-6)
    _, _, sdp = fmmc_module.solve_fmmc(n, u, v, zero_diagonal=zero_diagonal, solver="cvxpy")
    assert abs(first.slem - sdp.slem) <= 1e-4
    assert abs(first.slem - sdp.solver_value) <= 1e-4
    # the certified bound holds for SCS's (repaired, feasible) matrix too
    assert first.lower_bound <= sdp.slem + 1e-9
