"""Load a federated dataset from a directory of per-node ``.npz`` files.

``data.path`` is a directory holding one ``.npz`` file per node, taken in file-name
order (plain string sort: name them ``node_000.npz``, ``node_001.npz``, ... so that the
order is the node order). Each file holds the arrays ``x_train``, ``y_train``,
``x_test``, ``y_test``; other arrays are ignored. The node count is the number of files.

* Features ``x_*`` have shape ``(samples, *feature_shape)`` with at least one feature
  axis. The feature shape must be the same in every file and in both splits. They are
  returned as ``float32`` and must be finite after that conversion.
* Labels ``y_*`` are 1-D with one entry per row of the matching ``x``. Integer (or
  boolean) labels mean classification: ``num_classes`` is the largest label over all
  nodes plus one, ``task = "binary"`` (``num_classes = 2``) when that is at most 2 and
  ``"multiclass"`` otherwise; labels are returned as ``int32`` and must be ``>= 0``.
  Floating labels mean regression (``num_classes = 1``, finite, returned as
  ``float32``). All files must agree; an empty label array does not count, since an
  empty array's dtype says nothing.
* A node's training set must not be empty; its test set may be.

Files are opened with ``allow_pickle=False``. Every malformed input raises a one-line
:class:`~p2p_fmtl.errors.ConfigError` that names the file and the problem.
"""

from __future__ import annotations

import os

import numpy as np

from p2p_fmtl.data.base import FederatedDataset, NodeDataset
from p2p_fmtl.errors import ConfigError

__all__ = ["REQUIRED", "npz"]

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
_NEEDS = f"needs {', '.join(REQUIRED)}"


def _one_line(text: object, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _files(path: object) -> tuple[str, list[str]]:
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"data.path: got {path!r}, expected a directory path")
    path = os.fspath(path)
    if path == "":
        raise ConfigError("data.path: missing; 'npz' needs a directory of per-node .npz files")
    if not os.path.exists(path):
        raise ConfigError(f"data.path: directory not found: {path!r}")
    if not os.path.isdir(path):
        raise ConfigError(
            f"data.path: {path!r} is not a directory; 'npz' needs a directory of per-node "
            ".npz files"
        )
    try:
        names = sorted(
            f
            for f in os.listdir(path)
            if f.lower().endswith(".npz") and os.path.isfile(os.path.join(path, f))
        )
    except OSError as e:
        raise ConfigError(f"data.path: cannot list {path!r}: {_one_line(e)}") from None
    if not names:
        raise ConfigError(f"data.path: no .npz files in {path!r} (expected one file per node)")
    return path, names


def _read(path: str, name: str) -> dict[str, np.ndarray]:
    """The four arrays of one node file, or a ConfigError naming the file."""
    where = f"data.path: node file {name!r}"
    try:
        archive = np.load(os.path.join(path, name), allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):  # neither a zip archive nor a .npy file: a pickle?
            raise ConfigError(
                f"{where} is not a valid .npz file (not a zip archive of .npy arrays)"
            ) from None
        raise ConfigError(f"{where} is not a valid .npz file: {_one_line(e)}") from None
    except Exception as e:  # np.load raises many types: BadZipFile, EOFError, OSError, ...
        raise ConfigError(
            f"{where} is not a valid .npz file: {type(e).__name__}: {_one_line(e)}"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ConfigError(f"{where} is a single .npy array, not an .npz archive of arrays")
    with archive:
        missing = [k for k in REQUIRED if k not in archive.files]
        if missing:
            raise ConfigError(f"{where} lacks {', '.join(missing)} ({_NEEDS})")
        out = {}
        for k in REQUIRED:
            try:
                value = archive[k]
            except ValueError as e:
                if "Object arrays" in str(e) or "pickle" in str(e):
                    raise ConfigError(
                        f"{where}: {k} is an object array, which is not loaded "
                        "(allow_pickle=False); save plain numeric arrays"
                    ) from None
                raise ConfigError(f"{where}: cannot read {k}: {_one_line(e)}") from None
            except Exception as e:  # a corrupt member: BadZipFile, zlib.error, EOFError, ...
                raise ConfigError(
                    f"{where}: cannot read {k}: {type(e).__name__}: {_one_line(e)}"
                ) from None
            if not isinstance(value, np.ndarray):  # NpzFile returns raw bytes for non-.npy
                raise ConfigError(f"{where}: cannot read {k}: the member is not a .npy array")
            out[k] = value
        return out


def _label_kind(y: np.ndarray) -> str | None:
    """``"int"``, ``"float"``, or ``None`` for anything else."""
    if y.dtype == np.bool_ or np.issubdtype(y.dtype, np.integer):
        return "int"
    if np.issubdtype(y.dtype, np.floating):
        return "float"
    return None


def _check_node(name: str, arrays: dict[str, np.ndarray]) -> None:
    """Shapes, dtypes and emptiness of one node's arrays (not yet across nodes)."""
    where = f"data.path: node file {name!r}"
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2:
            raise ConfigError(
                f"{where}: x_{split} has shape {x.shape}, expected (samples, features...) "
                "with at least 2 axes"
            )
        if 0 in x.shape[1:]:
            raise ConfigError(
                f"{where}: x_{split} has shape {x.shape}, with no features; expected at "
                "least one feature per sample"
            )
        if x.dtype != np.bool_ and not (
            np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
        ):
            raise ConfigError(f"{where}: x_{split} has dtype {x.dtype}, expected real numbers")
        if y.ndim != 1:
            raise ConfigError(
                f"{where}: y_{split} has shape {y.shape}, expected 1-D (one label per row)"
            )
        if _label_kind(y) is None:
            raise ConfigError(
                f"{where}: y_{split} has dtype {y.dtype}, expected integer labels "
                "(classification) or floating labels (regression)"
            )
        if x.shape[0] != y.shape[0]:
            raise ConfigError(
                f"{where}: x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]}"
            )
    if arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
        raise ConfigError(
            f"{where}: x_test has features of shape {arrays['x_test'].shape[1:]}, but x_train "
            f"has {arrays['x_train'].shape[1:]}"
        )
    if arrays["x_train"].shape[0] == 0:
        raise ConfigError(f"{where} has an empty training set (x_train has 0 rows)")


def _first_bad_row(a: np.ndarray) -> int:
    """Index of the first row of ``a`` with a non-finite entry."""
    bad = ~np.isfinite(a.reshape(a.shape[0], -1))
    return int(np.argmax(bad.any(axis=1)))


def npz(n_nodes: int | None = None, *, path: str = "") -> FederatedDataset:
    """Load one node per ``.npz`` file of the directory ``path``.

    Parameters
    ----------
    n_nodes : int or None
        Expected number of nodes (the topology's ``n``); ``None`` accepts any. A
        different number of files raises :class:`ConfigError`.
    path : str
        Directory of per-node ``.npz`` files (required; see the module docstring).

    Returns
    -------
    FederatedDataset
        One node per file, in file-name order. Features are ``float32``; labels are
        ``int32`` (``"binary"``/``"multiclass"``) or ``float32`` (``"regression"``).
        ``info`` holds ``"generator"``, ``"path"``, ``"files"`` (file names in node
        order), ``"num_samples"`` (N,) training sizes and ``"params"``.
    """
    directory, names = _files(path)
    if n_nodes is not None and n_nodes != len(names):
        raise ConfigError(
            f"topology.n: got {n_nodes!r}, but data.path {directory!r} holds {len(names)} "
            f"node files; set topology.n = {len(names)}"
        )

    raw: list[dict[str, np.ndarray]] = []
    kind: str | None = None
    kind_from = ""
    for name in names:
        arrays = _read(directory, name)
        _check_node(name, arrays)
        if raw and arrays["x_train"].shape[1:] != raw[0]["x_train"].shape[1:]:
            raise ConfigError(
                f"data.path: node file {name!r}: x_train has features of shape "
                f"{arrays['x_train'].shape[1:]}, but {names[0]!r} has "
                f"{raw[0]['x_train'].shape[1:]}"
            )
        for key in ("y_train", "y_test"):
            y = arrays[key]
            if y.size == 0:
                continue
            k = _label_kind(y)
            if kind is None:
                kind, kind_from = k, f"{name!r} {key} is {y.dtype}"
            elif k != kind:
                raise ConfigError(
                    f"data.path: labels mix integers and floats: {kind_from} but {name!r} "
                    f"{key} is {y.dtype}; use integer labels for classification or floating "
                    "labels for regression in every file"
                )
        raw.append(arrays)

    nodes: list[NodeDataset] = []
    max_label = 0
    for name, arrays in zip(names, raw, strict=True):
        where = f"data.path: node file {name!r}"
        out: dict[str, np.ndarray] = {}
        for split in ("train", "test"):
            xk, yk = f"x_{split}", f"y_{split}"
            with np.errstate(over="ignore", invalid="ignore"):
                x = arrays[xk].astype(np.float32)
            if not np.all(np.isfinite(x)):
                raise ConfigError(
                    f"{where}: {xk} holds non-finite values (NaN or inf, or too large for "
                    f"float32), first at row {_first_bad_row(x)}"
                )
            y = arrays[yk]
            if kind == "int":
                if y.size and y.min() < 0:
                    raise ConfigError(
                        f"{where}: {yk} holds the negative label {int(y.min())}; class labels "
                        "must be 0, 1, 2, ..."
                    )
                if y.size and int(y.max()) > np.iinfo(np.int32).max - 1:
                    raise ConfigError(
                        f"{where}: {yk} holds the label {int(y.max())}, expected class labels "
                        "0, 1, 2, ... that fit in int32"
                    )
                if y.size:
                    max_label = max(max_label, int(y.max()))
                y = y.astype(np.int32)
            else:
                with np.errstate(over="ignore", invalid="ignore"):
                    y = y.astype(np.float32)
                if not np.all(np.isfinite(y)):
                    raise ConfigError(
                        f"{where}: {yk} holds non-finite regression labels (NaN or inf, or "
                        f"too large for float32), first at row {_first_bad_row(y)}"
                    )
            out[xk], out[yk] = x, y
        nodes.append(NodeDataset(**out))

    if kind == "int":
        num_classes = max_label + 1
        task, num_classes = ("binary", 2) if num_classes <= 2 else ("multiclass", num_classes)
    else:
        task, num_classes = "regression", 1
    info = {
        "generator": "npz",
        "path": directory,
        "files": list(names),
        "num_samples": np.array([nd.n_train for nd in nodes], dtype=np.int64),
        "params": {"path": directory},
    }
    return FederatedDataset(nodes=nodes, task=task, num_classes=num_classes, info=info)
