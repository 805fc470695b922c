"""Small pure-functional models: each is an ``(init, apply)`` pair.

``init(key) -> params`` and ``apply(params, x) -> outputs`` for ONE node's batch
``x`` of shape ``(batch, *feature_shape)``; the engine vmaps them over nodes.
Any Flax or Equinox model can be wrapped into the same pair.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import unknown_name
from .linear import linear
from .mlp import mlp


class Model(NamedTuple):
    """A model as a pair of pure functions."""

    init: Callable[[Any], Any]
    apply: Callable[[Any, Any], Any]


MODELS: dict[str, Callable[..., Model]] = {"linear": linear, "mlp": mlp}


def model_params(name: str) -> dict[str, Any]:
    """The model's config keys (beyond ``name`` and ``loss``) with their defaults."""
    sig = inspect.signature(MODELS[name])
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty
    }


def build_model(cfg: dict[str, Any], input_shape: tuple[int, ...], out_dim: int) -> Model:
    """Build the model named in the ``[model]`` section for inputs of ``input_shape``."""
    name = cfg["name"]
    if name not in MODELS:
        raise unknown_name("model.name", name, MODELS)
    kwargs = {k: cfg[k] for k in model_params(name)}
    init, apply = MODELS[name](input_shape, out_dim, **kwargs)
    return Model(init, apply)
