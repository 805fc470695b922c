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

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .algorithms.base import Algorithm, Inbox, NodeData
from .compress import compressor
from .gossip import Mixing, Neighbours, consensus_distance, mix, neighbourhood
from .netsim import (
    Dynamics,
    NetArrays,
    NetState,
    masked_neighbours,
    pairwise_gossip,
    round_network,
    round_seconds,
)


def _masked_mean(values, count):
    mask = jnp.arange(values.shape[0]) < count
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1)


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(
        (np.shape(x), str(getattr(x, "dtype", type(x))), str(getattr(x, "sharding", "")))
        for x in leaves
    )


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["ids", "data", "inverse"],
    meta_fields=["chunks", "devices"],
)
@dataclasses.dataclass(frozen=True)
class Layout:
    """How node data are laid out: buckets of nodes, each with its own padded arrays.

    ``ids[b]`` are the nodes of bucket b (``-1`` for dummy nodes that only pad chunks),
    ``data[b]`` their :class:`NodeData` (``None`` for algorithms without data),
    ``inverse`` the position of every node in the concatenated buckets.  All arrays:
    data of the compiled programs.  ``chunks[b]`` (static) is the number of nodes per
    chunk and device with which bucket b's local work runs (0: all at once), on
    ``devices`` devices; see :func:`_chunked`.
    """

    ids: tuple
    data: tuple
    inverse: jax.Array
    chunks: tuple = ()
    devices: int = 1

    def chunk(self, b: int) -> int:
        return self.chunks[b] if b < len(self.chunks) else 0


def _gather(tree, idx):
    return jax.tree.map(lambda x: x[idx], tree)


def _unbucket(parts, layout: Layout):
    """Concatenate per-bucket results and restore node order (dummy nodes dropped)."""
    if len(parts) == 1:
        return jax.tree.map(lambda x: x[layout.inverse], parts[0])
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[layout.inverse], *parts)


def _chunked(fn, args, devices: int, chunk: int):
    """``fn`` (vmapped over a leading node axis) applied to ``args`` chunk by chunk.

    The leading axis of every leaf of ``args`` has ``devices · k · chunk`` nodes, laid
    out device-major (a device's nodes are contiguous, as the node axis is sharded).  A
    ``lax.scan`` over the k chunks hands ``fn`` the ``devices · chunk`` nodes of chunk j
    (chunk j of every device: with several devices each computes its own part), and the
    results are put back in the original order.  On a CPU this keeps the per-step
    working set (minibatches, activations) of a chunk in cache.
    """
    n = jax.tree.leaves(args)[0].shape[0]
    k = n // (devices * chunk)

    def view(x):
        return x.reshape((devices, k, chunk) + x.shape[1:])

    views = jax.tree.map(view, args)

    def body(carry, j):
        def part(v):
            v = jax.lax.dynamic_index_in_dim(v, j, axis=1, keepdims=False)
            return v.reshape((devices * chunk,) + v.shape[2:])

        return carry, fn(jax.tree.map(part, views))

    _, out = jax.lax.scan(body, None, jnp.arange(k))

    def back(y):  # (k, devices · chunk, ...) -> (devices · k · chunk, ...)
        y = y.reshape((k, devices, chunk) + y.shape[2:])
        return jnp.swapaxes(y, 0, 1).reshape((n,) + y.shape[3:])

    return jax.tree.map(back, out)


class Engine:
    """Compiled programs for one algorithm: init, a chunk of rounds, evaluation."""

    def __init__(self, alg: Algorithm, dyn: Dynamics | None = None):
        self.alg = alg
        self.dyn = dyn or Dynamics()
        self._compiled: dict[Any, Any] = {}
        self.compile_seconds = 0.0
        self.compilations = 0
        self.last_cost: dict[str, Any] = {}

    def _message(self, state):
        alg = self.alg
        return (alg.message or alg.shared)(state)

    # ---------------------------------------------------------------- programs
    def _init_impl(self, keys, layout: Layout):
        parts = [
            jax.vmap(self.alg.init)(keys[idx], d)
            for idx, d in zip(layout.ids, layout.data, strict=True)
        ]
        return _unbucket(parts, layout)

    def _local_work(self, state, layout: Layout, keys, lr, inbox, budget=None):
        """Every node's local update, one vmap per bucket of equally padded nodes (chunk
        by chunk for buckets with chunks)."""
        alg = self.alg

        def update(a):
            return jax.vmap(alg.local_update, in_axes=(0, 0, 0, None, 0))(
                a[0], a[1], a[2], lr, a[3]
            )

        states, losses = [], []
        for b, (idx, d) in enumerate(zip(layout.ids, layout.data, strict=True)):
            sub_inbox = None if inbox is None else _gather(inbox, idx)
            if budget is not None and d is not None:
                d = d._replace(budget=budget[idx])
            args = (_gather(state, idx), d, keys[idx], sub_inbox)
            if layout.chunk(b):
                out, loss = _chunked(update, args, layout.devices, layout.chunk(b))
            else:
                out, loss = update(args)
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
                inbox = Inbox(neighbourhood(self._message(state), nbrs), nbrs.weights)
            new, loss = self._local_work(state, layout, node_keys, lr, inbox)
            state = jax.tree.map(keep_inactive, new, state)  # held-out nodes never train
            if alg.combine is not None:
                inbox = Inbox(neighbourhood(self._message(state), nbrs), nbrs.weights)
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

    def _dyn_chunk_impl(
        self, state, key, lrs, ts, layout, active, nbrs, arr: NetArrays, ns: NetState
    ):
        """Rounds with a network process (:mod:`p2p_fmtl.netsim`): the round's W, live
        nodes, work budgets and compression are drawn inside the scan.  Also returns each
        node's messages sent and the simulated seconds, summed over the chunk."""
        alg, dyn = self.alg, self.dyn
        n = jax.tree.leaves(state)[0].shape[0]
        compress = None
        if dyn.compressed:
            compress = compressor(
                dyn.compression, ratio=dyn.ratio, levels=dyn.levels, dtype=dyn.dtype
            )
        gamma = arr.rates[7]

        def keep(mask):
            def f(new, old):
                return jnp.where(mask.reshape((n,) + (1,) * (new.ndim - 1)), new, old)

            return f

        def one_round(carry, xs):
            state, key, ns, msgs_total, seconds = carry
            lr, t = xs
            key, sub = jax.random.split(key)
            node_keys = jax.random.split(sub, n)  # as on the plain path: same local work
            k_net, k_gossip = jax.random.split(jax.random.fold_in(sub, 0x6E6574))
            rn = round_network(dyn, arr, t, k_net, ns.away_until, active)
            alive = rn.alive
            gossip_now = (t + 1) % dyn.every == 0
            round_nbrs = None if nbrs is None else masked_neighbours(nbrs, arr, rn)
            inbox = None
            if alg.inbox == "before":
                inbox = Inbox(neighbourhood(self._message(state), round_nbrs), round_nbrs.weights)
            new, loss = self._local_work(state, layout, node_keys, lr, inbox, rn.budget)
            state = jax.tree.map(keep(alive), new, state)  # dead nodes do nothing
            msgs = jnp.zeros((n,), jnp.int32)
            public = ns.public
            if alg.combine is not None:
                inbox = Inbox(neighbourhood(self._message(state), round_nbrs), round_nbrs.weights)
                new = jax.vmap(alg.combine, in_axes=(0, 0, None))(state, inbox, lr)
                state = jax.tree.map(keep(alive & gossip_now), new, state)
                sent = jnp.sum(round_nbrs.weights > 0, axis=1).astype(jnp.int32)
                msgs = jnp.where(gossip_now, sent, 0)
            elif alg.communicates and alg.inbox == "none":
                x = alg.shared(state)
                if dyn.gossip == "pairwise":
                    mixed, sent = pairwise_gossip(x, arr, rn, k_gossip, dyn.ticks)
                elif compress is None:
                    mixed, sent = mix(x, rn.mixing), rn.msgs
                else:
                    mixed, public, sent = self._compressed_gossip(
                        x, public, rn, compress, jax.random.split(k_gossip, n), gamma
                    )
                    public = jax.tree.map(
                        lambda a, b: jnp.where(gossip_now, a, b), public, ns.public
                    )
                state = jax.tree.map(
                    lambda a, b: jnp.where(gossip_now, a, b),
                    alg.replace_shared(state, mixed),
                    state,
                )
                msgs = jnp.where(gossip_now, sent, 0)
            if dyn.cost:
                seconds = seconds + round_seconds(arr, rn, msgs)
            finite = jnp.all(
                jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(alg.shared(state))])
            )
            ns = NetState(rn.away_until, public)
            carry = (state, key, ns, msgs_total + msgs, seconds)
            return carry, finite & jnp.all(jnp.isfinite(loss))

        init = (state, key, ns, jnp.zeros((n,), jnp.int32), jnp.zeros((), jnp.float32))
        (state, key, ns, msgs, seconds), finite = jax.lax.scan(one_round, init, (lrs, ts))
        return state, key, finite, ns, msgs, seconds

    def _compressed_gossip(self, x, public, rn, compress, keys, gamma):
        """One gossip step with compressed messages (CHOCO, plain, or DeepSqueeze)."""
        dyn, n = self.dyn, rn.alive.shape[0]

        def on_alive(a):
            return a * rn.alive.reshape((n,) + (1,) * (a.ndim - 1)).astype(a.dtype)

        if dyn.method == "choco":
            q = jax.tree.map(on_alive, compress(jax.tree.map(jnp.subtract, x, public), keys))
            public = jax.tree.map(jnp.add, public, q)
            mixed_pub = mix(public, rn.mixing)
            new = jax.tree.map(lambda a, m, p: a + gamma * (m - p), x, mixed_pub, public)
            return new, public, rn.msgs
        if dyn.error_feedback:  # DeepSqueeze: error-compensated compressed gossip
            v = jax.tree.map(jnp.add, x, public)
            q = compress(v, keys)
            err = jax.tree.map(
                lambda a, b, e: jnp.where(self._alive(rn, a), a - b, e), v, q, public
            )
            mixed = mix(q, rn.mixing)
            new = jax.tree.map(lambda a, m, b: a + gamma * (m - b), x, mixed, q)
            return new, err, rn.msgs
        q = compress(x, keys)  # plain: neighbours' compressed models, one's own exact
        mixed = mix(q, rn.mixing)
        sw = rn.self_weight

        def fix(m, a, b):
            return m + sw.reshape((n,) + (1,) * (a.ndim - 1)) * (a - b)

        return jax.tree.map(fix, mixed, x, q), public, rn.msgs

    @staticmethod
    def _alive(rn, a):
        n = rn.alive.shape[0]
        return rn.alive.reshape((n,) + (1,) * (a.ndim - 1))

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

    def run_dynamic_rounds(self, state, key, lrs, t0, layout, active, nbrs, arr, ns):
        """Run rounds ``t0 .. t0 + len(lrs) − 1`` with the network process; return the new
        state, key, finite flags, network state, messages sent per node and simulated
        seconds (both summed over these rounds)."""
        lrs = jnp.asarray(lrs)
        ts = jnp.arange(len(lrs), dtype=jnp.int32) + jnp.asarray(t0, jnp.int32)
        args = (state, key, lrs, ts, layout, active, nbrs, arr, ns)
        return self._call("dyn_chunk", self._dyn_chunk_impl, *args)

    def evaluate(self, state, layout, active, borrow=None) -> dict[str, np.ndarray]:
        out = self._call("eval", self._eval_impl, state, layout, active, borrow)
        return {k: np.asarray(v) for k, v in out.items()}
