"""Gossip: mixing every node's shared parameters with its neighbours', all at once.

``X ← W X`` for each leaf ``X`` of shape ``(N, ...)``, as either

* **dense**:  one matrix product ``W @ X`` (cost N²·P; best for small or dense graphs),
* **sparse**: a neighbour table: row i lists the K senders of node i (itself included,
  padded with zero-weight self entries) and their weights, and
  ``X_i ← Σ_k w_ik X[s_ik]`` is one gather-multiply-reduce that XLA fuses, so the
  ``(N·K, ...)`` messages are never written to memory (cost N·K·P; for large sparse
  graphs).  The network process builds one such table per round
  (:mod:`p2p_fmtl.netsim`).

The weights are *data* passed to the compiled round, never compile-time constants,
so changing the graph (same N and edge count) or its weights does not recompile.
``auto`` picks sparse when N > 256 and the matrix has fewer than N²/8 non-zeros.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Mixing(NamedTuple):
    """Arrays of a mixing operator (a pytree: pass it to jitted code as data): a dense
    ``W`` or a neighbour table (senders and weights per receiver)."""

    dense: jax.Array | None = None  # (N, N)
    senders: jax.Array | None = None  # (N, K) neighbour table
    weights: jax.Array | None = None  # (N, K)


def choose_operator(n: int, nnz: int, operator: str = "auto") -> str:
    if operator != "auto":
        return operator
    return "sparse" if n > 256 and nnz * 8 < n * n else "dense"


def make_mixing(senders, receivers, weights, n: int, operator: str = "auto"):
    """The operator ``x_r ← Σ_e w_e x_{s_e}`` for an edge list (self-loops included).

    Dense: the N×N matrix.  Sparse: an ``(N, K)`` neighbour table (senders and weights
    per receiver), K the largest in-degree rounded up to a power of two, so graphs of
    the same size and degree bound share array shapes (and compiled programs).
    Returns ``(kind, Mixing)``.
    """
    kind = choose_operator(n, len(weights), operator)
    if kind == "dense":
        W = np.zeros((n, n), np.float32)
        np.add.at(W, (np.asarray(receivers), np.asarray(senders)), np.asarray(weights))
        return kind, Mixing(jnp.asarray(W))
    receivers = np.asarray(receivers, np.int64)
    senders = np.asarray(senders, np.int64)
    indeg = np.bincount(receivers, minlength=n)
    k = 1 << max(int(indeg.max()) - 1, 0).bit_length() if len(weights) else 1
    order = np.lexsort((senders, receivers))
    starts = np.cumsum(indeg) - indeg
    slot = np.arange(len(order)) - starts[receivers[order]]
    table = np.repeat(np.arange(n)[:, None], k, axis=1)  # padding: the node itself ...
    w = np.zeros((n, k), np.float32)  # ... with weight 0
    table[receivers[order], slot] = senders[order]
    w[receivers[order], slot] = np.asarray(weights)[order]
    return kind, Mixing(None, jnp.asarray(table, jnp.int32), jnp.asarray(w))


def mix(tree, op: Mixing):
    """Apply the mixing operator to every leaf of ``tree`` (leading axis = node)."""
    if op.dense is not None:
        W = op.dense
        return jax.tree.map(lambda x: jnp.tensordot(W, x, axes=1).astype(x.dtype), tree)

    def table(x):
        shape = (-1,) + (1,) * (x.ndim - 1)
        out = 0.0
        for k in range(op.senders.shape[1]):  # K terms, fused into one elementwise loop
            out = out + op.weights[:, k].reshape(shape) * x[op.senders[:, k]]
        return out.astype(x.dtype)

    return jax.tree.map(table, tree)


class Neighbours(NamedTuple):
    """A padded neighbour table: row i lists node i's neighbours (K = largest degree).

    ``index`` (N, K) int32 (padding slots point at node i itself), ``weights`` (N, K)
    relation weights a_ij (0 on padding).  Data, like the mixing operator.
    """

    index: jax.Array
    weights: jax.Array


def neighbourhood(tree, nbrs: Neighbours):
    """Every node's view of its neighbours' leaves: (N, ...) → (N, K, ...)."""
    return jax.tree.map(lambda x: x[nbrs.index], tree)


def consensus_distance(tree, active=None) -> jax.Array:
    """``(1/N) Σ_i ‖θ_i − θ̄‖²`` summed over all leaves (and components).

    With a boolean ``active`` mask, only those nodes count (N = their number).
    """
    total = 0.0
    for x in jax.tree.leaves(tree):
        x = x.reshape(x.shape[0], -1)
        w = jnp.ones(x.shape[0]) if active is None else active.astype(x.dtype)
        k = jnp.maximum(w.sum(), 1.0)
        mean = (w[:, None] * x).sum(axis=0) / k
        total = total + jnp.sum(w[:, None] * (x - mean) ** 2) / k
    return total


def num_values(tree) -> int:
    """Number of scalar values one node sends per message (the shared part of its state)."""
    return int(sum(np.prod(x.shape[1:]) for x in jax.tree.leaves(tree)))
