"""Gossip topologies for decentralized learning: graphs, mixing matrices, spectra.

Pure networkx + numpy + scipy; the fastest-mixing (``fmmc``) rules use the
first-order solver of :mod:`topologies.fmmc`, with cvxpy an optional exact check
(``solver="cvxpy"``).  This package never imports jax or :mod:`p2p_fmtl`.

>>> from topologies import build, mixing_matrix, spectral_gap
>>> G = build("ring", 8)
>>> round(spectral_gap(mixing_matrix(G, "metropolis")), 5)
0.19526
"""

from .errors import TopologyError
from .fmmc import FMMCReport
from .generators import (
    BUILDERS,
    barabasi_albert,
    build,
    builder_params,
    complete,
    edgelist,
    erdos_renyi,
    exponential,
    from_graph,
    grid,
    hypercube,
    planted_partition,
    random_geometric,
    random_regular,
    ring,
    small_world,
    star,
    torus,
    two_cliques,
)
from .mixing import MIXING_RULES, fastest_mixing, mixing_edges, mixing_matrix, validate_mixing
from .spectral import describe, mixing_time, second_largest_eigenvalue_modulus, spectral_gap

__all__ = [
    "BUILDERS",
    "FMMCReport",
    "MIXING_RULES",
    "TopologyError",
    "barabasi_albert",
    "build",
    "builder_params",
    "complete",
    "describe",
    "edgelist",
    "erdos_renyi",
    "exponential",
    "fastest_mixing",
    "from_graph",
    "grid",
    "hypercube",
    "planted_partition",
    "mixing_edges",
    "mixing_matrix",
    "mixing_time",
    "random_geometric",
    "random_regular",
    "ring",
    "second_largest_eigenvalue_modulus",
    "small_world",
    "spectral_gap",
    "star",
    "torus",
    "two_cliques",
    "validate_mixing",
]
