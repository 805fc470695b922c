"""Decoupled aggregation: our reading of FedDEA (Wei et al.) for gossip.

FedDEA's description: each client finds the *task-relevant* coordinates of its update
from their magnitude and rescales them, so that clients with different tasks interfere
less when their updates are aggregated into one shared model.  The paper's exact rule
is not public here; this module implements the following reading, and it is ours.

After its local work a node has moved from ``w_old`` to ``w_new``; its update is
``Δ = w_new − w_old``.  For each parameter leaf it

1. marks the ``k = max(1, round(ρ·d))`` coordinates of largest ``|Δ|`` as task-relevant
   (the mask ``m``; ``algorithm.rho = ρ``),
2. drops the rest of the update and rescales the kept part to the update's full norm,
   ``s = ‖Δ‖₂ / ‖m ⊙ Δ‖₂``,
3. sends ``w̃ = w_old + s · (m ⊙ Δ)`` to its neighbours instead of ``w_new``.

A receiver mixes as usual but with its neighbours' decoupled models and its own exact
one: ``w_i ← (1 − Σ_j a_ij) w_i + Σ_j a_ij w̃_j`` (D-SGD: a_ij = W_ij).  So a node's
small, task-irrelevant coordinates of the update never reach nodes of other tasks,
and its relevant coordinates arrive at full strength.  The message is a dense model
(the same bytes as D-SGD).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .compress import keep_count


def decouple(old, new, rho: float):
    """``w̃ = w_old + s · (m ⊙ Δ)`` for every leaf of one node's parameters."""

    def leaf(o, n):
        d = (n - o).reshape(-1)
        k = keep_count(d.size, rho)
        _, idx = jax.lax.top_k(jnp.abs(d), k)
        kept = jnp.zeros_like(d).at[idx].set(d[idx])
        kept_norm = jnp.linalg.norm(kept)
        s = jnp.where(kept_norm > 0, jnp.linalg.norm(d) / jnp.maximum(kept_norm, 1e-30), 0.0)
        return (o.reshape(-1) + s * kept).reshape(o.shape)

    return jax.tree.map(leaf, old, new)


def mix_with_inbox(own, inbox):
    """``(1 − Σ_k a_k) own + Σ_k a_k m_k`` for one node (a: the inbox weights)."""
    a = inbox.weights
    return jax.tree.map(
        lambda w, wk: (1.0 - a.sum()) * w + jnp.tensordot(a, wk, axes=1), own, inbox.models
    )
