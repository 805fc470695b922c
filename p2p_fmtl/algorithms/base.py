"""What an algorithm is: a few pure per-node functions.

An algorithm never knows how it is executed.  It describes ONE node:

* ``init(key, data) -> state``               the node's initial state (a pytree),
* ``local_update(state, data, key, lr, inbox) -> (state, loss)``   its local work in a
  round; ``inbox`` is ``None`` unless the algorithm reads its neighbours' models *before*
  local work (``Needs.exchange = "inbox"``), then an :class:`Inbox` of their messages,
* ``shared(state) -> tree`` / ``replace_shared(state, tree) -> state``
  the part of the state that is sent to neighbours and how mixed values come back,
* ``combine(state, inbox, lr) -> state`` (``Needs.exchange = "combine"``)   what a node
  does with its neighbours' messages received *after* local work,
* ``score(state, x, y)`` / ``loss(state, x, y)``   per-sample test score and loss,
* ``adapt(state, data) -> state`` (optional)   how a node that never trained fits its
  personal part once it has borrowed its neighbours' shared part (D-EM: π only),
* ``extras(state) -> dict`` (optional)   per-node arrays saved beside the parameters,
* ``message(state) -> tree`` (optional)   what neighbours read in their :class:`Inbox`
  when it differs from ``shared`` (decoupled aggregation sends w̃, not w).

and it *declares* what it needs from the network, in :class:`Needs`: how it exchanges
(gossip average of the shared part, neighbours' messages before local work, a combine step
after, or nothing), how many copies of local work a node does per round (D-EM: M), and
which relation weights its inbox carries.  Its spec also declares whether its local work
reads a node's data only through DP-SGD steps, and how many (:class:`PrivateWork`, read by
:mod:`p2p_fmtl.privacy`).  The engine, the exchanges and the config checks read these
declarations; nothing outside ``p2p_fmtl/algorithms/`` tests an
algorithm's name.

The engine vmaps the functions over the node axis, scans them over rounds, and runs the
exchange (:mod:`p2p_fmtl.exchange`) on all nodes at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    component: Any = None  # (S,) int32 latent component of each training row, -1: none/pad;
    # None unless the data record them (mixture partitions, fedem_synthetic)


EXCHANGES = ("none", "average", "inbox", "combine")
RELATIONS = ("mixing", "uniform", "similarity", "learned")


class Needs(NamedTuple):
    """What an algorithm needs from the network (read by the engine, exchanges, config).

    ``exchange``: ``"average"`` (its shared part is gossip-averaged, ``θ_i ← Σ_j W_ij θ_j``),
    ``"inbox"`` (it reads its neighbours' messages before its local work), ``"combine"``
    (it reads them after its local work, in ``combine``) or ``"none"`` (it sends nothing).
    ``copies``: copies of local work a node does per round (each processes the node's
    samples; D-EM: its M components; 0: no local work), for memory and simulated time.
    ``relation``: the relation weights a_ij its inbox carries: ``"mixing"`` (the round's
    mixing weights W_ij), ``"uniform"`` (1 per edge), ``"similarity"`` (from data
    statistics) or ``"learned"`` (starts uniform; the algorithm re-estimates them).
    ``components_known``: the number of latent components whose per-sample labels the
    algorithm reads from the data (D-EM's oracle: M); 0 for none.  The config refuses
    data that do not record that many.
    """

    exchange: str = "average"
    copies: int = 1
    relation: str | None = None
    components_known: int = 0


class Inbox(NamedTuple):
    """The messages a node received from its neighbours this round.

    ``models`` has a leading axis of size K (the slots of its neighbour table);
    ``weights`` (K,) are the relation weights a_ij of this round, 0 for padding slots and
    for neighbours whose message did not arrive.
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
    needs: Needs = Needs()
    adapt: Callable | None = None
    extras: Callable | None = None
    combine: Callable | None = None
    params: Callable | None = None  # full model parameters to save (default: shared)
    message: Callable | None = None  # what neighbours read in an Inbox (default: shared)


class PrivateWork(NamedTuple):
    """How an algorithm's local work reads a node's training data, declared when it does
    so ONLY through DP-SGD steps of :func:`p2p_fmtl.training.local_sgd` (so that every
    message, and all of its state, is a post-processing of the noised gradients).  The
    accountant (:func:`p2p_fmtl.privacy.node_epsilons`) reads it.

    ``models``: how many clipped per-sample gradients of ONE sample a step releases, on
    the same Poisson sample (the same round key), each with noise of its own (its own
    ``noise_stream``: a noise shared by two models would cancel in their difference).  The step is
    then one Gaussian mechanism of sensitivity √models · C, noise multiplier σ / √models.
    Ditto: 2 (w and v walk the same samples); a step over one pytree clipped as a whole
    is 1 (APFL's (w, v, α)); so is a step in which a sample's gradient reaches only one
    of several models (D-EM with oracle responsibilities).
    ``extra_epochs``: further DP-SGD epochs per round on Poisson samples of their own
    (another round key), each of ``ceil(n_i / B)`` steps (FedRep's head epochs).
    ``releases``: Gaussian mechanisms per round on ALL of a node's samples (no
    subsampling), each of noise multiplier σ for its own sensitivity (D-EM's noised
    mixture weights π: a sum of per-sample probability vectors, L2 sensitivity √2).
    """

    models: int = 1
    extra_epochs: int = 0
    releases: int = 0


def _default_needs(config: Mapping[str, Any]) -> Needs:
    return Needs()


def _not_private(config: Mapping[str, Any]) -> str:
    return "does not declare its local work all DP-SGD"


@dataclass(frozen=True)
class AlgorithmSpec:
    """A registry entry: how to build the algorithm, which config keys it takes, and what
    it needs from the network for a given ``[algorithm]`` section (``needs``, computed
    without building anything, so the config can be checked when it is loaded)."""

    name: str
    build: Callable[[Context], Algorithm]
    trains: bool = True
    uses_data: bool = True
    communicates: bool = True
    keys: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    needs: Callable[[Mapping[str, Any]], Needs] = _default_needs
    finetunes: bool = True  # its local update trains what ``score`` reads (finetune_epochs)
    # DP-SGD: a PrivateWork if, for this [algorithm] section, its local work reads the data
    # only through DP-SGD steps; else a phrase saying why not ("algorithm.name = 'x' ...")
    privacy: Callable[[Mapping[str, Any]], PrivateWork | str] = _not_private

    def needs_for(self, config: Mapping[str, Any]) -> Needs:
        """The declared needs for a resolved ``[algorithm]`` section, checked."""
        needs = self.needs(config)
        if needs.exchange not in EXCHANGES or (needs.exchange == "none") == self.communicates:
            raise ValueError(f"algorithm {self.name!r} declares an invalid exchange {needs}")
        if needs.exchange in ("inbox", "combine") and needs.relation not in RELATIONS:
            raise ValueError(f"algorithm {self.name!r} declares no relation weights: {needs}")
        return needs
