"""Byzantine nodes and robust aggregation of what a node receives.

**Who is Byzantine** (``[attack]``).  A share ``round(fraction · m)`` of the m training
nodes, drawn uniformly: once from ``run.seed`` (:func:`fixed_byzantine`, the run's
``Parts.byzantine``), or, with ``attack.redraw = true``, anew in every gossip round from
the round's exchange key inside the compiled round (:func:`draw_byzantine`; the fraction
is data, so a sweep over fractions reuses the program).  With a redraw the exchange
carries, per node, the number of gossip rounds it was Byzantine (its state).

**What they do** (``attack.kind``), to the message they send over every live edge; a
Byzantine node keeps what honest aggregation gives it (it is not scored):

``sign_flip``   ``−scale · x_j`` instead of ``x_j``;
``gaussian``    ``N(0, scale²)`` noise in every coordinate instead of ``x_j``;
``alie``        "a little is enough" (Baruch, Baruch & Goldberg, NeurIPS 2019):
                ``μ_j − z · σ_j``, the coordinate-wise mean and (population) standard
                deviation of the true messages of j's live neighbours.  Decentralized
                reading: j's audience is its closed neighbourhood, so the paper's n is
                ``n_j = deg_j + 1`` and its f the number of Byzantine nodes in it;
                ``s = ⌊n_j/2 + 1⌋ − f`` (at least 1) and ``z_max = Φ⁻¹((n_j − s)/n_j)``
                (at least 0), used when ``attack.z = 0``;
``label_flip``  an honest protocol on poisoned data: a fixed set trains on labels
                ``y → C − 1 − y`` (binary and multiclass data; applied to the packed data
                when the run is assembled).

**Robust aggregation** (``algorithm.robust``) replaces gossip's ``x_i ← Σ_j W_ij x_j``
by a rule over what node i received this round: its own ``x_i`` and the messages of its
*live* neighbours, the ``j ≠ i`` with ``W_t,ij > 0`` in the round's W (dead nodes, dropped
links and padding slots never count, exactly as in gossip).  The operator is the
``(N, K)`` neighbour table (forced when a robust rule or ALIE is on).

``clipped_gossip``  He, Karimireddy & Jaggi, "Byzantine-robust decentralized learning via
    ClippedGossip" (arXiv 2202.01545): ``x_i ← x_i + Σ_{j≠i} W_ij clip(x_j − x_i, τ_i)``,
    ``clip(v, τ) = v · min(1, τ/‖v‖)`` with ‖·‖ over the whole shared vector.  τ_i is
    ``algorithm.clip_radius`` when positive; 0 selects the radius of the paper's theorem,
    ``τ_i = sqrt((1/δ_i) Σ_{j regular} W_ij ‖x_j − x_i‖²)`` with ``δ_i = Σ_{j Byzantine}
    W_ij`` over i's live neighbours (the paper's expectation replaced by the round's
    values; ∞ when no neighbour is Byzantine, so without attackers it is plain gossip).  It
    reads who is Byzantine this round, which the simulator knows and a real node does not:
    it is the rule the guarantee is proved for.  The paper's code
    (epfml/byzantine-robust-decentralized-optimizer, ``codes/aggregator.py``,
    ``SelfCenteredClipping.__call__``) uses instead ``tau = sorted(distances)[-2]`` (only
    the farthest neighbour is clipped; ``clip_rule = "farthest"`` here, generalised to the
    b = ``algorithm.trim`` farthest: τ_i = the ``max(deg_i − b, 1)``-th smallest distance).
    It assumes about one Byzantine neighbour: with 20 % sign-flip (k = 10) nodes on ER(30,
    0.3), 50 rounds, it keeps 51 % honest accuracy against 67 % without attack, the
    theorem's radius 67 %.  *Guarantee stated by the paper*: with that radius and
    ``δ_max = max_i δ_i`` small compared with ``γ²`` (γ the spectral gap of the regular
    nodes' mixing), ClippedGossip reaches approximate average consensus of the regular
    nodes and, for non-convex objectives, converges to an ``O(δ_max ζ² / γ²)`` neighbourhood of a
    stationary point (ζ² the heterogeneity of the regular nodes); the first such result on
    arbitrary graphs.  An infinite radius is plain gossip.
``trimmed_mean``  coordinate-wise over ``{x_i} ∪ {x_j : j live neighbour}`` (c values):
    drop the b largest and b smallest, average the rest (W's values are not used, only
    which entries are non-zero).  When ``2b ≥ c`` the paper code's rule (``TM.__call__``
    in the file above) lowers b to ``⌊(c − 1)/2⌋``, so an isolated or dead node keeps
    ``x_i``.  *Guarantees*: Yin, Chen, Ramchandran & Bartlett (ICML 2018) prove
    order-optimal statistical rates for a server aggregating with the coordinate-wise
    trimmed mean when b exceeds the Byzantine count; in a decentralized network, when
    every regular node has at most b Byzantine neighbours, each output coordinate lies in
    the range of the regular values it received (Su & Vaidya 2016; BRIDGE, Yang & Bajwa
    2019, who prove consensus and convergence under a graph condition).  He et al. show
    that without such conditions (sparse graphs, a "dissensus" attack) these rules may fail
    to reach consensus.  ``b = 0`` is the plain average over the neighbourhood (equal to
    gossip on a complete graph with uniform weights).
``median``  coordinate-wise median of the same set (the trimmed mean with
    ``b = ⌊(c − 1)/2⌋``; an even count averages the two middle values).  Same guarantees
    (Yin et al. 2018; the range property while Byzantine neighbours are fewer than half of
    the set).

Supported: the ``gossip`` exchange (synchronous, uncompressed, not push-sum) for every
attack and robust rule; message attacks also on uncompressed ``inbox`` exchanges (an
algorithm that reads its neighbours' messages); ``label_flip`` on every training
algorithm.  Everything else is refused when the config loads (:func:`check_attack`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError

BYZ_SALT = 0x62797A  # keys of the Byzantine draw, apart from every other stream
NOISE_SALT = 0x6E6F69
MESSAGE_ATTACKS = ("sign_flip", "gaussian", "alie")
ROBUST_RULES = ("clipped_gossip", "trimmed_mean", "median")
FLIPPABLE = ("binary", "multiclass")


class AttackInputs(NamedTuple):
    """The data of the attack and of the robust rule (a pytree of the compiled round)."""

    byzantine: Any  # (N,) bool the fixed Byzantine set (all False with a redraw)
    fraction: Any  # () float32 attack.fraction (the redraw's share)
    scale: Any  # () float32 attack.scale
    z: Any  # () float32 attack.z (0: z_max)
    trim: Any  # () int32 algorithm.trim
    clip_radius: Any  # () float32 algorithm.clip_radius (0: adaptive)


@dataclass(frozen=True)
class Adversary:
    """What the exchange does differently (static: part of the compiled program)."""

    kind: str = "none"  # attack.kind
    redraw: bool = False
    robust: str = "none"  # algorithm.robust
    clip_rule: str = "theorem"  # clip_radius = 0: "theorem" | "farthest" (see the docs)

    @property
    def attacks_messages(self) -> bool:
        return self.kind in MESSAGE_ATTACKS

    @property
    def needs_table(self) -> bool:
        """Gossip must run on the (N, K) neighbour table operator."""
        return self.robust != "none" or self.kind == "alie"


def plan_adversary(cfg) -> Adversary | None:
    """The static adversary of a (validated) config, or None when gossip is unchanged."""
    att, robust = cfg["attack"], cfg["algorithm"].get("robust", "none")
    kind = att["kind"] if att["kind"] in MESSAGE_ATTACKS else "none"
    if kind == "none" and robust == "none":
        return None
    clip_rule = cfg["algorithm"].get("clip_rule", "theorem")
    return Adversary(kind, bool(att["redraw"]), robust, clip_rule)


def attack_inputs(cfg, byzantine: np.ndarray) -> AttackInputs:
    att, alg = cfg["attack"], cfg["algorithm"]
    return AttackInputs(
        jnp.asarray(byzantine, bool),
        jnp.float32(att["fraction"]),
        jnp.float32(att["scale"]),
        jnp.float32(att["z"]),
        jnp.int32(min(alg.get("trim", 1), 2**31 - 1)),
        jnp.float32(alg.get("clip_radius", 0.0)),
    )


# --------------------------------------------------------------------------- who
def draw_byzantine(key, active, fraction):
    """(N,) bool: ``round(fraction · m)`` of the m active nodes, uniformly at random."""
    n = active.shape[0]
    m = jnp.sum(active)
    count = jnp.round(jnp.asarray(fraction, jnp.float32) * m).astype(jnp.int32)
    score = jnp.where(active, jax.random.uniform(key, (n,)), 2.0)
    rank = jnp.argsort(jnp.argsort(score))
    return (rank < count) & active


def fixed_byzantine(seed: int, active: np.ndarray, fraction: float) -> np.ndarray:
    """The fixed Byzantine set of a run (numpy (N,) bool), drawn from ``run.seed``."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), BYZ_SALT)
    return np.asarray(draw_byzantine(key, jnp.asarray(active), fraction))


def round_byzantine(adv: Adversary, inputs: AttackInputs, key, alive):
    """This round's Byzantine nodes (the fixed set, or a redraw from the exchange key)."""
    if adv.redraw:
        return draw_byzantine(jax.random.fold_in(key, BYZ_SALT), alive, inputs.fraction)
    return inputs.byzantine & alive


# --------------------------------------------------------------------------- what
def _rows(mask, a):
    return mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim))


def neighbour_stats(x, index, live):
    """Coordinate-wise mean and population std of every node's live neighbours'
    ``x`` (``index``, ``live``: (N, K) slots), and the live count (N,)."""
    cnt = jnp.sum(live, axis=1)
    w = live.astype(jnp.float32) / jnp.maximum(cnt, 1)[:, None]

    def one(a):
        g = a[index]  # (N, K, ...)
        wk = _rows(w, g)
        mu = jnp.sum(wk * g, axis=1)
        var = jnp.sum(wk * (g - mu[:, None]) ** 2, axis=1)
        return mu, jnp.sqrt(var)

    stats = jax.tree.map(one, x)
    mu = jax.tree.map(lambda s: s[0], stats, is_leaf=lambda s: isinstance(s, tuple))
    sd = jax.tree.map(lambda s: s[1], stats, is_leaf=lambda s: isinstance(s, tuple))
    return mu, sd, cnt


def alie_z_max(deg, byz_in_closed):
    """Baruch et al.'s z_max for a closed neighbourhood of ``n = deg + 1`` nodes of which
    ``f`` are Byzantine: ``s = ⌊n/2 + 1⌋ − f`` (at least 1), ``Φ⁻¹((n − s)/n)`` (≥ 0)."""
    n = deg.astype(jnp.float32) + 1.0
    s = jnp.maximum(jnp.floor(n / 2.0 + 1.0) - byz_in_closed.astype(jnp.float32), 1.0)
    p = jnp.maximum((n - s) / n, 0.5)
    return jnp.where(deg > 0, jax.scipy.special.ndtri(p), 0.0)


def corrupt(adv: Adversary, inp: AttackInputs, x, byz, key, index=None, live=None):
    """The messages actually sent: Byzantine rows of ``x`` replaced by the attack.
    ``index``, ``live`` (N, K): every node's neighbour slots (ALIE's statistics)."""
    if adv.kind == "sign_flip":
        bad = jax.tree.map(lambda a: (-inp.scale * a).astype(a.dtype), x)
    elif adv.kind == "gaussian":
        leaves, tdef = jax.tree.flatten(x)
        keys = jax.random.split(jax.random.fold_in(key, NOISE_SALT), len(leaves))
        bad = tdef.unflatten(
            [
                (inp.scale * jax.random.normal(k, a.shape)).astype(a.dtype)
                for k, a in zip(keys, leaves, strict=True)
            ]
        )
    elif adv.kind == "alie":
        mu, sd, deg = neighbour_stats(x, index, live)
        f = jnp.sum(live & byz[index], axis=1) + byz.astype(jnp.int32)
        z = jnp.where(inp.z > 0, inp.z, alie_z_max(deg, f))
        bad = jax.tree.map(lambda m, s: m - _rows(z, s) * s, mu, sd)
        bad = jax.tree.map(lambda b, a: b.astype(a.dtype), bad, x)
    else:
        return x
    return jax.tree.map(lambda b, a: jnp.where(_rows(byz, a), b, a), bad, x)


# --------------------------------------------------------------------------- robust
def table_neighbours(op):
    """(N, K) live-neighbour slots of a neighbour-table operator: ``j ≠ i``, ``W_ij > 0``."""
    n = op.senders.shape[0]
    return (op.senders != jnp.arange(n, dtype=op.senders.dtype)[:, None]) & (op.weights > 0)


def trimmed_mean(sent, own, index, live, b):
    """Coordinate-wise trimmed mean over ``{own_i} ∪ {sent_j: live slots}``, ``b`` (N,)
    values cut at each end (lowered to ``⌊(c − 1)/2⌋`` for c values)."""
    n = live.shape[0]
    mask = jnp.concatenate([jnp.ones((n, 1), bool), live], axis=1)  # (N, K + 1)
    c = jnp.sum(mask, axis=1)
    b = jnp.minimum(b, (c - 1) // 2)
    pos = jnp.arange(mask.shape[1])
    keep = (pos[None, :] >= b[:, None]) & (pos[None, :] < (c - b)[:, None])
    denom = (c - 2 * b).astype(jnp.float32)

    def one(s, o):
        vals = jnp.concatenate([o[:, None], s[index]], axis=1)
        vals = jnp.sort(jnp.where(_rows(mask, vals), vals, jnp.inf), axis=1)
        total = jnp.sum(jnp.where(_rows(keep, vals), vals, 0.0), axis=1)
        return (total / _rows(denom, total)).astype(o.dtype)

    return jax.tree.map(one, sent, own)


def farthest_radius(dist, live, b):
    """The paper code's radius generalised: the ``max(deg − b, 1)``-th smallest distance
    of the live neighbours (only the b farthest are clipped)."""
    deg = jnp.sum(live, axis=1)
    srt = jnp.sort(jnp.where(live, dist, jnp.inf), axis=1)
    k = jnp.maximum(deg - b, 1) - 1
    return jnp.take_along_axis(srt, k[:, None], axis=1)[:, 0]


def theorem_radius(dist, live, weights, byz_slot):
    """The radius of the paper's theorem: ``sqrt((1/δ_i) Σ_{j regular} W_ij ‖x_j − x_i‖²)``,
    ``δ_i = Σ_{j Byzantine} W_ij`` (infinite when no neighbour is Byzantine)."""
    w = jnp.where(live, weights, 0.0)
    delta = jnp.sum(jnp.where(byz_slot, w, 0.0), axis=1)
    honest = jnp.sum(jnp.where(byz_slot, 0.0, w * dist**2), axis=1)
    return jnp.where(delta > 0, jnp.sqrt(honest / jnp.maximum(delta, 1e-30)), jnp.inf)


def clipped_gossip(sent, own, op, live, radius, b, byz, rule="theorem"):
    """``x_i + Σ_{j≠i} W_ij clip(x_j − x_i, τ_i)`` on a neighbour table ``op``."""
    diffs = jax.tree.map(lambda s, o: s[op.senders] - o[:, None], sent, own)
    sq = sum(
        jnp.sum(d.reshape(d.shape[:2] + (-1,)).astype(jnp.float32) ** 2, axis=2)
        for d in jax.tree.leaves(diffs)
    )
    dist = jnp.sqrt(sq)  # (N, K)
    if rule == "farthest":
        auto = farthest_radius(dist, live, b)
    else:
        auto = theorem_radius(dist, live, op.weights, byz[op.senders])
    tau = jnp.where(radius > 0, radius, auto)
    scale = jnp.where(dist > tau[:, None], tau[:, None] / jnp.maximum(dist, 1e-30), 1.0)
    w = jnp.where(live, op.weights * scale, 0.0)
    return jax.tree.map(
        lambda o, d: (o + jnp.sum(_rows(w, d) * d, axis=1)).astype(o.dtype), own, diffs
    )


def robust_mix(adv: Adversary, inp: AttackInputs, sent, own, op, byz):
    """The robust rule over what every node received (``op``: the round's W as a
    neighbour table; ``sent``: messages as sent, ``own``: each node's true value;
    ``byz``: this round's Byzantine nodes, read only by the theorem's clipping radius)."""
    rule = adv.robust
    live = table_neighbours(op)
    n = live.shape[0]
    if rule == "clipped_gossip":
        return clipped_gossip(sent, own, op, live, inp.clip_radius, inp.trim, byz, adv.clip_rule)
    b = jnp.full((n,), inp.trim) if rule == "trimmed_mean" else jnp.full((n,), 2**30)
    return trimmed_mean(sent, own, op.senders, live, b)


# --------------------------------------------------------------------------- data
def flip_labels(packed, byzantine: np.ndarray, task):
    """``label_flip``: the Byzantine nodes' training labels ``y → C − 1 − y`` (in place on
    freshly packed buckets; refused for data that are not binary or multiclass)."""
    if task.kind not in FLIPPABLE:
        raise ConfigError(
            f"attack.kind: got 'label_flip', but the data are a {task.kind} task; allowed "
            "for binary and multiclass data: 'sign_flip', 'gaussian', 'alie' (or another task)"
        )
    c = task.num_classes
    for bucket in packed.buckets:
        rows = np.flatnonzero((bucket.nodes >= 0) & byzantine[np.maximum(bucket.nodes, 0)])
        y = bucket.y_train
        y[rows] = (c - 1 - y[rows]).astype(y.dtype)
    return packed


# --------------------------------------------------------------------------- config
def check_attack(cfg: dict[str, dict[str, Any]], spec) -> None:
    """Refuse, in one line naming both settings, an ``[attack]`` section or an
    ``algorithm.robust`` this run cannot honour."""
    from .algorithms import needs_of
    from .exchange import Gossip, InboxExchange, Settings, exchange_class

    att, alg = cfg["attack"], cfg["algorithm"]
    kind, robust = att["kind"], alg.get("robust", "none")
    if kind == "none" and robust == "none":
        return
    needs = needs_of(alg)
    s = Settings.from_config(cfg, needs)
    cls = exchange_class(s)
    push_sum = cls is Gossip and s.schedule in ("one_peer_exponential",) and bool(s.losses)
    what = f"attack.kind = {kind!r}"
    if kind == "label_flip":
        if not (spec.trains and spec.uses_data):
            raise ConfigError(f"{what} poisons training labels, but {s.alg_setting} trains on none")
        if att["redraw"]:
            raise ConfigError(
                f"attack.redraw = true: {what} poisons a fixed set's data when the run is "
                "assembled; allowed: false"
            )
    if kind in MESSAGE_ATTACKS:
        if needs.exchange == "none":
            raise ConfigError(f"{what} corrupts messages, but {s.alg_setting} sends none")
        why = _message_refusal(s, cls, push_sum, Gossip, InboxExchange)
        if why:
            raise ConfigError(f"{what} {why}")
    if robust != "none":
        where = f"algorithm.robust = {robust!r}"
        if cls is InboxExchange:
            raise ConfigError(
                f"{where} aggregates gossip averages, but {s.alg_setting} reads its "
                "neighbours' models one by one and combines them itself; allowed: 'none'"
            )
        why = _message_refusal(s, cls, push_sum, Gossip, InboxExchange)
        if why:
            raise ConfigError(f"{where} {why}")


def _message_refusal(s, cls, push_sum: bool, gossip_cls, inbox_cls) -> str | None:
    if s.gossip == "pairwise":
        return "needs synchronous gossip, but algorithm.gossip = 'pairwise'; allowed: 'sync'"
    if s.compressed:
        return f"needs exact messages, but {s.comp_setting} compresses them; allowed: 'none'"
    if push_sum:
        return (
            f"needs a doubly stochastic W, but topology.schedule = {s.schedule!r} with "
            f"{s.loss_setting} runs push-sum"
        )
    if cls not in (gossip_cls, inbox_cls):  # pragma: no cover - every exchange is covered
        return f"is not supported by the {cls.name} exchange"
    return None
