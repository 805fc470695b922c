"""Convolutional network for 1-D signals (MNIST-1D) and small 2-D images (8x8 digits).

Layout of one node's batch ``x`` (channels last):

* 1-D: ``(B, L)`` or ``(B, L, C)``;
* 2-D: ``(B, H, W)`` or ``(B, H, W, C)``.

``dims = 0`` (auto) picks 1-D for inputs of rank 1 and 2-D for rank 2 or 3; a rank-2
input ``(L, C)`` is a multi-channel 1-D signal only with ``dims = 1``.

Architecture: for each entry of ``channels`` a "same"-padded convolution of width
``kernel`` (0 = auto: 5 in 1-D, 3 in 2-D), ``activation`` and, if ``pool > 1``, max-pooling
by ``pool`` (skipped once a spatial axis would fall below ``pool``); then flatten, one
dense layer of ``hidden`` units (0 = none) with ``activation``, and the output layer.
Convolutions use He-normal weights and zero biases; dense layers use the same
initialisation as :func:`~p2p_fmtl.models.linear.dense_init` (PyTorch's default).
Parameters: ``{"conv_0": {"w", "b"}, ..., "dense_0": {"w", "b"}, "dense_1": ...}`` with
the last ``dense_*`` the head (share the rest with ``algorithm.shared``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..errors import ConfigError
from .linear import dense_init
from .mlp import ACTIVATIONS


def _positive_int(field: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"model.{field}: got {value!r}, expected an integer >= {lo}")
    return value


def cnn(
    input_shape: tuple[int, ...],
    out_dim: int,
    *,
    channels: tuple[int, ...] = (32, 32),
    kernel: int = 0,
    pool: int = 2,
    hidden: int = 64,
    activation: str = "relu",
    dims: int = 0,
):
    """A small conv net: ``channels`` conv layers (+ max-pool), a ``hidden`` dense layer, head.

    ``kernel = 0`` means 5 for 1-D and 3 for 2-D inputs; ``pool = 1`` disables pooling;
    ``hidden = 0`` puts the head directly on the flattened features; ``dims`` is 0 (auto
    from the input rank), 1 or 2.
    """
    if (
        not isinstance(channels, list | tuple)
        or not channels
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)
    ):
        raise ConfigError(
            f"model.channels: got {channels!r}, expected a non-empty list of positive integers"
        )
    _positive_int("kernel", kernel, lo=0)
    _positive_int("pool", pool)
    _positive_int("hidden", hidden, lo=0)
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"model.activation: got {activation!r}, expected one of {', '.join(ACTIVATIONS)}"
        )
    if dims not in (0, 1, 2) or isinstance(dims, bool):
        raise ConfigError(f"model.dims: got {dims!r}, expected 0 (auto), 1 or 2")
    rank = len(input_shape)
    if dims == 0:
        dims = 1 if rank == 1 else 2
    if rank not in (dims, dims + 1):
        raise ConfigError(
            f"model.dims: got {dims}, but the inputs have shape {tuple(input_shape)}; "
            f"a {dims}-D cnn takes rank {dims} or {dims + 1} inputs (channels last)"
        )
    act = ACTIVATIONS[activation]
    k = kernel or (5 if dims == 1 else 3)
    spatial = list(input_shape[:dims])
    in_ch = input_shape[dims] if rank == dims + 1 else 1
    chans = [in_ch, *channels]

    # static plan: which layers pool, and the flattened size
    pools = []
    for _ in channels:
        p = pool if pool > 1 and all(s >= pool for s in spatial) else 1
        pools.append(p)
        spatial = [s // p for s in spatial]
    flat = math.prod(spatial) * chans[-1]
    sizes = [flat, hidden, out_dim] if hidden else [flat, out_dim]
    spec = ("NWC", "WIO", "NWC") if dims == 1 else ("NHWC", "HWIO", "NHWC")

    def init(key):
        keys = jax.random.split(key, len(channels) + len(sizes) - 1)
        params = {}
        for i in range(len(channels)):
            fan_in = k**dims * chans[i]
            w = jax.random.normal(keys[i], (k,) * dims + (chans[i], chans[i + 1]))
            params[f"conv_{i}"] = {
                "w": w * math.sqrt(2.0 / fan_in),
                "b": jnp.zeros((chans[i + 1],)),
            }
        for j in range(len(sizes) - 1):
            params[f"dense_{j}"] = dense_init(keys[len(channels) + j], sizes[j], sizes[j + 1])
        return params

    def apply(params, x):
        h = x.reshape(x.shape[0], *input_shape[:dims], in_ch).astype(jnp.float32)
        for i, p in enumerate(pools):
            layer = params[f"conv_{i}"]
            h = jax.lax.conv_general_dilated(
                h, layer["w"], (1,) * dims, "SAME", dimension_numbers=spec
            )
            h = act(h + layer["b"])
            if p > 1:
                window = (1,) + (p,) * dims + (1,)
                h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, window, window, "VALID")
        h = h.reshape(h.shape[0], -1)
        n = len(sizes) - 1
        for j in range(n):
            layer = params[f"dense_{j}"]
            h = h @ layer["w"] + layer["b"]
            if j < n - 1:
                h = act(h)
        return h

    return init, apply
