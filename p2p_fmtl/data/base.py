"""Per-node datasets as plain numpy arrays, before packing for the engine.

A :class:`FederatedDataset` is what every generator and loader returns: one
:class:`NodeDataset` per node (ragged: nodes hold different numbers of samples),
the task type, and free-form metadata (true mixture weights, cluster labels, ...)
that evaluation may use.  Packing into padded arrays with a leading node axis
happens later, in :mod:`p2p_fmtl.data.packing`.

A generator of a very large network may return its nodes as a :class:`NodeStream`
instead of a list: the nodes' sample counts up front, their arrays generated one node at
a time, in order, while they are packed.  The per-node arrays of a million nodes then
never exist all at once (nor twice, generated and packed): packing writes each node
straight into its bucket and drops it.

Mixture data may also record the latent component of every training sample
(``NodeDataset.component_train``); D-EM's oracle trains on it.  A generator declares
that its data do so, for a given config, with a ``recorded_components(params) -> int``
attribute (:func:`recorded_components`), so a config can be checked before any data
are drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
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

    nodes: Sequence[NodeDataset]  # a list, or a NodeStream (generated while packed)
    task: Task
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def streamed(self) -> bool:
        """Whether the nodes are generated one at a time (:class:`NodeStream`)."""
        return isinstance(self.nodes, NodeStream)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        if self.streamed:
            return self.nodes.feature_shape
        return tuple(self.nodes[0].x_train.shape[1:])

    @property
    def n_train(self) -> np.ndarray:
        """Training samples per node, ``(N,)`` int64 (no node is generated)."""
        if self.streamed:
            return self.nodes.n_train
        return np.array([nd.n_train for nd in self.nodes], dtype=np.int64)

    @property
    def n_test(self) -> np.ndarray:
        """Test samples per node, ``(N,)`` int64."""
        if self.streamed:
            return self.nodes.n_test
        return np.array([nd.n_test for nd in self.nodes], dtype=np.int64)

    @property
    def first(self) -> NodeDataset:
        """Node 0's data (shapes and dtypes of every node's)."""
        return self.nodes[0]


class NodeStream(Sequence):
    """The nodes of a dataset, generated one at a time, in node order.

    ``n_train`` / ``n_test`` (N,) are known before any node is generated;
    ``generate()`` returns a fresh iterator over the ``NodeDataset`` of nodes
    ``0 .. N-1`` (each pass draws the same data).  Iterating is the cheap way through;
    ``stream[i]`` generates nodes ``0 .. i`` (meant for ``stream[0]``).
    ``has_components``: whether every node records ``component_train``.
    """

    def __init__(
        self,
        n_train: np.ndarray,
        n_test: np.ndarray,
        feature_shape: tuple[int, ...],
        generate: Callable[[], Iterator[NodeDataset]],
        *,
        has_components: bool = False,
    ):
        self.n_train = np.asarray(n_train, dtype=np.int64)
        self.n_test = np.asarray(n_test, dtype=np.int64)
        self.feature_shape = tuple(feature_shape)
        self.generate = generate
        self.has_components = has_components

    def __len__(self) -> int:
        return len(self.n_train)

    def __iter__(self) -> Iterator[NodeDataset]:
        return self.generate()

    def __getitem__(self, i):
        if isinstance(i, slice) or not 0 <= int(i) < len(self):
            raise IndexError(f"NodeStream index {i!r}: only single nodes 0..{len(self) - 1}")
        for k, nd in enumerate(self.generate()):
            if k == int(i):
                return nd
        raise IndexError(i)  # pragma: no cover - generate() yields len(self) nodes


def recorded_components(generator: Callable[..., Any] | None, params: Mapping[str, Any]) -> int:
    """How many latent components ``generator(n, **params)`` records for its training
    samples (``NodeDataset.component_train``, ids ``0 .. M-1``); 0 when it records none.

    Declared by the generator itself, as an attribute ``recorded_components(params)``
    (digits and MNIST-1D with ``partition = "mixture"``, FedEM's synthetic data), so a
    config can be checked before any data are drawn; a generator without one records none.
    """
    rule = getattr(generator, "recorded_components", None)
    return 0 if rule is None else int(rule(params))
