"""Pack ragged per-node datasets into arrays with a leading node axis.

Node ``i`` holds ``n_i`` samples; the packed arrays have shape ``(N, S, ...)`` with
``S = max_i n_i`` and every node's samples first, padding after.  ``n_train[i]``
tells the engine how many rows of node ``i`` are real; per-sample masks are
``arange(S) < n_i``.  The padding fraction ``1 − Σ n_i / (N S)`` is reported in the
run summary because it is wasted work.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .base import FederatedDataset


class PackedData(NamedTuple):
    x_train: np.ndarray  # (N, S, *feature_shape)
    y_train: np.ndarray  # (N, S)
    n_train: np.ndarray  # (N,) int32
    x_test: np.ndarray  # (N, T, *feature_shape)
    y_test: np.ndarray  # (N, T)
    n_test: np.ndarray  # (N,) int32
    size_fraction: np.ndarray  # (N,) float32: n_train / max n_train (e.g. a confidence)

    @property
    def padding_fraction(self) -> float:
        """Share of the packed training rows that are padding."""
        total = self.x_train.shape[0] * self.x_train.shape[1]
        return float(1.0 - self.n_train.sum() / max(total, 1))


def _stack(arrays: list[np.ndarray], width: int, dtype) -> np.ndarray:
    out = np.zeros((len(arrays), width, *arrays[0].shape[1:]), dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out


def pack(ds: FederatedDataset) -> PackedData:
    """Pad every node's train and test sets to the largest node's size."""
    nodes = ds.nodes
    y_dtype = np.float32 if ds.task == "regression" else np.int32
    n_train = np.array([nd.n_train for nd in nodes], dtype=np.int32)
    n_test = np.array([nd.n_test for nd in nodes], dtype=np.int32)
    s, t = int(n_train.max()), int(max(n_test.max(), 1))
    return PackedData(
        x_train=_stack([nd.x_train for nd in nodes], s, np.float32),
        y_train=_stack([nd.y_train for nd in nodes], s, y_dtype),
        n_train=n_train,
        x_test=_stack([nd.x_test for nd in nodes], t, np.float32),
        y_test=_stack([nd.y_test for nd in nodes], t, y_dtype),
        n_test=n_test,
        size_fraction=(n_train / max(int(n_train.max()), 1)).astype(np.float32),
    )
