"""Tests of the `topologies` package: builders, mixing rules, validation, spectra."""

from __future__ import annotations

import doctest
import inspect
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import topologies
from topologies import (
    BUILDERS,
    MIXING_RULES,
    TopologyError,
    build,
    builder_params,
    complete,
    describe,
    edgelist,
    from_graph,
    hypercube,
    mixing_edges,
    mixing_matrix,
    mixing_time,
    ring,
    second_largest_eigenvalue_modulus,
    spectral_gap,
    star,
    torus,
    two_cliques,
    validate_mixing,
)

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
RANDOM_BUILDERS = [
    "erdos_renyi",
    "random_regular",
    "small_world",
    "barabasi_albert",
    "random_geometric",
]
CHEAP_RULES = ["metropolis", "max_degree", "lazy_metropolis", "uniform"]


# --------------------------------------------------------------------------------------
# Independent checks
# --------------------------------------------------------------------------------------


def independent_gap(W: np.ndarray) -> float:
    """1 - (second-largest modulus) from np.linalg.eigvals sorted by modulus."""
    mods = np.sort(np.abs(np.linalg.eigvals(W)))[::-1]
    return 1.0 - float(mods[1])


def assert_valid_mixing(G: nx.Graph, W: np.ndarray, rule: str, **kw) -> None:
    n = G.number_of_nodes()
    assert W.shape == (n, n) and W.dtype == np.float64
    validate_mixing(W, G)
    # The same properties, checked here without validate_mixing.
    assert np.all(np.isfinite(W))
    np.testing.assert_allclose(W, W.T, rtol=0, atol=1e-12)
    assert W.min() >= -1e-12
    np.testing.assert_allclose(W.sum(axis=1), 1.0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, rtol=0, atol=1e-10)
    for i, j in zip(*np.nonzero(W), strict=True):
        assert i == j or G.has_edge(int(i), int(j)), (rule, i, j)
    assert abs(spectral_gap(W) - independent_gap(W)) < 1e-8
    # The edge list, scattered into a dense matrix, reproduces W exactly.
    senders, receivers, weights = mixing_edges(G, rule, **kw)
    assert senders.dtype == np.int64 and receivers.dtype == np.int64
    assert weights.dtype == np.float64
    assert len(senders) == 2 * G.number_of_edges() + n
    dense = np.zeros((n, n))
    dense[receivers, senders] = weights
    assert len(set(zip(receivers.tolist(), senders.tolist(), strict=True))) == len(senders)
    assert np.array_equal(dense, W)


def is_regular(G: nx.Graph) -> bool:
    return len({d for _, d in G.degree()}) == 1


# --------------------------------------------------------------------------------------
# Strategies: valid (n, params) for every builder
# --------------------------------------------------------------------------------------


@st.composite
def lattice_args(draw):
    rows = draw(st.integers(2, 4))
    cols = draw(st.integers(2, 5))
    return rows * cols, {"rows": draw(st.sampled_from([None, rows]))}


@st.composite
def two_cliques_args(draw):
    n = draw(st.integers(2, 12))
    a, b = n // 2, n - n // 2
    return n, {"bridges": draw(st.integers(1, a * b))}


@st.composite
def random_regular_args(draw):
    n = draw(st.integers(2, 14))
    if n == 2:
        return n, {"d": 1}
    d = draw(st.integers(2, n - 1).filter(lambda d: n * d % 2 == 0))
    return n, {"d": d}


@st.composite
def small_world_args(draw):
    n = draw(st.integers(5, 14))
    k = draw(st.sampled_from([k for k in (2, 4) if k < n]))
    return n, {"k": k, "beta": draw(st.floats(0.0, 1.0))}


@st.composite
def barabasi_albert_args(draw):
    n = draw(st.integers(2, 14))
    return n, {"m": draw(st.integers(1, min(3, n - 1)))}


@st.composite
def edgelist_args(draw):
    """A random connected graph as (label, label) pairs; the test writes the file."""
    k = draw(st.integers(2, 12))
    labels = draw(st.lists(st.integers(-50, 1000), min_size=k, max_size=k, unique=True))
    pairs = [(labels[i], labels[draw(st.integers(0, i - 1))]) for i in range(1, k)]  # a tree
    extra = draw(st.lists(st.tuples(st.sampled_from(labels), st.sampled_from(labels)), max_size=10))
    return draw(st.sampled_from([None, k])), {"edges": pairs + extra}


@st.composite
def planted_partition_args(draw):
    n = draw(st.integers(2, 14))
    params = {
        "groups": draw(st.integers(1, min(4, n))),
        "p_in": draw(st.floats(0.5, 1.0)),
        "p_out": draw(st.floats(0.25, 1.0)),
    }
    return n, params


ARGS = {
    "ring": st.tuples(st.integers(2, 12), st.just({})),
    "torus": lattice_args(),
    "grid": lattice_args(),
    "complete": st.tuples(st.integers(2, 9), st.just({})),
    "star": st.tuples(st.integers(2, 12), st.just({})),
    "erdos_renyi": st.tuples(st.integers(2, 14), st.fixed_dictionaries({"p": st.floats(0.3, 1.0)})),
    "random_regular": random_regular_args(),
    "small_world": small_world_args(),
    "barabasi_albert": barabasi_albert_args(),
    "random_geometric": st.tuples(
        st.integers(2, 14),
        st.fixed_dictionaries({"radius": st.one_of(st.none(), st.floats(0.4, 1.5))}),
    ),
    "hypercube": st.tuples(st.sampled_from([2, 4, 8, 16, 32]), st.just({})),
    "exponential": st.tuples(st.integers(2, 20), st.just({})),
    "two_cliques": two_cliques_args(),
    "edgelist": edgelist_args(),
    "planted_partition": planted_partition_args(),
}


def test_every_builder_has_a_strategy():
    assert set(ARGS) == set(BUILDERS)


def make(name: str, n, params: dict, seed: int, tmp: Path) -> nx.Graph:
    params = dict(params)
    if name == "edgelist":
        path = tmp / f"edges_{seed}.txt"
        lines = ["# generated", *(f"{u} {v} 1.5" for u, v in params.pop("edges"))]
        path.write_text("\n".join(lines) + "\n")
        params["path"] = path
    return build(name, n, seed=seed, **params)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("edgelists")


# --------------------------------------------------------------------------------------
# Property tests over every builder
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
@PROPERTY
@given(data=st.data(), seed=SEEDS)
def test_builders_give_connected_graphs_with_valid_mixing(name, data, seed, tmp):
    n, params = data.draw(ARGS[name], label="n, params")
    G = make(name, n, params, seed, tmp)
    k = G.number_of_nodes()
    if n is not None:
        assert k == n
    assert type(G) is nx.Graph
    assert list(G.nodes) == list(range(k))
    assert nx.number_of_selfloops(G) == 0
    assert nx.is_connected(G)
    for rule in CHEAP_RULES:
        if rule == "uniform" and not is_regular(G):
            with pytest.raises(TopologyError, match="'uniform' needs a regular graph"):
                mixing_matrix(G, rule)
            continue
        assert_valid_mixing(G, mixing_matrix(G, rule), rule)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@settings(PROPERTY, max_examples=15)
@given(data=st.data(), seed=SEEDS)
def test_same_seed_gives_same_graph(name, data, seed, tmp):
    n, params = data.draw(ARGS[name], label="n, params")
    G1 = make(name, n, params, seed, tmp)
    G2 = make(name, n, params, seed, tmp)
    assert list(G1.edges) == list(G2.edges)
    assert G1.graph == G2.graph


def test_different_seeds_give_different_random_graphs():
    for name in RANDOM_BUILDERS:
        graphs = {tuple(build(name, 20, seed=s).edges) for s in range(5)}
        assert len(graphs) > 1, name


@PROPERTY
@given(n=st.integers(2, 12), p=st.floats(0.3, 1.0), seed=SEEDS)
def test_lazy_metropolis_is_half_identity_plus_metropolis(n, p, seed):
    G = build("erdos_renyi", n, p=p, seed=seed)
    W = mixing_matrix(G, "metropolis")
    L = mixing_matrix(G, "lazy_metropolis")
    np.testing.assert_allclose(L, (np.eye(n) + W) / 2, rtol=0, atol=1e-15)
    lam_w, lam_l = np.linalg.eigvalsh(W), np.linalg.eigvalsh(L)
    np.testing.assert_allclose(lam_l, (1 + lam_w) / 2, atol=1e-12)
    assert lam_l.min() >= -1e-12  # positive semidefinite
    assert spectral_gap(L) == pytest.approx((1 - lam_w[-2]) / 2, abs=1e-12)


# --------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 5, 8, 10, 17, 64])
def test_metropolis_ring_spectrum(n):
    W = mixing_matrix(ring(n), "metropolis")
    k = np.arange(n)
    expected = 1 / 3 + 2 / 3 * np.cos(2 * np.pi * k / n)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(W)), np.sort(expected), atol=1e-12)
    gap = 1 - np.abs(expected[1:]).max()
    assert spectral_gap(W) == pytest.approx(gap, abs=1e-12)
    assert second_largest_eigenvalue_modulus(W) == pytest.approx(1 - gap, abs=1e-12)


def test_metropolis_ring_of_8():
    gap = spectral_gap(mixing_matrix(ring(8)))
    assert gap == pytest.approx(1 - (1 / 3 + 2 / 3 * math.cos(2 * math.pi / 8)), abs=1e-12)
    assert gap == pytest.approx(0.19526, abs=1e-5)
    assert mixing_time(mixing_matrix(ring(8)), eps=1e-3) == math.ceil(
        math.log(1e3) / -math.log(1 - gap)
    )


def test_ring_of_two_is_one_edge():
    G = ring(2)
    assert list(G.edges) == [(0, 1)]
    np.testing.assert_allclose(mixing_matrix(G), np.full((2, 2), 0.5))


@pytest.mark.parametrize("n", range(2, 9))
def test_uniform_on_complete_graph_is_exact_averaging(n):
    W = mixing_matrix(complete(n), "uniform")
    np.testing.assert_allclose(W, np.full((n, n), 1 / n), rtol=0, atol=1e-15)
    assert spectral_gap(W) == pytest.approx(1.0, abs=1e-12)
    assert mixing_time(W) == 1


@pytest.mark.parametrize("d", range(1, 7))
def test_max_degree_hypercube_spectrum(d):
    n = 2**d
    W = mixing_matrix(hypercube(n), "max_degree")
    expected = np.sort(
        np.concatenate([np.full(math.comb(d, k), 1 - 2 * k / (d + 1)) for k in range(d + 1)])
    )
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(W)), expected, atol=1e-12)
    assert spectral_gap(W) == pytest.approx(2 / (d + 1), abs=1e-12)


def test_hypercube_labels_are_bit_strings():
    G = hypercube(16)
    for u, v in G.edges:
        assert bin(u ^ v).count("1") == 1
    assert nx.is_isomorphic(G, nx.hypercube_graph(4))


@pytest.mark.parametrize("n", [3, 4, 7, 12])
@pytest.mark.parametrize("rule", ["metropolis", "max_degree"])
def test_star_spectrum(n, rule):
    # Both rules give W = I - L/n; the star Laplacian has spectrum {0, 1 (n-2 times), n}.
    W = mixing_matrix(star(n), rule)
    expected = np.sort([1.0] + [1 - 1 / n] * (n - 2) + [0.0])
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(W)), expected, atol=1e-12)
    assert spectral_gap(W) == pytest.approx(1 / n, abs=1e-12)
    assert W[0, 0] == pytest.approx(1 / n) and W[1, 1] == pytest.approx(1 - 1 / n)


@pytest.mark.parametrize("rows, cols", [(3, 3), (3, 4), (4, 5), (5, 5)])
def test_max_degree_torus_spectrum(rows, cols):
    W = mixing_matrix(torus(rows * cols, rows=rows), "max_degree")
    a, b = np.meshgrid(np.arange(rows), np.arange(cols))
    lap = 4 - 2 * np.cos(2 * np.pi * a / rows) - 2 * np.cos(2 * np.pi * b / cols)
    expected = np.sort((1 - lap / 5).ravel())
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(W)), expected, atol=1e-12)


def test_torus_and_grid_shapes():
    T = torus(12)
    assert T.graph["name"] == "torus(n=12, rows=3, cols=4)"
    assert is_regular(T) and T.degree[0] == 4
    assert sorted(T[5]) == [1, 4, 6, 9]  # (1, 1) -> (0, 1), (1, 0), (1, 2), (2, 1)
    G = build("grid", 12, rows=2)
    assert G.graph["name"] == "grid(n=12, rows=2, cols=6)"
    assert nx.is_isomorphic(G, nx.grid_2d_graph(2, 6))
    assert torus(16).number_of_edges() == 32


def test_exponential_graph_neighbours():
    G = build("exponential", 16)
    assert sorted(G[0]) == [1, 2, 4, 8, 12, 14, 15]
    assert is_regular(G)
    assert list(build("exponential", 2).edges) == [(0, 1)]


def test_two_cliques_structure():
    G = two_cliques(9, bridges=3)
    a = 4
    cross = sorted((u, v) for u, v in G.edges if u < a <= v)
    assert cross == [(0, 4), (1, 5), (2, 6)]
    assert G.number_of_edges() == 6 + 10 + 3
    g1 = spectral_gap(mixing_matrix(two_cliques(10, bridges=1)))
    g5 = spectral_gap(mixing_matrix(two_cliques(10, bridges=5)))
    assert 0 < g1 < g5


def test_describe():
    G = ring(8)
    d = describe(G, mixing_matrix(G), "metropolis")
    assert d == {
        "nodes": 8,
        "edges": 8,
        "mixing": "metropolis",
        "spectral_gap": pytest.approx(0.19526, abs=1e-5),
        "slem": pytest.approx(1 - 0.19526, abs=1e-5),
        "min_degree": 2,
        "max_degree": 2,
        "mean_degree": 2.0,
        "diameter": 4,
        "is_connected": True,
    }
    assert describe(G, None, "metropolis")["spectral_gap"] is None


def test_spectral_functions_on_non_symmetric_and_edge_cases():
    P = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # a 3-cycle
    assert second_largest_eigenvalue_modulus(P) == pytest.approx(1.0)
    assert mixing_time(P) == math.inf
    Q = np.array([[0.5, 0.5], [0.25, 0.75]])  # eigenvalues 1 and 0.25
    assert second_largest_eigenvalue_modulus(Q) == pytest.approx(0.25)
    assert second_largest_eigenvalue_modulus([[1.0]]) == 0.0
    assert mixing_time(np.eye(2)) == math.inf  # disconnected: never mixes


# --------------------------------------------------------------------------------------
# mixing_edges at scale
# --------------------------------------------------------------------------------------


def test_mixing_edges_on_a_ring_of_100000_nodes_is_fast():
    G = ring(100_000)
    for rule in ["metropolis", "max_degree", "uniform", "lazy_metropolis"]:
        start = time.perf_counter()
        senders, receivers, weights = mixing_edges(G, rule)
        elapsed = time.perf_counter() - start
        assert elapsed < 2.0, (rule, elapsed)
        assert len(weights) == 300_000
        np.testing.assert_allclose(np.bincount(receivers, weights), 1.0, atol=1e-12)
    s, r, w = mixing_edges(G, "metropolis")
    np.testing.assert_allclose(w, 1 / 3)
    assert (s[:3].tolist(), r[:3].tolist()) == ([0, 1, 99_999], [0, 0, 0])


# --------------------------------------------------------------------------------------
# FMMC
# --------------------------------------------------------------------------------------


FMMC_GRAPHS = {
    "ring5": lambda: ring(5),
    "star6": lambda: star(6),
    "grid9": lambda: build("grid", 9),
    "two_cliques8": lambda: two_cliques(8),
    "barabasi10": lambda: build("barabasi_albert", 10, m=1, seed=2),
    "hypercube8": lambda: hypercube(8),
}


@pytest.mark.parametrize("graph", sorted(FMMC_GRAPHS))
def test_fmmc_is_valid_and_mixes_at_least_as_fast(graph):
    G = FMMC_GRAPHS[graph]()
    W = mixing_matrix(G, "fmmc")
    assert_valid_mixing(G, W, "fmmc")
    gap = spectral_gap(W)
    for rule in ["metropolis", "max_degree", "lazy_metropolis"]:
        assert gap >= spectral_gap(mixing_matrix(G, rule)) - 1e-7, rule


def test_fmmc_known_optimum_and_strict_improvement():
    # Star on n nodes: W = I - w L has eigenvalues {1, 1 - w, 1 - n w} and the hub's
    # diagonal 1 - (n - 1) w >= 0 caps w at 1/(n-1), the optimum: gap 1/(n-1) > 1/n.
    n = 6
    gap = spectral_gap(mixing_matrix(star(n), "fmmc"))
    assert gap == pytest.approx(1 / (n - 1), abs=1e-6)
    assert gap > spectral_gap(mixing_matrix(star(n), "metropolis")) + 0.03


def test_fmmc_zero_diagonal():
    G = ring(5)
    W = mixing_matrix(G, "fmmc", zero_diagonal=True)
    assert_valid_mixing(G, W, "fmmc", zero_diagonal=True)
    assert np.all(np.diag(W) == 0.0)
    np.testing.assert_allclose(W[0, [1, 4]], 0.5, atol=1e-7)
    with pytest.raises(TopologyError, match="zero_diagonal=true is infeasible"):
        mixing_matrix(star(5), "fmmc", zero_diagonal=True)
    with pytest.raises(TopologyError, match="no converging matrix"):
        mixing_matrix(ring(4), "fmmc", zero_diagonal=True)  # bipartite
    with pytest.raises(TopologyError, match="zero_diagonal: got 1, expected true or false"):
        mixing_matrix(G, "fmmc", zero_diagonal=1)


def test_fmmc_without_cvxpy_solves_and_names_the_extra_only_for_the_cvxpy_solver(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # makes `import cvxpy` fail
    assert_valid_mixing(ring(5), mixing_matrix(ring(5), "fmmc"), "fmmc")
    with pytest.raises(TopologyError) as err:
        mixing_matrix(ring(5), "fmmc", solver="cvxpy")
    assert str(err.value) == (
        "topology.mixing: 'fmmc' with solver 'cvxpy' needs the optional dependency cvxpy "
        "(pip install 'p2p-fmtl[fmmc]'), or use solver 'first_order'"
    )


# --------------------------------------------------------------------------------------
# validate_mixing errors
# --------------------------------------------------------------------------------------


def test_validate_rejects_non_symmetric():
    W = np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.25, 0.0, 0.75]])
    with pytest.raises(TopologyError, match=r"entry \(0, 1\) is 0.5 but entry \(1, 0\) is 0.25"):
        validate_mixing(W)


def test_validate_rejects_negative():
    W = np.array([[1.1, -0.1], [-0.1, 1.1]])
    with pytest.raises(TopologyError, match=r"entry \(0, 1\) is -0.1, expected >= 0"):
        validate_mixing(W)


def test_validate_rejects_non_stochastic():
    W = mixing_matrix(ring(5))
    W[3, 3] -= 0.05
    with pytest.raises(TopologyError) as err:
        validate_mixing(W)
    assert str(err.value) == "mixing matrix: row 3 sums to 0.95, expected 1 (doubly stochastic)"


def test_validate_rejects_a_row_sum_above_one_and_bad_shapes():
    with pytest.raises(TopologyError, match=r"^mixing matrix: row 0 sums to 1.1, expected 1"):
        validate_mixing(np.array([[0.6, 0.5], [0.5, 0.4]]))
    with pytest.raises(TopologyError, match=r"got shape \(2, 3\), expected a square"):
        validate_mixing(np.ones((2, 3)) / 3)


def test_validate_rejects_support_off_the_graph():
    W = np.full((4, 4), 0.25)
    with pytest.raises(TopologyError) as err:
        validate_mixing(W, ring(4))
    assert "entry (0, 2) is 0.25, expected 0" in str(err.value)
    assert "0 and 2 are not neighbours" in str(err.value)


def test_validate_rejects_disconnected():
    W = np.zeros((4, 4))
    W[:2, :2] = W[2:, 2:] = 0.5
    with pytest.raises(TopologyError, match="support is disconnected .node 0 cannot reach node 2"):
        validate_mixing(W)
    validate_mixing(W, require_connected=False)
    G = nx.Graph([(0, 1), (2, 3)])
    with pytest.raises(TopologyError, match=r"the graph is disconnected \(2 components\)"):
        validate_mixing(W, G)


def test_validate_rejects_shape_mismatch_and_nan():
    with pytest.raises(TopologyError, match=r"got shape \(3, 3\) for a graph with 4 nodes"):
        validate_mixing(np.full((3, 3), 1 / 3), ring(4))
    W = np.full((2, 2), 0.5)
    W[1, 0] = np.nan
    with pytest.raises(TopologyError, match=r"entry \(1, 0\) is nan, expected finite"):
        validate_mixing(W)


# --------------------------------------------------------------------------------------
# build / builder errors
# --------------------------------------------------------------------------------------


def test_unknown_name_suggests_the_closest():
    with pytest.raises(TopologyError) as err:
        build("rign", 5)
    msg = str(err.value)
    assert msg.startswith("topology.name: unknown 'rign'; allowed: ring, torus, grid")
    assert msg.endswith("(did you mean 'ring'?)")
    assert "\n" not in msg
    with pytest.raises(TopologyError, match="did you mean 'erdos_renyi'"):
        build("erdos_reny", 5)
    with pytest.raises(TopologyError, match="did you mean 'metropolis'"):
        mixing_matrix(ring(4), "metropolys")


def test_unknown_key():
    with pytest.raises(TopologyError) as err:
        build("ring", 5, foo=1)
    assert str(err.value) == "topology.foo: unknown key for 'ring'; allowed: (none)"
    with pytest.raises(TopologyError) as err:
        build("erdos_renyi", 5, pp=0.3)
    assert str(err.value) == (
        "topology.pp: unknown key for 'erdos_renyi'; allowed: p, max_tries (did you mean 'p'?)"
    )
    with pytest.raises(TopologyError, match="topology.zero_diagonal: unknown key for mixing rule"):
        mixing_matrix(ring(5), "metropolis", zero_diagonal=True)


@pytest.mark.parametrize("p", [0, 1.5, -0.2, float("nan"), True, "0.5"])
def test_bad_probability(p):
    expected = r"^topology.p: got .*, expected a probability in \(0, 1\]$"
    with pytest.raises(TopologyError, match=expected):
        build("erdos_renyi", 10, p=p)


def test_p_equal_to_one_is_the_complete_graph():
    assert nx.is_isomorphic(build("erdos_renyi", 6, p=1), complete(6))


@pytest.mark.parametrize(
    "name, n, needs",
    [
        ("ring", 1, ">= 2"),
        ("complete", 0, ">= 2"),
        ("star", -3, ">= 2"),
        ("torus", 3, ">= 4"),
        ("small_world", 2, ">= 3"),
        ("ring", 2.0, ">= 2"),
        ("ring", True, ">= 2"),
    ],
)
def test_n_too_small_or_not_an_integer(name, n, needs):
    with pytest.raises(TopologyError, match=rf"^topology.n: got .*, expected an integer {needs}"):
        build(name, n)


def test_n_missing():
    with pytest.raises(TopologyError, match="topology.n: missing; 'ring' needs the number"):
        build("ring")


def test_integer_params_reject_floats_and_bools():
    with pytest.raises(TopologyError, match="topology.d: got 4.0"):
        build("random_regular", 10, d=4.0)
    with pytest.raises(TopologyError, match="topology.bridges: got True"):
        build("two_cliques", 10, bridges=True)
    with pytest.raises(TopologyError, match="topology.seed: got -1"):
        build("ring", 5, seed=-1)
    assert list(build("ring", np.int64(4)).nodes) == [0, 1, 2, 3]


def test_hypercube_needs_a_power_of_two():
    with pytest.raises(TopologyError) as err:
        build("hypercube", 6)
    assert str(err.value) == (
        "topology.n: got 6, expected a power of two >= 2 for 'hypercube' (nearest: 4 or 8)"
    )


def test_torus_needs_a_factorization():
    with pytest.raises(TopologyError, match="topology.n: got 7, .*rows x cols.*it is prime"):
        build("torus", 7)
    with pytest.raises(TopologyError, match=r"topology.rows: got 5, .*\(allowed: 2, 3, 4, 6\)"):
        build("torus", 12, rows=5)


def test_erdos_renyi_that_cannot_connect():
    with pytest.raises(TopologyError) as err:
        build("erdos_renyi", 50, p=0.001, seed=0, max_tries=5)
    msg = str(err.value)
    assert msg.startswith("topology.p: got 0.001, but G(n=50, p) was disconnected in all 5 tries")
    assert "ln(n)/n = 0.07824" in msg


def test_other_parameter_errors():
    with pytest.raises(TopologyError, match="topology.d: got 3, expected an even d"):
        build("random_regular", 5, d=3)
    with pytest.raises(TopologyError, match="never connected"):
        build("random_regular", 6, d=1)
    with pytest.raises(TopologyError, match="topology.k: got 3, expected an even integer"):
        build("small_world", 10, k=3)
    with pytest.raises(TopologyError, match=r"topology.beta: got 1.5, .* probability in \[0, 1\]"):
        build("small_world", 10, beta=1.5)
    with pytest.raises(TopologyError, match="topology.m: got 5"):
        build("barabasi_albert", 5, m=5)
    with pytest.raises(TopologyError, match="topology.radius: got 0.01, but .*larger radius"):
        build("random_geometric", 30, radius=0.01, seed=0, max_tries=3)
    with pytest.raises(TopologyError, match="topology.radius: got -1, expected a finite number"):
        build("random_geometric", 30, radius=-1)


def test_uniform_rejects_non_regular_graph():
    with pytest.raises(TopologyError) as err:
        mixing_matrix(star(5), "uniform")
    assert "use 'metropolis' or 'max_degree'" in str(err.value)


def test_mixing_rejects_bad_graphs():
    with pytest.raises(TopologyError, match="from_graph"):
        mixing_matrix(nx.path_graph(["a", "b", "c"]))
    with pytest.raises(TopologyError, match="undirected simple"):
        mixing_matrix(nx.DiGraph([(0, 1), (1, 0)]))


# --------------------------------------------------------------------------------------
# edgelist and from_graph
# --------------------------------------------------------------------------------------


def test_edgelist_reads_a_file(tmp_path):
    path = tmp_path / "net.txt"
    path.write_text("# my network\n10 20\n20 30 0.5  # weighted\n\n30 30\n5 10\n10 20\n")
    G = edgelist(path=path)
    assert list(G.nodes) == [0, 1, 2, 3]
    assert [G.nodes[i]["label"] for i in G] == [5, 10, 20, 30]
    assert sorted(G.edges) == [(0, 1), (1, 2), (2, 3)]
    assert list(build("edgelist", 4, path=str(path)).edges) == list(G.edges)
    names = tmp_path / "names.txt"
    names.write_text("bob alice\ncarol bob\n")
    assert [build("edgelist", path=names).nodes[i]["label"] for i in range(3)] == [
        "alice",
        "bob",
        "carol",
    ]


def test_edgelist_errors(tmp_path):
    path = tmp_path / "net.txt"
    path.write_text("0 1\n1 2\n")
    with pytest.raises(TopologyError) as err:
        build("edgelist", 5, path=path)
    assert str(err.value).startswith(f"topology.n: got 5, but {str(path)!r} has 3 nodes")
    missing = tmp_path / "nope.txt"
    with pytest.raises(TopologyError) as err:
        build("edgelist", path=missing)
    assert str(err.value) == f"topology.path: file not found: {str(missing)!r}"
    with pytest.raises(TopologyError, match="topology.path: missing; 'edgelist' needs it"):
        build("edgelist", 3)
    path.write_text("0 1\n2 3\n")
    with pytest.raises(TopologyError, match=r"is disconnected \(2 components\)"):
        build("edgelist", path=path)
    path.write_text("0 1 2 3\n")
    with pytest.raises(TopologyError, match="line 1: got 4 columns"):
        build("edgelist", path=path)
    path.write_text("# nothing\n")
    with pytest.raises(TopologyError, match="has no edges"):
        build("edgelist", path=path)


def test_from_graph():
    D = nx.MultiDiGraph([("b", "a"), ("b", "c"), ("c", "b"), ("c", "c")])
    G = from_graph(D)
    assert type(G) is nx.Graph
    assert sorted(G.edges) == [(0, 1), (1, 2)]
    assert [G.nodes[i]["label"] for i in G] == ["a", "b", "c"]
    mixed = nx.Graph([(3, "x"), ("x", (1, 2))])  # unsortable: insertion order
    H = from_graph(mixed)
    assert [H.nodes[i]["label"] for i in H] == [3, "x", (1, 2)]
    validate_mixing(mixing_matrix(H), H)
    with pytest.raises(TopologyError, match="disconnected"):
        from_graph(nx.Graph([(0, 1), (2, 3)]))
    with pytest.raises(TopologyError, match="expected a networkx graph"):
        from_graph([(0, 1)])


# --------------------------------------------------------------------------------------
# Registry, signatures, docs, imports
# --------------------------------------------------------------------------------------


def test_builder_params_and_uniform_signatures():
    assert builder_params("ring") == {}
    assert builder_params("erdos_renyi") == {"p": 0.5, "max_tries": 100}
    assert builder_params("torus") == {"rows": None}
    assert builder_params("edgelist") == {"path": inspect.Parameter.empty}
    for name, fn in BUILDERS.items():
        params = inspect.signature(fn).parameters
        assert list(params)[0] == "n", name
        assert params["seed"].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["seed"].default is None
        assert fn.__doc__ and "Notes" in fn.__doc__ and ">>>" in fn.__doc__, name
    for name, fn in MIXING_RULES.items():
        assert fn.__doc__ and "math::" in fn.__doc__, name  # states its formula
    with pytest.raises(TopologyError, match="did you mean 'ring'"):
        builder_params("rng")


def test_deterministic_builders_ignore_the_seed():
    for name in ["ring", "complete", "star", "hypercube", "exponential"]:
        assert list(build(name, 8, seed=1).edges) == list(build(name, 8, seed=2).edges)


@pytest.mark.parametrize("module", ["errors", "generators", "mixing", "spectral", "__init__"])
def test_docstring_examples(module):
    import importlib

    mod = topologies if module == "__init__" else importlib.import_module(f"topologies.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_package_imports_neither_jax_nor_p2p_fmtl_nor_scipy():
    code = (
        "import sys, topologies as t\n"
        "G = t.build('erdos_renyi', 12, seed=0)\n"
        "t.validate_mixing(t.mixing_matrix(G), G)\n"
        "t.describe(G, t.mixing_matrix(G), 'metropolis')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'p2p_fmtl', 'scipy'))\n"
        "print(bad)\n"
    )
    root = Path(topologies.__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    source = "\n".join(p.read_text() for p in Path(topologies.__file__).parent.glob("*.py"))
    assert not re.search(r"^\s*(import|from)\s+(jax|p2p_fmtl)\b", source, re.MULTILINE)


def test_erdos_renyi_first_try_is_the_reference_graph():
    """With a given seed, the first draw is nx.binomial_graph(n, p, seed) (FedEM's call)."""
    G = build("erdos_renyi", 30, p=0.5, seed=1234)
    H = nx.binomial_graph(30, 0.5, seed=1234)
    assert sorted(G.edges()) == sorted(H.edges())


# --------------------------------------------------------------------------------------
# planted_partition
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, groups", [(2, 1), (2, 2), (10, 3), (12, 4), (13, 5), (9, 9)])
def test_planted_partition_groups_are_contiguous_array_split_blocks(n, groups):
    G = build("planted_partition", n, groups=groups, p_in=1.0, p_out=1.0, seed=0)
    expected = np.repeat(np.arange(groups), [len(b) for b in np.array_split(range(n), groups)])
    assert [G.nodes[v]["group"] for v in G] == expected.tolist()
    assert nx.is_isomorphic(G, complete(n))  # p_in = p_out = 1


def test_planted_partition_block_structure():
    G = build("planted_partition", 12, groups=3, p_in=1.0, p_out=0.1, seed=4)
    group = nx.get_node_attributes(G, "group")
    for g in range(3):  # every group is a clique (p_in = 1)
        members = [v for v in G if group[v] == g]
        assert len(members) == 4
        assert all(G.has_edge(u, v) for u in members for v in members if u < v)
    assert G.graph["name"] == "planted_partition(n=12, groups=3, p_in=1, p_out=0.1, seed=4)"
    H = build("planted_partition", 12, groups=4, p_in=0.0, p_out=1.0, seed=0)
    assert all(H.nodes[u]["group"] != H.nodes[v]["group"] for u, v in H.edges)  # multipartite
    assert H.number_of_edges() == 66 - 4 * 3


def test_planted_partition_edge_frequencies():
    """Within- and across-group edge frequencies match p_in and p_out."""
    n, groups, p_in, p_out = 60, 3, 0.4, 0.05
    within = across = within_pairs = across_pairs = 0
    for seed in range(20):
        G = build("planted_partition", n, groups=groups, p_in=p_in, p_out=p_out, seed=seed)
        g = np.array([G.nodes[v]["group"] for v in G])
        for u, v in G.edges:
            if g[u] == g[v]:
                within += 1
            else:
                across += 1
        within_pairs += 3 * 20 * 19 // 2
        across_pairs += n * (n - 1) // 2 - 3 * 20 * 19 // 2
    # 20 graphs: 11400 within pairs, 24000 across; 5 standard deviations
    assert abs(within / within_pairs - p_in) < 5 * math.sqrt(p_in * (1 - p_in) / within_pairs)
    assert abs(across / across_pairs - p_out) < 5 * math.sqrt(p_out * (1 - p_out) / across_pairs)


def test_planted_partition_seeds_and_defaults():
    G1 = build("planted_partition", 40, seed=7)
    G2 = build("planted_partition", 40, seed=7)
    assert list(G1.edges) == list(G2.edges)
    assert len({tuple(build("planted_partition", 40, seed=s).edges) for s in range(5)}) > 1
    assert builder_params("planted_partition") == {
        "groups": 4,
        "p_in": 0.5,
        "p_out": 0.02,
        "max_tries": 100,
    }
    G = build("planted_partition", 1000, groups=10, p_in=0.05, p_out=0.001, seed=1)
    assert nx.is_connected(G) and G.number_of_nodes() == 1000


def test_planted_partition_errors():
    with pytest.raises(TopologyError) as err:
        build("planted_partition", 5, groups=6)
    assert str(err.value) == ("topology.groups: got 6, expected an integer with 1 <= groups <= 5")
    with pytest.raises(TopologyError, match=r"^topology.groups: got 0,"):
        build("planted_partition", 5, groups=0)
    with pytest.raises(TopologyError, match=r"^topology.p_in: got 1.5, expected a probability"):
        build("planted_partition", 8, p_in=1.5)
    with pytest.raises(TopologyError, match=r"^topology.p_out: got -0.1, expected a probability"):
        build("planted_partition", 8, p_out=-0.1)
    with pytest.raises(TopologyError, match=r"^topology.p_out: got 0, but with groups=2 > 1"):
        build("planted_partition", 8, groups=2, p_out=0)
    with pytest.raises(TopologyError, match=r"^topology.p_in: got 0, but with groups=1"):
        build("planted_partition", 8, groups=1, p_in=0)
    with pytest.raises(TopologyError) as err:
        build("planted_partition", 60, groups=3, p_in=0.02, p_out=0.001, seed=0, max_tries=3)
    msg = str(err.value)
    assert msg.startswith("topology.p_out: got 0.001, but planted_partition(n=60, groups=3")
    assert "disconnected in all 3 tries (seed=0)" in msg and "\n" not in msg
    with pytest.raises(TopologyError, match=r"^topology.n: got 1, expected an integer >= 2"):
        build("planted_partition", 1, groups=1)
