"""Pack ragged per-node datasets into buckets of arrays with a leading node axis.

Node ``i`` holds ``n_i`` samples (50 to 1,000 on the FedEM recipe).  Padding every node
to the largest wastes most of the work, so nodes are grouped into *buckets* and padded
only to their bucket's largest node:

* a node's cost per epoch is its number of batches ``k_i = ceil(n_i / B)``, so nodes are
  keyed by ``k_i``;
* with at most ``max_buckets`` distinct keys there is one bucket per key; with more, the
  sorted keys are split into ``max_buckets`` contiguous groups by dynamic programming,
  minimising the padded work ``Σ_b N_b · max_{i∈b} k_i``.

Each bucket is its own set of arrays ``(N_b, S_b, ...)`` with ``S_b = max_{i∈b} n_i``; the
engine vmaps each bucket separately (a Python loop over at most ``max_buckets``
buckets, never over nodes).  The padding fraction ``1 − Σ_i n_i / Σ_b N_b S_b`` is
reported in the run summary.  ``bucketing = "none"`` pads every node to the largest;
``"auto"`` (default) also weighs each extra bucket's compilation time against the work it
saves over the run; ``"full"`` always uses up to ``max_buckets`` (least padding).

**Chunks of nodes.**  On a CPU, a round vmapped over a whole large bucket streams every
minibatch of every node through memory several times per step (gather, forward,
backward): once a bucket's per-step working set outgrows the caches, each sample costs
about 3× more.  So a large bucket is cut into chunks of ``c`` nodes whose data fit a
budget of ``chunk_bytes`` (a few MB: the last-level cache), and the engine runs the
chunks one after the other (a ``lax.scan``, each chunk vmapped).  The time per node then
no longer depends on the size of the network.  To keep every chunk the same shape, a
bucket is padded with *dummy nodes* (id ``-1``, no samples) up to ``devices · k · c``
nodes; ``c`` is chosen within a factor two of the budget to keep the dummies few, and the
padding fraction counts them.  With several devices every bucket is padded to a multiple
of ``devices`` so that it splits evenly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .base import FederatedDataset


class Bucket(NamedTuple):
    """Nodes ``nodes`` (ids, increasing) and their padded arrays."""

    nodes: np.ndarray  # (N_b,) int
    x_train: np.ndarray  # (N_b, S_b, *feature_shape): float32, int32 for token features
    y_train: np.ndarray  # (N_b, S_b, *label_shape): () most tasks, (T,) lm, (2,) multitask
    n_train: np.ndarray  # (N_b,) int32
    x_test: np.ndarray  # (N_b, T_b, *feature_shape)
    y_test: np.ndarray  # (N_b, T_b)
    n_test: np.ndarray  # (N_b,) int32
    size_fraction: np.ndarray  # (N_b,) float32: n_train / max n_train over the network
    chunk: int = 0  # nodes per chunk and device of local work (0: the whole bucket at once)
    # (N_b, S_b) int32: each training sample's latent component, -1 for none and padding;
    # None unless every node's data record them (NodeDataset.component_train)
    component: np.ndarray | None = None

    @property
    def dummies(self) -> int:
        """Padding nodes (id -1, no samples) that make the chunks equal."""
        return int(np.sum(self.nodes < 0))


class PackedData(NamedTuple):
    buckets: tuple[Bucket, ...]
    n_train: np.ndarray  # (N,) int32, node order
    n_test: np.ndarray  # (N,) int32
    feature_shape: tuple[int, ...]

    @property
    def num_nodes(self) -> int:
        return len(self.n_train)

    @property
    def padded_rows(self) -> int:
        return int(sum(b.x_train.shape[0] * b.x_train.shape[1] for b in self.buckets))

    @property
    def nbytes(self) -> int:
        """Bytes of all packed arrays."""
        fields = ("x_train", "y_train", "n_train", "x_test", "y_test", "n_test", "size_fraction")
        fields += ("component",)
        arrays = (getattr(b, f) for b in self.buckets for f in fields)
        return int(sum(a.nbytes for a in arrays if a is not None))

    @property
    def dummy_nodes(self) -> int:
        return int(sum(b.dummies for b in self.buckets))

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(b.chunk for b in self.buckets)

    @property
    def padding_fraction(self) -> float:
        """Share of the packed training rows that are padding."""
        return float(1.0 - self.n_train.sum() / max(self.padded_rows, 1))


ALIGN = 64  # bytes: XLA's CPU runtime uses host buffers this aligned in place (no copy)


def aligned_zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """``np.zeros(shape, dtype)`` starting on an :data:`ALIGN`-byte boundary.

    ``jax.device_put`` of such an array shares its memory on a CPU; numpy's own
    allocations are only 16-byte aligned, and XLA copies those on first use, which
    doubles the memory of a large run's data.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.zeros(nbytes + ALIGN, np.uint8)
    start = (-buf.ctypes.data) % ALIGN
    return buf[start : start + nbytes].view(dtype).reshape(shape)


def bucket_groups(n_train: np.ndarray, batch_size: int, max_buckets: int) -> list[np.ndarray]:
    """Node ids per bucket: nodes grouped by batches per epoch, at most ``max_buckets``."""
    keys = np.maximum(-(-n_train // batch_size), 1)
    distinct, counts = np.unique(keys, return_counts=True)
    m = len(distinct)
    k = min(max_buckets, m)
    # cost[a][b]: padded work of one bucket holding distinct keys a..b (inclusive)
    csum = np.concatenate([[0], np.cumsum(counts)])
    inf = float("inf")
    best = np.full((k + 1, m + 1), inf)
    cut = np.zeros((k + 1, m + 1), dtype=int)
    best[0, 0] = 0.0
    for g in range(1, k + 1):
        for b in range(1, m + 1):
            for a in range(g - 1, b):
                c = best[g - 1, a] + (csum[b] - csum[a]) * distinct[b - 1]
                if c < best[g, b]:
                    best[g, b], cut[g, b] = c, a
    bounds, b = [], m
    for g in range(k, 0, -1):
        a = cut[g, b]
        bounds.append((a, b))
        b = a
    groups = []
    for a, b in reversed(bounds):
        members = np.flatnonzero((keys >= distinct[a]) & (keys <= distinct[b - 1]))
        groups.append(members)
    return groups


# rough cost of one padded sample-row per round and model copy (D-EM, 1 CPU core: ~1.7e-7 s)
ROW_SECONDS = 2e-7
BUCKET_COMPILE_SECONDS = 2.5  # rough extra compilation time per bucket (CPU)


def padded_work(groups: list[np.ndarray], n_train: np.ndarray, batch_size: int) -> int:
    """Σ_b N_b · ceil(S_b / B) · B: padded rows processed per epoch."""
    return int(sum(len(g) * -(-int(n_train[g].max()) // batch_size) * batch_size for g in groups))


def choose_buckets(
    n_train: np.ndarray, batch_size: int, max_buckets: int, rounds: int, copies: int = 1
) -> list[np.ndarray]:
    """The number of buckets whose padded work over the run, plus compilation, is smallest.

    Each extra bucket adds a copy of the round to the compiled program (about
    :data:`BUCKET_COMPILE_SECONDS`); it pays off when it saves more than that in padded
    work over ``rounds`` rounds (``copies`` models per node, e.g. D-EM's M components).
    """
    best, best_cost = None, float("inf")
    for k in range(1, max_buckets + 1):
        groups = bucket_groups(n_train, batch_size, k)
        cost = rounds * copies * padded_work(groups, n_train, batch_size) * ROW_SECONDS
        cost += BUCKET_COMPILE_SECONDS * (len(groups) - 1)
        if cost < best_cost - 1e-12:
            best, best_cost = groups, cost
        if len(groups) < k:  # no more distinct keys to split
            break
    return best


CHUNK_BYTES = 2 << 20  # default data budget of one chunk of nodes (about L2 + a share of L3)


def chunk_size(
    n_nodes: int,
    node_bytes: int,
    chunk_bytes: int,
    devices: int = 1,
    step_bytes: int | None = None,
) -> int:
    """Nodes per chunk (per device) for a bucket of ``n_nodes`` nodes holding
    ``node_bytes`` bytes of data each; 0 when the bucket is run at once.

    The target is ``c* = chunk_bytes // node_bytes`` nodes; among ``c* / 2 .. 2 c*`` the
    size needing the fewest dummy nodes is taken (ties: the one closest to ``c*``).  A
    bucket that fits in two chunks is not cut, nor one whose minibatches of one step
    (``step_bytes`` per node) fit in ``2 · chunk_bytes`` together: its per-step working
    set is in cache already, and the extra loop only costs (most with XLA's threads).
    """
    if chunk_bytes <= 0:
        return 0
    per_device = -(-n_nodes // devices)
    target = max(1, chunk_bytes // max(node_bytes, 1))
    if per_device < 2 * target:
        return 0
    if step_bytes is not None and per_device * step_bytes <= 2 * chunk_bytes:
        return 0

    def cost(c):
        return (-(-per_device // c) * c - per_device, abs(c - target))

    return min(range(max(1, target // 2), 2 * target + 1), key=cost)


def padded_nodes(n_nodes: int, chunk: int, devices: int = 1) -> int:
    """Nodes of a bucket once padded with dummies to ``devices · k · chunk`` (or to a
    multiple of ``devices`` without chunks)."""
    unit = devices * max(chunk, 1)
    return -(-n_nodes // unit) * unit


def plan_groups(
    n_train: np.ndarray,
    batch_size: int | None,
    bucketing: str = "auto",
    max_buckets: int = 8,
    rounds: int = 100,
    copies: int = 1,
) -> list[np.ndarray]:
    """The node ids of each bucket :func:`pack` makes (see its ``bucketing``)."""
    if bucketing == "none" or batch_size is None:
        return [np.arange(len(n_train))]
    if bucketing == "full":
        return bucket_groups(n_train, batch_size, max_buckets)
    return choose_buckets(n_train, batch_size, max_buckets, rounds, copies)


def pack(
    ds: FederatedDataset,
    *,
    batch_size: int | None = None,
    bucketing: str = "auto",
    max_buckets: int = 8,
    rounds: int = 100,
    copies: int = 1,
    chunk_bytes: int = 0,
    node_chunk: int = 0,
    devices: int = 1,
    storage: str = "float32",
) -> PackedData:
    """Pack the nodes' data into buckets.

    ``bucketing``: ``"full"`` — up to ``max_buckets`` buckets, least padding;
    ``"auto"`` — the bucket count with the least estimated work plus compilation time
    for ``rounds`` rounds (:func:`choose_buckets`); ``"none"`` — one bucket.

    Chunks: ``node_chunk > 0`` cuts every bucket larger than that into chunks of that
    many nodes; otherwise ``chunk_bytes > 0`` chooses each bucket's chunk from its data
    size (:func:`chunk_size`); ``0`` and ``0`` run every bucket at once.  ``devices``:
    buckets are padded to a multiple of it (and of the chunk).

    ``storage``: the dtype of float features (``"float32"``, or ``"bfloat16"`` /
    ``"float16"``: half the bytes, rounded once here); integer token features stay int32.
    """
    first = ds.first
    # labels: float32 for regression and multitask (target, head id), int32 class or token
    # ids otherwise; features: float32, or int32 when they are integer tokens (lm, text)
    y_dtype = np.float32 if ds.task in ("regression", "multitask") else np.int32
    x_dtype = np.int32 if np.issubdtype(first.x_train.dtype, np.integer) else _float(storage)
    n_train = ds.n_train.astype(np.int32)
    n_test = ds.n_test.astype(np.int32)
    frac = (n_train / max(int(n_train.max()), 1)).astype(np.float32)
    groups = plan_groups(n_train, batch_size, bucketing, max_buckets, rounds, copies)
    if ds.streamed:
        known = ds.nodes.has_components
    else:
        known = all(nd.component_train is not None for nd in ds.nodes)
    x_shape, y_shape = tuple(first.x_train.shape[1:]), tuple(first.y_train.shape[1:])
    row_bytes = (
        int(np.prod(x_shape, dtype=np.int64)) * np.dtype(x_dtype).itemsize
        + max(int(np.prod(y_shape, dtype=np.int64)), 1) * np.dtype(y_dtype).itemsize
    )
    buckets = []
    for ids in groups:
        s = int(n_train[ids].max())
        t = int(max(n_test[ids].max(), 1))
        if node_chunk > 0:
            chunk = node_chunk if -(-len(ids) // devices) > node_chunk else 0
        else:
            step = min(batch_size or s, s) * row_bytes
            chunk = chunk_size(len(ids), s * row_bytes, chunk_bytes, devices, step)
        rows = padded_nodes(len(ids), chunk, devices)
        extra = rows - len(ids)
        buckets.append(
            Bucket(
                nodes=_pad(ids.astype(np.int64), extra, -1),
                x_train=aligned_zeros((rows, s, *x_shape), x_dtype),
                y_train=aligned_zeros((rows, s, *y_shape), y_dtype),
                n_train=_pad(n_train[ids], extra),
                x_test=aligned_zeros((rows, t, *x_shape), x_dtype),
                y_test=aligned_zeros((rows, t, *y_shape), y_dtype),
                n_test=_pad(n_test[ids], extra),
                size_fraction=_pad(frac[ids], extra),
                chunk=chunk,
                component=np.full((rows, s), -1, np.int32) if known else None,
            )
        )
    # one pass over the nodes (a stream generates each one here), each written into its
    # bucket's row: the per-node arrays and the packed ones never coexist in full
    where_b = np.empty(len(n_train), np.int64)
    where_r = np.empty(len(n_train), np.int64)
    for b, ids in enumerate(groups):
        where_b[ids], where_r[ids] = b, np.arange(len(ids))
    for i, nd in enumerate(ds.nodes):
        bucket, r = buckets[where_b[i]], where_r[i]
        bucket.x_train[r, : nd.n_train] = nd.x_train
        bucket.y_train[r, : nd.n_train] = nd.y_train
        bucket.x_test[r, : nd.n_test] = nd.x_test
        bucket.y_test[r, : nd.n_test] = nd.y_test
        if known:
            bucket.component[r, : nd.n_train] = nd.component_train
    return PackedData(tuple(buckets), n_train, n_test, ds.feature_shape)


def _float(storage: str) -> np.dtype:
    """The numpy dtype of ``data.storage`` (bfloat16 from ml_dtypes, JAX's own)."""
    if storage == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(storage)


def _pad(a: np.ndarray, extra: int, value=0) -> np.ndarray:
    """``a`` with ``extra`` more entries on its leading axis, filled with ``value``."""
    if extra == 0:
        return a
    return np.concatenate([a, np.full((extra, *a.shape[1:]), value, a.dtype)])
