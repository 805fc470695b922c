"""How much memory a run will need, estimated before anything large is built.

A mistyped size (``topology.n = 1e9``, ``data.n_test = 1e9``, ``run.rounds = 1e9``, a
complete graph of 20,000 nodes, ``algorithm.components = 1e6``, a stray label of
5,000,000 that gives the model five million outputs) used to make a run grow until the
system killed it.  :func:`~p2p_fmtl.assemble.assemble` checks twice instead:

1. :func:`estimate_config`, from the resolved config alone, before the graph is built or
   the data generated: the data from the generator's sizes (or the files' sizes), the
   graph from the builder's expected edge count, per-evaluation results;
2. :func:`estimate_parts`, once the data set is loaded and the model built but before
   the data are packed or any parameter exists: the same with the data's real sizes,
   plus the models (parameter count from ``jax.eval_shape``, times nodes, copies and
   optimizer state, and one more copy of both while a copy is fine-tuned before an
   evaluation, ``algorithm.finetune_epochs``) and the activations of an evaluation
   (which runs every node's whole training and test set at once).

:func:`check` compares an estimate with the memory this machine has available
(``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf``): over it, a one-line
:class:`~p2p_fmtl.errors.UserError` ("needs ~X GiB, this machine has Y GiB available
(estimate: data A, models B, graph C, results D)"); over 70 % of it, a ``UserWarning``.
``P2P_FMTL_MEMORY_CHECK=0`` turns the check off.  The estimate is of host memory: on an
accelerator the models and activations live in its own memory, which is not estimated.

The factors below were fitted to the peak resident memory above the process's memory
before the run, on a CPU: estimate / measured was 0.58 to 1.52 over ten configs (8 to
100,000 nodes; linear, MLP with Adam, tiny_lm; D-EM with 3 and 10^6 components; a
complete graph of 2,000 nodes; a stray label of 5,000,000; 0.17 to 5.5 GiB measured).
They aim at the right size within a factor of two, not at bytes.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

ENV = "P2P_FMTL_MEMORY_CHECK"
WARN_FRACTION = 0.7

# graph: a networkx edge (adjacency dicts both ways) and the edge arrays of the network,
# its neighbour tables and the process's candidate edges; a node's dicts and rows
EDGE_BYTES = 300
NODE_BYTES = 1500
# a graph built as numpy edge arrays (topologies.EdgeGraph: the large rings, tori, grids
# and random regular graphs): the arrays and the network's tables, no adjacency dicts
ARRAY_EDGE_BYTES = 120
ARRAY_NODE_BYTES = 100
ARRAY_BUILDERS = ("ring", "torus", "grid", "random_regular")
DENSE_LIMIT = 2000  # network.DENSE_CHECK_LIMIT: a dense float64 W is validated up to here
# models: live copies of the per-node parameters (carry, gradients, update, mixing output,
# evaluation) and of each optimizer state element
PARAM_COPIES = 5
STATE_COPIES = 2
ACT_COPIES = 2  # an evaluation's activations: forward values and the loss's temporaries
HISTORY_ROW_BYTES = 2048  # one evaluation's metrics row (and its copy in a checkpoint)
LEAF_JSON_FACTOR = 6  # Python objects of a parsed JSON file, per byte of the file
COMPILE_BYTES = 150 << 20  # XLA's compilation of the round and evaluation programs


PARTS = ("data", "models", "graph", "results")


@dataclass
class Estimate:
    """Bytes a run needs, by part; ``why`` says what each part is made of (naming the
    settings that size it), ``notes`` what looks like a mistake."""

    data: float = 0.0
    models: float = 0.0
    graph: float = 0.0
    results: float = 0.0
    why: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.data + self.models + self.graph + self.results + COMPILE_BYTES

    def parts(self) -> str:
        """``"data 1.2 GiB, graph 3 MiB, ..."``: the parts estimated so far."""
        return ", ".join(f"{t} {_size(getattr(self, t))}" for t in PARTS if getattr(self, t))

    def largest(self) -> str:
        """What the largest part is made of."""
        part = max(PARTS, key=lambda t: getattr(self, t))
        return f"{part}: {self.why[part]}" if part in self.why else part


def _size(b: float) -> str:
    """Bytes in MiB, GiB, TiB or PiB, three significant digits."""
    for unit, scale in (("PiB", 50), ("TiB", 40), ("GiB", 30)):
        if b >= 0.1 * 2**scale:
            return f"{b / 2**scale:.3g} {unit}"
    return f"{b / 2**20:.3g} MiB"


# --------------------------------------------------------------------------- the machine
def available_bytes() -> float | None:
    """Memory available to a new allocation: ``MemAvailable`` (Linux), else free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def check(est: Estimate, *, warn: bool = True) -> None:
    """Refuse an estimate above the available memory, warn above 70 % of it."""
    if os.environ.get(ENV, "1").strip() == "0":
        return
    avail = available_bytes()
    if avail is None:  # pragma: no cover - no way to tell
        return
    need = est.total
    note = "".join(f"; {n}" for n in [f"largest: {est.largest()}", *est.notes])
    if need > avail:
        raise UserError(
            f"memory: the run needs ~{_size(need)}, this machine has {_size(avail)} available "
            f"(estimate: {est.parts()}){note}; reduce the sizes named, or set {ENV}=0 to "
            "run anyway"
        )
    if warn and need > WARN_FRACTION * avail:
        warnings.warn(
            f"memory: the run needs ~{_size(need)} of the {_size(avail)} available "
            f"(estimate: {est.parts()}){note}",
            UserWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- the graph
def expected_edges(topo: dict[str, Any], n: int) -> float:
    """Edges the topology builder is expected to give on ``n`` nodes."""
    name, pairs = topo["name"], n * (n - 1) / 2
    log2n = math.log2(max(n, 2))
    if name == "complete":
        return pairs
    if name == "erdos_renyi":
        return topo.get("p", 0.5) * pairs
    if name == "random_regular":
        return topo.get("d", 4) * n / 2
    if name == "small_world":
        return topo.get("k", 4) * n / 2
    if name == "barabasi_albert":
        return topo.get("m", 2) * n
    if name == "random_geometric":
        r = topo.get("radius") or math.sqrt(2 * math.log(max(n, 2)) / (math.pi * n))
        return pairs * min(math.pi * r * r, 1.0)
    if name == "hypercube":
        return n * log2n / 2
    if name == "exponential":
        return n * (math.floor(math.log2(max(n - 1, 1))) + 1)
    if name == "two_cliques":
        return 2 * (n / 2) * (n / 2 - 1) / 2 + topo.get("bridges", 1)
    if name == "planted_partition":
        g = max(topo.get("groups", 4), 1)
        inside = g * (n / g) * (n / g - 1) / 2
        return topo.get("p_in", 0.5) * inside + topo.get("p_out", 0.02) * (pairs - inside)
    if name == "edgelist":
        try:  # a line per edge, ~8 bytes a line at least
            return Path(topo["path"]).stat().st_size / 8
        except (OSError, TypeError, KeyError):
            return n
    if name in ("ring", "star"):
        return float(n)
    return 2.0 * n  # torus, grid


def graph_why(cfg, n: int, edges: float) -> str:
    topo = cfg["topology"]
    return (
        f"{n} nodes and ~{edges:.3g} edges (topology.n, topology.name = {topo['name']!r}, "
        f"topology.mixing = {topo['mixing']!r})"
    )


def graph_bytes(cfg, n: int, edges: float, max_degree: float | None = None) -> float:
    """The graph, its mixing weights and the network's arrays."""
    topo = cfg["topology"]
    deg = 2 * edges / max(n, 1) if max_degree is None else max_degree
    table = n * 2 ** math.ceil(math.log2(max(deg + 1, 1))) * 24  # neighbour tables
    from topologies.generators import LARGE_GRAPH_NODES

    if n >= LARGE_GRAPH_NODES and topo.get("name") in ARRAY_BUILDERS:
        out = edges * ARRAY_EDGE_BYTES + n * ARRAY_NODE_BYTES + table
    else:
        out = edges * EDGE_BYTES + n * NODE_BYTES + table
    nnz = 2 * edges + n
    dense = topo["operator"] == "dense" or (
        topo["operator"] == "auto" and (n <= 256 or nnz * 8 >= n * n)
    )
    if dense:
        out += 3 * 4.0 * n * n  # W in float32, its device copy, a mixed round's product
    if n <= DENSE_LIMIT:
        out += 6 * 8.0 * n * n  # validation and spectral gap on a dense float64 W
    if topo["mixing"] == "sample_weighted":
        out += 8 * 8.0 * n * n  # the server's all-pairs edge list
    if topo["mixing"].startswith("fmmc"):
        from topologies.fmmc import fmmc_memory_bytes

        out += fmmc_memory_bytes(n, int(edges))  # the first-order solver's work arrays
    return out


# --------------------------------------------------------------------------- the data
def _lognormal_capped_mean(mu: float, sigma: float, lo: float, hi: float) -> float:
    """E[min(int(LogNormal(mu, sigma)) + lo, hi)] ≈ lo + E[min(Y, hi - lo)]."""
    c = max(hi - lo, 0.0)
    if c <= 0:
        return hi
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    z = (math.log(c) - mu) / sigma
    capped = math.exp(mu + sigma**2 / 2) * phi(z - sigma) + c * (1 - phi(z))
    return lo + capped


def _npz_bytes(path: str) -> float:
    """Uncompressed bytes of the arrays in a directory of ``.npz`` files (from the zip
    headers: nothing is read)."""
    total = 0.0
    try:
        names = [f for f in os.listdir(path) if f.lower().endswith(".npz")]
    except (OSError, TypeError):
        return 0.0
    for name in names:
        try:
            with zipfile.ZipFile(os.path.join(path, name)) as z:
                total += sum(i.file_size for i in z.infolist())
        except (OSError, zipfile.BadZipFile):
            continue
    return total


def _leaf_bytes(path: str) -> float:
    total = 0.0
    for split in ("train", "test"):
        try:
            d = Path(path) / split
            total += sum(f.stat().st_size for f in d.iterdir() if f.suffix.lower() == ".json")
        except (OSError, TypeError):
            continue
    return total


def config_data_bytes(cfg, n: int) -> tuple[float, str]:
    """The data of the ``[data]`` section on ``n`` nodes, generated and packed, and what
    it is made of (naming the settings)."""
    d = cfg["data"]
    name = d["name"]
    sizes = ("n_test", "samples", "test_samples", "dim", "seq_len", "vocab")
    keys = ", ".join(["topology.n", *(f"data.{k}" for k in sizes if k in d)])
    rows = row = 0.0  # samples (train + test) and bytes per sample
    extra = 0.0  # the generator's own arrays
    copies = 2.5  # the data set and its packed copy with padding
    if name == "fedem_synthetic":
        from .data.fedem_synthetic import STREAM_FROM

        if n >= STREAM_FROM:  # generated while packed: the packed copy only
            copies = 1.5
        train = _lognormal_capped_mean(4, 2, d["min_samples"], d["max_samples"])
        rows, row = n * (train + d["n_test"]), 4.0 * (d["dim"] + 1)
        extra = 8.0 * 2 * max(d["max_samples"], d["n_test"]) * d["dim"]  # one node, float64
        extra += 8.0 * d["components"] * (d["dim"] + n)  # the models and mixture weights
        keys += ", data.components"
    elif name == "clustered_linear":
        lo, hi = (list(d["samples"]) + [0, 0])[:2]
        rows, row = n * ((lo + hi) / 2 + d["n_test"]), 4.0 * (d["dim"] + 1)
    elif name == "dialects":
        rows, row = n * (d["samples"] + d["test_samples"]), 4.0 * 2 * d["seq_len"]
        extra = 8.0 * 3 * d["clusters"] * d["vocab"] ** 2  # transition matrices
        keys += f"; {d['clusters']} transition matrices of data.vocab^2 values"
    elif name == "mnist1d":
        rows, row = d["num_samples"], 4.0 * 41
        extra = 4.0 * 8 * 41 * d["num_samples"]  # the generator's intermediate signals
        keys = "data.num_samples"
    elif name in ("digits", "digits_multitask"):
        rows, row, keys = 1797, 4.0 * 66, "the digits"
    elif name == "npz":  # the files' arrays, as float32 / int32, and packed
        return 2.5 * _npz_bytes(d["path"]), f"the arrays of the files in {d['path']!r}"
    elif name == "leaf":
        return LEAF_JSON_FACTOR * _leaf_bytes(d["path"]), f"the JSON files in {d['path']!r}"
    why = f"~{rows:.3g} samples of {row / 4:.3g} values ({keys})"
    return copies * rows * row + extra, why


def dataset_bytes(ds) -> float:
    """Bytes of a loaded data set's arrays (a streamed one holds one node at a time)."""
    nodes = [ds.first] if ds.streamed else ds.nodes
    return float(
        sum(
            nd.x_train.nbytes + nd.y_train.nbytes + nd.x_test.nbytes + nd.y_test.nbytes
            for nd in nodes
        )
    )


def packed_bytes(ds, groups: list[np.ndarray]) -> float:
    """Bytes of the packed buckets (float32 / int32 values) for the node groups."""
    nd0 = ds.first
    x_row = 4.0 * max(int(np.prod(nd0.x_train.shape[1:])), 1)
    y_row = 4.0 * max(int(np.prod(nd0.y_train.shape[1:])), 1)
    n_train, n_test = ds.n_train, ds.n_test
    rows = sum(len(g) * (int(n_train[g].max()) + max(int(n_test[g].max()), 1)) for g in groups)
    return rows * (x_row + y_row)


# --------------------------------------------------------------------------- the models
def param_count(model) -> int:
    """Parameters of one model, from its shapes (nothing is allocated)."""
    import jax

    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    return int(sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)))


def optimizer_state_ratio(optimizer) -> float:
    """Elements of optimizer state per parameter (0 for plain SGD, 2 for Adam)."""
    import jax
    import jax.numpy as jnp

    p = 1 << 12
    state = jax.eval_shape(optimizer.init, {"w": jax.ShapeDtypeStruct((p,), jnp.float32)})
    sizes = [math.prod(s.shape) for s in jax.tree.leaves(state)]
    return sum(s for s in sizes if s >= p) / p


def activation_elems(model, feature_shape: tuple[int, ...], x_dtype) -> tuple[float, float]:
    """``(largest, total)``: values of the largest intermediate of one sample's forward
    pass, and of all of them (what a backward pass keeps), from the model's jaxpr."""
    import jax

    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    x = jax.ShapeDtypeStruct((1, *feature_shape), x_dtype)
    try:
        jaxpr = jax.make_jaxpr(model.apply)(params, x)
    except Exception:  # noqa: BLE001 - a model that cannot run fails later, with its error
        return 0.0, 0.0
    sizes = [math.prod(getattr(v.aval, "shape", ())) for e in jaxpr.eqns for v in e.outvars]
    return float(max(sizes, default=0)), float(sum(sizes))


# --------------------------------------------------------------------------- estimates
def _base(cfg, n: int, edges: float, max_degree: float | None = None) -> Estimate:
    """The graph and the kept results (a metrics row per evaluation)."""
    run, alg = cfg["run"], cfg["algorithm"]
    evals = run["rounds"] // run["eval_every"] + 2
    est = Estimate(graph=graph_bytes(cfg, n, edges, max_degree), results=evals * HISTORY_ROW_BYTES)
    est.why["graph"] = graph_why(cfg, n, edges)
    est.why["results"] = f"{evals} evaluations kept (run.rounds / run.eval_every)"
    if "dim" in alg and cfg["data"]["name"] == "none":  # averaging dim-vectors
        est.models = PARAM_COPIES * 4.0 * n * alg["dim"]
        est.why["models"] = f"{n} vectors of {alg['dim']} values (topology.n, algorithm.dim)"
    return est


def estimate_config(cfg, *, n: int | None = None, edges: float | None = None) -> Estimate:
    """The estimate from the config alone (``n`` and ``edges``: of a given graph)."""
    n = cfg["topology"]["n"] if n is None else n
    edges = expected_edges(cfg["topology"], n) if edges is None else edges
    est = _base(cfg, n, edges)
    if cfg["data"]["name"] != "none":
        est.data, est.why["data"] = config_data_bytes(cfg, n)
    return est


def estimate_parts(
    cfg,
    *,
    n: int,
    edges: float,
    max_degree: float,
    ds=None,
    groups: list[np.ndarray] | None = None,
    model=None,
    optimizer=None,
    copies: int = 1,
    on_host: bool = True,
) -> Estimate:
    """The estimate once the graph is built, the data loaded and the model built
    (``on_host=False``: the models live in an accelerator's memory, not counted)."""
    est = _base(cfg, n, edges, max_degree)
    if ds is None:
        if not on_host:
            est.models = 0.0
        return est
    groups = groups or [np.arange(ds.num_nodes)]
    est.data = dataset_bytes(ds) + packed_bytes(ds, groups)
    est.why["data"] = f"the data of data.name = {cfg['data']['name']!r} and its packed copy"
    if model is None or not on_host:
        return est
    p = param_count(model)
    k = optimizer_state_ratio(optimizer) if optimizer is not None else 0.0
    largest, total = activation_elems(model, ds.feature_shape, ds.first.x_train.dtype)
    n_train, n_test = ds.n_train, ds.n_test
    rows = sum(len(g) * (int(n_train[g].max()) + int(n_test[g].max())) for g in groups)
    batch = min(cfg["algorithm"].get("batch_size") or int(n_train.max()), int(n_train.max()))
    evaluation = ACT_COPIES * rows * largest  # every sample at once, layer by layer
    training = n * batch * total  # a minibatch per node, every layer kept for backward
    # fine-tuning before evaluation trains a copy of the state: parameters and optimizer
    tuned = cfg["algorithm"].get("finetune_epochs", 0) > 0
    params = n * copies * p * (PARAM_COPIES + STATE_COPIES * k + (1 + k) * tuned)
    est.models = 4.0 * (params + copies * max(evaluation, training))
    est.why["models"] = (
        f"{n} nodes x {copies} copies of {p} parameters, and the activations of {rows} "
        f"samples evaluated at once, {largest:.3g} values each at the widest layer "
        f"(topology.n, algorithm.components, model.name = {cfg['model']['name']!r}, "
        "the data's sizes and classes"
        + (", algorithm.finetune_epochs: a fine-tuned copy)" if tuned else ")")
    )
    if ds.num_classes > 100_000:
        est.notes.append(
            f"the model has {ds.num_classes} outputs, as the labels reach "
            f"{ds.num_classes - 1} (a stray label?)"
        )
    return est


__all__ = [
    "Estimate",
    "available_bytes",
    "check",
    "estimate_config",
    "estimate_parts",
    "expected_edges",
]
