"""MNIST-1D (Greydanus 2020): 1-D signals of length 40 of the digits 0-9, partitioned over nodes.

The pool is *generated* with ``mnist1d.data.make_dataset(get_dataset_args())`` (never
``get_dataset``, which downloads): ``num_samples`` (default 5,000, the package default)
signals, ``num_samples // 10`` per class, the package's own train and test parts pooled
(``x`` then ``x_test``) as ``float32 (n, 40)``; labels multiclass, 10 classes. The pool
depends only on ``num_samples`` (the package's generator seed stays 42). The partition
over nodes and the per-node split are those of :mod:`p2p_fmtl.data.partitions`.

``make_dataset`` seeds numpy's and Python's global generators; their states are restored
afterwards. Generating 5,000 signals takes about 0.7 s, so pools are cached in the process
and on disk in ``$P2P_FMTL_CACHE`` (default ``$XDG_CACHE_HOME/p2p_fmtl`` or
``~/.cache/p2p_fmtl``; ``P2P_FMTL_CACHE=off`` disables it): one ``.npz`` per generator
version and ``num_samples``, written atomically; an unwritable or corrupt cache is ignored.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import tempfile

import numpy as np

from p2p_fmtl.data.base import FederatedDataset
from p2p_fmtl.data.partitions import check_int, federate, mixture_components

__all__ = ["cache_dir", "mnist1d", "mnist1d_pool"]

_FORMAT = 1  # bump when the pooled arrays change meaning


def cache_dir() -> str | None:
    """The on-disk cache directory, or ``None`` when disabled."""
    env = os.environ.get("P2P_FMTL_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none", "false") else env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "p2p_fmtl")


def _generate(num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return x, y


def _cache_file(num_samples: int) -> str | None:
    directory = cache_dir()
    if directory is None:
        return None
    try:  # the package's version stands for its default arguments (not imported: 0.7 s)
        from importlib.metadata import version

        ver = version("mnist1d")
    except Exception:
        ver = "unknown"
    key = json.dumps([_FORMAT, ver, num_samples])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(directory, f"mnist1d-{num_samples}-{digest}.npz")


@functools.lru_cache(maxsize=4)
def _pool(num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    path = _cache_file(num_samples)
    if path is not None and os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as f:
                x, y = f["x"], f["y"]
            if x.shape == (10 * (num_samples // 10), 40) and y.shape == x.shape[:1]:
                return _frozen(x.astype(np.float32), y.astype(np.int64))
        except Exception:
            pass  # corrupt cache: regenerate
    x, y = _generate(num_samples)
    if path is not None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, x=x, y=y)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except Exception:
            pass  # unwritable cache: keep going without it
    return _frozen(x, y)


def _frozen(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def mnist1d_pool(num_samples: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """The pooled signals ``(n, 40)`` float32, labels ``(n,)``; ``n = 10 (num_samples // 10)``.

    Cached in the process and on disk (see the module docstring).
    """
    return _pool(int(num_samples))


def mnist1d(
    n_nodes: int,
    *,
    num_samples: int = 5000,
    partition: str = "dirichlet",
    alpha: float = 0.5,
    classes_per_node: int = 2,
    components: int = 3,
    transform: str = "label",
    min_samples: int = 10,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> FederatedDataset:
    """MNIST-1D over ``n_nodes`` nodes.

    ``num_samples``: size of the generated pool (``>= 10``; rounded down to a multiple of
    10). The other keys are those of :func:`p2p_fmtl.data.digits.digits` (``transform``
    ``"pixel"`` permutes the 40 positions, ``"flip"`` reverses the signal).
    """
    num_samples = check_int("num_samples", num_samples, 10)
    x, y = _pool(num_samples)
    return federate(
        "mnist1d",
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


mnist1d.recorded_components = mixture_components  # mixture: known components
