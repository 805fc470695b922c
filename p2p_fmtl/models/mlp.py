"""Multi-layer perceptron on flattened inputs."""

from __future__ import annotations

import math

import jax

from ..errors import ConfigError
from .linear import dense_init

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jax.numpy.tanh, "gelu": jax.nn.gelu}


def mlp(
    input_shape: tuple[int, ...],
    out_dim: int,
    *,
    hidden: tuple[int, ...] = (64,),
    activation: str = "relu",
):
    """``hidden`` sizes of fully connected layers, each followed by ``activation``."""
    if not isinstance(hidden, list | tuple) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
    ):
        raise ConfigError(f"model.hidden: got {hidden!r}, expected a list of positive integers")
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"model.activation: got {activation!r}, expected one of {', '.join(ACTIVATIONS)}"
        )
    act = ACTIVATIONS[activation]
    sizes = [math.prod(input_shape), *hidden, out_dim]

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        return {f"dense_{i}": dense_init(k, sizes[i], sizes[i + 1]) for i, k in enumerate(keys)}

    def apply(params, x):
        h = x.reshape(x.shape[0], -1)
        n = len(sizes) - 1
        for i in range(n):
            layer = params[f"dense_{i}"]
            h = h @ layer["w"] + layer["b"]
            if i < n - 1:
                h = act(h)
        return h

    return init, apply
