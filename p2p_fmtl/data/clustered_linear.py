"""Clustered linear tasks: a multi-task dataset whose task relations are known.

The nodes fall into ``C = clusters`` clusters and every node of cluster ``c`` learns the
same true linear model ``w_c``; nodes of different clusters learn different models.
Algorithms that discover or exploit task relations (clustered or graph-regularized
multi-task learning) can be checked against ``info["cluster"]``.

The model
---------
With ``d = dim``, a shared mean ``m ~ N(0, I_d / d)`` and one offset per cluster
``u_c ~ N(0, I_d / d)`` give the true models

    ``w_c = m + separation * u_c``.

Both draws have ``E |.|^2 = 1``, so ``separation`` is the ratio of the spread of the
cluster models to the size of their shared part: ``separation = 0`` makes every cluster
learn the same model (one global task), ``separation = 1`` gives models at a typical
distance ``sqrt(2)`` of each other with typical norm ``sqrt(2)``, and a large
``separation`` gives (nearly) unrelated tasks. There is no bias term.

Node ``i`` of cluster ``c`` draws ``n_i`` uniform on ``{samples[0], ..., samples[1]}``
training samples and ``n_test`` test samples, each with features ``x ~ N(0, I_d)`` and

* ``task = "regression"``: ``y = x . w_c + noise * eps``, ``eps ~ N(0, 1)``;
* ``task = "classification"``: ``y = 1[x . w_c + noise * eps > 0]`` (binary labels).

The features are drawn, then rounded to ``float32`` (the dtype they are returned in),
and the labels are computed in float64 from the rounded features. With ``noise = 0``
they are therefore exactly ``x . w_c`` of the returned ``x`` up to the final rounding
of regression labels to ``float32``.

Cluster assignment
------------------
``assignment = "contiguous"`` splits the nodes ``0 .. N-1`` into ``C`` contiguous blocks
with the sizes of ``np.array_split`` (the first ``N mod C`` blocks have one node more):
exactly the groups of the topology builder ``planted_partition`` with ``groups = C``.
``"random"`` gives a random permutation of that assignment (the same balanced sizes).

Draw order
----------
All draws come from one ``np.random.default_rng(seed)``, in this order: ``m``
(``d`` normals), the offsets ``u`` (``C x d`` normals), the permutation of the
assignment (``"random"`` only), the training sizes (``N`` integers), then for each node
in order: training features, training noise, test features, test noise. The noise is
drawn even when ``noise = 0``, so changing ``noise`` (or ``task``) alone keeps the
features and true models.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from p2p_fmtl.data.base import FederatedDataset, NodeDataset
from p2p_fmtl.errors import ConfigError

__all__ = ["ASSIGNMENTS", "TASKS", "clustered_linear", "cluster_sizes"]

TASKS = ("regression", "classification")
ASSIGNMENTS = ("contiguous", "random")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _check_int(key: str, value: object, low: int, high: int | None = None, why: str = "") -> int:
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"data.{key}: got {value!r}, expected an integer {bound}{why}")
    return int(value)


def _check_nonneg(key: str, value: object) -> float:
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"data.{key}: got {value!r}, expected a finite number >= 0")
    return float(value)


def _check_samples(samples: object) -> tuple[int, int]:
    ok = (
        isinstance(samples, Sequence)
        and not isinstance(samples, str)
        and len(samples) == 2
        and all(_is_int(s) for s in samples)
        and 1 <= samples[0] <= samples[1]
    )
    if not ok:
        raise ConfigError(
            f"data.samples: got {samples!r}, expected a list [lo, hi] of two integers "
            "with 1 <= lo <= hi (training samples per node)"
        )
    return int(samples[0]), int(samples[1])


def cluster_sizes(n_nodes: int, clusters: int) -> np.ndarray:
    """Sizes of the ``clusters`` contiguous blocks of ``n_nodes`` nodes (``np.array_split``)."""
    base, extra = divmod(n_nodes, clusters)
    return np.array([base + 1] * extra + [base] * (clusters - extra), dtype=np.int64)


def clustered_linear(
    n_nodes: int,
    *,
    clusters: int = 4,
    dim: int = 20,
    task: str = "regression",
    samples: tuple[int, int] = (10, 40),
    n_test: int = 200,
    noise: float = 0.5,
    separation: float = 1.0,
    assignment: str = "contiguous",
    seed: int = 0,
) -> FederatedDataset:
    """Generate clustered linear regression or classification tasks for ``n_nodes`` nodes.

    Parameters
    ----------
    n_nodes : int
        Number of nodes ``N >= 1``.
    clusters : int
        Number of clusters (distinct true models) ``C``, in ``[1, N]`` (default 4).
    dim : int
        Feature dimension ``d >= 1`` (default 20).
    task : {"regression", "classification"}
        Real labels with squared loss, or binary ``0/1`` labels (default regression).
    samples : (int, int)
        Inclusive range ``[lo, hi]`` of a node's training-set size, ``1 <= lo <= hi``;
        each node draws its size uniformly (default ``(10, 40)``).
    n_test : int
        Test samples per node, ``>= 1`` (default 200).
    noise : float
        Standard deviation of the Gaussian label noise, ``>= 0`` (default 0.5). For
        classification it is added before thresholding.
    separation : float
        Scale of the cluster offsets, ``>= 0`` (default 1): ``w_c = m + separation * u_c``.
        0 gives one global task.
    assignment : {"contiguous", "random"}
        Contiguous ``np.array_split`` blocks (the groups of the ``planted_partition``
        topology) or a random permutation of them (default contiguous).
    seed : int
        Seed of ``np.random.default_rng``, ``>= 0`` (default 0).

    Returns
    -------
    FederatedDataset
        ``task="regression"`` (``num_classes=1``, float32 labels) or ``task="binary"``
        (``num_classes=2``, int32 labels in ``{0, 1}``); float32 features ``(n, dim)``.
        ``info`` holds ``"cluster"`` (N,) int64, ``"true_models"`` (C, dim) float64,
        ``"shared_mean"`` (dim,) float64, ``"num_samples"`` (N,) int64 training sizes,
        ``"task"`` (``"regression"`` or ``"classification"``), ``"generator"`` and
        ``"params"``.

    Examples
    --------
    >>> ds = clustered_linear(6, clusters=2, dim=3, samples=(5, 5), n_test=4)
    >>> ds.task, ds.nodes[0].x_train.shape, ds.info["cluster"].tolist()
    ('regression', (5, 3), [0, 0, 0, 1, 1, 1])
    """
    n_nodes = _check_int("n_nodes", n_nodes, 1)
    clusters = _check_int("clusters", clusters, 1, n_nodes, why=" (at most one cluster per node)")
    dim = _check_int("dim", dim, 1)
    if task not in TASKS:
        raise ConfigError(f"data.task: got {task!r}, expected 'regression' or 'classification'")
    lo, hi = _check_samples(samples)
    n_test = _check_int("n_test", n_test, 1)
    noise = _check_nonneg("noise", noise)
    separation = _check_nonneg("separation", separation)
    if assignment not in ASSIGNMENTS:
        raise ConfigError(f"data.assignment: got {assignment!r}, expected 'contiguous' or 'random'")
    seed = _check_int("seed", seed, 0)

    rng = np.random.default_rng(seed)
    scale = 1.0 / math.sqrt(dim)
    shared = rng.standard_normal(dim) * scale
    offsets = rng.standard_normal((clusters, dim)) * scale
    true_models = shared + separation * offsets

    cluster = np.repeat(np.arange(clusters, dtype=np.int64), cluster_sizes(n_nodes, clusters))
    if assignment == "random":
        cluster = rng.permutation(cluster)
    num_samples = rng.integers(lo, hi, size=n_nodes, endpoint=True).astype(np.int64)

    classify = task == "classification"

    def split(n: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        z = x.astype(np.float64) @ w + noise * rng.standard_normal(n)
        y = (z > 0).astype(np.int32) if classify else z.astype(np.float32)
        return x, y

    nodes = []
    for i in range(n_nodes):
        w = true_models[cluster[i]]
        x_tr, y_tr = split(int(num_samples[i]), w)
        x_te, y_te = split(n_test, w)
        nodes.append(NodeDataset(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te))

    info = {
        "generator": "clustered_linear",
        "task": task,
        "cluster": cluster,
        "true_models": true_models,
        "shared_mean": shared,
        "num_samples": num_samples,
        "params": {
            "n_nodes": n_nodes,
            "clusters": clusters,
            "dim": dim,
            "task": task,
            "samples": [lo, hi],
            "n_test": n_test,
            "noise": noise,
            "separation": separation,
            "assignment": assignment,
            "seed": seed,
        },
    }
    if classify:
        return FederatedDataset(nodes=nodes, task="binary", num_classes=2, info=info)
    return FederatedDataset(nodes=nodes, task="regression", num_classes=1, info=info)
