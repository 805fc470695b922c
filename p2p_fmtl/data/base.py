"""Per-node datasets as plain numpy arrays, before packing for the engine.

A :class:`FederatedDataset` is what every generator and loader returns: one
:class:`NodeDataset` per node (ragged: nodes hold different numbers of samples),
the task type, and free-form metadata (true mixture weights, cluster labels, ...)
that evaluation may use.  Packing into padded arrays with a leading node axis
happens later, in :mod:`p2p_fmtl.data.packing`.

Mixture data may also record the latent component of every training sample
(``NodeDataset.component_train``); D-EM's oracle trains on it.  A generator declares
that its data do so, for a given config, with a ``recorded_components(params) -> int``
attribute (:func:`recorded_components`), so a config can be checked before any data
are drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Task = Literal["binary", "multiclass", "regression"]


@dataclass(frozen=True)
class NodeDataset:
    """One node's local data: features ``(n, ...)`` and labels ``(n,)``.

    ``component_train`` (optional, ``(n_train,)`` int): the latent mixture component that
    generated each training sample, ``-1`` where none did (FedEM's reference synthetic
    data: a sample that kept the default label 0); ``None`` when the data do not know.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    component_train: np.ndarray | None = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


@dataclass(frozen=True)
class FederatedDataset:
    """The datasets of all nodes, in node order.

    Attributes
    ----------
    nodes : list of NodeDataset
        ``nodes[i]`` is the local data of node ``i``.
    task : {"binary", "multiclass", "regression"}
        Binary labels are ``0/1``; multiclass labels are ``0..num_classes-1``;
        regression labels are floats.
    num_classes : int
        Number of classes (2 for binary, 1 for regression).
    info : dict
        Generator metadata (e.g. ``"mixture_weights"`` of shape ``(N, M)``).
    """

    nodes: list[NodeDataset]
    task: Task
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.nodes[0].x_train.shape[1:])


def recorded_components(generator: Callable[..., Any] | None, params: Mapping[str, Any]) -> int:
    """How many latent components ``generator(n, **params)`` records for its training
    samples (``NodeDataset.component_train``, ids ``0 .. M-1``); 0 when it records none.

    Declared by the generator itself, as an attribute ``recorded_components(params)``
    (digits and MNIST-1D with ``partition = "mixture"``, FedEM's synthetic data), so a
    config can be checked before any data are drawn; a generator without one records none.
    """
    rule = getattr(generator, "recorded_components", None)
    return 0 if rule is None else int(rule(params))
