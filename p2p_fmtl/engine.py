"""The round loop: every node at once, rounds scanned in chunks between evaluations.

State layout (design notes §2.1): the state of all nodes is ONE pytree whose leaves
have a leading axis of size N.  A round is

    keys  = split(round_key, N)
    state = vmap(algorithm.local_update)(state, data, keys, lr_t)      # local work
    state = replace_shared(state, mix(shared(state), W))               # gossip

and ``lax.scan`` runs ``eval_every`` rounds per compiled call, so Python is touched
once per chunk.  Data, the mixing operator and the per-round learning rates are
arguments of the compiled program (data, not constants): changing the seed, the
graph's weights or the learning rate reuses the compiled program.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .algorithms.base import Algorithm, Inbox, NodeData
from .gossip import Mixing, Neighbours, consensus_distance, mix, neighbourhood


def _masked_mean(values, count):
    mask = jnp.arange(values.shape[0]) < count
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1)


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(
        (np.shape(x), str(getattr(x, "dtype", type(x))), str(getattr(x, "sharding", "")))
        for x in leaves
    )


class Layout(NamedTuple):
    """How node data are laid out: buckets of nodes, each with its own padded arrays.

    ``ids[b]`` are the nodes of bucket b, ``data[b]`` their :class:`NodeData` (``None``
    for algorithms without data), ``inverse`` the permutation that puts the concatenated
    buckets back in node order.  All arrays: data of the compiled programs.
    """

    ids: tuple
    data: tuple
    inverse: jax.Array


def _gather(tree, idx):
    return jax.tree.map(lambda x: x[idx], tree)


def _unbucket(parts, layout: Layout):
    """Concatenate per-bucket results and restore node order."""
    if len(parts) == 1:
        return jax.tree.map(lambda x: x[layout.inverse], parts[0])
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[layout.inverse], *parts)


class Engine:
    """Compiled programs for one algorithm: init, a chunk of rounds, evaluation."""

    def __init__(self, alg: Algorithm):
        self.alg = alg
        self._compiled: dict[Any, Any] = {}
        self.compile_seconds = 0.0
        self.compilations = 0
        self.last_cost: dict[str, Any] = {}

    # ---------------------------------------------------------------- programs
    def _init_impl(self, keys, layout: Layout):
        parts = [
            jax.vmap(self.alg.init)(keys[idx], d)
            for idx, d in zip(layout.ids, layout.data, strict=True)
        ]
        return _unbucket(parts, layout)

    def _local_work(self, state, layout: Layout, keys, lr, inbox):
        """Every node's local update, one vmap per bucket of equally padded nodes."""
        alg = self.alg
        states, losses = [], []
        for idx, d in zip(layout.ids, layout.data, strict=True):
            sub_inbox = None if inbox is None else _gather(inbox, idx)
            out, loss = jax.vmap(alg.local_update, in_axes=(0, 0, 0, None, 0))(
                _gather(state, idx), d, keys[idx], lr, sub_inbox
            )
            states.append(out)
            losses.append(loss)
        return _unbucket(states, layout), _unbucket(losses, layout)

    def _chunk_impl(self, state, key, lrs, mixing: Mixing, layout: Layout, active, nbrs):
        alg = self.alg
        n = jax.tree.leaves(state)[0].shape[0]

        def keep_inactive(new, old):
            return jnp.where(active.reshape((n,) + (1,) * (new.ndim - 1)), new, old)

        def one_round(carry, lr):
            state, key = carry
            key, sub = jax.random.split(key)
            node_keys = jax.random.split(sub, n)
            inbox = None
            if alg.inbox == "before":
                inbox = Inbox(neighbourhood(alg.shared(state), nbrs), nbrs.weights)
            new, loss = self._local_work(state, layout, node_keys, lr, inbox)
            state = jax.tree.map(keep_inactive, new, state)  # held-out nodes never train
            if alg.combine is not None:
                inbox = Inbox(neighbourhood(alg.shared(state), nbrs), nbrs.weights)
                new = jax.vmap(alg.combine, in_axes=(0, 0, None))(state, inbox, lr)
                state = jax.tree.map(keep_inactive, new, state)
            elif alg.communicates and alg.inbox == "none":  # plain gossip averaging
                state = alg.replace_shared(state, mix(alg.shared(state), mixing))
            finite = jnp.all(
                jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(alg.shared(state))])
            )
            return (state, key), finite & jnp.all(jnp.isfinite(loss))

        (state, key), finite = jax.lax.scan(one_round, (state, key), lrs)
        return state, key, finite  # finite[t]: round t left every value finite

    def _eval_impl(self, state, layout: Layout, active, borrow: Mixing | None):
        """Per-node test score and train loss, consensus distance over active nodes, and,
        with ``borrow``, the score of every node after borrowing its neighbours' shared
        state and adapting (how a node that never trained is served)."""
        alg = self.alg
        shared = alg.shared(state)
        out = {
            "consensus_distance": consensus_distance(shared, active),
            "finite": jnp.all(
                jnp.stack(
                    [
                        jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
                        for x in jax.tree.leaves(shared)
                    ]
                ),
                axis=0,
            ),
        }
        if alg.score is None or layout.data[0] is None:
            return out

        def node_eval(s, d: NodeData):
            test = _masked_mean(alg.score(s, d.x_test, d.y_test), d.n_test)
            train = _masked_mean(alg.loss(s, d.x_train, d.y_train), d.n_train)
            return test, train

        def per_bucket(st):
            parts = [
                jax.vmap(node_eval)(_gather(st, idx), d)
                for idx, d in zip(layout.ids, layout.data, strict=True)
            ]
            return _unbucket(parts, layout)

        out["test_score"], out["train_loss"] = per_bucket(state)
        if borrow is not None:
            borrowed = alg.replace_shared(state, mix(shared, borrow))
            if alg.adapt is not None:
                parts = [
                    jax.vmap(alg.adapt)(_gather(borrowed, idx), d)
                    for idx, d in zip(layout.ids, layout.data, strict=True)
                ]
                borrowed = _unbucket(parts, layout)
            out["unseen_score"], _ = per_bucket(borrowed)
        return out

    # ---------------------------------------------------------------- calling
    def _call(self, name: str, fn, *args):
        """Call a program, compiling it ahead of time once per argument signature."""
        sig = (name, _signature(args))
        exe = self._compiled.get(sig)
        if exe is None:
            t0 = time.perf_counter()
            exe = jax.jit(fn).lower(*args).compile()
            self.compile_seconds += time.perf_counter() - t0
            self.compilations += 1
            self._compiled[sig] = exe
        return exe(*args)

    def init(self, keys, layout: Layout):
        return self._call("init", self._init_impl, keys, layout)

    def run_rounds(self, state, key, lrs, mixing, layout, active, nbrs: Neighbours | None = None):
        """Run ``len(lrs)`` rounds; return the new state and key and a per-round finite flag."""
        lrs = jnp.asarray(lrs)
        args = (state, key, lrs, mixing, layout, active, nbrs)
        return self._call("chunk", self._chunk_impl, *args)

    def evaluate(self, state, layout, active, borrow=None) -> dict[str, np.ndarray]:
        out = self._call("eval", self._eval_impl, state, layout, active, borrow)
        return {k: np.asarray(v) for k, v in out.items()}
