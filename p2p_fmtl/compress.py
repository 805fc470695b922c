"""Message compressors and what their messages cost on the wire.

A compressor ``C`` acts on ONE node's message for ONE parameter leaf, flattened to a
vector ``x`` of length ``d`` (the engine vmaps it over nodes and maps it over leaves):

========  =====================================================  ===========================
name      C(x)                                                   bytes on the wire
========  =====================================================  ===========================
none      x                                                      d·b
top_k     the k entries of largest |x|, zeros elsewhere          k·(b + 4)   (int32 indices)
random_k  k entries at random positions, zeros elsewhere         k·b + 4     (shared seed)
qsgd      ‖x‖·sign(x)·ξ/s / τ, ξ ∈ {0..s} stochastic rounding   b + ⌈d·(1 + ⌈log2(s+1)⌉)/8⌉
          of s|x|/‖x‖ (Alistarh et al. 2017), τ = 1 + min(d/s², √d/s)
sign      (‖x‖₁/d)·sign(x)                                       b + ⌈d/8⌉
========  =====================================================  ===========================

with ``k = max(1, round(ratio·d))``, ``b`` the bytes of one value in ``compression.dtype``
(float32: 4, float16 / bfloat16: 2).  Values are rounded to that dtype before they are
sent, so a half-precision wire is simulated, not just counted.  random_k draws its
positions from a seed the receiver can regenerate, so only the values and the 4-byte
seed travel.  All compressors are contractions, ``E‖C(x) − x‖² ≤ (1 − δ)‖x‖²``, as CHOCO
requires (random_k without the d/k rescaling, qsgd with the 1/τ scaling of Koloskova et
al. 2019, sign with the ℓ1 scale of Karimireddy et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

COMPRESSORS = ("none", "top_k", "random_k", "qsgd", "sign")
DTYPES = {"float32": (jnp.float32, 4), "float16": (jnp.float16, 2), "bfloat16": (jnp.bfloat16, 2)}


def keep_count(d: int, ratio: float) -> int:
    """k of top_k / random_k for a vector of length d."""
    return max(1, min(d, int(round(ratio * d))))


def message_bytes(name: str, d: int, *, ratio: float, levels: int, dtype: str) -> int:
    """Bytes of one compressed message of a length-``d`` vector (the table above)."""
    b = DTYPES[dtype][1]
    if name == "none":
        return d * b
    if name == "top_k":
        return keep_count(d, ratio) * (b + 4)
    if name == "random_k":
        return keep_count(d, ratio) * b + 4
    if name == "qsgd":
        bits = 1 + math.ceil(math.log2(levels + 1))
        return b + math.ceil(d * bits / 8)
    if name == "sign":
        return b + math.ceil(d / 8)
    raise ValueError(f"compression.name: unknown {name!r}")  # pragma: no cover


def _top_k(x, key, k, levels):
    _, idx = jax.lax.top_k(jnp.abs(x), k)
    return jnp.zeros_like(x).at[idx].set(x[idx])


def _random_k(x, key, k, levels):
    # k distinct positions: the k smallest of d uniform draws
    _, idx = jax.lax.top_k(-jax.random.uniform(key, x.shape), k)
    return jnp.zeros_like(x).at[idx].set(x[idx])


def _qsgd(x, key, k, levels):
    d, s = x.shape[0], levels
    norm = jnp.linalg.norm(x)
    scaled = jnp.abs(x) / jnp.where(norm > 0, norm, 1.0) * s
    lower = jnp.floor(scaled)
    xi = lower + (jax.random.uniform(key, x.shape) < scaled - lower)
    tau = 1.0 + min(d / s**2, math.sqrt(d) / s)
    return norm * jnp.sign(x) * xi / s / tau


def _sign(x, key, k, levels):
    return jnp.mean(jnp.abs(x)) * jnp.sign(x)


_IMPL: dict[str, Callable] = {
    "top_k": _top_k,
    "random_k": _random_k,
    "qsgd": _qsgd,
    "sign": _sign,
}


def compressor(name: str, *, ratio: float = 0.1, levels: int = 7, dtype: str = "float32"):
    """``C(tree, keys) -> tree`` for a tree whose leaves have a leading node axis.

    Each node's leaf is flattened and compressed on its own (vmapped over nodes); values
    are rounded to ``dtype``.  ``keys`` is one PRNG key per node.
    """
    wire = DTYPES[dtype][0]

    def to_wire(v):
        return v.astype(wire).astype(v.dtype)

    def one_leaf(x, keys):
        n = x.shape[0]
        flat = x.reshape(n, -1)
        if name == "none":
            out = flat
        else:
            k = keep_count(flat.shape[1], ratio)
            fn = _IMPL[name]
            out = jax.vmap(lambda v, kk: fn(v, kk, k, levels))(flat, keys)
        return to_wire(out).reshape(x.shape)

    def apply(tree, keys):
        leaves, treedef = jax.tree.flatten(tree)
        subkeys = [
            jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys) for i in range(len(leaves))
        ]
        return jax.tree.unflatten(
            treedef, [one_leaf(x, k) for x, k in zip(leaves, subkeys, strict=True)]
        )

    return apply


def tree_message_bytes(tree, name: str, *, ratio: float, levels: int, dtype: str) -> int:
    """Bytes one node sends per message: the sum over leaves (leading node axis dropped)."""
    total = 0
    for x in jax.tree.leaves(tree):
        d = int(math.prod(x.shape[1:]))
        total += message_bytes(name, d, ratio=ratio, levels=levels, dtype=dtype)
    return total
