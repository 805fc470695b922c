"""Different tasks over one input space: the digits with three heads (task ``"multitask"``).

Every node sees 8x8 digit images (as :mod:`p2p_fmtl.data.digits`) but learns one of three
*heads*:

=========  ============  =======  ==================================================
head       kind          classes  target
=========  ============  =======  ==================================================
``class``  multiclass    10       the digit
``parity`` multiclass    2        digit mod 2
``ink``    regression    1        mean pixel intensity, standardized (zero mean, unit
                                  variance over the 1,797 pooled images)
=========  ============  =======  ==================================================

Labels are float32 ``(n, 2)``: column 0 the target (a class index as a float, or the
regression value), column 1 the head index (constant per node). ``num_classes`` is the
total output width ``10 + 2 + 1 = 13``; a model's outputs are the concatenated heads, in
the order of ``info["heads"]`` (offsets 0, 10, 12).

Node ``i``'s head is ``info["node_task"][i]``: ``assignment = "cyclic"`` gives ``i mod 3``,
``"contiguous"`` three ``np.array_split`` blocks, ``"random"`` a random permutation of the
cyclic assignment. Samples are spread over nodes by ``partition`` (``"iid"``,
``"dirichlet"`` over the digit, or ``"quantity"``) and split per node as in
:mod:`p2p_fmtl.data.partitions`.

Draw order: one ``numpy.random.default_rng(seed)``: the assignment permutation
(``"random"`` only), the partition, the per-node splits.
"""

from __future__ import annotations

import numpy as np

from p2p_fmtl.data.base import FederatedDataset, NodeDataset
from p2p_fmtl.data.digits import digits_pool
from p2p_fmtl.data.partitions import (
    check_choice,
    check_int,
    check_real,
    split_node,
)
from p2p_fmtl.data.partitions import (
    partition as partition_indices,
)

__all__ = ["ASSIGNMENTS", "HEADS", "digits_multitask"]

HEADS = (
    {"name": "class", "kind": "multiclass", "classes": 10},
    {"name": "parity", "kind": "multiclass", "classes": 2},
    {"name": "ink", "kind": "regression", "classes": 1},
)
ASSIGNMENTS = ("cyclic", "contiguous", "random")
MT_PARTITIONS = ("iid", "dirichlet", "quantity")


def _targets(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(n, 3)`` float64: the targets of every head for every pooled sample."""
    ink = x.reshape(len(x), -1).astype(np.float64).mean(axis=1)
    ink = (ink - ink.mean()) / ink.std()
    return np.stack([y.astype(np.float64), (y % 2).astype(np.float64), ink], axis=1)


def digits_multitask(
    n_nodes: int,
    *,
    assignment: str = "cyclic",
    partition: str = "iid",
    alpha: float = 0.5,
    min_samples: int = 10,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> FederatedDataset:
    """Digits with per-node heads class / parity / ink (see the module docstring).

    ``info``: ``"heads"`` (list of dicts name / kind / classes), ``"node_task"`` (N,) int64,
    ``"head_offsets"`` (first output column of each head), ``"train_index"`` /
    ``"test_index"`` (indices into :func:`~p2p_fmtl.data.digits.digits_pool`),
    ``"num_samples"``.
    """
    n_nodes = check_int("n_nodes", n_nodes, 1)
    assignment = check_choice("assignment", assignment, ASSIGNMENTS)
    partition = check_choice("partition", partition, MT_PARTITIONS)
    alpha = check_real("alpha", alpha, 0.0, low_open=True)
    min_samples = check_int("min_samples", min_samples, 1)
    test_fraction = check_real("test_fraction", test_fraction, 0.0, 1.0, high_open=True)
    seed = check_int("seed", seed, 0)

    x, y = digits_pool()
    targets = _targets(x, y)
    h = len(HEADS)
    rng = np.random.default_rng(seed)
    if assignment == "contiguous":
        node_task = np.repeat(np.arange(h), [len(b) for b in np.array_split(np.arange(n_nodes), h)])
    else:
        node_task = np.arange(n_nodes) % h
        if assignment == "random":
            node_task = rng.permutation(node_task)
    node_task = node_task.astype(np.int64)
    parts = partition_indices(y, n_nodes, partition, rng, alpha=alpha, min_samples=min_samples)

    nodes, train_index, test_index = [], [], []
    for i, idx in enumerate(parts):
        tr, te = split_node(y[idx].astype(np.int64), test_fraction, rng)
        t = int(node_task[i])

        def labels(rows: np.ndarray, t: int = t) -> np.ndarray:
            return np.stack([targets[rows, t], np.full(len(rows), t)], axis=1).astype(np.float32)

        nodes.append(
            NodeDataset(
                x_train=np.ascontiguousarray(x[idx[tr]]),
                y_train=labels(idx[tr]),
                x_test=np.ascontiguousarray(x[idx[te]]),
                y_test=labels(idx[te]),
            )
        )
        train_index.append(idx[tr])
        test_index.append(idx[te])
    info = {
        "generator": "digits_multitask",
        "heads": [dict(hd) for hd in HEADS],
        "head_offsets": np.cumsum([0] + [hd["classes"] for hd in HEADS])[:-1].tolist(),
        "node_task": node_task,
        "train_index": train_index,
        "test_index": test_index,
        "num_samples": np.array([nd.n_train for nd in nodes], dtype=np.int64),
        "params": {
            "n_nodes": n_nodes,
            "assignment": assignment,
            "partition": partition,
            "alpha": alpha,
            "min_samples": min_samples,
            "test_fraction": test_fraction,
            "seed": seed,
        },
    }
    width = sum(hd["classes"] for hd in HEADS)
    return FederatedDataset(nodes=nodes, task="multitask", num_classes=width, info=info)
