"""The synthetic mixture dataset of FedEM (Marfoq et al., NeurIPS 2021), draw for draw.

This generator reproduces ``data/synthetic/generate_data.py`` of the official FedEM
code (repository ``omarfoq/FedEM``, file read at commit ``b80911f6``). With the same
arguments and seed it returns exactly the arrays that script writes to
``all_data/{train,test}/task_<i>/{train,test}.pkl`` and ``meta.pkl``.

The model
---------
There are ``M = components`` linear classifiers ``theta_c``, drawn uniformly from
``[-1, 1]^d``. Node ``i`` has mixture weights ``pi_i ~ Dirichlet(alpha * 1_M)``. Each sample
draws a component ``c ~ pi_i``, features ``x ~ U([-1, 1]^d)``, and the label
``y = round(sigmoid(x . theta_c + eps))`` with ``eps ~ N(0, noise^2)``, which is
``1[x . theta_c + eps > 0]``. Node ``i`` holds
``min(int(LogNormal(4, 2)) + min_samples, max_samples)`` training samples and
``n_test`` test samples. ``n_test`` is per node, as in the reference.

Draw order
----------
The reference seeds numpy's legacy global generator with ``np.random.seed(seed)``
(``main()``, and again in ``SyntheticMixtureDataset.__init__``, with no draw in
between) and then draws, all from that one stream:

1. ``np.random.lognormal(4, 2, N).astype(int)``, then ``min(s + 50, 1000)``
   (``get_num_samples``, called in ``__init__`` right after seeding);
2. for each node in order, ``np.random.dirichlet(alpha * ones(M))``
   (``generate_mixture_weights``);
3. ``np.random.uniform(-1, 1, size=(M, d))`` (``generate_components``);
4. for each node in order (``main()``): ``generate_data(i, n_i)`` for the training set,
   then ``generate_data(i, n_test)`` for the test set. Each call draws
   ``multinomial(n, pi_i)``, then ``uniform(-1, 1, size=(n, d))``, then for each
   component ``c`` in order ``normal(size=count_c, scale=noise)``. It then returns
   ``sklearn.utils.shuffle(x, y)``. With ``random_state=None``, sklearn's ``shuffle`` is
   ``resample(replace=False)``: ``indices = np.arange(n)``,
   ``check_random_state(None).shuffle(indices)``, and ``x[indices], y[indices]``.
   ``check_random_state(None)`` returns the global legacy ``RandomState``, so this
   consumes the same stream (read in ``sklearn/utils/_indexing.py::resample``).

Here all of these draws come from a private ``np.random.RandomState(seed)``. Its
methods produce the same streams as the legacy global functions, so the user's global
numpy state is never read or changed. ``x`` stays float64 until the labels have been
computed. The reference saves float64 features, and FedEM's ``TabularDataset`` casts
them to ``float32`` when it loads them. So the labels come from the float64 features,
and only the returned features are cast to ``float32``. The reference's other options
are fixed as the paper uses them: ``n_classes=2``, ``box=(-1, 1)`` and
``uniform_marginal=True``. ``train_tasks_frac`` only chooses the folder each node is
written to and draws nothing.

The quirk (``variant="reference"``, the default)
------------------------------------------------
In ``generate_data`` the reference sets ``current_index = 0`` and never advances it.
Every component ``c`` therefore labels the *same prefix* ``x[:count_c]`` and overwrites
the labels that earlier components wrote there. Samples past ``max_c count_c`` keep the
initial label 0. With the default parameters and seed 12345 that is 27.7% of all
samples for 30 nodes, and 26.6% of the test samples for 300 nodes. Before the
shuffle, sample ``j`` takes its label from the last component ``c`` with
``count_c > j``, or gets 0 if there is none. The default is ``"reference"`` because
the FedEM paper's published numbers were obtained on this data, and comparing with
them needs the same data.

``variant="corrected"`` advances the start index by ``count_c`` after each component.
Every sample then carries the label of the component that generated it, as the paper
describes. The random draws are identical in both variants: only the labels differ.

Metadata
--------
``info["component_train"][i]`` / ``info["component_test"][i]`` give, for each sample
after the shuffle, the component whose classifier produced its label. With
``"corrected"`` this is the component that generated the sample. With ``"reference"``
it is the last component that overwrote the sample's label, or ``-1`` if the sample
kept the default label 0.  ``NodeDataset.component_train`` holds the training ids too
(int32), for D-EM's oracle: it gives a ``-1`` sample to no component, since no
component's classifier labelled it (its label is the reference's default 0).

Confirmed against the reference source: all of the above. Unconfirmed: whether the
legacy ``RandomState`` streams of the numpy installed here are bit-identical to those
of the numpy version the FedEM authors ran. NumPy's policy (NEP 19) freezes the legacy
streams, but we did not compare against a pickle produced by the original script.
``sklearn`` is not installed here. Its ``shuffle`` was matched from its source, not run.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from p2p_fmtl.data.base import FederatedDataset, NodeDataset, NodeStream
from p2p_fmtl.errors import ConfigError

__all__ = ["fedem_synthetic", "VARIANTS"]

VARIANTS = ("reference", "corrected")

_BOX = (-1.0, 1.0)  # BOX in the reference; features and theta are uniform on it
_LOGNORMAL_MEAN = 4.0  # get_num_samples: np.random.lognormal(4, 2, num_tasks)
_LOGNORMAL_SIGMA = 2.0
# from this many nodes the nodes are a NodeStream: generated one at a time while they are
# packed (the same draws), and ``info`` keeps no per-sample component records
STREAM_FROM = 100_000


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(key: str, value: object, low: int, high: int | None = None) -> int:
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"data.{key}: got {value!r}, expected an integer {bound}")
    return int(value)


def _validate(
    n_nodes, dim, components, alpha, noise, n_test, variant, seed, min_samples, max_samples
) -> None:
    _check_int("n_nodes", n_nodes, 1)
    _check_int("dim", dim, 1)
    _check_int("components", components, 1)
    if not _is_real(alpha) or not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"data.alpha: got {alpha!r}, expected a finite number > 0")
    if not _is_real(noise) or not math.isfinite(noise) or noise < 0:
        raise ConfigError(f"data.noise: got {noise!r}, expected a finite number >= 0")
    _check_int("n_test", n_test, 1)
    if variant not in VARIANTS:
        raise ConfigError(f"data.variant: got {variant!r}, expected 'reference' or 'corrected'")
    _check_int("seed", seed, 0, 2**32 - 1)  # what np.random.RandomState accepts
    _check_int("min_samples", min_samples, 1)
    _check_int("max_samples", max_samples, 1)
    if max_samples < min_samples:
        raise ConfigError(
            f"data.max_samples: got {max_samples!r}, expected >= data.min_samples ({min_samples!r})"
        )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # The reference's sigmoid, 1 / (1 + exp(-z)), is kept as is so that the rounding
    # matches exactly (z = 0 gives 0.5, which rounds to 0).
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def _generate_split(
    rs: np.random.RandomState,
    n: int,
    pi: np.ndarray,
    theta: np.ndarray,
    noise: float,
    corrected: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One call to ``SyntheticMixtureDataset.generate_data`` followed by its shuffle.

    Returns ``(x float32, y int32, component int64, counts int64)``. The rows are
    shuffled and ``counts`` holds the multinomial component counts.
    """
    m, d = theta.shape
    counts = rs.multinomial(n, pi)
    y = np.zeros(n)  # float64, as in the reference
    comp = np.full(n, -1, dtype=np.int64)
    x = rs.uniform(_BOX[0], _BOX[1], size=(n, d))

    start = 0
    for c in range(m):
        k = int(counts[c])
        # Matrix-vector product on the block, exactly as the reference computes it
        # (same BLAS call, so the same rounding).
        y_hat = x[start : start + k] @ theta[c]
        eps = rs.normal(size=k, scale=noise)
        y[start : start + k] = np.round(_sigmoid(y_hat + eps))
        comp[start : start + k] = c
        if corrected:
            start += k
        # reference: current_index is never advanced (the quirk, see module docstring)

    # sklearn.utils.shuffle(x, y) with random_state=None, on our private generator
    idx = np.arange(n)
    rs.shuffle(idx)
    return x[idx].astype(np.float32), y[idx].astype(np.int32), comp[idx], counts.astype(np.int64)


def fedem_synthetic(
    n_nodes: int,
    *,
    dim: int = 150,
    components: int = 3,
    alpha: float = 0.4,
    noise: float = 0.1,
    n_test: int = 5000,
    variant: str = "reference",
    seed: int = 12345,
    min_samples: int = 50,
    max_samples: int = 1000,
    _stream: bool | None = None,
) -> FederatedDataset:
    """Generate FedEM's synthetic mixture dataset for ``n_nodes`` nodes.

    Parameters
    ----------
    n_nodes : int
        Number of nodes (``--n_tasks`` in the reference).
    dim : int
        Feature dimension (``--dimension``, default 150).
    components : int
        Number of mixture components ``M`` (``--n_components``, default 3).
    alpha : float
        Dirichlet concentration of the mixture weights (``--alpha``, default 0.4).
    noise : float
        Standard deviation of the Gaussian noise added to the logit
        (``--noise_level``, default 0.1).
    n_test : int
        Test samples *per node* (``--n_test``, default 5000).
    variant : {"reference", "corrected"}
        ``"reference"`` keeps the labelling quirk of the official code. ``"corrected"``
        gives every sample the label of its own component. See the module docstring.
    seed : int
        Seed of the legacy numpy generator (``--seed``, default 12345), in
        ``[0, 2**32 - 1]``.
    min_samples, max_samples : int
        Training-set size bounds of ``get_num_samples`` (50 and 1000 in the reference).
    _stream : bool or None
        Internal (not a config key): return the nodes as a
        :class:`~p2p_fmtl.data.base.NodeStream`, generated one at a time while packed
        (same draws, node for node).  ``None``: from :data:`STREAM_FROM` nodes on.
        Streamed data keep no per-sample records in ``info`` (``component_train``,
        ``component_test``, ``component_counts_*``); each node's
        ``NodeDataset.component_train`` is still there.

    Returns
    -------
    FederatedDataset
        ``task="binary"``, ``num_classes=2``. Features are ``float32`` of shape
        ``(n, dim)`` and labels are ``int32`` in ``{0, 1}``. ``info`` holds
        ``"mixture_weights"`` (N, M) float64, ``"components_theta"`` (M, dim) float64,
        ``"num_samples"`` (N,) training sizes, ``"component_counts_train"`` /
        ``"component_counts_test"`` (N, M) multinomial counts, ``"component_train"`` /
        ``"component_test"`` (lists of per-sample int64 component ids, ``-1`` = kept the
        default label 0), ``"variant"``, ``"seed"``, ``"generator"`` and ``"params"``.

    The user's global numpy random state is neither read nor modified.
    """
    _validate(
        n_nodes, dim, components, alpha, noise, n_test, variant, seed, min_samples, max_samples
    )
    n_nodes, dim, components, n_test = int(n_nodes), int(dim), int(components), int(n_test)
    alpha, noise = float(alpha), float(noise)
    corrected = variant == "corrected"

    rs = np.random.RandomState(int(seed))

    # 1. get_num_samples
    raw = rs.lognormal(_LOGNORMAL_MEAN, _LOGNORMAL_SIGMA, n_nodes).astype(int)
    num_samples = np.minimum(raw + int(min_samples), int(max_samples)).astype(np.int64)

    # 2. generate_mixture_weights: one Dirichlet draw per node, in node order
    alpha_vec = alpha * np.ones(components)
    mixture_weights = np.zeros((n_nodes, components))
    for i in range(n_nodes):
        mixture_weights[i] = rs.dirichlet(alpha=alpha_vec)

    # 3. generate_components
    theta = rs.uniform(_BOX[0], _BOX[1], size=(components, dim))

    # 4. per node: training set, then test set
    start = rs.get_state()  # each pass over the nodes replays the draws from here

    def generate(record=None):
        rs_nodes = np.random.RandomState()
        rs_nodes.set_state(start)
        for i in range(n_nodes):
            pi = mixture_weights[i]
            x_tr, y_tr, c_tr, k_tr = _generate_split(
                rs_nodes, int(num_samples[i]), pi, theta, noise, corrected
            )
            x_te, y_te, c_te, k_te = _generate_split(rs_nodes, n_test, pi, theta, noise, corrected)
            if record is not None:
                record(i, c_tr, c_te, k_tr, k_te)
            yield NodeDataset(
                x_train=x_tr,
                y_train=y_tr,
                x_test=x_te,
                y_test=y_te,
                component_train=c_tr.astype(np.int32),
            )

    info = {
        "generator": "fedem_synthetic",
        "variant": variant,
        "seed": int(seed),
        "mixture_weights": mixture_weights,
        "components_theta": theta,
        "num_samples": num_samples,
        "params": {
            "n_nodes": n_nodes,
            "dim": dim,
            "components": components,
            "alpha": alpha,
            "noise": noise,
            "n_test": n_test,
            "min_samples": int(min_samples),
            "max_samples": int(max_samples),
        },
    }
    stream = n_nodes >= STREAM_FROM if _stream is None else _stream
    if stream:  # generated while packed; no per-sample records in info
        nodes = NodeStream(
            num_samples,
            np.full(n_nodes, n_test),
            (dim,),
            generate,
            has_components=True,
        )
        return FederatedDataset(nodes=nodes, task="binary", num_classes=2, info=info)

    comp_train: list[np.ndarray] = [None] * n_nodes
    comp_test: list[np.ndarray] = [None] * n_nodes
    counts_train = np.zeros((n_nodes, components), dtype=np.int64)
    counts_test = np.zeros((n_nodes, components), dtype=np.int64)

    def record(i, c_tr, c_te, k_tr, k_te):
        comp_train[i], comp_test[i] = c_tr, c_te
        counts_train[i], counts_test[i] = k_tr, k_te

    nodes = list(generate(record))
    info |= {
        "component_counts_train": counts_train,
        "component_counts_test": counts_test,
        "component_train": comp_train,
        "component_test": comp_test,
    }
    return FederatedDataset(nodes=nodes, task="binary", num_classes=2, info=info)


def _recorded_components(params) -> int:
    """Every variant records each training sample's component (``-1``: none, see above)."""
    return int(params["components"])


fedem_synthetic.recorded_components = _recorded_components
