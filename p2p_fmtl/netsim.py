"""The network process: who is alive, which links carry messages, and this round's W.

A run's network is a *process* drawn inside the compiled round from the round's PRNG key:
masks and re-weighting on fixed-shape arrays, never a Python loop over nodes or edges.
The static graph is its trivial case: with a static schedule and nothing lost, every
round uses the one mixing matrix built from ``topology.mixing`` (and costs nothing more).

**Candidate edges.**  A network is a padded list of undirected candidate edges
``(u_e, v_e)``; graph ``p`` of a schedule marks its edges with ``valid[p, e]`` and carries
its mixing-rule weights ``weights[p, e]``.  The last edge is padding: ``(0, 0)``, never
valid.  A neighbour table over the candidates (``index[i, k]``, the neighbour in slot k
of node i, and ``edge[i, k]``, the candidate edge of that slot; padding slots point at
the node itself and the padding edge) serves both the sparse gossip operator and the
algorithms that read their neighbours' models one by one.  In round t:

1. **nodes**: a node is *alive* when it is a training node, not away on churn
   (``faults.churn``: a live node leaves with this probability per round and stays away
   ``faults.churn_rounds`` rounds, then returns with its stale model) and not dropped
   this round (``faults.node_drop``).  Dead nodes neither train nor send nor receive.
2. **edges**: ``alive_e = valid[p(t), e] ∧ alive(u_e) ∧ alive(v_e)``, minus dropped links
   (``faults.link_drop``, independently per edge and round); ``random_matching`` then
   keeps a random matching of the alive edges and ``resample`` keeps each candidate pair
   with probability ``topology.resample_p``.
3. **weights** of the round's graph (``faults.reweight``): ``rule`` (default) recomputes
   the topology's mixing rule on the live subgraph (metropolis ``1/(1 + max(d_u, d_v))``,
   lazy_metropolis half of it, max_degree and uniform ``1/(1 + max_i d_i)``, with live
   degrees d); ``metropolis`` uses Metropolis weights whatever the rule; ``self`` keeps
   the rule's weight ``weights[p, e]`` on live edges and moves lost weight to the
   diagonal.  In every case ``W_ii = 1 − Σ_{e∋i} w_e``, so every round's W is symmetric,
   non-negative and doubly stochastic, and dead links and dead nodes' rows are zero off
   the diagonal.  A round where nothing is lost has exactly the rule's weights.

**Schedules** (``topology.schedule``): ``static``; ``random_matching`` (a fresh random
matching of the graph's edges each round: three rounds of Luby's local-maximum rule, so
nearly maximal); ``resample`` (a fresh G(n, p) each round); ``list`` (``topology.graphs``
cycled); ``one_peer_exponential`` (node j sends to node ``j + 2^(t mod ⌈log2 n⌉)``, Ying
et al. 2021; exact averaging in log2 n rounds when n is a power of two).

**Directed rounds and push-sum.**  One-peer exponential rounds are directed:
``W = ½(I + P)`` with P a shift, doubly stochastic but not symmetric.  When a message is
lost (a dead sender or receiver, a dropped link) the sender keeps what it could not
deliver, so W stays *column* stochastic (``W_jj = 1 − ½·ok_j``, ``W_{j+h, j} = ½·ok_j``)
but its rows no longer sum to one.  The gossip exchange then runs push-sum
(Kempe et al. 2003; stochastic gradient push, Assran et al. 2019): every node also
carries a weight ``y_i`` (1 at the start), mixes ``y·z`` and ``y`` with W and keeps the
de-biased ``z = (W(y·z)) / (W y)``.  ``Σ_i y_i z_i`` and ``Σ_i y_i = N`` are preserved, so
the nodes still reach the true average of the starting values.  Without losses
``y ≡ 1`` and nothing changes.

**Stragglers** (``faults.straggler``): that fraction of nodes, each round, does only a
fraction ``f ~ U(a, b)`` of its local work (``faults.straggler_work = [a, b]``; MOCHA's
systems-heterogeneity model).  Of its T steps it takes ``f · T`` rounded
stochastically (``floor(f · T)``, plus one with probability ``frac(f · T)``, drawn from
its round key: :func:`p2p_fmtl.training.straggler_steps`), so its expected work is
exactly ``f · T`` at any T: a node with one step per round trains in a fraction f of
its rounds.  Every node can be slowed.

**Cost model** (``[cost]``).  The work of node i in a round is ``f_i · samples_i`` if it
is alive (0 otherwise), with samples_i the samples its full local work processes (times
its copies of local work, e.g. D-EM's M components) and f_i = 1 unless it straggles: the
mean of the stochastically rounded steps, so time and energy are unbiased and do not
need each node's step count.  m_i is the number of messages it sent that round
(counted by the exchange, :mod:`p2p_fmtl.exchange`).

* *Simulated time*: a round lasts ``max_i (work_i · compute_s_per_sample +
  m_i · bytes / bandwidth + latency · [m_i > 0])`` over live nodes.
* *Energy* (``energy_j``, cumulative joules; FMTL-Bench reports energy per round):
  ``joules_per_flop · flops_per_sample · Σ_i work_i + joules_per_byte · bytes`` summed
  over rounds.  ``flops_per_sample`` is 3× the forward FLOPs of the model on one sample
  (:func:`p2p_fmtl.training.train_flops_per_sample`); bytes are the byte ledger
  (``bytes_total``: each byte is charged once, at its sender, as a per-bit energy of
  the link covers the path to the receiver).  Defaults: 1e-10 J/FLOP (about 10 GFLOP/W:
  in 45 nm an fp32 multiply-add costs a few pJ but a general-purpose core spends about
  70 pJ per instruction, Horowitz, ISSCC 2014; CPUs and mobile SoCs reach tens of
  GFLOP/W on dense kernels), 1e-7 J/byte (about 12 nJ/bit: a Wi-Fi or cellular radio
  drawing about 1 W at tens of Mbit/s; wired LAN links cost less, end-to-end Internet
  transport through access and core networks more, see Baliga et al., "Green Cloud
  Computing", Proc. IEEE 99(1), 2011).  The host adds up the work each node did
  (returned by the engine per chunk) and the ledger.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .gossip import Mixing

SCHEDULES = ("static", "random_matching", "one_peer_exponential", "resample", "list")
DIRECTED = ("one_peer_exponential",)
LOCAL_RULES = ("metropolis", "lazy_metropolis", "max_degree", "uniform")
MATCHING_ITERS = 3


class Process(NamedTuple):
    """The static description of a run's network process (it fixes the program)."""

    schedule: str = "static"
    reweight: str = "rule"  # rule | metropolis | self
    rule: str = "metropolis"  # topology.mixing, recomputed on live subgraphs by "rule"
    node_drop: bool = False
    link_drop: bool = False
    churn: bool = False
    straggler: bool = False
    dense: bool = True
    period: int = 1

    @property
    def lossy(self) -> bool:
        """Messages can be lost: nodes go down or links drop."""
        return self.node_drop or self.link_drop or self.churn

    @property
    def changing(self) -> bool:
        """W changes from round to round (a schedule, or losses)."""
        return self.schedule != "static" or self.lossy

    @property
    def directed(self) -> bool:
        return self.schedule in DIRECTED

    @property
    def push_sum(self) -> bool:
        """Directed rounds that can lose messages: W is only column stochastic."""
        return self.directed and self.lossy

    @property
    def trivial(self) -> bool:
        """The static graph, nothing lost, every node does all of its work."""
        return not self.changing and not self.straggler


class Rates(NamedTuple):
    """Rates of the process (data: sweeping them does not recompile)."""

    node_drop: Any
    link_drop: Any
    churn: Any
    straggler: Any
    work_lo: Any
    work_hi: Any
    resample_p: Any
    churn_rounds: Any  # int32


class CostModel(NamedTuple):
    compute_s_per_sample: Any
    bandwidth_bytes_per_s: Any
    latency_s: Any


class NetArrays(NamedTuple):
    """The data of the network: candidate edges, their neighbour table, rates, costs."""

    u: Any  # (E,) int32
    v: Any  # (E,) int32
    valid: Any  # (P, E) bool
    weights: Any  # (P, E) float32, the rule's weights of graph p
    index: Any  # (N, K) int32 neighbour of each slot (padding: the node itself)
    edge: Any  # (N, K) int32 candidate edge of each slot (padding: the padding edge)
    rates: Rates
    cost: CostModel
    samples: Any  # (N,) float32 samples a node's full local work processes per round


class StaticNet(NamedTuple):
    """The static graph's mixing: used every round when nothing changes."""

    mixing: Mixing
    self_weight: Any  # (N,) W_ii
    sends: Any  # (N,) int32 messages a node sends in one gossip with W


class RoundNet(NamedTuple):
    alive: Any  # (N,) bool
    mixing: Mixing  # this round's W
    self_weight: Any  # (N,) W_ii
    sends: Any  # (N,) int32 messages each node sends in a gossip with this W
    edge_alive: Any  # (E,) bool candidate edges that carry messages this round
    edge_w: Any  # (E,) float32 this round's W on each candidate edge
    budget: Any  # (N,) float32 fraction f of local work (rounded in training), or None
    away_until: Any


# --------------------------------------------------------------------------- building
def pad_pow2(k: int) -> int:
    return 1 << max(int(k) - 1, 0).bit_length()


def candidate_edges(edge_sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int):
    """Union of undirected edge sets ``(u, v, w)`` (u < v) as padded candidate arrays.

    Returns ``u, v (E,)``, ``valid, weights (P, E)``.  E is a power of two with at least
    one padding edge (the last), so graphs with similar edge counts share programs.
    """
    keys = np.unique(np.concatenate([u * n + v for u, v, _ in edge_sets] or [np.zeros(0, int)]))
    e = pad_pow2(len(keys) + 1)
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


def candidate_table(u: np.ndarray, v: np.ndarray, valid: np.ndarray, n: int):
    """The neighbour table of the candidate edges: ``index, edge (N, K)``.

    Slots of node i list the other ends of its candidate edges in increasing order;
    K is the largest candidate degree rounded up to a power of two; padding slots
    point at the node itself and at the padding edge (the last, never valid).
    """
    real = np.flatnonzero(valid.any(axis=0))
    i = np.concatenate([u[real], v[real]])
    j = np.concatenate([v[real], u[real]])
    e = np.concatenate([real, real])
    order = np.lexsort((j, i))
    i, j, e = i[order], j[order], e[order]
    counts = np.bincount(i, minlength=n)
    k = pad_pow2(max(int(counts.max()) if len(i) else 0, 1))
    starts = np.cumsum(counts) - counts
    slot = np.arange(len(i)) - starts[i]
    index = np.tile(np.arange(n, dtype=np.int64)[:, None], (1, k))
    edge = np.full((n, k), len(u) - 1, np.int64)
    index[i, slot] = j
    edge[i, slot] = e
    return index, edge


def undirected(senders, receivers, weights):
    """The u < v half of a symmetric edge list (self-loops dropped)."""
    s, r, w = (np.asarray(a) for a in (senders, receivers, weights))
    keep = s < r
    return s[keep].astype(np.int64), r[keep].astype(np.int64), w[keep]


def all_pairs(n: int):
    u, v = np.triu_indices(n, k=1)
    return u.astype(np.int64), v.astype(np.int64), np.zeros(len(u))


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


def rule_weights(rule: str, edge_alive, u, v, n: int):
    """The mixing rule's edge weights on the subgraph of the alive edges."""
    a = edge_alive.astype(jnp.float32)
    deg = _segment_sum(a, u, n) + _segment_sum(a, v, n)
    if rule == "metropolis":
        return a / (1.0 + jnp.maximum(deg[u], deg[v]))
    if rule == "lazy_metropolis":
        return 0.5 * a / (1.0 + jnp.maximum(deg[u], deg[v]))
    if rule in ("max_degree", "uniform"):  # uniform = max-degree weights on regular graphs
        return a / (1.0 + jnp.max(deg))
    raise ValueError(f"no on-device weights for mixing rule {rule!r}")  # pragma: no cover


def _table_mixing(self_w, index, nbr_w) -> Mixing:
    n = self_w.shape[0]
    senders = jnp.concatenate([jnp.arange(n, dtype=jnp.int32)[:, None], index], axis=1)
    return Mixing(None, senders, jnp.concatenate([self_w[:, None], nbr_w], axis=1))


def _dense_mixing(self_w, rows, cols, w) -> Mixing:
    n = self_w.shape[0]
    return Mixing(jnp.zeros((n, n), jnp.float32).at[rows, cols].add(w) + jnp.diag(self_w))


def _one_peer(proc: Process, t, alive, link_ok):
    """Node j sends half of its value to j + 2^(t mod period) when the message arrives."""
    n = alive.shape[0]
    ar = jnp.arange(n, dtype=jnp.int32)
    hop = jnp.left_shift(1, t % proc.period)
    dst, src = (ar + hop) % n, (ar - hop) % n
    ok = alive & alive[dst] & link_ok  # ok[j]: j's message to j + hop arrives
    self_w = 1.0 - 0.5 * ok.astype(jnp.float32)  # a sender keeps what it did not deliver
    in_w = 0.5 * ok[src].astype(jnp.float32)  # node i receives from i − hop
    if proc.dense:
        mixing = _dense_mixing(self_w, ar, src, in_w)
    else:
        mixing = _table_mixing(self_w, src[:, None], in_w[:, None])
    return mixing, self_w, ok.astype(jnp.int32)


def round_network(proc: Process, static: StaticNet, arr: NetArrays, t, key, away_until, active):
    """This round's live nodes and edges, W, messages per gossip and work budgets."""
    if proc.trivial:
        return RoundNet(
            active,
            static.mixing,
            static.self_weight,
            static.sends,
            arr.valid[0],
            arr.weights[0],
            None,
            away_until,
        )
    n = active.shape[0]
    k_churn, k_drop, k_res, k_link, k_match, k_str, k_frac = jax.random.split(key, 7)
    r = arr.rates
    alive = active
    if proc.churn:
        present = t >= away_until
        leave = present & active & (jax.random.uniform(k_churn, (n,)) < r.churn)
        away_until = jnp.where(leave, t + r.churn_rounds, away_until)
        alive = alive & (t >= away_until)
    if proc.node_drop:
        alive = alive & (jax.random.uniform(k_drop, (n,)) >= r.node_drop)
    budget = None
    if proc.straggler:
        slow = jax.random.uniform(k_str, (n,)) < r.straggler
        frac = jax.random.uniform(k_frac, (n,), minval=r.work_lo, maxval=r.work_hi)
        budget = jnp.where(slow, frac, 1.0).astype(jnp.float32)
    if not proc.changing:
        return RoundNet(
            alive,
            static.mixing,
            static.self_weight,
            static.sends,
            arr.valid[0],
            arr.weights[0],
            budget,
            away_until,
        )

    if proc.directed:
        link_ok = jnp.ones((n,), bool)
        if proc.link_drop:
            link_ok = jax.random.uniform(k_link, (n,)) >= r.link_drop
        mixing, self_w, sends = _one_peer(proc, t, alive, link_ok)
        no_edges = jnp.zeros(arr.u.shape, bool)
        return RoundNet(
            alive, mixing, self_w, sends, no_edges, no_edges.astype(jnp.float32), budget, away_until
        )

    p = t % proc.period if proc.schedule == "list" else 0
    e_alive = arr.valid[p] & alive[arr.u] & alive[arr.v]
    if proc.schedule == "resample":
        e_alive = e_alive & (jax.random.uniform(k_res, e_alive.shape) < r.resample_p)
    if proc.link_drop:
        e_alive = e_alive & (jax.random.uniform(k_link, e_alive.shape) >= r.link_drop)
    if proc.schedule == "random_matching":
        e_alive = random_matching(e_alive, arr.u, arr.v, k_match, n)
    if proc.reweight == "self":
        w = jnp.where(e_alive, arr.weights[p], 0.0)
    else:
        rule = "metropolis" if proc.reweight == "metropolis" else proc.rule
        w = rule_weights(rule, e_alive, arr.u, arr.v, n)
    self_w = 1.0 - _segment_sum(w, arr.u, n) - _segment_sum(w, arr.v, n)
    nonzero = (w > 0).astype(jnp.int32)
    sends = _segment_sum(nonzero, arr.u, n) + _segment_sum(nonzero, arr.v, n)
    if proc.dense:
        rows = jnp.concatenate([arr.v, arr.u])
        cols = jnp.concatenate([arr.u, arr.v])
        mixing = _dense_mixing(self_w, rows, cols, jnp.concatenate([w, w]))
    else:
        mixing = _table_mixing(self_w, arr.index, w[arr.edge])
    return RoundNet(alive, mixing, self_w, sends, e_alive, w, budget, away_until)


def round_work(arr: NetArrays, rn: RoundNet):
    """(N,) samples each node's local work processes this round: ``f_i · samples_i``
    for live nodes (the mean of a straggler's rounded steps), 0 for the others."""
    work = arr.samples if rn.budget is None else arr.samples * rn.budget
    return jnp.where(rn.alive, work, 0.0)


def round_seconds(arr: NetArrays, rn: RoundNet, msgs, message_bytes):
    """The simulated duration of this round (see the module docs)."""
    c = arr.cost
    work = round_work(arr, rn) * c.compute_s_per_sample
    comm = msgs * message_bytes / c.bandwidth_bytes_per_s + c.latency_s * (msgs > 0)
    return jnp.max(jnp.where(rn.alive, work + comm, 0.0))


# --------------------------------------------------------------------------- analysis
def round_matrices(
    proc: Process, static: StaticNet, arr: NetArrays, active, rounds: int, seed: int = 0
):
    """Dense W of ``rounds`` consecutive rounds (numpy, (T, N, N)), with each round's
    alive nodes and live candidate edges: for tests and spectra."""
    proc = proc._replace(dense=True)
    n = active.shape[0]
    static = static._replace(mixing=as_dense(static.mixing, n))

    def one(carry, t):
        key, away = carry
        key, sub = jax.random.split(key)
        rn = round_network(proc, static, arr, t, sub, away, active)
        return (key, rn.away_until), (rn.mixing.dense, rn.alive, rn.edge_alive)

    init = (jax.random.PRNGKey(seed), jnp.zeros((n,), jnp.int32))
    _, (Ws, alive, edges) = jax.jit(lambda c, ts: jax.lax.scan(one, c, ts))(
        init, jnp.arange(rounds)
    )
    return np.asarray(Ws, np.float64), np.asarray(alive), np.asarray(edges)


def as_dense(m: Mixing, n: int) -> Mixing:
    """The same operator as a dense matrix."""
    if m.dense is not None:
        return m
    W = jnp.zeros((n, n), jnp.float32).at[jnp.arange(n)[:, None], m.senders].add(m.weights)
    return Mixing(W)


def effective_gap(
    proc: Process,
    static: StaticNet,
    arr: NetArrays,
    active,
    *,
    pairwise_ticks: int = 0,
    samples: int = 200,
) -> float | None:
    """An effective spectral gap of a time-varying W.

    Deterministic periodic schedules (``list``, ``one_peer_exponential`` without
    losses): ``1 − |λ₂(W_P ⋯ W_1)|^{1/P}``, the per-round rate over one period.  Random
    ones: ``1 − λ₂(E[WᵀW])^{1/2}`` from ``samples`` sampled rounds, the rate at which the
    mean squared distance to the average contracts.  Pairwise gossip (``pairwise_ticks``
    ticks per round): the closed form of Boyd et al. (2006).  ``None`` for push-sum rounds
    (W is not doubly stochastic) and above 2,000 nodes.
    """
    n = int(active.shape[0])
    if n > 2000 or proc.push_sum:
        return None
    act = np.asarray(active)
    idx = np.flatnonzero(act)
    if pairwise_ticks:  # one tick: W = I − (e_a − e_b)(e_a − e_b)ᵀ / 2, a projection
        u, v, ok = (np.asarray(a) for a in (arr.u, arr.v, arr.valid[0]))
        L = np.zeros((n, n))
        np.add.at(L, (u[ok], v[ok]), -1.0)
        np.add.at(L, (v[ok], u[ok]), -1.0)
        L[np.diag_indices(n)] = -L.sum(1)
        lam2 = np.sort(np.linalg.eigvalsh(L[np.ix_(idx, idx)]))[1]
        per_tick = 1.0 - lam2 / (2.0 * ok.sum())  # λ₂(E[WᵀW]) = λ₂(E[W])
        return float(1.0 - per_tick ** (pairwise_ticks / 2.0))
    periodic = proc.schedule in ("list", "one_peer_exponential") and not proc.lossy
    if periodic:
        Ws, _, _ = round_matrices(proc, static, arr, active, proc.period)
        P = np.eye(n)
        for W in Ws:
            P = W @ P
        P = P[np.ix_(idx, idx)]
        m = len(idx)
        ev = np.sort(np.abs(np.linalg.eigvals(P - np.ones((m, m)) / m)))[::-1]
        return float(1.0 - ev[0] ** (1.0 / proc.period))
    Ws, _, _ = round_matrices(proc, static, arr, active, samples)
    M = np.mean(np.einsum("tji,tjk->tik", Ws, Ws), axis=0)[np.ix_(idx, idx)]
    m = len(idx)
    ev = np.linalg.eigvalsh(M - np.ones((m, m)) / m)
    return float(1.0 - math.sqrt(max(ev[-1], 0.0)))
