"""Datasets: generators and loaders returning a :class:`FederatedDataset`, and packing.

Each entry of :data:`DATASETS` is a function ``f(n_nodes, *, key=default, ...)``; its
keyword parameters are the config keys that sit beside ``data.name``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, unknown_name
from .base import FederatedDataset, NodeDataset
from .clustered_linear import clustered_linear
from .fedem_synthetic import fedem_synthetic
from .npz import npz
from .packing import PackedData, pack

DATASETS: dict[str, Callable[..., FederatedDataset] | None] = {
    "fedem_synthetic": fedem_synthetic,
    "clustered_linear": clustered_linear,
    "npz": npz,
    "none": None,  # algorithms that use no data (average)
}


def dataset_params(name: str) -> dict[str, Any]:
    """The generator's config keys with their defaults."""
    fn = DATASETS[name]
    if fn is None:
        return {}
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty
    }


def load_dataset(cfg: dict[str, Any], n_nodes: int) -> FederatedDataset:
    """Generate or load the dataset of the ``[data]`` section for ``n_nodes`` nodes."""
    name = cfg["name"]
    if name not in DATASETS or DATASETS[name] is None:
        raise unknown_name("data.name", name, [k for k, v in DATASETS.items() if v])
    kwargs = {k: cfg[k] for k in dataset_params(name)}
    try:
        ds = DATASETS[name](n_nodes, **kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # generators raise ValueError("data.<key>: ...")
        raise ConfigError(str(e)) from None
    validate_dataset(ds, f"data.name = {name!r}")
    return ds


def validate_dataset(ds: FederatedDataset, where: str = "data") -> None:
    """Refuse data no training can use: one line naming the node and the problem."""
    import numpy as np

    for i, nd in enumerate(ds.nodes):
        if nd.n_train == 0:
            raise ConfigError(f"{where}: node {i} has no training samples")
        for part in ("x_train", "x_test", "y_train", "y_test"):
            a = getattr(nd, part)
            if a.size and np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
                raise ConfigError(f"{where}: node {i} has NaN or infinite values in {part}")
        if ds.task != "regression":
            for part in ("y_train", "y_test"):
                y = getattr(nd, part)
                if y.size and (y.min() < 0 or y.max() >= ds.num_classes):
                    raise ConfigError(
                        f"{where}: node {i} has {part} labels in [{y.min()}, {y.max()}], "
                        f"outside the model's classes 0..{ds.num_classes - 1}"
                    )


__all__ = [
    "DATASETS",
    "FederatedDataset",
    "NodeDataset",
    "PackedData",
    "dataset_params",
    "load_dataset",
    "pack",
    "validate_dataset",
]
