"""The simulated network: the graph, who trains, and the mixing weights, as edge lists.

Everything here works on edge lists ``(senders, receivers, weights)`` including
self-loops, so a 100,000-node ring never materialises an N×N matrix; the gossip operator
(:mod:`p2p_fmtl.gossip`) turns them into a dense matrix only for small or dense graphs.

* ``data.holdout_nodes`` (a fraction or a list of node ids) are *unseen* nodes: they
  never train and never gossip.  The training nodes mix with the weights the mixing rule
  gives on the subgraph they induce (it must stay connected); held-out nodes keep their
  state (a self-loop of weight 1).  At evaluation a held-out node borrows the plain
  average of its training neighbours' shared state (the *borrow* edges) and adapts.
* ``topology.mixing = "sample_weighted"`` (complete graph only) is the FedEM server's
  aggregation, ``θ ← Σ_j (n_j / Σ_k n_k) θ_j`` for every node: ``W = 1 pᵀ`` with
  ``p_j ∝ n_j``.  It is row-stochastic but not symmetric, so it is not a gossip matrix
  on any other graph; ``uniform`` on the complete graph gives the unweighted average
  ``W = 11ᵀ/N`` instead (the two coincide when all nodes hold the same number of samples).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import networkx as nx
import numpy as np

import topologies

from .errors import ConfigError, UserError

SERVER_RULES = {"sample_weighted"}
DENSE_CHECK_LIMIT = 2000  # nodes: above this, spectra and dense validation are skipped


class Edges(NamedTuple):
    """``x_r ← Σ_e w_e x_{s_e}`` over edges e into r (self-loops included)."""

    senders: np.ndarray
    receivers: np.ndarray
    weights: np.ndarray

    def dense(self, n: int) -> np.ndarray:
        W = np.zeros((n, n))
        np.add.at(W, (self.receivers, self.senders), self.weights)
        return W


class Network(NamedTuple):
    graph: nx.Graph
    holdout: np.ndarray  # (N,) bool
    mixing: Edges  # the training nodes' mixing weights (+ self-loops of held-out nodes)
    degree: np.ndarray  # (N,) number of training neighbours (0 for held-out nodes)
    src: np.ndarray  # directed training edges i <- j, sorted by (i, j): receivers
    dst: np.ndarray  # ... and senders
    spectral_gap: float | None

    @property
    def n(self) -> int:
        return len(self.holdout)


def holdout_mask(value: Any, n: int, seed: int) -> np.ndarray:
    """Boolean mask of held-out nodes from ``data.holdout_nodes``."""
    field = "data.holdout_nodes"
    mask = np.zeros(n, dtype=bool)
    if isinstance(value, bool):
        raise ConfigError(f"{field}: got {value!r}, expected a fraction in [0, 1) or a node list")
    if isinstance(value, int | float):
        if not 0 <= value < 1:
            raise ConfigError(f"{field}: got {value!r}, expected a fraction in [0, 1)")
        k = int(round(value * n))
        if value > 0:
            k = max(k, 1)
        if k:
            mask[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    elif isinstance(value, list):
        ids = value
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in ids):
            raise ConfigError(f"{field}: got {value!r}, expected node ids in [0, {n - 1}]")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"{field}: got {value!r}, node ids must be distinct")
        mask[ids] = True
    else:
        raise ConfigError(f"{field}: got {value!r}, expected a fraction in [0, 1) or a node list")
    if mask.sum() >= n - 1:
        raise ConfigError(f"{field}: got {value!r}, at least two nodes must train")
    return mask


def training_edges(G: nx.Graph, holdout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both directions ``(i, j)`` of every edge between training nodes, sorted by (i, j)."""
    u, v = topologies.edge_array(G)
    keep = ~holdout[u] & ~holdout[v]
    u, v = u[keep], v[keep]
    i = np.concatenate([u, v])
    j = np.concatenate([v, u])
    order = np.lexsort((j, i))
    return i[order], j[order]


def training_degrees(G: nx.Graph, holdout: np.ndarray) -> np.ndarray:
    """Number of training neighbours of each training node (0 for held-out nodes)."""
    i, _ = training_edges(G, holdout)
    return np.bincount(i, minlength=G.number_of_nodes()).astype(np.int64)


def _self_loops(ids: np.ndarray) -> Edges:
    return Edges(ids, ids, np.ones(len(ids)))


def _concat(*parts: Edges) -> Edges:
    s = np.concatenate([p.senders for p in parts])
    r = np.concatenate([p.receivers for p in parts])
    w = np.concatenate([p.weights for p in parts])
    order = np.lexsort((s, r))
    return Edges(s[order].astype(np.int64), r[order].astype(np.int64), w[order])


def check_doubly_stochastic(edges: Edges, n: int, atol: float = 1e-8) -> None:
    """Edge-list version of the validator: non-negative, symmetric, rows/columns sum to 1."""
    if np.any(edges.weights < -atol) or not np.all(np.isfinite(edges.weights)):
        raise UserError("mixing matrix: negative or non-finite weights")
    for name, idx in (("row", edges.receivers), ("column", edges.senders)):
        sums = np.bincount(idx, weights=edges.weights, minlength=n)
        bad = np.flatnonzero(np.abs(sums - 1) > 1e-6)
        if len(bad):
            raise UserError(
                f"mixing matrix: {name} {bad[0]} sums to {sums[bad[0]]:.6g}, expected 1 "
                "(doubly stochastic)"
            )
    fwd = np.lexsort((edges.senders, edges.receivers))
    back = np.lexsort((edges.receivers, edges.senders))
    if not np.allclose(edges.weights[fwd], edges.weights[back], atol=1e-8):
        raise UserError("mixing matrix: not symmetric")


def given_network(G: nx.Graph, W: np.ndarray, holdout: np.ndarray) -> Network:
    """The network of a given mixing matrix ``W``, validated on ``G``
    (:func:`topologies.validate_mixing`): its weights on the graph's edges and diagonal,
    in the layout of the rules' edge lists."""
    if holdout.any():
        raise ConfigError(
            "mixing: a given matrix cannot hold out nodes (their weights would have to be "
            "recomputed on the training subgraph); set data.holdout_nodes = 0 or give a "
            "mixing rule's name"
        )
    try:
        topologies.validate_mixing(W, G)
    except topologies.TopologyError as e:
        msg = str(e)
        for prefix in ("mixing matrix: ", "mixing: "):
            msg = msg.removeprefix(prefix)
        raise UserError(f"mixing: {msg}") from None
    n = G.number_of_nodes()
    src, dst = training_edges(G, holdout)
    ids = np.arange(n)
    mixing = _concat(Edges(dst, src, W[src, dst]), Edges(ids, ids, np.diag(W).copy()))
    gap = float(topologies.spectral_gap(W)) if n <= DENSE_CHECK_LIMIT else None
    degree = np.bincount(src, minlength=n).astype(np.int64)
    return Network(G, holdout, mixing, degree, src, dst, gap)


def build_network(
    G: nx.Graph,
    rule: str,
    holdout: np.ndarray,
    n_train: np.ndarray | None,
    weights: np.ndarray | None = None,
) -> Network:
    """The training nodes' mixing weights for ``rule`` (or the given matrix ``weights``:
    :func:`given_network`), as an edge list."""
    if weights is not None:
        return given_network(G, weights, holdout)
    n = G.number_of_nodes()
    train = np.flatnonzero(~holdout)
    src, dst = training_edges(G, holdout)
    degree = np.bincount(src, minlength=n).astype(np.int64)
    if rule in SERVER_RULES:
        if G.number_of_edges() != n * (n - 1) // 2:
            raise ConfigError(
                f"topology.mixing: 'sample_weighted' is the server's weighted average and "
                f"needs topology.name = 'complete' (got a graph with {G.number_of_edges()} "
                f"of {n * (n - 1) // 2} edges)"
            )
        weights = np.ones(n) if n_train is None else n_train.astype(np.float64)
        p = np.where(holdout, 0.0, weights)
        p = p / p.sum()
        r, s = np.meshgrid(train, train, indexing="ij")
        mixing = _concat(
            Edges(s.ravel(), r.ravel(), p[s.ravel()]), _self_loops(np.flatnonzero(holdout))
        )
        return Network(G, holdout, mixing, degree, src, dst, None)

    if holdout.any():
        H = topologies.induced_subgraph(G, train)
        if not topologies.is_connected(H):
            raise ConfigError(
                f"data.holdout_nodes: holding out nodes {np.flatnonzero(holdout).tolist()} "
                "disconnects the training graph; hold out other nodes or use a denser graph"
            )
    else:
        H = G
    try:
        s, r, w = topologies.mixing_edges(H, rule=rule)
    except topologies.TopologyError as e:
        raise UserError(str(e)) from None
    mixing = _concat(Edges(train[s], train[r], w), _self_loops(np.flatnonzero(holdout)))
    gap = None
    if len(train) <= DENSE_CHECK_LIMIT:
        W_train = Edges(s, r, w).dense(len(train))
        try:
            topologies.validate_mixing(W_train, H)
        except topologies.TopologyError as e:
            raise UserError(str(e)) from None
        gap = float(topologies.spectral_gap(W_train))
    else:
        check_doubly_stochastic(mixing, n)
    return Network(G, holdout, mixing, degree, src, dst, gap)


def borrow_edges(net: Network) -> Edges:
    """Held-out node i borrows the plain average over its training neighbours."""
    held = np.flatnonzero(net.holdout)
    G, holdout = net.graph, net.holdout
    u, v = topologies.edge_array(G)
    i = np.concatenate([u, v])
    j = np.concatenate([v, u])
    keep = holdout[i] & ~holdout[j]
    i, j = i[keep], j[keep]
    counts = np.bincount(i, minlength=net.n)
    lonely = held[counts[held] == 0]
    if len(lonely):
        raise ConfigError(
            f"data.holdout_nodes: held-out node {int(lonely[0])} has no training neighbour to "
            "borrow models from; hold out other nodes or use a denser graph"
        )
    return _concat(Edges(j, i, 1.0 / counts[i]), _self_loops(np.flatnonzero(~holdout)))


def data_statistics(ds) -> np.ndarray:
    """s_i = X_iᵀ (y_i − ȳ_i) / n_i per node (one-hot labels for classification): (N, F)."""
    if ds.task not in ("binary", "multiclass", "regression"):
        raise ConfigError(
            f"algorithm.relation: got 'similarity', which compares per-node label "
            f"statistics; not defined for {ds.task!r} data; allowed: 'uniform', 'graph', "
            "'learned'"
        )
    stats = []
    classes = ds.num_classes if ds.task != "regression" else 0
    for nd in ds.nodes:
        x = nd.x_train.reshape(nd.n_train, -1).astype(np.float64)
        y = nd.y_train.astype(np.float64)
        y = np.eye(classes)[nd.y_train.astype(int)] if classes else y[:, None]
        y = y - y.mean(axis=0, keepdims=True)
        stats.append((x.T @ y).ravel() / max(nd.n_train, 1))
    return np.stack(stats)


# --------------------------------------------------------------------------- network process
def schedule_graphs(cfg, n: int) -> list[nx.Graph]:
    """The graphs of ``topology.schedule = "list"``: builder names or edge-list files."""
    from pathlib import Path

    topo = cfg["topology"]
    out = []
    for entry in topo["graphs"]:
        if entry in topologies.BUILDERS and entry != "edgelist":
            try:
                G = topologies.build(entry, n, seed=topo["seed"])
            except (topologies.TopologyError, TypeError, ValueError) as e:
                raise ConfigError(f"topology.graphs: {entry!r}: {e}") from None
        elif Path(entry).is_file():
            try:
                G = topologies.build("edgelist", n, path=entry)
            except topologies.TopologyError as e:
                raise ConfigError(f"topology.graphs: {entry!r}: {e}") from None
        else:
            raise ConfigError(
                f"topology.graphs: got {entry!r}, expected a builder name "
                f"({', '.join(topologies.BUILDERS)}) or an existing edge-list file"
            )
        if G.number_of_nodes() != n:
            raise ConfigError(
                f"topology.graphs: {entry!r} has {G.number_of_nodes()} nodes, expected {n}"
            )
        if not isinstance(G, topologies.EdgeGraph):  # (an EdgeGraph is numbered 0..n-1)
            G = nx.convert_node_labels_to_integers(G, ordering="sorted")
        out.append(G)
    return out


RESAMPLE_LIMIT = 4096  # nodes: the resample schedule draws over all n(n-1)/2 pairs


def schedule_edge_sets(cfg, net: Network) -> tuple[list, int]:
    """The undirected edge sets ``(u, v, w)`` (u < v, training nodes only) of the run's
    graphs (one per graph of a ``list`` schedule), with the schedule's period."""
    from .netsim import all_pairs, undirected

    topo = cfg["topology"]
    n, schedule = net.n, topo["schedule"]
    train = ~net.holdout
    if schedule == "list":
        sets = []
        for G in schedule_graphs(cfg, n):
            try:
                s, r, w = topologies.mixing_edges(G, rule=topo["mixing"])
            except topologies.TopologyError as e:
                raise UserError(f"topology.graphs: {e}") from None
            u, v, w = undirected(s, r, w)
            keep = train[u] & train[v]
            sets.append((u[keep], v[keep], w[keep]))
        return sets, len(sets)
    if schedule == "resample":
        if n > RESAMPLE_LIMIT:
            raise ConfigError(
                f"topology.schedule: 'resample' draws over all node pairs; got topology.n = "
                f"{n}, allowed up to {RESAMPLE_LIMIT}"
            )
        u, v, w = all_pairs(n)
        keep = train[u] & train[v]
        return [(u[keep], v[keep], w[keep])], 1
    if schedule == "one_peer_exponential":
        empty = np.zeros(0, np.int64)
        return [(empty, empty, np.zeros(0))], max(int(np.ceil(np.log2(max(n, 2)))), 1)
    if topo["mixing"] in SERVER_RULES:  # not symmetric: the graph's edges, no weights
        src, dst = net.src, net.dst
        keep = src < dst
        return [(src[keep], dst[keep], np.zeros(int(keep.sum())))], 1
    return [undirected(*net.mixing)], 1


def build_process(
    cfg, net: Network, work_samples: np.ndarray, dense: bool, exchange_reads_edges: bool = True
):
    """The static :class:`~p2p_fmtl.netsim.Process` of a run and its network's arrays
    (numpy :class:`~p2p_fmtl.netsim.NetArrays`: candidate edges, their neighbour table,
    rates and costs).

    When nothing reads them (a static graph where nothing is lost, and an exchange that
    gossips with the one W: not ``exchange_reads_edges``) the edge arrays are one padding
    edge, so runs on different graphs of the same size keep the same shapes (batches).
    """
    from .netsim import CostModel, NetArrays, Process, Rates, candidate_edges, candidate_table

    topo, faults, cost = (cfg[s] for s in ("topology", "faults", "cost"))
    n = net.n
    sets, period = schedule_edge_sets(cfg, net)
    changing = topo["schedule"] != "static" or any(
        faults[k] > 0 for k in ("node_drop", "link_drop", "churn")
    )
    if not (changing or exchange_reads_edges):
        empty = np.zeros(0, np.int64)
        sets = [(empty, empty, np.zeros(0))]
    u, v, valid, weights = candidate_edges(sets, n)
    index, edge = candidate_table(u, v, valid, n)
    resample_p = topo["resample_p"]
    if topo["schedule"] == "resample" and resample_p == 0:
        m = int((~net.holdout).sum())
        resample_p = (len(net.src) / 2) / max(m * (m - 1) / 2, 1)
    lo, hi = faults["straggler_work"]
    process = Process(
        schedule=topo["schedule"],
        reweight=faults["reweight"],
        rule=topo["mixing"],
        node_drop=faults["node_drop"] > 0,
        link_drop=faults["link_drop"] > 0,
        churn=faults["churn"] > 0,
        straggler=faults["straggler"] > 0,
        dense=dense,
        period=period,
    )
    f32 = np.float32
    rates = Rates(
        *(f32(x) for x in (faults["node_drop"], faults["link_drop"], faults["churn"])),
        f32(faults["straggler"]),
        f32(lo),
        f32(hi),
        f32(resample_p),
        np.int32(faults["churn_rounds"]),
    )
    costs = CostModel(
        f32(cost["compute_s_per_sample"]),
        f32(cost["bandwidth_bytes_per_s"]),
        f32(cost["latency_s"]),
    )
    arrays = NetArrays(
        u.astype(np.int32),
        v.astype(np.int32),
        valid,
        weights,
        index.astype(np.int32),
        edge.astype(np.int32),
        rates,
        costs,
        np.asarray(work_samples, f32),
    )
    return process, arrays


def static_mixing_facts(net: Network) -> tuple[np.ndarray, np.ndarray]:
    """``(W_ii, messages a node sends in one gossip)`` of the static mixing weights: a
    node sends to every other node whose row gives it a non-zero weight."""
    m = net.mixing
    diag = np.zeros(net.n)
    self_loop = m.senders == m.receivers
    np.add.at(diag, m.senders[self_loop], m.weights[self_loop])
    off = ~self_loop & (m.weights != 0)
    sends = np.bincount(m.senders[off], minlength=net.n)
    return diag.astype(np.float32), sends.astype(np.int32)


def relation_table(rule: str, net: Network, index: np.ndarray, edge: np.ndarray, ds, pad: int):
    """Relation weights a_ij on the neighbour-table slots (``(N, K)``, 0 on padding).

    ``mixing``: the mixing weight W_ij; ``uniform`` and ``learned`` (which starts uniform):
    1; ``similarity``: exp(−‖s_i − s_j‖² / 2h²) of the data statistics s_i
    (:func:`data_statistics`), h² the median over the edges, scaled to mean 1.
    """
    n = net.n
    real = edge != pad
    i = np.broadcast_to(np.arange(n)[:, None], index.shape)[real]
    j = index[real]
    out = np.zeros(index.shape)
    if rule in ("uniform", "learned"):
        out[real] = 1.0
    elif rule == "mixing":
        m = net.mixing
        keys = m.receivers * n + m.senders
        order = np.argsort(keys)
        pos = np.searchsorted(keys[order], i * n + j)
        found = pos < len(keys)
        pos = np.minimum(pos, len(keys) - 1)
        hit = found & (keys[order][pos] == i * n + j)
        out[real] = np.where(hit, m.weights[order][pos], 0.0)
    elif rule == "similarity":
        stats = data_statistics(ds)
        d2 = ((stats[i] - stats[j]) ** 2).sum(1)
        h2 = max(float(np.median(d2)), 1e-12) if len(d2) else 1.0
        a = np.exp(-d2 / (2 * h2))
        out[real] = a / a.mean() if len(a) else a
    else:  # pragma: no cover - Needs are checked when the config is loaded
        raise ConfigError(f"algorithm.relation: unknown {rule!r}")
    return out.astype(np.float32)
