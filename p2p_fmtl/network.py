"""The simulated network: the graph, who trains, and the mixing matrices.

* ``data.holdout_nodes`` (a fraction or a list of node ids) are *unseen* nodes: they
  never train and never gossip.  The training nodes mix with a matrix built by the
  mixing rule on the subgraph they induce (it must stay connected); held-out rows are
  the identity.  At evaluation a held-out node borrows the plain average of its
  training neighbours' shared state (the *borrow* matrix) and adapts (D-EM: fits π).
* ``topology.mixing = "sample_weighted"`` (complete graph only) is the FedEM server's
  aggregation, ``θ ← Σ_j (n_j / Σ_k n_k) θ_j`` for every node: ``W = 1 pᵀ`` with
  ``p_j ∝ n_j``.  It is row-stochastic but not symmetric, so it is not a gossip matrix
  on any other graph; ``uniform`` on the complete graph gives the unweighted average
  ``W = 11ᵀ/N`` instead (the two coincide when all nodes hold the same number of samples).
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np

import topologies

from .errors import ConfigError, UserError

SERVER_RULES = {"sample_weighted"}


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


def training_mixing(G: nx.Graph, rule: str, holdout: np.ndarray, n_train: np.ndarray | None):
    """The mixing matrix of the training nodes (identity rows for held-out nodes)."""
    n = G.number_of_nodes()
    train = np.flatnonzero(~holdout)
    if rule in SERVER_RULES:
        if G.number_of_edges() != n * (n - 1) // 2:
            raise ConfigError(
                f"topology.mixing: 'sample_weighted' is the server's weighted average and "
                f"needs topology.name = 'complete' (got a graph with {G.number_of_edges()} "
                f"of {n * (n - 1) // 2} edges)"
            )
        weights = np.ones(n) if n_train is None else n_train.astype(np.float64)
        p = np.where(holdout, 0.0, weights)
        W = np.where(holdout[:, None], np.eye(n), np.ones((n, 1)) * (p / p.sum())[None, :])
        return W
    H = nx.convert_node_labels_to_integers(G.subgraph(train.tolist()), ordering="sorted")
    if holdout.any() and not nx.is_connected(H):
        raise ConfigError(
            f"data.holdout_nodes: holding out nodes {np.flatnonzero(holdout).tolist()} "
            "disconnects the training graph; hold out other nodes or use a denser graph"
        )
    try:
        W_train = topologies.mixing_matrix(H, rule=rule)
        topologies.validate_mixing(W_train, H)
    except topologies.TopologyError as e:
        raise UserError(str(e)) from None
    W = np.eye(n)
    W[np.ix_(train, train)] = W_train
    return W


def borrow_matrix(G: nx.Graph, holdout: np.ndarray) -> np.ndarray:
    """Row i of a held-out node: the plain average over its training neighbours."""
    n = G.number_of_nodes()
    B = np.eye(n)
    for i in np.flatnonzero(holdout):
        nbrs = [j for j in G.neighbors(int(i)) if not holdout[j]]
        if not nbrs:
            raise ConfigError(
                f"data.holdout_nodes: held-out node {int(i)} has no training neighbour to "
                "borrow models from; hold out other nodes or use a denser graph"
            )
        B[i, i] = 0.0
        B[i, nbrs] = 1.0 / len(nbrs)
    return B


def training_degrees(G: nx.Graph, holdout: np.ndarray) -> np.ndarray:
    """Number of training neighbours of each training node (0 for held-out nodes)."""
    edges = np.asarray(list(G.edges()), dtype=np.int64).reshape(-1, 2)
    live = ~holdout[edges[:, 0]] & ~holdout[edges[:, 1]]
    return np.bincount(edges[live].ravel(), minlength=G.number_of_nodes()).astype(np.int64)


def training_edges(G: nx.Graph, holdout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both directions ``(i, j)`` of every edge between training nodes, sorted by (i, j)."""
    e = np.asarray(list(G.edges()), dtype=np.int64).reshape(-1, 2)
    e = e[~holdout[e[:, 0]] & ~holdout[e[:, 1]]]
    i = np.concatenate([e[:, 0], e[:, 1]])
    j = np.concatenate([e[:, 1], e[:, 0]])
    order = np.lexsort((j, i))
    return i[order], j[order]


def data_statistics(packed) -> np.ndarray:
    """s_i = X_iᵀ (y_i − ȳ_i) / n_i per node (one-hot labels for classification): (N, F)."""
    n, s = packed.x_train.shape[:2]
    x = packed.x_train.reshape(n, s, -1).astype(np.float64)
    mask = (np.arange(s)[None, :] < packed.n_train[:, None]).astype(np.float64)
    y = packed.y_train.astype(np.float64)
    if np.issubdtype(packed.y_train.dtype, np.integer):
        y = np.eye(int(packed.y_train.max()) + 1)[packed.y_train]
    else:
        y = y[..., None]
    counts = np.maximum(packed.n_train, 1)[:, None, None]
    y = (y - (y * mask[..., None]).sum(1, keepdims=True) / counts) * mask[..., None]
    return np.einsum("nsf,nsc->nfc", x, y).reshape(n, -1) / counts[:, :, 0]


def relation_weights(rule: str, i, j, W: np.ndarray, packed) -> np.ndarray:
    """Relation weights a_ij on the directed edge list ``(i, j)`` (see graph_mtl's docs)."""
    if rule in ("uniform", "learned"):  # "learned" starts uniform, then each node re-estimates
        return np.ones(len(i))
    if rule == "graph":
        return W[i, j]
    if rule == "similarity":
        stats = data_statistics(packed)
        d2 = ((stats[i] - stats[j]) ** 2).sum(1)
        h2 = max(float(np.median(d2)), 1e-12)
        a = np.exp(-d2 / (2 * h2))
        return a / a.mean() if len(a) else a
    raise ConfigError(f"algorithm.relation: unknown {rule!r}")  # pragma: no cover


def neighbour_table(n: int, i: np.ndarray, j: np.ndarray, weights: np.ndarray):
    """Padded (N, K) neighbour index and weight arrays from a sorted directed edge list."""
    counts = np.bincount(i, minlength=n)
    k = max(int(counts.max()) if len(i) else 0, 1)
    starts = np.cumsum(counts) - counts
    slot = np.arange(len(i)) - starts[i]
    index = np.tile(np.arange(n, dtype=np.int64)[:, None], (1, k))
    w = np.zeros((n, k))
    index[i, slot] = j
    w[i, slot] = weights
    return index, w
