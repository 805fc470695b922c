"""Load a LEAF benchmark (Caldas et al. 2018) from its JSON files: one node per user.

``data.path`` is a directory with subdirectories ``train/`` and ``test/``, each holding
``*.json`` files in LEAF's format::

    {"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}

(the output of LEAF's ``preprocess.sh``; a user's data may be in any file of its split).
The users present in ``train/`` are sorted by name and the first ``N = topology.n``
become the nodes, in that order; fewer users than ``N`` is an error, and every chosen
user must also be in ``test/``. Nothing is downloaded.

Two flavours, recognised from the first sample:

* **FEMNIST-like** (``x`` lists of numbers, ``y`` integers): ``x`` float32 of shape
  ``(n, features)``, reshaped to ``(n, 28, 28)`` when there are 784 features; multiclass
  with ``num_classes`` = the key ``num_classes`` if set, else 62 when there are 784
  features and a directory of the path is named ``femnist``, else the largest label of the
  chosen users plus one.
* **Shakespeare-like** (``x`` strings of equal length, 80 in LEAF; ``y`` one character):
  characters map to their index in LEAF's ``ALL_LETTERS`` (80 characters), ``x`` int32
  ``(n, length)`` of tokens, ``y`` int32 next-character tokens; multiclass with 80 classes.
  A character outside ``ALL_LETTERS`` is an error (LEAF's ``find`` would give -1).
"""

from __future__ import annotations

import json
import os

import numpy as np

from p2p_fmtl.data.base import FederatedDataset, NodeDataset
from p2p_fmtl.data.partitions import check_int
from p2p_fmtl.errors import ConfigError

__all__ = ["ALL_LETTERS", "leaf", "read_split"]

ALL_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
_INDEX = {c: i for i, c in enumerate(ALL_LETTERS)}
FEMNIST_CLASSES = 62


def _short(text: object, limit: int = 120) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _components(path: str) -> list[str]:
    return [p.lower() for p in os.path.abspath(path).split(os.sep)]


def read_split(directory: str, split: str) -> dict[str, dict]:
    """``{user: {"x": [...], "y": [...]}}`` merged over the ``*.json`` files of a split."""
    sub = os.path.join(directory, split)
    if not os.path.isdir(sub):
        raise ConfigError(
            f"data.path: {directory!r} has no {split}/ subdirectory (LEAF layout: train/ "
            "and test/ of .json files)"
        )
    names = sorted(f for f in os.listdir(sub) if f.lower().endswith(".json"))
    if not names:
        raise ConfigError(f"data.path: no .json files in {sub!r}")
    users: dict[str, dict] = {}
    for name in names:
        where = f"data.path: {split}/{name}"
        try:
            with open(os.path.join(sub, name), encoding="utf-8") as f:
                blob = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{where} is not valid JSON: {_short(e)}") from None
        if not isinstance(blob, dict) or not isinstance(blob.get("user_data"), dict):
            raise ConfigError(
                f"{where}: expected an object with 'users' and 'user_data' "
                '{user: {"x": [...], "y": [...]}}'
            )
        for user, data in blob["user_data"].items():
            if not isinstance(data, dict) or not {"x", "y"} <= set(data):
                raise ConfigError(f"{where}: user {user!r} lacks 'x' or 'y'")
            if not isinstance(data["x"], list) or not isinstance(data["y"], list):
                raise ConfigError(f"{where}: user {user!r}: 'x' and 'y' must be lists")
            if len(data["x"]) != len(data["y"]):
                raise ConfigError(
                    f"{where}: user {user!r} has {len(data['x'])} x but {len(data['y'])} y"
                )
            if user in users:  # a user split over several files: concatenate
                users[user] = {
                    "x": users[user]["x"] + data["x"],
                    "y": users[user]["y"] + data["y"],
                }
            else:
                users[user] = data
    return users


def _tokens(strings: list, user: str, split: str, length: int | None) -> np.ndarray:
    out = np.empty((len(strings), length or 0), dtype=np.int32)
    for r, s in enumerate(strings):
        if not isinstance(s, str) or len(s) != out.shape[1]:
            raise ConfigError(
                f"data.path: {split} user {user!r} sample {r}: expected a string of "
                f"{out.shape[1]} characters, got {_short(repr(s), 60)}"
            )
        try:
            out[r] = [_INDEX[c] for c in s]
        except KeyError as e:
            raise ConfigError(
                f"data.path: {split} user {user!r} sample {r}: character {e.args[0]!r} is not "
                "in LEAF's ALL_LETTERS vocabulary"
            ) from None
    return out


def _numbers(rows: list, user: str, split: str, dtype, shape: tuple) -> np.ndarray:
    if not rows:
        return np.zeros((0, *shape), dtype=dtype)
    try:
        a = np.asarray(rows, dtype=dtype)
    except (ValueError, TypeError):
        raise ConfigError(
            f"data.path: {split} user {user!r}: 'x'/'y' are not {'numbers' if shape else 'labels'} "
            "of one shape"
        ) from None
    if a.shape[1:] != shape:
        raise ConfigError(
            f"data.path: {split} user {user!r}: samples of shape {a.shape[1:]}, expected {shape}"
        )
    return a


def _node(data: dict, user: str, split: str, text: bool, n_features: int):
    if text:
        x = _tokens(data["x"], user, split, n_features)
        y = _tokens(data["y"], user, split, 1)[:, 0]
        return x, y
    x = _numbers(data["x"], user, split, np.float32, (n_features,))
    if x.size and not np.all(np.isfinite(x)):
        raise ConfigError(f"data.path: {split} user {user!r}: x holds non-finite values")
    y = _numbers(data["y"], user, split, np.float64, ())
    if y.size and (np.any(y != np.round(y)) or y.min() < 0):
        raise ConfigError(f"data.path: {split} user {user!r}: y must hold integer labels >= 0")
    return x, y.astype(np.int32)


def leaf(n_nodes: int, *, path: str = "", num_classes: int = 0) -> FederatedDataset:
    """The first ``n_nodes`` users (sorted by name) of the LEAF data under ``path``.

    ``num_classes``: 0 infers it (see the module docstring); otherwise at least the
    largest label plus one. ``info``: ``"users"`` (node order), ``"flavour"``
    (``"femnist"`` or ``"shakespeare"``), ``"num_samples"`` (N,) training sizes,
    ``"vocabulary"`` (shakespeare).
    """
    n_nodes = check_int("n_nodes", n_nodes, 1)
    num_classes = check_int("num_classes", num_classes, 0)
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"data.path: got {path!r}, expected a directory path")
    path = os.fspath(path)
    if path == "":
        raise ConfigError(
            "data.path: missing; 'leaf' needs a directory with train/ and test/ of LEAF .json files"
        )
    if not os.path.isdir(path):
        raise ConfigError(f"data.path: directory not found: {path!r}")
    train, test = read_split(path, "train"), read_split(path, "test")
    users = sorted(train)
    if len(users) < n_nodes:
        raise ConfigError(
            f"topology.n: got {n_nodes}, but data.path {path!r} holds {len(users)} users; "
            f"set topology.n <= {len(users)}"
        )
    users = users[:n_nodes]
    missing = [u for u in users if u not in test]
    if missing:
        raise ConfigError(
            f"data.path: user {missing[0]!r} is in train/ but not in test/ "
            f"({len(missing)} such users)"
        )
    first = next((train[u]["x"][0] for u in users if train[u]["x"]), None)
    if first is None:
        raise ConfigError(f"data.path: the first {n_nodes} users hold no training samples")
    text = isinstance(first, str)
    n_features = len(first) if isinstance(first, str | list) else -1
    if n_features < 1:
        raise ConfigError(
            f"data.path: a sample's x is {_short(repr(first), 60)}, expected a list of numbers "
            "or a string"
        )
    nodes = []
    for u in users:
        x_tr, y_tr = _node(train[u], u, "train", text, n_features)
        x_te, y_te = _node(test[u], u, "test", text, n_features)
        if not text and n_features == 784:
            x_tr, x_te = x_tr.reshape(-1, 28, 28), x_te.reshape(-1, 28, 28)
        nodes.append(NodeDataset(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te))
    top = max(int(max(nd.y_train.max(initial=0), nd.y_test.max(initial=0))) for nd in nodes)
    if text:
        inferred = len(ALL_LETTERS)
    elif n_features == 784 and "femnist" in _components(path):
        inferred = max(FEMNIST_CLASSES, top + 1)
    else:
        inferred = top + 1
    if num_classes and num_classes <= top:
        raise ConfigError(
            f"data.num_classes: got {num_classes}, but the labels reach {top}; "
            f"expected at least {top + 1} (or 0 to infer)"
        )
    classes = num_classes or inferred
    info = {
        "generator": "leaf",
        "flavour": "shakespeare" if text else "femnist",
        "users": users,
        "num_samples": np.array([nd.n_train for nd in nodes], dtype=np.int64),
    }
    if text:
        info["vocabulary"] = ALL_LETTERS
    return FederatedDataset(nodes=nodes, task="multiclass", num_classes=max(classes, 2), info=info)
