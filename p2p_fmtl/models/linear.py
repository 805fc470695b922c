"""Linear model ``h(x) = x W + b`` on flattened inputs."""

from __future__ import annotations

import math

import jax


def dense_init(key, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    """PyTorch's default ``nn.Linear`` initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    kw, kb = jax.random.split(key)
    bound = 1.0 / math.sqrt(fan_in)
    return {
        "w": jax.random.uniform(kw, (fan_in, fan_out), minval=-bound, maxval=bound),
        "b": jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound),
    }


def linear(input_shape: tuple[int, ...], out_dim: int):
    """A linear layer: logistic regression, softmax regression or least squares,
    depending on the loss the task attaches to its outputs."""
    fan_in = math.prod(input_shape)

    def init(key):
        return dense_init(key, fan_in, out_dim)

    def apply(params, x):
        x = x.reshape(x.shape[0], -1)
        return x @ params["w"] + params["b"]

    return init, apply
