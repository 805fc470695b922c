"""Which parameters a node shares: all of them, or the subtrees named by paths.

A path names a subtree or leaf of the model's parameters with '/' between keys, as in
``params.npz``: ``"dense_0"`` (the first layer), ``"dense_0/w"`` (its weight matrix).
``shared = ["dense_0", "dense_1"]`` shares a trunk and keeps the last layer (the head)
personal; gossip, regularizers, consensus distance and the byte ledger see only the
shared part.
"""

from __future__ import annotations

from typing import Any

import jax

from .errors import ConfigError


def path_str(path) -> str:
    """'dense_0/w' from a jax key path."""
    parts = []
    for p in path:
        for attr in ("key", "name", "idx"):
            if hasattr(p, attr):
                parts.append(str(getattr(p, attr)))
                break
    return "/".join(parts)


def leaf_paths(params) -> list[str]:
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _matches(leaf: str, paths: list[str]) -> bool:
    return any(leaf == p or leaf.startswith(p + "/") for p in paths)


def check_shared(spec: Any, params, field: str = "algorithm.shared") -> None:
    """Validate ``shared`` against the model's parameter paths."""
    if spec == "all":
        return
    available = leaf_paths(params)
    if not isinstance(spec, list) or not spec or not all(isinstance(p, str) for p in spec):
        raise ConfigError(
            f'{field}: got {spec!r}, expected "all" or a list of parameter paths '
            f"such as {available[:3]}"
        )
    for p in spec:
        if not any(_matches(leaf, [p]) for leaf in available):
            raise ConfigError(
                f"{field}: {p!r} names no parameter; allowed paths: {', '.join(available)}"
            )


def select(params, spec: Any):
    """The shared part: the whole tree for "all", else a flat dict {path: leaf}."""
    if spec == "all":
        return params
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {path_str(p): leaf for p, leaf in flat if _matches(path_str(p), spec)}


def merge(params, spec: Any, shared):
    """``params`` with its shared part replaced by ``shared``."""
    if spec == "all":
        return shared
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves = [shared.get(path_str(p), leaf) for p, leaf in flat]
    return jax.tree_util.tree_unflatten(treedef, leaves)
