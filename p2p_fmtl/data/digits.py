"""The scikit-learn digits (1,797 8x8 images of the digits 0-9), partitioned over nodes.

The pooled images come from ``sklearn.datasets.load_digits`` (shipped with
scikit-learn: nothing is downloaded), scaled from ``0..16`` to ``[0, 1]`` as ``float32``
of shape ``(n, 8, 8)``; labels are the digits (multiclass, 10 classes). The partition
over nodes and the per-node train/test split are those of
:mod:`p2p_fmtl.data.partitions` (``partition`` = dirichlet, pathological, mixture,
quantity or iid).
"""

from __future__ import annotations

import functools

import numpy as np

from p2p_fmtl.data.base import FederatedDataset
from p2p_fmtl.data.partitions import federate, mixture_components

__all__ = ["digits", "digits_pool"]


@functools.lru_cache(maxsize=1)
def _pool() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (np.asarray(d.images, dtype=np.float32) / 16.0).reshape(-1, 8, 8)
    y = np.asarray(d.target, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def digits_pool() -> tuple[np.ndarray, np.ndarray]:
    """The pooled images ``(1797, 8, 8)`` float32 in ``[0, 1]`` and labels ``(1797,)``."""
    return _pool()


def digits(
    n_nodes: int,
    *,
    partition: str = "dirichlet",
    alpha: float = 0.5,
    classes_per_node: int = 2,
    components: int = 3,
    transform: str = "label",
    min_samples: int = 10,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> FederatedDataset:
    """The digits over ``n_nodes`` nodes.

    Parameters
    ----------
    partition : {"dirichlet", "pathological", "mixture", "quantity", "iid"}
        How the pooled samples are spread over nodes (default dirichlet).
    alpha : float
        Dirichlet concentration ``> 0``: of the per-class node shares (dirichlet), of the
        node sizes (quantity), of each node's mixture weights (mixture). Default 0.5.
    classes_per_node : int
        ``k`` classes per node for ``pathological`` (default 2).
    components : int
        ``M`` latent components for ``mixture`` (default 3; component 0 is the identity).
    transform : {"label", "pixel", "both", "mixed"}
        What the mixture components ``1..M-1`` do: a label map, a pixel permutation, both,
        or in turn label map / pixel permutation / flip (default label).
    min_samples : int
        Least samples per node (train + test) for dirichlet, quantity, iid and mixture
        (default 10).
    test_fraction : float
        Share of each node's samples held out for its test set, in ``[0, 1)`` (default 0.2).
    seed : int
        Seed of the partition and split (default 0).
    """
    x, y = _pool()
    return federate(
        "digits",
        x,
        y,
        10,
        n_nodes,
        partition_name=partition,
        alpha=alpha,
        classes_per_node=classes_per_node,
        components=components,
        transform=transform,
        min_samples=min_samples,
        test_fraction=test_fraction,
        seed=seed,
    )


digits.recorded_components = mixture_components  # mixture: known components
