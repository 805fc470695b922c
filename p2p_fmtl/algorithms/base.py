"""What an algorithm is: a few pure per-node functions.

An algorithm never knows how it is executed.  It describes ONE node:

* ``init(key, data) -> state``               the node's initial state (a pytree),
* ``local_update(state, data, key, lr, inbox) -> (state, loss)``   its local work in a
  round; ``inbox`` is ``None`` unless the algorithm reads its neighbours' models *before*
  local work (``inbox = "before"``), then an :class:`Inbox` of their shared states,
* ``shared(state) -> tree`` / ``replace_shared(state, tree) -> state``
  the part of the state that is sent to neighbours and how mixed values come back,
* ``combine(state, inbox, lr) -> state`` (optional)   what a node does with its
  neighbours' models received *after* local work; without it, the engine gossips
  ``shared ← Σ_j W_ij shared_j``,
* ``score(state, x, y)`` / ``loss(state, x, y)``   per-sample test score and loss,
* ``adapt(state, data) -> state`` (optional)   how a node that never trained fits its
  personal part once it has borrowed its neighbours' shared part (D-EM: π only),
* ``extras(state) -> dict`` (optional)   per-node arrays saved beside the parameters,
* ``message(state) -> tree`` (optional)   what neighbours read in their :class:`Inbox`
  when it differs from ``shared`` (decoupled aggregation sends w̃, not w).

The engine vmaps these over the node axis, scans them over rounds, and applies the
gossip operator to ``shared(state)`` of all nodes at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import optax

from ..models import Model
from ..tasks import Task
from ..training import LocalWork


class NodeData(NamedTuple):
    """One node's padded data (a slice of :class:`~p2p_fmtl.data.PackedData`)."""

    x_train: Any
    y_train: Any
    n_train: Any
    x_test: Any
    y_test: Any
    n_test: Any
    size_fraction: Any  # n_train / max over nodes of n_train
    budget: Any = None  # fraction of its local work the node does this round (stragglers)


class Inbox(NamedTuple):
    """The shared states a node received from its neighbours this round.

    ``models`` has a leading axis of size K (the largest degree); ``weights`` (K,) are the
    relation weights a_ij of the edges, 0 for padding slots.
    """

    models: Any
    weights: Any


class Context(NamedTuple):
    """Everything an algorithm is built from."""

    model: Model | None
    task: Task | None
    optimizer: optax.GradientTransformation | None
    work: LocalWork | None
    config: dict[str, Any]  # the [algorithm] section


class Algorithm(NamedTuple):
    name: str
    init: Callable
    local_update: Callable
    shared: Callable
    replace_shared: Callable
    score: Callable | None
    loss: Callable | None
    communicates: bool = True
    adapt: Callable | None = None
    extras: Callable | None = None
    inbox: str = "none"  # "none" | "before": read neighbours' models before local work
    combine: Callable | None = None
    params: Callable | None = None  # full model parameters to save (default: shared)
    message: Callable | None = None  # what neighbours read in an Inbox (default: shared)


@dataclass(frozen=True)
class AlgorithmSpec:
    """A registry entry: how to build the algorithm and which config keys it takes."""

    name: str
    build: Callable[[Context], Algorithm]
    trains: bool = True
    uses_data: bool = True
    communicates: bool = True
    keys: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
