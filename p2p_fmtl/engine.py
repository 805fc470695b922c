"""The round loop: every node at once, rounds scanned in chunks between evaluations.

State layout (design notes §2.1): the state of all nodes is ONE pytree whose leaves
have a leading axis of size N.  There is ONE round for every network::

    net    = round_network(process, t, key)        # who is alive, this round's W, budgets
    inbox  = exchange.receive(messages)            # algorithms that read neighbours first
    state  = vmap(algorithm.local_update)(state, data, split(key, N), lr_t, inbox)
    state  = exchange.average(shared(state))       # gossip averaging, or
    state  = vmap(algorithm.combine)(state, exchange.receive(messages))
    ledger += messages each node sent;  seconds += the cost model's round time
    work   += samples each node processed (the cost model's energy, when carried)

Byzantine nodes and robust aggregation live in the exchange (``inputs.adversary``: the
fixed set, fraction, scales, trim and clipping radius, all data).

The static graph is the trivial network process (the fixed W, every node alive): the
same round, with nothing drawn.  ``lax.scan`` runs ``eval_every`` rounds per compiled
call, so Python is touched once per chunk.  Data, the network's arrays, rates and the
per-round learning rates are arguments of the compiled program (data, not constants):
changing the seed, the graph's weights, a fault rate or the learning rate reuses the
compiled program.  Which features are on (the process, the exchange) is static.

Fine-tuning before evaluation (``algorithm.finetune_epochs = k``, the reference's
FedAvg+): :meth:`Engine.evaluate` given ``tune = (key, lr)`` scores a copy of every node's
state after k more applications of the algorithm's own ``local_update`` with one local
epoch each, on the node's own data and without messages (an :class:`Inbox` of weight 0
for algorithms that read one); the carried state is not touched.  The copy's keys come
from ``key``, a stream of their own, so training never sees them.

The public programs (:meth:`Engine.init`, :meth:`Engine.run_chunk`,
:meth:`Engine.evaluate` and their ``_batch`` versions, vmapped over a leading run axis)
are what single runs, batched runs and sharded runs call; an algorithm never knows
which.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .algorithms.base import Algorithm, Inbox, NodeData
from .exchange import Exchange
from .gossip import Mixing, consensus_distance, mix
from .netsim import (
    NetArrays,
    Process,
    StaticNet,
    as_dense,
    round_network,
    round_seconds,
    round_work,
)

NETWORK_FREE = ("init", "eval")  # programs that do not depend on the network
NET_SALT = 0x6E6574  # the network's keys: fold_in(round key, NET_SALT), apart from training


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


def round_keys(key, n: int):
    """One round's keys from the run's key: ``(next key, one key per node for local work,
    the network's key, the exchange's key)``."""
    key, sub = jax.random.split(key)
    node_keys = jax.random.split(sub, n)
    k_net, k_ex = jax.random.split(jax.random.fold_in(sub, NET_SALT))
    return key, node_keys, k_net, k_ex


class RoundInputs(NamedTuple):
    """The data of the compiled round besides the node data (a pytree; stack it over a
    leading axis for batched runs)."""

    active: Any  # (N,) bool: training nodes (held-out nodes never train nor gossip)
    static: StaticNet  # the static graph's W, its diagonal, messages per gossip
    net: NetArrays  # candidate edges, their neighbour table, rates, costs
    relation: Any  # (N, K) relation weights a_ij of the neighbour table, or None
    gamma: Any  # () CHOCO / DeepSqueeze consensus step
    message_bytes: Any  # () bytes of one message (the cost model's transfers)
    # Byzantine nodes and robust aggregation (:class:`~p2p_fmtl.adversary.AttackInputs`),
    # or None: no attack, no robust rule
    adversary: Any = None


class Carry(NamedTuple):
    """What a run carries from round to round (and checkpoints)."""

    state: Any  # the algorithm's state of every node
    key: Any  # the run's PRNG key
    away_until: Any  # (N,) int32: a churned-out node is away while t < away_until
    exchange: Any  # the exchange's state (public copies, push-sum weights, errors) or None
    # (N,) float32 samples each node processed in the last chunk (f_i · samples_i per live
    # round, :func:`~p2p_fmtl.netsim.round_work`), restarted at every chunk; the host
    # adds it up for the energy estimate.  None: not counted (no [cost])
    work: Any = None


class Engine:
    """Compiled programs for one algorithm on one kind of network: init, a chunk of
    rounds, evaluation (each also vmapped over a leading run axis)."""

    def __init__(
        self,
        alg: Algorithm,
        process: Process | None = None,
        exchange: Exchange | None = None,
        *,
        every: int = 1,
        cost: bool = False,
        programs: dict[Any, Any] | None = None,
        finetune: tuple[Algorithm, int] | None = None,
    ):
        """``finetune``: ``(the algorithm built with one local epoch of work, k)`` for
        ``algorithm.finetune_epochs = k > 0`` (see :meth:`_finetune`), else None."""
        from .exchange import Gossip

        self.alg = alg
        self.process = process or Process()
        self.exchange = exchange or Gossip()
        self.every = every
        self.cost = cost
        self.finetune = finetune
        self._compiled: dict[Any, Any] = {}
        # init and evaluation do not depend on the network: engines of one algorithm (and
        # model and shapes) share them through ``programs``
        self._shared = {} if programs is None else programs
        self.compile_seconds = 0.0
        self.compilations = 0

    def message(self, state):
        """What a node sends (the shared part, unless the algorithm sends something else)."""
        alg = self.alg
        return (alg.message or alg.shared)(state)

    # ---------------------------------------------------------------- programs
    def _init_impl(self, keys, layout: Layout):
        parts = [
            jax.vmap(self.alg.init)(keys[idx], d)
            for idx, d in zip(layout.ids, layout.data, strict=True)
        ]
        return _unbucket(parts, layout)

    def _local_work(self, state, layout: Layout, keys, lr, inbox, budget=None, alg=None):
        """Every node's local update (of ``alg``, default the engine's algorithm), one vmap
        per bucket of equally padded nodes (chunk by chunk for buckets with chunks)."""
        alg = alg or self.alg

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

    def _round(self, carry: Carry, lr, t, inputs: RoundInputs, layout: Layout):
        """One round of every node: network, exchange, local work, ledger."""
        alg, ex, needs = self.alg, self.exchange, self.alg.needs
        state, key, away, ex_state, work = carry
        n = inputs.active.shape[0]
        key, node_keys, k_net, k_ex = round_keys(key, n)
        rn = round_network(self.process, inputs.static, inputs.net, t, k_net, away, inputs.active)
        adv = inputs.adversary
        now = True if self.every == 1 else (t + 1) % self.every == 0

        def where(mask, new, old):
            if mask is True:
                return new
            return jax.tree.map(lambda a, b: jnp.where(_rows(mask, a), a, b), new, old)

        sent = jnp.zeros((n,), jnp.int32)
        new_ex = ex_state
        inbox = None
        if needs.exchange == "inbox":
            inbox, new_ex, sent = ex.receive(
                self.message(state), rn, ex_state, k_ex, inputs.net, inputs.relation, adv
            )
            if now is not True:
                inbox = inbox._replace(weights=inbox.weights * now)
        new, loss = self._local_work(state, layout, node_keys, lr, inbox, rn.budget)
        state = where(rn.alive, new, state)  # dead and held-out nodes do nothing
        if needs.exchange == "combine":
            inbox, new_ex, sent = ex.receive(
                self.message(state), rn, ex_state, k_ex, inputs.net, inputs.relation, adv
            )
            new = jax.vmap(alg.combine, in_axes=(0, 0, None))(state, inbox, lr)
            state = where(rn.alive & now, new, state)
        elif needs.exchange == "average":
            mixed, new_ex, sent = ex.average(
                alg.shared(state), rn, ex_state, k_ex, inputs.net, inputs.gamma, adv
            )
            state = where(now, alg.replace_shared(state, mixed), state)
        if now is not True:
            sent = jnp.where(now, sent, 0)
            new_ex = jax.tree.map(lambda a, b: jnp.where(now, a, b), new_ex, ex_state)
        seconds = jnp.zeros((), jnp.float32)
        if self.cost:
            seconds = round_seconds(inputs.net, rn, sent, inputs.message_bytes)
        finite = jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(alg.shared(state))])
        )
        if work is not None:
            work = work + round_work(inputs.net, rn)
        carry = Carry(state, key, rn.away_until, new_ex, work)
        return carry, sent, seconds, finite & jnp.all(jnp.isfinite(loss))

    def _chunk_impl(self, carry: Carry, inputs: RoundInputs, layout: Layout, lrs, ts):
        """``len(lrs)`` rounds; returns the carry, a per-round finite flag, the messages
        each node sent and the simulated seconds (both summed over the rounds); the
        carry's ``work`` (if counted) is the samples each node processed in these rounds."""
        n = inputs.active.shape[0]
        if carry.work is not None:
            carry = carry._replace(work=jnp.zeros_like(carry.work))

        def body(acc, xs):
            carry, msgs, seconds = acc
            lr, t = xs
            carry, sent, secs, finite = self._round(carry, lr, t, inputs, layout)
            return (carry, msgs + sent, seconds + secs), finite

        init = (carry, jnp.zeros((n,), jnp.int32), jnp.zeros((), jnp.float32))
        (carry, msgs, seconds), finite = jax.lax.scan(body, init, (lrs, ts))
        return carry, finite, msgs, seconds

    def _finetune(self, state, layout: Layout, key, lr):
        """Every node's state after k applications of the fine-tuning algorithm's
        ``local_update`` (one local epoch each, full work: no straggler budget), on its
        own data and with no messages: an algorithm that reads an inbox gets one slot,
        its own message, of weight 0 (a neighbour's pull vanishes)."""
        alg, k = self.finetune
        n = layout.inverse.shape[0]

        def one(st, step_key):
            inbox = None
            if alg.needs.exchange == "inbox":
                models = jax.tree.map(lambda x: x[:, None], (alg.message or alg.shared)(st))
                inbox = Inbox(models, jnp.zeros((n, 1), jnp.float32))
            keys = jax.random.split(step_key, n)
            return self._local_work(st, layout, keys, lr, inbox, alg=alg)[0], None

        state, _ = jax.lax.scan(one, state, jax.random.split(key, k))
        return state

    def _eval_impl(self, state, layout: Layout, active, borrow: Mixing | None, tune=None):
        """Per-node test score and train loss, consensus distance over active nodes, and,
        with ``borrow``, the score of every node after borrowing its neighbours' shared
        state and adapting (how a node that never trained is served).  With ``tune =
        (key, lr)`` the scores and losses are those of a fine-tuned copy
        (:meth:`_finetune`; unseen nodes fine-tune after borrowing and adapting); the
        consensus distance and the finite flags are always of ``state``."""
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

        scored = state if tune is None else self._finetune(state, layout, *tune)
        out["test_score"], out["train_loss"] = per_bucket(scored)
        if borrow is not None:
            borrowed = alg.replace_shared(state, mix(shared, borrow))
            if alg.adapt is not None:
                parts = [
                    jax.vmap(alg.adapt)(_gather(borrowed, idx), d)
                    for idx, d in zip(layout.ids, layout.data, strict=True)
                ]
                borrowed = _unbucket(parts, layout)
            if tune is not None:
                key, lr = tune
                borrowed = self._finetune(borrowed, layout, jax.random.fold_in(key, 1), lr)
            out["unseen_score"], _ = per_bucket(borrowed)
        return out

    def _trace_impl(self, key, inputs: RoundInputs, ts):
        proc = self.process._replace(dense=True)
        n = inputs.active.shape[0]
        static = inputs.static._replace(mixing=as_dense(inputs.static.mixing, n))

        def one(carry, t):
            key, away = carry
            key, _, k_net, _ = round_keys(key, n)
            rn = round_network(proc, static, inputs.net, t, k_net, away, inputs.active)
            budget = jnp.ones((n,)) if rn.budget is None else rn.budget
            return (key, rn.away_until), (rn.mixing.dense, rn.alive, rn.edge_alive, budget)

        _, out = jax.lax.scan(one, (key, jnp.zeros((n,), jnp.int32)), ts)
        return out

    # ---------------------------------------------------------------- calling
    def _call(self, name: str, fn, *args):
        """Call a program, compiling it ahead of time once per argument signature."""
        sig = (name, _signature(args))
        cache = self._shared if name.startswith(NETWORK_FREE) else self._compiled
        exe = cache.get(sig)
        if exe is None:
            t0 = time.perf_counter()
            exe = jax.jit(fn).lower(*args).compile()
            self.compile_seconds += time.perf_counter() - t0
            self.compilations += 1
            cache[sig] = exe
        return exe(*args)

    @staticmethod
    def _rounds(t0: int, lrs):
        lrs = jnp.asarray(lrs)
        ts = jnp.arange(lrs.shape[-1], dtype=jnp.int32) + jnp.asarray(t0, jnp.int32)
        return lrs, ts

    def init(self, keys, layout: Layout):
        """The initial state of every node (``keys``: one PRNG key per node)."""
        return self._call("init", self._init_impl, keys, layout)

    def run_chunk(self, carry: Carry, inputs: RoundInputs, layout: Layout, t0: int, lrs):
        """Rounds ``t0 .. t0 + len(lrs) − 1`` of one run: ``(carry, finite (T,), messages
        sent per node (N,), simulated seconds)``, the last two summed over the rounds (and
        ``carry.work``, when counted, the samples each node processed in them)."""
        lrs, ts = self._rounds(t0, lrs)
        return self._call("chunk", self._chunk_impl, carry, inputs, layout, lrs, ts)

    def run_chunk_batch(
        self, carry: Carry, inputs: RoundInputs, layout: Layout, t0: int, lrs, *, shared_layout
    ):
        """:meth:`run_chunk` of B runs at once: every leaf of ``carry``, ``inputs`` and
        ``lrs`` (B, T) has a leading run axis, ``layout`` too unless ``shared_layout``."""
        lrs, ts = self._rounds(t0, lrs)
        lay = None if shared_layout else 0
        fn = jax.vmap(self._chunk_impl, in_axes=(0, 0, lay, 0, None))
        return self._call(f"chunk_batch{lay}", fn, carry, inputs, layout, lrs, ts)

    def network_trace(self, key, inputs: RoundInputs, rounds: int) -> dict[str, np.ndarray]:
        """The network of rounds ``0 .. rounds − 1`` of a run whose key after initialisation
        is ``key``, replayed with the engine's own keys: each round's W (dense, as used by
        gossip), alive nodes, live candidate edges and work budgets (numpy)."""
        ts = jnp.arange(rounds, dtype=jnp.int32)
        W, alive, edges, budget = jax.jit(self._trace_impl)(key, inputs, ts)
        every = self.every
        gossip = (np.arange(rounds) + 1) % every == 0
        return {
            "W": np.asarray(W, np.float64),
            "alive": np.asarray(alive),
            "edge_alive": np.asarray(edges),
            "budget": np.asarray(budget),
            "gossip": gossip,
        }

    def evaluate(self, state, layout, active, borrow=None, tune=None) -> dict[str, np.ndarray]:
        """Per-node test score and train loss, consensus distance, unseen nodes' scores;
        with ``tune = (key, lr)`` (an engine with ``finetune``), the scores and losses of
        fine-tuned copies (:meth:`_finetune`)."""
        out = self.evaluate_on_devices(state, layout, active, borrow, tune)
        return {k: np.asarray(v) for k, v in out.items()}

    def evaluate_on_devices(self, state, layout, active, borrow=None, tune=None) -> dict:
        """:meth:`evaluate`, its outputs left where the program put them (arrays split
        across processes are gathered by the caller)."""
        return self._call("eval", self._eval_impl, state, layout, active, borrow, tune)

    def evaluate_batch(self, state, layout, active, borrow, tune=None, *, shared_layout):
        """:meth:`evaluate` of B runs at once (leading run axis, as in run_chunk_batch)."""
        lay = None if shared_layout else 0
        fn = jax.vmap(self._eval_impl, in_axes=(0, lay, 0, 0, 0))
        out = self._call(f"eval_batch{lay}", fn, state, layout, active, borrow, tune)
        return {k: np.asarray(v) for k, v in out.items()}


def _rows(mask, a):
    """A node mask (N,) broadcast against a leaf (N, ...)."""
    return mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim))
