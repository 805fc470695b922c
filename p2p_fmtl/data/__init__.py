"""Datasets: generators and loaders returning a :class:`FederatedDataset`, and packing.

Each entry of :data:`DATASETS` is a function ``f(n_nodes, *, key=default, ...)``; its
keyword parameters are the config keys that sit beside ``data.name``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, unknown_name
from .base import FederatedDataset, NodeDataset, NodeStream
from .clustered_linear import clustered_linear
from .dialects import dialects
from .digits import digits
from .fedem_synthetic import fedem_synthetic
from .leaf import leaf
from .mnist1d import mnist1d
from .multitask import digits_multitask
from .npz import npz
from .packing import PackedData, pack

DATASETS: dict[str, Callable[..., FederatedDataset] | None] = {
    "fedem_synthetic": fedem_synthetic,
    "clustered_linear": clustered_linear,
    "npz": npz,
    "digits": digits,
    "mnist1d": mnist1d,
    "leaf": leaf,
    "dialects": dialects,
    "digits_multitask": digits_multitask,
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
        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and not p.name.startswith("_")
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
    """Refuse data no training can use: one line naming the node and the problem.

    Samples need at least one feature (a feature shape without zeros).

    Per task kind: ``binary`` / ``multiclass`` labels in ``0..num_classes-1``;
    ``regression`` finite float labels; ``lm`` label tokens ``(n, T)`` (and integer input
    tokens) in ``0..num_classes-1``; ``multitask`` labels ``(n, 2)`` = (target, head id)
    with a valid head id (``info["heads"]``) and, for a classification head, an integer
    target within that head's classes.
    """
    if ds.nodes and 0 in ds.feature_shape:
        raise ConfigError(
            f"{where}: samples have shape {ds.feature_shape}, with no features; expected at "
            "least one feature per sample"
        )
    heads = ds.info.get("heads") if ds.task == "multitask" else None
    if ds.task == "multitask":
        if not heads:
            raise ConfigError(f"{where}: a multitask dataset needs info['heads']")
        width = sum(int(h["classes"]) for h in heads)
        if width != ds.num_classes:
            raise ConfigError(
                f"{where}: num_classes is {ds.num_classes} but the heads' outputs add up to {width}"
            )
    if ds.streamed:  # each node is checked as it is generated (while it is packed)
        ds.nodes.generate = _checked(ds.nodes.generate, ds, heads, where)
        return
    if ds.task in ("binary", "multiclass") and ds.num_classes > SPARSE_LABELS_ABOVE:
        _warn_sparse_labels(ds, where)
    for i, nd in enumerate(ds.nodes):
        validate_node(ds, i, nd, heads, where)


def _checked(generate, ds: FederatedDataset, heads, where: str):
    """``generate`` whose every node passes :func:`validate_node` as it comes out."""

    def checked():
        for i, nd in enumerate(generate()):
            validate_node(ds, i, nd, heads, where)
            yield nd

    return checked


def validate_node(ds: FederatedDataset, i: int, nd: NodeDataset, heads, where: str) -> None:
    """The per-node checks of :func:`validate_dataset` for node ``i``."""
    import numpy as np

    if nd.n_train == 0:
        raise ConfigError(f"{where}: node {i} has no training samples")
    for part in ("x_train", "x_test", "y_train", "y_test"):
        a = getattr(nd, part)
        if a.size and np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise ConfigError(f"{where}: node {i} has NaN or infinite values in {part}")
    for part in ("train", "test"):
        x, y = getattr(nd, f"x_{part}"), getattr(nd, f"y_{part}")
        if y.shape[:1] != x.shape[:1]:
            raise ConfigError(
                f"{where}: node {i} has {x.shape[0]} rows in x_{part} but {y.shape[0]} in y_{part}"
            )
    if ds.task == "regression":
        return
    if ds.task == "multitask":
        _check_multitask(nd, i, heads, where)
        return
    for part in ("y_train", "y_test"):
        y = getattr(nd, part)
        if ds.task == "lm" and y.ndim != 2:
            raise ConfigError(
                f"{where}: node {i} has {part} of shape {y.shape}, expected (samples, "
                "tokens) for a language-model task"
            )
        if y.size and (y.min() < 0 or y.max() >= ds.num_classes):
            raise ConfigError(
                f"{where}: node {i} has {part} labels in [{y.min()}, {y.max()}], "
                f"outside the model's classes 0..{ds.num_classes - 1}"
            )
    if ds.task == "lm":
        for part in ("x_train", "x_test"):
            x = getattr(nd, part)
            if not np.issubdtype(x.dtype, np.integer):
                continue
            if x.size and (x.min() < 0 or x.max() >= ds.num_classes):
                raise ConfigError(
                    f"{where}: node {i} has {part} tokens in [{x.min()}, {x.max()}], "
                    f"outside the vocabulary 0..{ds.num_classes - 1}"
                )


SPARSE_LABELS_ABOVE = 1000  # classes: above this, warn when few of them occur


def _warn_sparse_labels(ds: FederatedDataset, where: str) -> None:
    """Warn when the classes (inferred from the largest label) far outnumber the labels
    that occur: one stray label gives the model millions of outputs."""
    import warnings

    import numpy as np

    seen = np.unique(np.concatenate([np.ravel(nd.y_train) for nd in ds.nodes]))
    if 10 * len(seen) < ds.num_classes:
        warnings.warn(
            f"{where}: the model gets {ds.num_classes} outputs, one per class up to the "
            f"largest label {int(seen.max())}, but only {len(seen)} distinct labels occur in "
            "training (a stray label?)",
            UserWarning,
            stacklevel=3,
        )


def _check_multitask(nd: NodeDataset, i: int, heads: list, where: str) -> None:
    import numpy as np

    for part in ("y_train", "y_test"):
        y = getattr(nd, part)
        if y.ndim != 2 or y.shape[1] != 2:
            raise ConfigError(
                f"{where}: node {i} has {part} of shape {y.shape}, expected (samples, 2) = "
                "(target, head id) for a multitask dataset"
            )
        if not y.size:
            continue
        head = y[:, 1]
        if np.any(head != np.round(head)) or head.min() < 0 or head.max() >= len(heads):
            raise ConfigError(
                f"{where}: node {i} has {part} head ids in [{head.min()}, {head.max()}], "
                f"expected integers 0..{len(heads) - 1}"
            )
        for h in np.unique(head).astype(int):
            spec = heads[h]
            if spec.get("kind") == "regression":
                continue
            t = y[head == h, 0]
            classes = int(spec["classes"])
            if np.any(t != np.round(t)) or t.min() < 0 or t.max() >= classes:
                raise ConfigError(
                    f"{where}: node {i} has {part} targets in [{t.min()}, {t.max()}] for head "
                    f"{spec.get('name', h)!r}, expected integer classes 0..{classes - 1}"
                )


__all__ = [
    "DATASETS",
    "FederatedDataset",
    "NodeDataset",
    "NodeStream",
    "PackedData",
    "dataset_params",
    "load_dataset",
    "pack",
    "validate_dataset",
]
