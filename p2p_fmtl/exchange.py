"""Exchanges: what crosses an edge in a round, what it costs, what the receiver does with it.

An algorithm declares how it uses its neighbours (:class:`~p2p_fmtl.algorithms.base.Needs`):

``average``  its shared part is gossip-averaged, ``θ_i ← Σ_j W_ij θ_j`` (D-SGD, D-EM, ...)
``inbox``    it reads its neighbours' messages one by one *before* its local work
``combine``  it reads them *after* its local work, in a combine step of its own
``none``     it sends nothing (local training)

From that need and the config one exchange is chosen (:func:`plan_exchange`).  Each
exchange declares what it supports (:meth:`Exchange.refusal`: the one line that refuses a
combination when the config is loaded, naming both settings), keeps its own state across
rounds (carried and checkpointed with the model state), and inside the compiled round
sends the round's messages, counts them where they cross an edge, and hands the receivers
what arrived:

============  =============  =========================================  ==================
exchange      for            what crosses a live edge                   state
============  =============  =========================================  ==================
gossip        average        the shared part (push-sum: and y_j)        push-sum weights y
pairwise      average        the shared part, both ends of a tick       –
choco         average        C(x_j − x̂_j), the public copy's update     public copies x̂
compressed    average        C(x_j) (DeepSqueeze: C(x_j + e_j))          errors e
inbox         inbox/combine  the message, C(message) or a CHOCO update  public copies x̂
none          none           nothing                                    –
============  =============  =========================================  ==================

A node sends one message per live edge of the round's graph (gossip: per non-zero
``W_ij``; pairwise: one per tick end), only in gossip rounds (``algorithm.gossip_every``),
and only when it is alive; the ledger multiplies the count by the encoded size of one
message (:func:`p2p_fmtl.compress.tree_message_bytes`).

Semantics that hold for every exchange: a message that does not arrive is not used (a
dead link or node contributes nothing this round; gossip re-weights, an inbox shows the
neighbour with weight 0); in rounds without gossip nothing is sent and an inbox is empty.
CHOCO's public copies (gossip or inbox) must be what *every* neighbour holds, so CHOCO
runs only where every message of the static graph arrives.

Byzantine senders and robust aggregation (:mod:`p2p_fmtl.adversary`): ``gossip`` and
``inbox`` carry an :class:`~p2p_fmtl.adversary.Adversary`; Byzantine rows of what is sent
are replaced before anyone reads them, and gossip's ``W x`` becomes the robust rule over
each node's own value and its live neighbours' messages.  With a redraw each round, the
exchange's state counts the gossip rounds each node was Byzantine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from .adversary import (
    Adversary,
    AttackInputs,
    corrupt,
    plan_adversary,
    robust_mix,
    round_byzantine,
    table_neighbours,
)
from .algorithms.base import Inbox, Needs
from .compress import compressor, tree_message_bytes
from .errors import ConfigError
from .gossip import mix
from .netsim import DIRECTED, LOCAL_RULES

LOSSES = ("node_drop", "link_drop", "churn")
PUSH_SUM_Y_BYTES = 4  # push-sum adds the float32 weight y_j to every message


def _bcast(mask, a):
    return mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim))


def _masked(mask, tree):
    return jax.tree.map(lambda a: a * _bcast(mask, a).astype(a.dtype), tree)


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """The settings of a config that exchanges look at (read once from the config)."""

    algorithm: str
    needs: Needs
    schedule: str
    mixing: str
    reweight: str
    losses: tuple[str, ...]  # names of the loss faults with a non-zero rate
    straggler: bool
    gossip: str
    every: int
    compression: str  # compressor name, "none"
    dtype: str
    method: str
    error_feedback: bool

    @classmethod
    def from_config(cls, cfg, needs: Needs) -> Settings:
        sections = ("topology", "algorithm", "faults", "compression")
        topo, alg, faults, comp = (cfg[name] for name in sections)
        return cls(
            algorithm=alg["name"],
            needs=needs,
            schedule=topo["schedule"],
            mixing=topo["mixing"],
            reweight=faults["reweight"],
            losses=tuple(k for k in LOSSES if faults[k] > 0),
            straggler=faults["straggler"] > 0,
            gossip=alg.get("gossip", "sync"),
            every=alg.get("gossip_every", 1),
            compression=comp["name"],
            dtype=comp["dtype"],
            method=comp["method"],
            error_feedback=comp["error_feedback"],
        )

    @property
    def compressed(self) -> bool:
        return self.compression != "none" or self.dtype != "float32"

    @property
    def comp_setting(self) -> str:
        if self.compression != "none":
            return f"compression.name = {self.compression!r}"
        return f"compression.dtype = {self.dtype!r}"

    @property
    def loss_setting(self) -> str:
        return f"faults.{self.losses[0]} > 0" if self.losses else "no faults"

    @property
    def alg_setting(self) -> str:
        return f"algorithm.name = {self.algorithm!r}"


# --------------------------------------------------------------------------- base
class Exchange:
    """One way of exchanging messages (a frozen dataclass: hashable, part of the program)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "average"  # "average" | "inbox" | "none"
    reads_edges: ClassVar[bool] = False  # reads the candidate edges even on a static graph

    @staticmethod
    def refusal(s: Settings) -> str | None:
        """Why this exchange cannot run these settings (one line), or ``None``."""
        return None

    def init(self, message, n: int):
        """The exchange's state carried across rounds (a pytree or ``None``)."""
        return None

    def message_bytes(self, message) -> int:
        """Bytes of one message (``message``: a tree with a leading node axis)."""
        return tree_message_bytes(message, "none", ratio=1.0, levels=1, dtype="float32")


@dataclass(frozen=True)
class NoExchange(Exchange):
    """Nothing crosses the network (the algorithm declares ``exchange = "none"``)."""

    name: ClassVar[str] = "none"
    kind: ClassVar[str] = "none"

    @staticmethod
    def refusal(s: Settings) -> str | None:
        why = f"but {s.alg_setting} sends nothing"
        if s.compressed:
            return f"{s.comp_setting}: {why}; allowed: 'none'"
        if s.schedule != "static":
            return f"topology.schedule = {s.schedule!r} changes who talks to whom, {why}"
        if "link_drop" in s.losses:
            return f"faults.link_drop > 0 drops messages, {why}"
        return None

    def message_bytes(self, message) -> int:
        return 0


@dataclass(frozen=True)
class Gossip(Exchange):
    """Synchronous gossip averaging ``x ← W_t x``; push-sum when W_t is only column
    stochastic (directed schedules that lose messages, see :mod:`p2p_fmtl.netsim`)."""

    name: ClassVar[str] = "gossip"
    push_sum: bool = False
    adversary: Adversary | None = None  # Byzantine senders, robust aggregation

    def init(self, message, n: int):
        if self.adversary is not None and self.adversary.redraw:
            return jnp.zeros((n,), jnp.int32)  # gossip rounds each node was Byzantine
        return jnp.ones((n,), jnp.float32) if self.push_sum else None

    def message_bytes(self, message) -> int:
        return super().message_bytes(message) + (PUSH_SUM_Y_BYTES if self.push_sum else 0)

    def average(self, x, rn, state, key, arr, gamma, adv=None):
        if self.adversary is not None:
            return self._adversarial(x, rn, state, key, adv)
        if not self.push_sum:
            return mix(x, rn.mixing), state, rn.sends
        y = state
        num = mix(jax.tree.map(lambda a: a * _bcast(y, a).astype(a.dtype), x), rn.mixing)
        y_new = mix(y, rn.mixing)
        z = jax.tree.map(lambda a: a / _bcast(y_new, a).astype(a.dtype), num)
        return z, y_new, rn.sends

    def _adversarial(self, x, rn, state, key, adv: AttackInputs):
        """Gossip with Byzantine senders and / or a robust rule (:mod:`p2p_fmtl.adversary`):
        Byzantine rows of what is sent are replaced; every node mixes (or robustly
        aggregates) the messages of its live neighbours with its own true value."""
        a = self.adversary
        byz = round_byzantine(a, adv, key, rn.alive)
        op = rn.mixing
        sent = x
        if a.attacks_messages:
            if a.kind == "alie":
                sent = corrupt(a, adv, x, byz, key, op.senders, table_neighbours(op))
            else:
                sent = corrupt(a, adv, x, byz, key)
        if a.robust != "none":
            out = robust_mix(a, adv, sent, x, op, byz)
        else:  # W x with one's own true value: W sent + W_ii (x_i − sent_i)
            sw = rn.self_weight
            out = jax.tree.map(
                lambda m, v, s: m + _bcast(sw, v).astype(v.dtype) * (v - s), mix(sent, op), x, sent
            )
        if a.redraw:
            state = state + byz.astype(jnp.int32)
        return out, state, rn.sends


@dataclass(frozen=True)
class Pairwise(Exchange):
    """Asynchronous pairwise gossip (Boyd et al. 2006): ``ticks`` times per round, the two
    ends of one uniformly random live edge average; everyone else keeps its model."""

    name: ClassVar[str] = "pairwise"
    reads_edges: ClassVar[bool] = True
    ticks: int = 1

    @staticmethod
    def refusal(s: Settings) -> str | None:
        if s.needs.exchange != "average":
            return (
                f"algorithm.gossip = 'pairwise' averages pairs of models, but {s.alg_setting} "
                "reads its neighbours' models one by one; allowed: 'sync'"
            )
        if s.schedule in DIRECTED:
            return (
                f"algorithm.gossip = 'pairwise' picks undirected edges, but topology.schedule "
                f"= {s.schedule!r} is directed; allowed: 'sync'"
            )
        if s.compressed:
            return f"{s.comp_setting}: not supported with algorithm.gossip = 'pairwise'"
        if s.mixing == "sample_weighted":
            return (
                "topology.mixing = 'sample_weighted' is a server's weighted average, but "
                "algorithm.gossip = 'pairwise' averages pairs and ignores it"
            )
        return None

    def average(self, x, rn, state, key, arr, gamma, adv=None):
        n = rn.alive.shape[0]
        logits = jnp.where(rn.edge_alive, 0.0, -jnp.inf)
        any_edge = jnp.any(rn.edge_alive)

        def tick(carry, k):
            x, msgs = carry
            e = jax.random.categorical(k, logits)
            a, b = arr.u[e], arr.v[e]

            def avg(leaf):
                m = 0.5 * (leaf[a] + leaf[b])
                return jnp.where(any_edge, leaf.at[a].set(m).at[b].set(m), leaf)

            sent = jnp.zeros((n,), jnp.int32).at[a].add(1).at[b].add(1)
            return (jax.tree.map(avg, x), msgs + jnp.where(any_edge, sent, 0)), None

        init = (x, jnp.zeros((n,), jnp.int32))
        (x, msgs), _ = jax.lax.scan(tick, init, jax.random.split(key, self.ticks))
        return x, state, msgs


@dataclass(frozen=True)
class _Compressing(Exchange):
    """Shared by the exchanges that send compressed messages."""

    compression: str = "none"
    ratio: float = 0.1
    levels: int = 7
    dtype: str = "float32"

    @classmethod
    def from_config(cls, comp, **kw):
        return cls(comp["name"], comp["ratio"], comp["levels"], comp["dtype"], **kw)

    def message_bytes(self, message) -> int:
        return tree_message_bytes(
            message, self.compression, ratio=self.ratio, levels=self.levels, dtype=self.dtype
        )

    def compress(self, tree, key):
        n = jax.tree.leaves(tree)[0].shape[0]
        c = compressor(self.compression, ratio=self.ratio, levels=self.levels, dtype=self.dtype)
        return c(tree, jax.random.split(key, n))


def _choco_refusal(s: Settings) -> str | None:
    if s.schedule != "static":
        return (
            f"{s.comp_setting} with compression.method = 'choco': public copies need every "
            f"neighbour to receive every update, but topology.schedule = {s.schedule!r} "
            "changes the neighbours; use compression.method = 'plain'"
        )
    if s.losses:
        return (
            f"{s.comp_setting} with compression.method = 'choco': public copies need every "
            f"update delivered, but {s.loss_setting} loses some; use compression.method = "
            "'plain'"
        )
    return None


@dataclass(frozen=True)
class Choco(_Compressing):
    """CHOCO-gossip (Koloskova et al. 2019): every node keeps a public copy x̂ that all its
    neighbours track; per gossip round ``q_i = C(x_i − x̂_i)`` is sent,
    ``x̂ ← x̂ + q``, ``x ← x + γ (W x̂ − x̂)``.  Preserves the network mean."""

    name: ClassVar[str] = "choco"

    @staticmethod
    def refusal(s: Settings) -> str | None:
        return _choco_refusal(s)

    def init(self, message, n: int):
        return jax.tree.map(jnp.zeros_like, message)

    def average(self, x, rn, public, key, arr, gamma, adv=None):
        q = _masked(rn.alive, self.compress(jax.tree.map(jnp.subtract, x, public), key))
        public = jax.tree.map(jnp.add, public, q)
        mixed = mix(public, rn.mixing)
        new = jax.tree.map(lambda a, m, p: a + gamma * (m - p), x, mixed, public)
        return new, public, rn.sends


@dataclass(frozen=True)
class Compressed(_Compressing):
    """Mixing compressed models, ``x_i ← W_ii x_i + Σ_{j≠i} W_ij C(x_j)`` (does not
    converge to the average); with ``error_feedback``, DeepSqueeze (Tang et al. 2019):
    ``v = x + e``, ``q = C(v)``, ``e ← v − q``, ``x ← x + γ (W q − q)``."""

    name: ClassVar[str] = "compressed"
    error_feedback: bool = False

    @staticmethod
    def refusal(s: Settings) -> str | None:
        if s.schedule in DIRECTED and s.losses:
            return (
                f"{s.comp_setting}: compressed gossip needs a doubly stochastic W, but "
                f"topology.schedule = {s.schedule!r} with {s.loss_setting} runs push-sum"
            )
        return None

    def init(self, message, n: int):
        return jax.tree.map(jnp.zeros_like, message) if self.error_feedback else None

    def average(self, x, rn, err, key, arr, gamma, adv=None):
        if self.error_feedback:
            v = jax.tree.map(jnp.add, x, err)
            q = self.compress(v, key)
            err = jax.tree.map(lambda a, b, e: jnp.where(_bcast(rn.alive, a), a - b, e), v, q, err)
            mixed = mix(q, rn.mixing)
            return jax.tree.map(lambda a, m, b: a + gamma * (m - b), x, mixed, q), err, rn.sends
        q = self.compress(x, key)  # neighbours' compressed models, one's own exact
        mixed = mix(q, rn.mixing)
        sw = rn.self_weight
        new = jax.tree.map(lambda m, a, b: m + _bcast(sw, a) * (a - b), mixed, x, q)
        return new, err, rn.sends


@dataclass(frozen=True)
class InboxExchange(_Compressing):
    """Every live neighbour's message, one by one, with the relation weights a_ij of the
    round (0 for a neighbour whose message did not arrive).  Compressed messages arrive as
    ``C(m_j)`` (``method = "plain"``) or as CHOCO public copies ``x̂_j ← x̂_j + C(m_j − x̂_j)``
    (``method = "choco"``)."""

    name: ClassVar[str] = "inbox"
    kind: ClassVar[str] = "inbox"
    reads_edges: ClassVar[bool] = True
    method: str = "none"  # none | plain | choco
    live_mixing: bool = False  # relation = the round's W_ij (the network changes)
    adversary: Adversary | None = None  # Byzantine senders (message attacks)

    @staticmethod
    def refusal(s: Settings) -> str | None:
        if s.schedule in DIRECTED:
            return (
                f"topology.schedule = {s.schedule!r} is directed, but {s.alg_setting} reads "
                "its neighbours' models over undirected edges; allowed: 'static', "
                "'random_matching', 'resample', 'list'"
            )
        if s.gossip == "pairwise":
            return Pairwise.refusal(s)
        if s.compressed and s.method == "choco":
            return _choco_refusal(s)
        if s.compressed and s.error_feedback:
            return (
                f"compression.error_feedback = true: DeepSqueeze mixes averages, but "
                f"{s.alg_setting} reads its neighbours' models one by one"
            )
        return None

    def init(self, message, n: int):
        if self.adversary is not None and self.adversary.redraw:
            return jnp.zeros((n,), jnp.int32)  # rounds each node was Byzantine
        return jax.tree.map(jnp.zeros_like, message) if self.method == "choco" else None

    def receive(self, message, rn, public, key, arr, relation, adv=None):
        alive = rn.alive
        live = rn.edge_alive[arr.edge] & alive[:, None] & alive[arr.index]
        base = rn.edge_w[arr.edge] if self.live_mixing else relation
        weights = base * live.astype(base.dtype)
        if self.method == "plain":
            sent = self.compress(message, key)
        elif self.method == "choco":
            diff = jax.tree.map(jnp.subtract, message, public)
            public = jax.tree.map(jnp.add, public, _masked(alive, self.compress(diff, key)))
            sent = public
        else:
            sent = message
        a = self.adversary
        if a is not None:  # uncompressed only (adversary.check_attack)
            byz = round_byzantine(a, adv, key, alive)
            sent = corrupt(a, adv, message, byz, key, arr.index, live)
            if a.redraw:
                public = public + byz.astype(jnp.int32)
        models = jax.tree.map(lambda a: a[arr.index], sent)
        return Inbox(models, weights), public, jnp.sum(live, axis=1, dtype=jnp.int32)


# --------------------------------------------------------------------------- planning
def _generic_refusal(s: Settings) -> str | None:
    """Settings that no exchange makes meaningful for this algorithm or mixing rule."""
    if s.straggler and s.needs.copies == 0:
        return f"faults.straggler > 0 slows local work, but {s.alg_setting} does none"
    if s.mixing == "sample_weighted" and (s.schedule != "static" or s.losses):
        what = f"topology.schedule = {s.schedule!r}" if s.schedule != "static" else s.loss_setting
        return (
            f"topology.mixing = 'sample_weighted' is a server's fixed weighted average; it "
            f"cannot follow {what}"
        )
    if s.needs.exchange != "none" and s.schedule not in DIRECTED:
        what = s.loss_setting if s.schedule == "static" else f"topology.schedule = {s.schedule!r}"
        if (
            s.reweight == "rule"
            and s.mixing not in LOCAL_RULES
            and (s.losses or s.schedule != "static")
        ):
            return (
                f"faults.reweight = 'rule' recomputes topology.mixing = {s.mixing!r} on each "
                f"round's graph, which it cannot do ({what}); use faults.reweight = 'self' or "
                "'metropolis'"
            )
        if s.reweight == "self" and s.schedule == "resample":
            return (
                "faults.reweight = 'self' keeps the rule's weights of the graph, but "
                "topology.schedule = 'resample' draws edges that are not in it; allowed: "
                "'rule', 'metropolis'"
            )
    return None


def exchange_class(s: Settings) -> type[Exchange]:
    if s.needs.exchange == "none":
        return NoExchange
    if s.needs.exchange in ("inbox", "combine"):
        return InboxExchange
    if s.gossip == "pairwise":
        return Pairwise
    if s.compressed:
        return Choco if s.method == "choco" else Compressed
    return Gossip


def check_settings(cfg, needs: Needs) -> type[Exchange]:
    """Refuse an unsupported combination with one line (a ConfigError); return the class
    of the exchange that will run it."""
    s = Settings.from_config(cfg, needs)
    cls = exchange_class(s)
    why = _generic_refusal(s) or cls.refusal(s)
    if why:
        raise ConfigError(why)
    return cls


def plan_exchange(cfg, needs: Needs) -> Exchange:
    """The exchange of a (validated) config."""
    s = Settings.from_config(cfg, needs)
    cls = check_settings(cfg, needs)
    comp = cfg["compression"]
    if cls is NoExchange:
        return NoExchange()
    adversary = plan_adversary(cfg)
    if cls is Gossip:
        return Gossip(push_sum=s.schedule in DIRECTED and bool(s.losses), adversary=adversary)
    if cls is Pairwise:
        return Pairwise(ticks=cfg["algorithm"]["gossip_ticks"])
    if cls is Choco:
        return Choco.from_config(comp)
    if cls is Compressed:
        return Compressed.from_config(comp, error_feedback=comp["error_feedback"])
    method = comp["method"] if s.compressed else "none"
    changing = s.schedule != "static" or bool(s.losses)
    return InboxExchange.from_config(
        comp,
        method=method,
        live_mixing=needs.relation == "mixing" and changing,
        adversary=adversary,
    )


def exchange_names() -> dict[str, Any]:
    """Every exchange by name (for documentation and the combination test)."""
    return {c.name: c for c in (NoExchange, Gossip, Pairwise, Choco, Compressed, InboxExchange)}
