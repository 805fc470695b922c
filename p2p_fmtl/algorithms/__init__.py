"""Algorithms, one module each; :data:`ALGORITHMS` maps config names to their specs."""

from __future__ import annotations

from typing import Any

from .average import SPEC as AVERAGE
from .base import Algorithm, AlgorithmSpec, Context, NodeData
from .dem import SPEC as DEM
from .dsgd import SPEC as DSGD
from .graph_mtl import SPEC as GRAPH_MTL
from .local import SPEC as LOCAL
from .propagation import SPEC as PROPAGATION

ALGORITHMS: dict[str, AlgorithmSpec] = {
    s.name: s for s in (LOCAL, DSGD, DEM, GRAPH_MTL, PROPAGATION, AVERAGE)
}


def algorithm_keys(name: str) -> dict[str, Any]:
    """Config keys of ``[algorithm]`` for the named algorithm (beyond ``name``)."""
    from ..config import GOSSIP_KEYS, OPTIMIZER_KEYS

    spec = ALGORITHMS[name]
    keys = dict(OPTIMIZER_KEYS) if spec.trains else {}
    if spec.communicates:
        keys.update(GOSSIP_KEYS)
    keys.update(spec.keys)
    return keys


__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmSpec", "Context", "NodeData", "algorithm_keys"]
