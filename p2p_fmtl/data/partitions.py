"""Partition a pooled labelled dataset ``(x, y)`` over ``N`` nodes (pure numpy).

Every partitioner takes a ``numpy.random.Generator`` and returns one array of pool
indices per node (disjoint; together they cover the pool, except ``"pathological"``
when a class is held by no node). :func:`federate` chains a partitioner, the
per-node train/test split and the packing into a :class:`FederatedDataset`; the
``digits`` and ``mnist1d`` datasets are thin wrappers around it.

Schemes
-------
``"iid"``
    A random permutation of the pool cut into ``N`` nearly equal parts.
``"dirichlet"`` (Hsu, Qi and Brown 2019)
    For every class ``c`` the node shares ``p_c ~ Dirichlet(alpha * 1_N)``; the
    (shuffled) samples of class ``c`` are cut at the cumulative shares. Small ``alpha``
    gives nodes dominated by few classes, large ``alpha`` approaches iid. *Minimum size*:
    the whole draw is repeated (up to 10 times, as in NIID-Bench) until every node holds
    ``min_samples`` samples; if the last draw still leaves a node short, it is *topped up*:
    random samples move from the currently largest node to the short node until it holds
    ``min_samples`` (the donor never drops below ``min_samples``).
``"pathological"`` (McMahan et al. 2017, shards)
    Every node holds exactly ``k = classes_per_node`` distinct classes: the slots
    ``(i k + j) mod C`` (``j < k``) of a random class order, for nodes in a random order,
    so every class is held by ``floor(N k / C)`` or ``ceil(N k / C)`` nodes; each class's
    shuffled samples are cut into equal shards, one per node holding it.
``"quantity"``
    Label-iid but skewed sizes: node ``i`` holds ``min_samples + m_i`` samples with
    ``m ~ Multinomial(n - N min_samples, q)``, ``q ~ Dirichlet(alpha * 1_N)``; the samples
    are a random permutation of the pool cut at those sizes.
``"mixture"`` (FedEM-style, Marfoq et al. 2021)
    ``M = components`` latent distributions, each a fixed transformation of the pooled
    data (:class:`MixtureComponents`): component 0 is the identity, the others apply a
    label map, a feature (pixel) permutation, and/or a flip of the last feature axis
    (``transform``). Node ``i`` draws ``pi_i ~ Dirichlet(alpha * 1_M)``, receives an iid
    share of the pool (as ``"iid"``), and each of its samples is drawn from component
    ``m`` with probability ``pi_im`` and transformed by it. The label maps are
    ``y -> s^-1((s(y) + shift_m) mod C)`` for a random class order ``s`` and distinct
    shifts, so **any two label-mapped components disagree on every class**: no single
    model fits them all, while per-component models can (what D-EM should discover).

Per-node split
--------------
A node's samples are split into train and test by stratified systematic sampling: the
node's samples are shuffled, stably sorted by stratum (the label; for ``"mixture"`` the
pair component, label), and position ``p`` goes to test when
``floor((p + 1) f + u) > floor(p f + u)`` (``f = test_fraction``, one ``u ~ U[0, 1)`` per
node). So every stratum is split in the proportion ``f`` (within one sample), the test
set follows the node's own distribution (and components), and a stratum of two or more
samples always keeps a training sample when ``f <= 1/2``. A node whose training set would
be empty keeps its first sample for training.

Draw order
----------
One ``numpy.random.default_rng(seed)``: the partition's draws (for ``"mixture"``: the
components, the weights ``pi``, the iid allocation, the component of every sample), then
one split per node in node order.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from p2p_fmtl.data.base import FederatedDataset, NodeDataset
from p2p_fmtl.errors import ConfigError

__all__ = [
    "PARTITIONS",
    "TRANSFORMS",
    "MixtureComponents",
    "check_choice",
    "check_int",
    "check_real",
    "dirichlet_partition",
    "mixture_components",
    "federate",
    "iid_partition",
    "make_components",
    "mixture_partition",
    "partition",
    "pathological_partition",
    "quantity_partition",
    "split_node",
]

PARTITIONS = ("dirichlet", "pathological", "mixture", "quantity", "iid")
TRANSFORMS = ("label", "pixel", "both", "mixed")
_RESAMPLES = 10


# ------------------------------------------------------------------------ validation


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def check_int(key: str, value: object, low: int, high: int | None = None, why: str = "") -> int:
    """``value`` as an int in ``[low, high]`` or a one-line ``ConfigError`` naming ``data.key``."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"data.{key}: got {value!r}, expected an integer {bound}{why}")
    return int(value)


def check_real(
    key: str,
    value: object,
    low: float,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the interval, or a one-line ``ConfigError``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    ok = ok and math.isfinite(value)
    if ok:
        ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
    if not ok:
        lo = ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ConfigError(f"data.{key}: got {value!r}, expected a number in {lo}, {hi}")
    return float(value)


def check_choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"data.{key}: got {value!r}, expected one of {allowed}")
    return value


def mixture_components(params) -> int:
    """A pooled dataset's ``recorded_components`` rule: the ``"mixture"`` partition
    records each sample's component, one of ``components``
    (:func:`p2p_fmtl.data.base.recorded_components`)."""
    return int(params["components"]) if params.get("partition") == "mixture" else 0


# ------------------------------------------------------------------------ partitioners


def iid_partition(n: int, n_nodes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation of ``range(n)`` cut into ``n_nodes`` nearly equal parts."""
    return [np.sort(p) for p in np.array_split(rng.permutation(n), n_nodes)]


def _need(n: int, n_nodes: int, min_samples: int) -> None:
    if n_nodes * min_samples > n:
        raise ConfigError(
            f"data.min_samples: got {min_samples}, but {n_nodes} nodes x {min_samples} samples "
            f"exceed the {n} pooled samples; lower data.min_samples or topology.n"
        )


def dirichlet_partition(
    y: np.ndarray,
    n_nodes: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_samples: int = 1,
) -> list[np.ndarray]:
    """Hsu et al. (2019): per class, node shares ``~ Dirichlet(alpha * 1_N)``.

    Redrawn up to 10 times until every node holds ``min_samples``; then topped up
    from the largest nodes (see the module docstring).
    """
    y = np.asarray(y)
    _need(len(y), n_nodes, min_samples)
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    for _ in range(_RESAMPLES):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(n_nodes, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        nodes = [np.concatenate(p) for p in parts]
        if min(len(p) for p in nodes) >= min_samples:
            break
    else:
        # top-up: move random samples from the largest node to each short node
        for i in range(n_nodes):
            while len(nodes[i]) < min_samples:
                donor = int(np.argmax([len(p) for p in nodes]))
                give = min(min_samples - len(nodes[i]), len(nodes[donor]) - min_samples)
                perm = rng.permutation(len(nodes[donor]))
                nodes[i] = np.concatenate([nodes[i], nodes[donor][perm[:give]]])
                nodes[donor] = nodes[donor][perm[give:]]
    return [np.sort(p) for p in nodes]


def pathological_partition(
    y: np.ndarray, n_nodes: int, classes_per_node: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Every node holds exactly ``classes_per_node`` distinct classes (balanced shards)."""
    y = np.asarray(y)
    classes = np.unique(y)
    c, k = len(classes), classes_per_node
    if not 1 <= k <= c:
        raise ConfigError(
            f"data.classes_per_node: got {k!r}, expected an integer in [1, {c}] (the classes)"
        )
    order = rng.permutation(c)
    node_order = rng.permutation(n_nodes)
    held = np.empty((n_nodes, k), dtype=np.int64)  # class positions held by each node
    for rank, i in enumerate(node_order):
        held[i] = order[(rank * k + np.arange(k)) % c]
    parts: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
    for ci in range(c):
        holders = np.flatnonzero((held == ci).any(axis=1))
        if len(holders) == 0:
            continue
        idx = rng.permutation(np.flatnonzero(y == classes[ci]))
        if len(idx) < len(holders):
            raise ConfigError(
                f"data.classes_per_node: got {k}, but class {classes[ci]} has {len(idx)} "
                f"samples for {len(holders)} nodes; lower data.classes_per_node or topology.n"
            )
        for i, shard in zip(holders, np.array_split(idx, len(holders)), strict=True):
            parts[i].append(shard)
    return [np.sort(np.concatenate(p)) for p in parts]


def quantity_partition(
    n: int, n_nodes: int, alpha: float, rng: np.random.Generator, *, min_samples: int = 1
) -> list[np.ndarray]:
    """Label-iid, sizes ``min_samples + Multinomial(n - N min_samples, Dirichlet(alpha))``."""
    _need(n, n_nodes, min_samples)
    q = rng.dirichlet(np.full(n_nodes, alpha))
    sizes = min_samples + rng.multinomial(n - n_nodes * min_samples, q)
    perm = rng.permutation(n)
    return [np.sort(p) for p in np.split(perm, np.cumsum(sizes)[:-1])]


@dataclass(frozen=True)
class MixtureComponents:
    """``M`` fixed transformations of ``(x, y)``; component 0 is the identity.

    ``label_maps (M, C)``: ``y -> label_maps[m, y]``; ``feature_perms (M, D)``: the
    flattened features are reindexed ``x_flat[:, feature_perms[m]]``; ``flips (M,)``:
    reverse the last feature axis first. ``names (M,)``: e.g. ``"label_shift"``,
    ``"pixel_permutation"``, ``"flip"``, joined by ``"+"``.
    ``MixtureComponents.from_info(ds.info)`` rebuilds them from a dataset's ``info``.
    """

    names: tuple[str, ...]
    label_maps: np.ndarray
    feature_perms: np.ndarray
    flips: np.ndarray

    @classmethod
    def from_info(cls, info: dict) -> MixtureComponents:
        return cls(
            tuple(info["components"]), info["label_maps"], info["feature_perms"], info["flips"]
        )

    def apply(self, m: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Component ``m`` applied to the samples ``x (n, ...)``, ``y (n,)``."""
        if self.flips[m]:
            x = x[..., ::-1]
        flat = x.reshape(x.shape[0], math.prod(x.shape[1:]))[:, self.feature_perms[m]]
        return flat.reshape(x.shape), self.label_maps[m][y]


def make_components(
    m: int, num_classes: int, feature_shape: tuple[int, ...], transform: str, rng
) -> MixtureComponents:
    """Draw ``m`` components (see the module docstring) for ``transform`` in TRANSFORMS."""
    c, d = num_classes, math.prod(feature_shape)
    kinds: list[tuple[str, ...]] = [()]
    cycle = {"label": [("label",)], "pixel": [("pixel",)], "both": [("label", "pixel")]}
    cycle["mixed"] = [("label",), ("pixel",), ("flip",)]
    for j in range(1, m):
        kind = cycle[transform][(j - 1) % len(cycle[transform])]
        if transform == "mixed" and j >= 4:  # one flip only; then more label maps
            kind = ("label",)
        kinds.append(kind)
    n_label = sum("label" in k for k in kinds)
    if n_label > c - 1:
        raise ConfigError(
            f"data.components: got {m}, but transform {transform!r} needs {n_label} distinct "
            f"label maps and {c} classes allow at most {c - 1}; lower data.components"
        )
    order = rng.permutation(c)  # s: position -> class
    pos = np.argsort(order)  # s^-1
    shifts = iter(rng.choice(np.arange(1, c), size=n_label, replace=False))
    label_maps = np.tile(np.arange(c), (m, 1))
    feature_perms = np.tile(np.arange(d), (m, 1))
    flips = np.zeros(m, dtype=bool)
    names = ["identity"]
    for j, kind in enumerate(kinds[1:], start=1):
        if "label" in kind:
            label_maps[j] = order[(pos + next(shifts)) % c]
        if "pixel" in kind:
            feature_perms[j] = rng.permutation(d)
        flips[j] = "flip" in kind
        full = {"label": "label_shift", "pixel": "pixel_permutation", "flip": "flip"}
        names.append("+".join(full[k] for k in kind))
    return MixtureComponents(tuple(names), label_maps, feature_perms, flips)


def mixture_partition(
    n: int, n_nodes: int, components: MixtureComponents, alpha: float, rng
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Per node: pool indices (iid share) and the component of each; and ``pi (N, M)``."""
    m = len(components.names)
    pi = rng.dirichlet(np.full(m, alpha), size=n_nodes)
    parts = iid_partition(n, n_nodes, rng)
    comps = [rng.choice(m, size=len(p), p=pi[i]).astype(np.int64) for i, p in enumerate(parts)]
    return parts, comps, pi


def split_node(
    strata: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(train, test)`` of a node's samples: stratified systematic sampling."""
    n = len(strata)
    perm = rng.permutation(n)
    order = perm[np.argsort(strata[perm], kind="stable")]
    u = rng.random()
    p = np.arange(n)
    is_test = np.floor((p + 1) * test_fraction + u) > np.floor(p * test_fraction + u)
    if n and is_test.all():
        is_test[0] = False
    return np.sort(order[~is_test]), np.sort(order[is_test])


def partition(
    y: np.ndarray,
    n_nodes: int,
    scheme: str,
    rng: np.random.Generator,
    *,
    alpha: float = 0.5,
    classes_per_node: int = 2,
    min_samples: int = 1,
) -> list[np.ndarray]:
    """Pool indices per node for ``scheme`` in iid, dirichlet, pathological, quantity."""
    if scheme == "iid":
        _need(len(y), n_nodes, max(min_samples, 1))
        return iid_partition(len(y), n_nodes, rng)
    if scheme == "dirichlet":
        return dirichlet_partition(y, n_nodes, alpha, rng, min_samples=min_samples)
    if scheme == "pathological":
        return pathological_partition(y, n_nodes, classes_per_node, rng)
    if scheme == "quantity":
        return quantity_partition(len(y), n_nodes, alpha, rng, min_samples=min_samples)
    raise ConfigError(f"data.partition: got {scheme!r}, expected one of iid, dirichlet, ...")


def federate(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    n_nodes: int,
    *,
    partition_name: str,
    alpha: float,
    classes_per_node: int,
    components: int,
    transform: str,
    min_samples: int,
    test_fraction: float,
    seed: int,
) -> FederatedDataset:
    """Validate the common keys, partition ``(x, y)``, split per node: a multiclass dataset.

    ``info``: ``"partition"``, ``"train_index"`` / ``"test_index"`` (per node, indices into
    the pool), ``"num_samples"`` (N,) training sizes, ``"label_counts"`` (N, C) training
    label counts, and for ``"mixture"`` ``"mixture_weights"`` (N, M), ``"components"``
    (names), ``"label_maps"``, ``"feature_perms"``, ``"flips"``, ``"train_component"`` /
    ``"test_component"`` (per node, the component of each sample); a ``"mixture"`` node's
    ``NodeDataset.component_train`` also holds its training samples' components.
    """
    n_nodes = check_int("n_nodes", n_nodes, 1)
    partition_name = check_choice("partition", partition_name, PARTITIONS)
    alpha = check_real("alpha", alpha, 0.0, low_open=True)
    classes_per_node = check_int("classes_per_node", classes_per_node, 1, num_classes)
    components = check_int("components", components, 1)
    transform = check_choice("transform", transform, TRANSFORMS)
    min_samples = check_int("min_samples", min_samples, 1)
    test_fraction = check_real("test_fraction", test_fraction, 0.0, 1.0, high_open=True)
    seed = check_int("seed", seed, 0)

    rng = np.random.default_rng(seed)
    info: dict = {"generator": name, "partition": partition_name}
    comp_of = None
    if partition_name == "mixture":
        mc = make_components(components, num_classes, x.shape[1:], transform, rng)
        _need(len(y), n_nodes, min_samples)
        parts, comp_of, pi = mixture_partition(len(y), n_nodes, mc, alpha, rng)
        info.update(
            mixture_weights=pi,
            components=list(mc.names),
            label_maps=mc.label_maps,
            feature_perms=mc.feature_perms,
            flips=mc.flips,
        )
    else:
        parts = partition(
            y,
            n_nodes,
            partition_name,
            rng,
            alpha=alpha,
            classes_per_node=classes_per_node,
            min_samples=min_samples,
        )

    nodes, train_index, test_index, train_comp, test_comp = [], [], [], [], []
    for i, idx in enumerate(parts):
        strata = y[idx].astype(np.int64)
        if comp_of is not None:
            strata = comp_of[i] * num_classes + strata
        tr, te = split_node(strata, test_fraction, rng)
        xs, ys = x[idx], y[idx]
        if comp_of is not None:
            xs, ys = xs.copy(), ys.copy()
            for m in np.unique(comp_of[i]):
                sel = comp_of[i] == m
                xs[sel], ys[sel] = mc.apply(int(m), xs[sel], ys[sel])
            train_comp.append(comp_of[i][tr])
            test_comp.append(comp_of[i][te])
        nodes.append(
            NodeDataset(
                x_train=np.ascontiguousarray(xs[tr], dtype=np.float32),
                y_train=ys[tr].astype(np.int32),
                x_test=np.ascontiguousarray(xs[te], dtype=np.float32),
                y_test=ys[te].astype(np.int32),
                component_train=None if comp_of is None else comp_of[i][tr].astype(np.int32),
            )
        )
        train_index.append(idx[tr])
        test_index.append(idx[te])
    info.update(
        train_index=train_index,
        test_index=test_index,
        num_samples=np.array([nd.n_train for nd in nodes], dtype=np.int64),
        label_counts=np.stack(
            [np.bincount(nd.y_train, minlength=num_classes) for nd in nodes]
        ).astype(np.int64),
        params={
            "n_nodes": n_nodes,
            "partition": partition_name,
            "alpha": alpha,
            "classes_per_node": classes_per_node,
            "components": components,
            "transform": transform,
            "min_samples": min_samples,
            "test_fraction": test_fraction,
            "seed": seed,
        },
    )
    if comp_of is not None:
        info.update(train_component=train_comp, test_component=test_comp)
    return FederatedDataset(nodes=nodes, task="multiclass", num_classes=num_classes, info=info)
