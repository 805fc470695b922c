"""Algorithms, one module each; :data:`ALGORITHMS` maps config names to their specs."""

from __future__ import annotations

from typing import Any

from ..schema import GOSSIP_KEYS, OPTIMIZER_KEYS
from .apfl import SPEC as APFL
from .average import SPEC as AVERAGE
from .base import Algorithm, AlgorithmSpec, Context, Inbox, Needs, NodeData, PrivateWork
from .dem import SPEC as DEM
from .ditto import SPEC as DITTO
from .dsgd import SPEC as DSGD
from .fedprox import SPEC as FEDPROX
from .fedrep import SPEC as FEDREP
from .graph_mtl import SPEC as GRAPH_MTL
from .ifca import SPEC as IFCA
from .local import SPEC as LOCAL
from .pfedme import SPEC as PFEDME
from .propagation import SPEC as PROPAGATION

ALGORITHMS: dict[str, AlgorithmSpec] = {
    s.name: s
    for s in (
        LOCAL,
        DSGD,
        FEDPROX,
        DITTO,
        FEDREP,
        IFCA,
        APFL,
        PFEDME,
        DEM,
        GRAPH_MTL,
        PROPAGATION,
        AVERAGE,
    )
}


def algorithm_keys(name: str) -> dict[str, Any]:
    """Config keys of ``[algorithm]`` for the named algorithm (beyond ``name``)."""
    spec = ALGORITHMS[name]
    keys = dict(OPTIMIZER_KEYS) if spec.trains else {}
    if spec.communicates:
        keys.update(GOSSIP_KEYS)
    keys.update(spec.keys)
    return keys


def needs_of(config) -> Needs:
    """What the algorithm of a resolved ``[algorithm]`` section needs from the network."""
    return ALGORITHMS[config["name"]].needs_for(config)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AlgorithmSpec",
    "Context",
    "Inbox",
    "Needs",
    "NodeData",
    "PrivateWork",
    "algorithm_keys",
    "needs_of",
]
