"""Gossip topologies for decentralized learning: graphs, mixing matrices, spectra.

Pure networkx + numpy + scipy; the fastest-mixing (``fmmc``) rules use the
first-order solver of :mod:`topologies.fmmc`, with cvxpy an optional exact check
(``solver="cvxpy"``).  This package never imports jax or :mod:`p2p_fmtl`.

Graphs are ``networkx.Graph`` objects, except that from :data:`LARGE_GRAPH_NODES`
nodes on ``ring``, ``torus``, ``grid`` and ``random_regular`` build an
:class:`EdgeGraph` (numpy edge arrays, no networkx object); every function here
takes either, and :func:`edge_array`, :func:`degrees`, :func:`is_connected`,
:func:`induced_subgraph` and :func:`as_networkx` work on both.

>>> from topologies import build, mixing_matrix, spectral_gap
>>> G = build("ring", 8)
>>> round(spectral_gap(mixing_matrix(G, "metropolis")), 5)
0.19526
"""

from .edgegraph import (
    EdgeGraph,
    as_networkx,
    degrees,
    edge_array,
    induced_subgraph,
    is_connected,
    number_connected_components,
)
from .errors import TopologyError
from .fmmc import FMMCReport
from .generators import (
    BUILDERS,
    LARGE_GRAPH_NODES,
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
    "EdgeGraph",
    "FMMCReport",
    "LARGE_GRAPH_NODES",
    "MIXING_RULES",
    "TopologyError",
    "as_networkx",
    "barabasi_albert",
    "build",
    "builder_params",
    "complete",
    "degrees",
    "describe",
    "edge_array",
    "edgelist",
    "erdos_renyi",
    "exponential",
    "fastest_mixing",
    "from_graph",
    "grid",
    "hypercube",
    "induced_subgraph",
    "is_connected",
    "number_connected_components",
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
