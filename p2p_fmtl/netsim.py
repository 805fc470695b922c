"""Network realism inside the compiled round: schedules, faults, stragglers, compression.

Everything is masks and re-weighting on fixed-shape arrays, drawn from the round's PRNG
key, so a whole run still scans over rounds with no Python loop over nodes or edges.

**Candidate edges.**  A network is a padded list of undirected candidate edges
``(u_e, v_e)``; graph ``p`` of a schedule marks its edges with ``valid[p, e]`` and
carries its mixing-rule weights ``weights[p, e]``.  Padding edges are ``(0, 0)`` and
never valid.  In round t:

1. **nodes**: a node is *alive* when it is a training node, not away on churn
   (``faults.churn``: a live node leaves with this probability per round and stays away
   ``faults.churn_rounds`` rounds, then returns with its stale model) and not dropped
   this round (``faults.node_drop``).  Dead nodes neither train nor send nor receive.
2. **edges**: ``alive_e = valid[p(t), e] ∧ alive(u_e) ∧ alive(v_e)``, minus dropped
   links (``faults.link_drop``, independently per edge and round); the
   ``random_matching`` schedule then keeps a random matching of the alive edges and
   ``resample`` keeps each candidate pair with probability ``topology.resample_p``.
3. **weights** on the live subgraph, ``faults.reweight``:
   ``metropolis`` (default): ``w_e = 1 / (1 + max(d_u, d_v))`` with live degrees d;
   ``self``: the configured rule's weight ``weights[p, e]`` if alive, 0 otherwise.
   Either way ``W_ii = 1 − Σ_{e∋i} w_e``, so every round's W is symmetric, non-negative
   and doubly stochastic, with dead links and dead nodes' rows zero off the diagonal.

**Schedules** (``topology.schedule``): ``static`` (the graph every round),
``random_matching`` (a fresh random matching of the graph's edges each round: three
rounds of Luby's local-maximum rule, so nearly maximal; matched pairs average),
``resample`` (a fresh G(n, p) each round), ``list`` (``topology.graphs`` cycled),
``one_peer_exponential`` (node i averages with node ``i − 2^(t mod ⌈log2 n⌉)``: directed,
doubly stochastic, exact averaging in log2 n rounds when n is a power of two; under
faults a receiver that hears nothing keeps its own model, so rows still sum to one).

**Asynchronous gossip** (``algorithm.gossip = "pairwise"``): instead of one synchronous
W, ``algorithm.gossip_ticks`` ticks per round, each averaging the two ends of one
uniformly random live edge (Boyd et al. 2006); everyone else keeps its model.

**Stragglers** (``faults.straggler``): that fraction of nodes, each round, does only a
fraction ``U(a, b)`` of its local work (``faults.straggler_work = [a, b]``; MOCHA's
systems-heterogeneity model): its step count is ``ceil(f · steps)``.

**Compression** (``compression.name``): with ``method = "choco"`` (Koloskova et al.
2019) every node keeps a public copy x̂ its neighbours track; per gossip round
``q_i = C(x_i − x̂_i)``, ``x̂ ← x̂ + q``, ``x ← x + γ (W x̂ − x̂)``.  ``method = "plain"``
mixes compressed models, ``x_i ← W_ii x_i + Σ_{j≠i} W_ij C(x_j)`` — it does not converge
to the average; with ``error_feedback`` it becomes DeepSqueeze (Tang et al. 2019):
``v = x + e``, ``q = C(v)``, ``e ← v − q``, ``x ← x + γ (W q − q)``.

**Ledger**: every message a node sends (one per live out-edge per gossip round, one per
tick end for pairwise gossip) is counted on device; bytes = messages × the compressor's
encoded message size (:mod:`p2p_fmtl.compress`).  **Simulated time** (``[cost]``): a
round lasts ``max_i (f_i · samples_i · compute_s_per_sample + m_i · bytes / bandwidth
+ latency · [m_i > 0])`` over live nodes, m_i the node's messages that round.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .gossip import Mixing

SCHEDULES = ("static", "random_matching", "one_peer_exponential", "resample", "list")
UNDIRECTED = ("static", "random_matching", "resample", "list")
MATCHING_ITERS = 3


class Dynamics(NamedTuple):
    """The static description of a run's network process (it fixes the program)."""

    schedule: str = "static"
    reweight: str = "metropolis"
    node_drop: bool = False
    link_drop: bool = False
    churn: bool = False
    straggler: bool = False
    gossip: str = "sync"
    ticks: int = 1
    every: int = 1
    dense: bool = True
    compression: str = "none"
    method: str = "choco"
    error_feedback: bool = False
    ratio: float = 0.1
    levels: int = 7
    dtype: str = "float32"
    cost: bool = False
    period: int = 1

    @property
    def compressed(self) -> bool:
        return self.compression != "none" or self.dtype != "float32"

    @property
    def faulty(self) -> bool:
        return self.node_drop or self.link_drop or self.churn

    @property
    def trivial(self) -> bool:
        """Nothing to simulate: the engine's plain fixed-W round is exact."""
        return (
            self.schedule == "static"
            and not self.faulty
            and not self.straggler
            and self.gossip == "sync"
            and self.every == 1
            and not self.compressed
            and not self.cost
        )


class NetArrays(NamedTuple):
    """The data of the network process (arrays: changing them does not recompile)."""

    u: jax.Array  # (E,) int32
    v: jax.Array  # (E,) int32
    valid: jax.Array  # (P, E) bool
    weights: jax.Array  # (P, E) float32
    rates: jax.Array  # (8,) node_drop, link_drop, churn, straggler, lo, hi, resample_p, gamma
    churn_rounds: jax.Array  # () int32
    nbr_edge: Any  # (N, K) int32 edge id of each neighbour-table slot, or None
    samples: jax.Array  # (N,) float32 samples processed per round at full work
    cost: jax.Array  # (4,) compute_s_per_sample, bandwidth_bytes_per_s, latency_s, msg_bytes


class NetState(NamedTuple):
    """What the network process carries across rounds (and checkpoints)."""

    away_until: jax.Array  # (N,) int32: churned-out node is away while t < away_until
    public: Any  # CHOCO public copies x̂ / DeepSqueeze errors e (tree like shared), or None


class RoundNet(NamedTuple):
    alive: jax.Array  # (N,) bool
    edge_alive: jax.Array  # (E,) bool
    mixing: Mixing  # this round's W
    self_weight: jax.Array  # (N,) W_ii
    msgs: jax.Array  # (N,) int32 messages each node sends this round (sync gossip)
    budget: Any  # (N,) float32 fraction of local work, or None
    away_until: jax.Array


# --------------------------------------------------------------------------- building
def pad_pow2(k: int) -> int:
    return 1 << max(int(k) - 1, 0).bit_length()


def candidate_edges(edge_sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int):
    """Union of undirected edge sets ``(u, v, w)`` (u < v) as padded candidate arrays.

    Returns ``u, v (E,)``, ``valid, weights (P, E)``; E is padded to a power of two so
    graphs with similar edge counts share compiled programs.
    """
    keys = np.unique(np.concatenate([u * n + v for u, v, _ in edge_sets] or [np.zeros(0, int)]))
    e = pad_pow2(max(len(keys), 1))
    u = np.zeros(e, np.int64)
    v = np.zeros(e, np.int64)
    u[: len(keys)], v[: len(keys)] = keys // n, keys % n
    valid = np.zeros((len(edge_sets), e), bool)
    weights = np.zeros((len(edge_sets), e), np.float32)
    for p, (a, b, w) in enumerate(edge_sets):
        pos = np.searchsorted(keys, a * n + b)
        valid[p, pos] = True
        weights[p, pos] = w
    return u, v, valid, weights


def undirected(senders, receivers, weights):
    """The u < v half of a symmetric edge list (self-loops dropped)."""
    s, r, w = (np.asarray(a) for a in (senders, receivers, weights))
    keep = s < r
    return s[keep].astype(np.int64), r[keep].astype(np.int64), w[keep]


def all_pairs(n: int):
    u, v = np.triu_indices(n, k=1)
    return u.astype(np.int64), v.astype(np.int64), np.zeros(len(u))


def edge_ids(u: np.ndarray, v: np.ndarray, n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Candidate-edge id of each directed pair (i, j) (which must be a candidate edge)."""
    real = u != v
    keys = np.where(real, u * n + v, -1)
    order = np.argsort(keys)
    a, b = np.minimum(i, j), np.maximum(i, j)
    return order[np.searchsorted(keys[order], a * n + b)]


# --------------------------------------------------------------------------- one round
def _segment_sum(x, idx, n):
    return jax.ops.segment_sum(x, idx, num_segments=n)


def random_matching(edge_alive, u, v, key, n: int):
    """A random matching of the alive edges: Luby's rule, :data:`MATCHING_ITERS` times.

    Each edge draws a score; an eligible edge is kept when its score is the largest at
    both its ends.  Kept edges share no node, so they form a matching.
    """
    score = jax.random.uniform(key, edge_alive.shape)
    chosen = jnp.zeros_like(edge_alive)
    matched = jnp.zeros((n,), bool)
    for _ in range(MATCHING_ITERS):
        elig = edge_alive & ~chosen & ~matched[u] & ~matched[v]
        s = jnp.where(elig, score, -1.0)
        best = jnp.full((n,), -1.0).at[u].max(s).at[v].max(s)
        pick = elig & (s >= best[u]) & (s >= best[v])
        chosen = chosen | pick
        matched = matched.at[u].max(pick).at[v].max(pick)
    return chosen


def metropolis_weights(edge_alive, u, v, n: int):
    a = edge_alive.astype(jnp.float32)
    deg = _segment_sum(a, u, n) + _segment_sum(a, v, n)
    return a / (1.0 + jnp.maximum(deg[u], deg[v]))


def _operator(dense: bool, n: int, s, r, w, self_w) -> Mixing:
    ar = jnp.arange(n, dtype=jnp.int32)
    if dense:
        W = jnp.zeros((n, n), jnp.float32).at[r, s].add(w)
        return Mixing(W + jnp.diag(self_w), None, None, None)
    return Mixing(
        None,
        jnp.concatenate([s, ar]).astype(jnp.int32),
        jnp.concatenate([r, ar]).astype(jnp.int32),
        jnp.concatenate([w, self_w]).astype(jnp.float32),
    )


def round_network(dyn: Dynamics, arr: NetArrays, t, key, away_until, active) -> RoundNet:
    """This round's live nodes and edges, mixing operator, messages and work budgets."""
    n = active.shape[0]
    k_churn, k_drop, k_res, k_link, k_match, k_str, k_frac = jax.random.split(key, 7)
    r = arr.rates
    alive = active
    if dyn.churn:
        present = t >= away_until
        leave = present & active & (jax.random.uniform(k_churn, (n,)) < r[2])
        away_until = jnp.where(leave, t + arr.churn_rounds, away_until)
        alive = alive & (t >= away_until)
    if dyn.node_drop:
        alive = alive & (jax.random.uniform(k_drop, (n,)) >= r[0])
    budget = None
    if dyn.straggler:
        slow = jax.random.uniform(k_str, (n,)) < r[3]
        frac = jax.random.uniform(k_frac, (n,), minval=r[4], maxval=r[5])
        budget = jnp.where(slow, frac, 1.0).astype(jnp.float32)

    if dyn.schedule == "one_peer_exponential":
        hop = jnp.left_shift(1, t % dyn.period)
        ar = jnp.arange(n, dtype=jnp.int32)
        src = (ar - hop) % n
        ok = alive & alive[src]
        if dyn.link_drop:
            ok = ok & (jax.random.uniform(k_link, (n,)) >= r[1])
        w = 0.5 * ok.astype(jnp.float32)
        self_w = 1.0 - w
        msgs = _segment_sum(ok.astype(jnp.int32), src, n)
        op = _operator(dyn.dense, n, src, ar, w, self_w)
        return RoundNet(alive, ok, op, self_w, msgs, budget, away_until)

    p = t % dyn.period if dyn.schedule == "list" else 0
    e_alive = arr.valid[p] & alive[arr.u] & alive[arr.v]
    if dyn.schedule == "resample":
        e_alive = e_alive & (jax.random.uniform(k_res, e_alive.shape) < r[6])
    if dyn.link_drop:
        e_alive = e_alive & (jax.random.uniform(k_link, e_alive.shape) >= r[1])
    if dyn.schedule == "random_matching":
        e_alive = random_matching(e_alive, arr.u, arr.v, k_match, n)
    if dyn.reweight == "metropolis" or dyn.schedule in ("random_matching", "resample"):
        w = metropolis_weights(e_alive, arr.u, arr.v, n)
    else:
        w = jnp.where(e_alive, arr.weights[p], 0.0)
    self_w = 1.0 - _segment_sum(w, arr.u, n) - _segment_sum(w, arr.v, n)
    sends = (w > 0).astype(jnp.int32)
    msgs = _segment_sum(sends, arr.u, n) + _segment_sum(sends, arr.v, n)
    s = jnp.concatenate([arr.u, arr.v])
    rcv = jnp.concatenate([arr.v, arr.u])
    op = _operator(dyn.dense, n, s, rcv, jnp.concatenate([w, w]), self_w)
    return RoundNet(alive, e_alive, op, self_w, msgs, budget, away_until)


def masked_neighbours(nbrs, arr: NetArrays, rn: RoundNet):
    """The neighbour table with dead links and dead nodes weighted 0 this round."""
    ok = rn.edge_alive[arr.nbr_edge] & rn.alive[nbrs.index] & rn.alive[:, None]
    return nbrs._replace(weights=nbrs.weights * ok)


def pairwise_gossip(tree, arr: NetArrays, rn: RoundNet, key, ticks: int):
    """``ticks`` sequential averagings of one uniformly random live edge each.

    Returns the new tree and the messages each node sent (both ends send once per tick).
    """
    n = rn.alive.shape[0]
    logits = jnp.where(rn.edge_alive, 0.0, -jnp.inf)
    any_edge = jnp.any(rn.edge_alive)

    def tick(carry, k):
        x, msgs = carry
        e = jax.random.categorical(k, logits)
        a, b = arr.u[e], arr.v[e]

        def avg(leaf):
            m = 0.5 * (leaf[a] + leaf[b])
            new = leaf.at[a].set(m).at[b].set(m)
            return jnp.where(any_edge, new, leaf)

        x = jax.tree.map(avg, x)
        sent = jnp.zeros((n,), jnp.int32).at[a].add(1).at[b].add(1)
        return (x, msgs + jnp.where(any_edge, sent, 0)), None

    (tree, msgs), _ = jax.lax.scan(
        tick, (tree, jnp.zeros((n,), jnp.int32)), jax.random.split(key, ticks)
    )
    return tree, msgs


def round_seconds(arr: NetArrays, rn: RoundNet, msgs):
    """The simulated duration of this round (see the module docs)."""
    c, bw, lat, msg_bytes = arr.cost[0], arr.cost[1], arr.cost[2], arr.cost[3]
    work = arr.samples * (1.0 if rn.budget is None else rn.budget) * c
    comm = msgs * msg_bytes / bw + lat * (msgs > 0)
    return jnp.max(jnp.where(rn.alive, work + comm, 0.0))


# --------------------------------------------------------------------------- analysis
def round_matrices(dyn: Dynamics, arr: NetArrays, active, rounds: int, seed: int = 0):
    """Dense W of ``rounds`` consecutive rounds (numpy, (T, N, N)): for tests and spectra."""
    dyn = dyn._replace(dense=True)
    n = active.shape[0]

    def one(carry, t):
        key, away = carry
        key, sub = jax.random.split(key)
        rn = round_network(dyn, arr, t, sub, away, active)
        return (key, rn.away_until), (rn.mixing.dense, rn.alive, rn.edge_alive)

    init = (jax.random.PRNGKey(seed), jnp.zeros((n,), jnp.int32))
    _, (Ws, alive, edges) = jax.jit(lambda c, ts: jax.lax.scan(one, c, ts))(
        init, jnp.arange(rounds)
    )
    return np.asarray(Ws, np.float64), np.asarray(alive), np.asarray(edges)


def effective_gap(dyn: Dynamics, arr: NetArrays, active, samples: int = 200) -> float | None:
    """An effective spectral gap of a time-varying W.

    Deterministic periodic schedules (``list``, ``one_peer_exponential`` without
    faults): ``1 − |λ₂(W_P ⋯ W_1)|^{1/P}``, the per-round rate over one period.  Random
    ones: ``1 − λ₂(E[WᵀW])^{1/2}`` from ``samples`` sampled rounds, the rate at which
    the mean squared distance to the average contracts.
    """
    n = int(active.shape[0])
    if n > 2000:
        return None
    act = np.asarray(active)
    idx = np.flatnonzero(act)
    if dyn.gossip == "pairwise":  # one tick: W = I − (e_a − e_b)(e_a − e_b)ᵀ / 2, a projection
        u, v, ok = (np.asarray(a) for a in (arr.u, arr.v, arr.valid[0]))
        L = np.zeros((n, n))
        np.add.at(L, (u[ok], v[ok]), -1.0)
        np.add.at(L, (v[ok], u[ok]), -1.0)
        L[np.diag_indices(n)] = -L.sum(1)
        lam2 = np.sort(np.linalg.eigvalsh(L[np.ix_(idx, idx)]))[1]
        per_tick = 1.0 - lam2 / (2.0 * ok.sum())  # λ₂(E[WᵀW]) = λ₂(E[W])
        return float(1.0 - per_tick ** (dyn.ticks / 2.0))
    periodic = dyn.schedule in ("list", "one_peer_exponential") and not (
        dyn.faulty or dyn.link_drop
    )
    if periodic:
        Ws, _, _ = round_matrices(dyn, arr, active, dyn.period)
        P = np.eye(n)
        for W in Ws:
            P = W @ P
        P = P[np.ix_(idx, idx)]
        m = len(idx)
        ev = np.sort(np.abs(np.linalg.eigvals(P - np.ones((m, m)) / m)))[::-1]
        return float(1.0 - ev[0] ** (1.0 / dyn.period))
    Ws, _, _ = round_matrices(dyn, arr, active, samples)
    M = np.mean(np.einsum("tji,tjk->tik", Ws, Ws), axis=0)[np.ix_(idx, idx)]
    m = len(idx)
    ev = np.linalg.eigvalsh(M - np.ones((m, m)) / m)
    return float(1.0 - math.sqrt(max(ev[-1], 0.0)))
