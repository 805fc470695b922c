"""Small pure-functional models: each is an ``(init, apply)`` pair.

``init(key) -> params`` and ``apply(params, x) -> outputs`` for ONE node's batch
``x`` of shape ``(batch, *feature_shape)``; the engine vmaps them over nodes.
Any Flax (linen / nnx) or Equinox model is wrapped into the same pair by
``model.name = "flax"`` / ``"equinox"`` (:mod:`.adapters`); a config naming such a
module is code that will be imported, and only module classes and functions marked
with :func:`model_factory` are called.

``linear`` and ``mlp`` on flattened inputs; ``cnn`` 1-D / 2-D convolutions
(MNIST-1D, 8x8 digits); ``tiny_lm`` a small causal transformer LM with LoRA adapters
(params ``{"base", "lora"}``, use with the ``"lm"`` task).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import unknown_name
from .adapters import equinox_model, flax_model, model_factory  # noqa: F401  (public)
from .cnn import cnn
from .linear import linear
from .mlp import mlp
from .tiny_lm import tiny_lm


class Model(NamedTuple):
    """A model as a pair of pure functions."""

    init: Callable[[Any], Any]
    apply: Callable[[Any, Any], Any]


MODELS: dict[str, Callable[..., Model]] = {
    "linear": linear,
    "mlp": mlp,
    "cnn": cnn,
    "tiny_lm": tiny_lm,
    "flax": flax_model,
    "equinox": equinox_model,
}


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
    return Model(init, _float32_inputs(apply))


def _float32_inputs(apply):
    """``apply`` on float32 inputs: features stored in 16 bits (``data.storage``) are
    widened inside the compiled step (the stored arrays stay 16-bit, halving the bytes a
    round streams); the parameters and all arithmetic stay float32."""
    import jax.numpy as jnp

    def wrapped(params, x, *args, **kw):
        if x.dtype in (jnp.bfloat16, jnp.float16):
            x = x.astype(jnp.float32)
        return apply(params, x, *args, **kw)

    return wrapped
