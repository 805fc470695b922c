"""Synthetic "dialects": next-token prediction on clustered Markov chains (task ``"lm"``).

A small language-model benchmark in the spirit of MIRA (personalised language models on
a network): ``C = clusters`` dialects, each a first-order Markov chain over ``V = vocab``
tokens whose transition matrix ``P_c`` has rows ``(1 - eps) Dirichlet(concentration 1_V)
+ eps / V`` (``eps = 1e-3`` keeps every chain irreducible and aperiodic; a small
``concentration`` makes the rows peaked, i.e. low entropy). The chains are drawn
independently, so dialects disagree: one global model cannot match them all.

Node ``i`` speaks dialect ``i mod C`` (``info["cluster"]``). It holds ``n_i`` training and
``test_samples`` test sequences of ``seq_len + 1`` tokens, each started in the chain's
stationary distribution ``mu_c``; ``n_i = samples`` or, with ``size_sigma > 0``,
``max(1, round(samples * exp(size_sigma * z - size_sigma^2 / 2)))``, ``z ~ N(0, 1)``
(log-normal sizes with mean ``samples``). ``x = seq[:, :-1]`` and ``y = seq[:, 1:]``, both
int32 ``(n, seq_len)``; ``num_classes = V``.

``info["entropy_rate"] (C,)`` is ``H_c = -sum_s mu_c(s) sum_t P_c(s, t) log P_c(s, t)`` in
nats: since sequences start stationary, every position's best achievable expected loss is
``H_c``, so ``H_c`` is the floor of a node's mean per-token test loss.

Draw order: one ``numpy.random.default_rng(seed)``: the ``C`` matrices, the node sizes
(``N`` normals, drawn even when ``size_sigma = 0``), then per node its training and test
sequences.
"""

from __future__ import annotations

import numpy as np

from p2p_fmtl.data.base import FederatedDataset, NodeDataset
from p2p_fmtl.data.partitions import check_int, check_real

__all__ = ["dialects", "sample_chain", "stationary"]

_EPS = 1e-3


def stationary(P: np.ndarray) -> np.ndarray:
    """Stationary distribution ``mu`` of a row-stochastic matrix (``mu P = mu``)."""
    v = P.shape[0]
    a = np.vstack([P.T - np.eye(v), np.ones((1, v))])
    b = np.zeros(v + 1)
    b[-1] = 1.0
    mu = np.linalg.lstsq(a, b, rcond=None)[0]
    mu = np.clip(mu, 0.0, None)
    return mu / mu.sum()


def sample_chain(
    P: np.ndarray, mu: np.ndarray, n: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` sequences of ``length`` tokens: ``s_0 ~ mu``, ``s_{t+1} ~ P[s_t]`` (int32)."""
    v = P.shape[0]
    cum = np.cumsum(P, axis=1)
    seq = np.empty((n, length), dtype=np.int32)
    s = np.minimum(np.searchsorted(np.cumsum(mu), rng.random(n), side="right"), v - 1)
    seq[:, 0] = s
    for t in range(1, length):
        u = rng.random(n)
        s = np.minimum((u[:, None] >= cum[s]).sum(axis=1), v - 1)
        seq[:, t] = s
    return seq


def dialects(
    n_nodes: int,
    *,
    clusters: int = 3,
    vocab: int = 32,
    seq_len: int = 32,
    samples: int = 64,
    test_samples: int = 64,
    concentration: float = 0.1,
    size_sigma: float = 0.0,
    seed: int = 0,
) -> FederatedDataset:
    """Markov-chain dialects for ``n_nodes`` nodes (see the module docstring).

    Keys: ``clusters`` in ``[1, N]``, ``vocab >= 2``, ``seq_len >= 1``, ``samples >= 1``
    and ``test_samples >= 1`` sequences per node, ``concentration > 0`` of the Dirichlet
    rows, ``size_sigma >= 0`` log-normal spread of the training sizes, ``seed``.
    ``info``: ``"cluster"`` (N,), ``"transitions"`` (C, V, V), ``"stationary"`` (C, V),
    ``"entropy_rate"`` (C,) nats, ``"num_samples"`` (N,).
    """
    n_nodes = check_int("n_nodes", n_nodes, 1)
    clusters = check_int("clusters", clusters, 1, n_nodes, why=" (at most one per node)")
    vocab = check_int("vocab", vocab, 2)
    seq_len = check_int("seq_len", seq_len, 1)
    samples = check_int("samples", samples, 1)
    test_samples = check_int("test_samples", test_samples, 1)
    concentration = check_real("concentration", concentration, 0.0, low_open=True)
    size_sigma = check_real("size_sigma", size_sigma, 0.0)
    seed = check_int("seed", seed, 0)

    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(vocab, concentration), size=(clusters, vocab))
    P = (1.0 - _EPS) * P + _EPS / vocab
    P /= P.sum(axis=2, keepdims=True)
    mu = np.stack([stationary(p) for p in P])
    entropy = -np.einsum("cs,cst->c", mu, P * np.log(P))
    z = rng.standard_normal(n_nodes)
    if size_sigma > 0:
        sizes = np.maximum(1, np.round(samples * np.exp(size_sigma * z - size_sigma**2 / 2)))
    else:
        sizes = np.full(n_nodes, samples)
    sizes = sizes.astype(np.int64)
    cluster = np.arange(n_nodes, dtype=np.int64) % clusters

    nodes = []
    for i in range(n_nodes):
        c = cluster[i]
        tr = sample_chain(P[c], mu[c], int(sizes[i]), seq_len + 1, rng)
        te = sample_chain(P[c], mu[c], test_samples, seq_len + 1, rng)
        nodes.append(
            NodeDataset(
                x_train=np.ascontiguousarray(tr[:, :-1]),
                y_train=np.ascontiguousarray(tr[:, 1:]),
                x_test=np.ascontiguousarray(te[:, :-1]),
                y_test=np.ascontiguousarray(te[:, 1:]),
            )
        )
    info = {
        "generator": "dialects",
        "cluster": cluster,
        "transitions": P,
        "stationary": mu,
        "entropy_rate": entropy,
        "num_samples": sizes,
        "params": {
            "n_nodes": n_nodes,
            "clusters": clusters,
            "vocab": vocab,
            "seq_len": seq_len,
            "samples": samples,
            "test_samples": test_samples,
            "concentration": concentration,
            "size_sigma": size_sigma,
            "seed": seed,
        },
    }
    return FederatedDataset(nodes=nodes, task="lm", num_classes=vocab, info=info)
