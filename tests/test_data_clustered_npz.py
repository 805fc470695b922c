"""Tests of the ``clustered_linear`` generator and the ``npz`` directory loader."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

import topologies
from p2p_fmtl.data import DATASETS, dataset_params, load_dataset, pack
from p2p_fmtl.data.clustered_linear import clustered_linear
from p2p_fmtl.data.npz import npz
from p2p_fmtl.errors import ConfigError


def small(n_nodes: int = 10, **kw):
    args = {"clusters": 3, "dim": 5, "samples": (4, 9), "n_test": 7, **kw}
    return clustered_linear(n_nodes, **args)


# --------------------------------------------------------------------------------------
# clustered_linear
# --------------------------------------------------------------------------------------


def test_registered_with_their_config_keys():
    assert DATASETS["clustered_linear"] is clustered_linear
    assert DATASETS["npz"] is npz
    assert dataset_params("clustered_linear") == {
        "clusters": 4,
        "dim": 20,
        "task": "regression",
        "samples": (10, 40),
        "n_test": 200,
        "noise": 0.5,
        "separation": 1.0,
        "assignment": "contiguous",
        "seed": 0,
    }
    assert dataset_params("npz") == {"path": ""}


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_shapes_and_dtypes(task):
    ds = small(task=task)
    assert ds.num_nodes == 10 and ds.feature_shape == (5,)
    assert (ds.task, ds.num_classes) == (
        ("regression", 1) if task == "regression" else ("binary", 2)
    )
    y_dtype = np.float32 if task == "regression" else np.int32
    for i, nd in enumerate(ds.nodes):
        assert 4 <= nd.n_train <= 9 and nd.n_train == ds.info["num_samples"][i]
        assert nd.x_train.shape == (nd.n_train, 5) and nd.x_test.shape == (7, 5)
        assert nd.x_train.dtype == nd.x_test.dtype == np.float32
        assert nd.y_train.shape == (nd.n_train,) and nd.y_test.shape == (7,)
        assert nd.y_train.dtype == nd.y_test.dtype == y_dtype
    info = ds.info
    assert info["cluster"].shape == (10,) and info["cluster"].dtype == np.int64
    assert info["true_models"].shape == (3, 5)
    assert info["task"] == task and info["params"]["samples"] == [4, 9]
    packed = pack(ds)
    assert packed.buckets[0].x_train.shape == (10, int(info["num_samples"].max()), 5)


def test_sizes_cover_the_inclusive_range():
    sizes = np.concatenate(
        [small(40, samples=(3, 5), seed=s).info["num_samples"] for s in range(5)]
    )
    assert set(sizes.tolist()) == {3, 4, 5}
    ds = small(4, samples=(6, 6))
    assert [nd.n_train for nd in ds.nodes] == [6] * 4


@pytest.mark.parametrize("assignment", ["contiguous", "random"])
def test_deterministic(assignment):
    a, b = small(assignment=assignment, seed=3), small(assignment=assignment, seed=3)
    for na, nb in zip(a.nodes, b.nodes, strict=True):
        for key in ("x_train", "y_train", "x_test", "y_test"):
            assert np.array_equal(getattr(na, key), getattr(nb, key))
    assert np.array_equal(a.info["true_models"], b.info["true_models"])
    assert np.array_equal(a.info["cluster"], b.info["cluster"])
    c = small(assignment=assignment, seed=4)
    assert not np.array_equal(a.nodes[0].x_train[:4], c.nodes[0].x_train[:4])


def test_global_numpy_state_untouched():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    small()
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("n, clusters", [(10, 3), (12, 4), (13, 5), (7, 7), (5, 1)])
def test_contiguous_clusters_match_array_split_and_planted_partition(n, clusters):
    ds = clustered_linear(n, clusters=clusters, dim=2, samples=(1, 2), n_test=1)
    expected = np.concatenate(
        [np.full(len(b), c) for c, b in enumerate(np.array_split(np.arange(n), clusters))]
    )
    assert ds.info["cluster"].tolist() == expected.tolist()
    if n >= 2:
        G = topologies.build("planted_partition", n, groups=clusters, p_in=1.0, p_out=1.0)
        assert [G.nodes[v]["group"] for v in G] == ds.info["cluster"].tolist()


def test_random_assignment_is_balanced_and_shuffled():
    orders = set()
    for seed in range(5):
        cluster = small(13, clusters=4, assignment="random", seed=seed).info["cluster"]
        assert sorted(np.bincount(cluster).tolist()) == [3, 3, 3, 4]
        orders.add(tuple(cluster.tolist()))
    contiguous = tuple(small(13, clusters=4).info["cluster"].tolist())
    assert len(orders - {contiguous}) >= 4


def test_regression_without_noise_is_exactly_linear():
    ds = small(noise=0.0)
    w = ds.info["true_models"]
    for i, nd in enumerate(ds.nodes):
        wc = w[ds.info["cluster"][i]]
        for x, y in ((nd.x_train, nd.y_train), (nd.x_test, nd.y_test)):
            expected = x.astype(np.float64) @ wc
            np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
            assert np.array_equal(y, expected.astype(np.float32))
            np.testing.assert_allclose(y, x @ wc.astype(np.float32), rtol=1e-5, atol=1e-5)


def test_regression_noise_has_the_given_scale():
    ds = clustered_linear(8, clusters=2, dim=4, samples=(400, 400), n_test=400, noise=0.5)
    w = ds.info["true_models"]
    res = np.concatenate(
        [nd.y_train - nd.x_train @ w[ds.info["cluster"][i]] for i, nd in enumerate(ds.nodes)]
    )
    assert abs(res.std() - 0.5) < 0.03 and abs(res.mean()) < 0.03


def test_classification_labels_follow_the_sign_rule():
    ds = small(task="classification", noise=0.0)
    w = ds.info["true_models"]
    all_labels = []
    for i, nd in enumerate(ds.nodes):
        wc = w[ds.info["cluster"][i]]
        for x, y in ((nd.x_train, nd.y_train), (nd.x_test, nd.y_test)):
            assert set(np.unique(y).tolist()) <= {0, 1}
            assert np.array_equal(y, (x.astype(np.float64) @ wc > 0).astype(np.int32))
            all_labels.append(y)
    assert set(np.concatenate(all_labels).tolist()) == {0, 1}
    noisy = small(task="classification", noise=2.0)
    flips = sum(
        int(np.sum(nd.y_train != (nd.x_train.astype(np.float64) @ w[c] > 0)))
        for nd, c in zip(noisy.nodes, noisy.info["cluster"], strict=True)
    )
    assert flips > 0


def test_features_and_models_do_not_depend_on_task_or_noise():
    a = small(task="regression", noise=0.0)
    b = small(task="classification", noise=1.5)
    assert np.array_equal(a.info["true_models"], b.info["true_models"])
    assert np.array_equal(a.nodes[-1].x_test, b.nodes[-1].x_test)


def test_separation():
    zero = small(separation=0.0)
    w = zero.info["true_models"]
    assert np.array_equal(w, np.broadcast_to(w[0], w.shape))
    assert np.array_equal(w[0], zero.info["shared_mean"])
    one, far = small(separation=1.0), small(separation=10.0)
    np.testing.assert_allclose(
        far.info["true_models"] - far.info["shared_mean"],
        10 * (one.info["true_models"] - one.info["shared_mean"]),
        rtol=0,
        atol=1e-12,
    )
    # the shared mean and offsets have E|.|^2 = 1 (N(0, I/d))
    big = clustered_linear(4, clusters=4, dim=4000, samples=(1, 1), n_test=1, separation=1.0)
    norms = np.linalg.norm(big.info["true_models"] - big.info["shared_mean"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=0.05)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"clusters": 0}, "data.clusters: got 0, expected an integer in [1, 10]"),
        ({"clusters": 11}, "data.clusters: got 11, expected an integer in [1, 10]"),
        ({"clusters": 2.0}, "data.clusters: got 2.0"),
        ({"dim": 0}, "data.dim: got 0, expected an integer >= 1"),
        ({"dim": True}, "data.dim: got True"),
        ({"task": "binary"}, "data.task: got 'binary', expected 'regression' or 'classif"),
        ({"samples": (0, 5)}, "data.samples: got (0, 5), expected a list [lo, hi]"),
        ({"samples": [6, 5]}, "data.samples: got [6, 5]"),
        ({"samples": [5]}, "data.samples: got [5]"),
        ({"samples": [1.0, 5]}, "data.samples: got [1.0, 5]"),
        ({"samples": "10"}, "data.samples: got '10'"),
        ({"n_test": 0}, "data.n_test: got 0, expected an integer >= 1"),
        ({"noise": -0.1}, "data.noise: got -0.1, expected a finite number >= 0"),
        ({"noise": float("nan")}, "data.noise: got nan"),
        ({"separation": -1}, "data.separation: got -1, expected a finite number >= 0"),
        ({"separation": "1"}, "data.separation: got '1'"),
        ({"assignment": "blocks"}, "data.assignment: got 'blocks', expected 'contiguous' or"),
        ({"seed": -1}, "data.seed: got -1, expected an integer >= 0"),
    ],
)
def test_clustered_linear_validation(kwargs, fragment):
    with pytest.raises(ConfigError) as err:
        clustered_linear(10, **kwargs)
    msg = str(err.value)
    assert msg.startswith(fragment), msg
    assert "\n" not in msg


def test_clustered_linear_n_nodes_and_load_dataset():
    with pytest.raises(ConfigError, match=r"^data.n_nodes: got 0, expected an integer >= 1"):
        clustered_linear(0)
    ds = clustered_linear(1, clusters=1, dim=2, samples=(3, 3), n_test=2)
    assert ds.num_nodes == 1
    cfg = {"name": "clustered_linear", **dataset_params("clustered_linear")}
    cfg.update(samples=[2, 3], dim=3, clusters=2)
    ds = load_dataset(cfg, 6)
    assert ds.num_nodes == 6 and ds.info["cluster"].tolist() == [0, 0, 0, 1, 1, 1]


# --------------------------------------------------------------------------------------
# npz: round trip
# --------------------------------------------------------------------------------------


def write_nodes(directory: Path, nodes, names=None) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    names = names or [f"node_{i:02d}.npz" for i in range(len(nodes))]
    for name, nd in zip(names, nodes, strict=True):
        np.savez(
            directory / name,
            x_train=nd.x_train,
            y_train=nd.y_train,
            x_test=nd.x_test,
            y_test=nd.y_test,
        )
    return names


def node(n=5, t=3, d=4, y=None, y_test=None, seed=0, **override):
    """A dict of the four arrays of one node, int labels 0/1 by default."""
    rng = np.random.default_rng(seed)
    out = {
        "x_train": rng.standard_normal((n, d)),
        "y_train": rng.integers(0, 2, n) if y is None else np.asarray(y),
        "x_test": rng.standard_normal((t, d)),
        "y_test": rng.integers(0, 2, t) if y_test is None else np.asarray(y_test),
    }
    out.update(override)
    return out


def save(directory: Path, *nodes: dict, names=None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    names = names or [f"node_{i:02d}.npz" for i in range(len(nodes))]
    for name, arrays in zip(names, nodes, strict=True):
        np.savez(directory / name, **arrays)
    return directory


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_npz_round_trip(tmp_path, task):
    ds = small(7, task=task)
    names = write_nodes(tmp_path / "d", ds.nodes)
    loaded = npz(7, path=str(tmp_path / "d"))
    assert loaded.num_nodes == 7 and loaded.info["files"] == names
    assert (loaded.task, loaded.num_classes) == (ds.task, ds.num_classes)
    for a, b in zip(ds.nodes, loaded.nodes, strict=True):
        for key in ("x_train", "y_train", "x_test", "y_test"):
            va, vb = getattr(a, key), getattr(b, key)
            assert vb.dtype == va.dtype and np.array_equal(va, vb), key
    assert npz(path=tmp_path / "d").num_nodes == 7  # n_nodes=None, a PathLike
    cfg = {"name": "npz", "path": str(tmp_path / "d")}
    assert load_dataset(cfg, 7).num_nodes == 7


def test_npz_takes_files_in_name_order_and_ignores_others(tmp_path):
    d = save(
        tmp_path / "d",
        node(n=3, seed=1),
        node(n=4, seed=2),
        node(n=5, seed=3),
        names=["b.npz", "a.npz", "c.npz"],
    )
    (d / "README.txt").write_text("not data")
    (d / "sub.npz").mkdir()  # a directory is not a node file
    np.savez(d / "c.npz", **node(n=5, seed=3), extra=np.arange(3))  # extra arrays: ignored
    ds = npz(path=str(d))
    assert ds.info["files"] == ["a.npz", "b.npz", "c.npz"]
    assert [nd.n_train for nd in ds.nodes] == [4, 3, 5]


@pytest.mark.parametrize(
    "labels, task, num_classes, dtype",
    [
        ([np.array([0, 1, 1]), np.array([1, 0, 0])], "binary", 2, np.int32),
        ([np.array([0, 0, 0]), np.array([0, 0, 0])], "binary", 2, np.int32),
        ([np.array([True, False, True]), np.array([False, False, True])], "binary", 2, np.int32),
        ([np.array([0, 1, 2], np.uint8), np.array([5, 1, 0], np.int16)], "multiclass", 6, np.int32),
        (
            [np.array([0.5, -1.0, 2.0]), np.array([1, 2, 3], np.float32)],
            "regression",
            1,
            np.float32,
        ),
        ([np.array([0.0, 1.0, 1.0]), np.array([1.0, 0.0, 1.0])], "regression", 1, np.float32),
    ],
)
def test_npz_task_detection(tmp_path, labels, task, num_classes, dtype):
    nodes = [node(n=3, t=2, y=y, y_test=y[:2], seed=i) for i, y in enumerate(labels)]
    ds = npz(2, path=str(save(tmp_path / "d", *nodes)))
    assert (ds.task, ds.num_classes) == (task, num_classes)
    for nd, y in zip(ds.nodes, labels, strict=True):
        assert nd.y_train.dtype == nd.y_test.dtype == dtype
        assert np.array_equal(nd.y_train, y.astype(dtype))
        assert nd.x_train.dtype == np.float32


def test_npz_accepts_empty_test_sets_and_image_features(tmp_path):
    a = node(n=3, t=0, d=1, x_train=np.ones((3, 2, 2), np.uint8), x_test=np.zeros((0, 2, 2)))
    a["y_test"] = np.zeros(0)  # float64 but empty: does not count as regression
    b = node(n=2, t=1, x_train=np.ones((2, 2, 2)), x_test=np.ones((1, 2, 2)), y=[2, 0])
    ds = npz(path=str(save(tmp_path / "d", a, b)))
    assert ds.feature_shape == (2, 2) and ds.task == "multiclass" and ds.num_classes == 3
    assert ds.nodes[0].n_test == 0 and ds.nodes[0].y_test.dtype == np.int32
    assert pack(ds).buckets[0].x_test.shape == (2, 1, 2, 2)


# --------------------------------------------------------------------------------------
# npz: errors
# --------------------------------------------------------------------------------------


def load_error(path, n_nodes=None) -> str:
    with pytest.raises(ConfigError) as err:
        npz(n_nodes, path=str(path))
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_npz_path_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        npz(3)
    assert str(err.value) == "data.path: missing; 'npz' needs a directory of per-node .npz files"
    with pytest.raises(ConfigError, match=r"^data.path: got 3, expected a directory path"):
        npz(path=3)
    missing = tmp_path / "nope"
    assert load_error(missing) == f"data.path: directory not found: {str(missing)!r}"
    f = tmp_path / "file.npz"
    np.savez(f, **node())
    assert load_error(f).startswith(f"data.path: {str(f)!r} is not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.npy").write_bytes(b"")
    assert (
        load_error(empty)
        == f"data.path: no .npz files in {str(empty)!r} (expected one file per node)"
    )


def test_npz_node_count_mismatch(tmp_path):
    d = save(tmp_path / "d", *(node(seed=i) for i in range(4)))
    assert load_error(d, 5) == (
        f"topology.n: got 5, but data.path {str(d)!r} holds 4 node files; set topology.n = 4"
    )
    with pytest.raises(ConfigError, match="set topology.n = 4"):
        load_dataset({"name": "npz", "path": str(d)}, 3)


def test_npz_invalid_files(tmp_path):
    d = save(tmp_path / "d", node(), node(seed=1))
    (d / "node_01.npz").write_bytes(b"this is not a zip archive")
    assert load_error(d) == (
        "data.path: node file 'node_01.npz' is not a valid .npz file "
        "(not a zip archive of .npy arrays)"
    )
    (d / "node_01.npz").write_bytes(b"")
    assert load_error(d).startswith("data.path: node file 'node_01.npz' is not a valid .npz file")
    np.save(d / "single.npy", np.arange(3))
    (d / "single.npy").rename(d / "node_01.npz")
    assert load_error(d) == (
        "data.path: node file 'node_01.npz' is a single .npy array, not an .npz archive of arrays"
    )
    good = (d / "node_00.npz").read_bytes()
    (d / "node_01.npz").write_bytes(good[: len(good) // 2])  # truncated zip
    assert load_error(d).startswith("data.path: node file 'node_01.npz' ")
    # a zip whose member is not a .npy file
    with zipfile.ZipFile(d / "node_01.npz", "w") as z:
        for k in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(f"{k}.npy", b"garbage")
    assert load_error(d).startswith("data.path: node file 'node_01.npz': cannot read x_train")


def test_npz_object_arrays_are_refused(tmp_path):
    obj = np.empty(2, dtype=object)
    obj[:] = [np.zeros(3), np.zeros(2)]
    d = save(tmp_path / "d", node(), node(y_train=obj))
    assert load_error(d).startswith(
        "data.path: node file 'node_01.npz': y_train is an object array, which is not loaded"
    )


@pytest.mark.parametrize(
    "drop, listed",
    [
        (["y_test"], "y_test"),
        (["x_test", "y_test"], "x_test, y_test"),
        (["x_train", "y_train", "x_test", "y_test"], "x_train, y_train, x_test, y_test"),
    ],
)
def test_npz_missing_arrays(tmp_path, drop, listed):
    bad = {k: v for k, v in node().items() if k not in drop}
    if not bad:
        bad = {"other": np.zeros(1)}
    d = save(tmp_path / "d", node(), node(), node(), node(), names=None)
    np.savez(d / "node_03.npz", **bad)
    assert load_error(d) == (
        f"data.path: node file 'node_03.npz' lacks {listed} "
        "(needs x_train, y_train, x_test, y_test)"
    )


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"y_train": np.zeros(4, int)}, "x_train has 5 rows but y_train has 4"),
        ({"x_test": np.zeros((2, 4))}, "x_test has 2 rows but y_test has 3"),
        ({"y_train": np.zeros((5, 1), int)}, "y_train has shape (5, 1), expected 1-D"),
        ({"y_test": np.int64(1)}, "y_test has shape (), expected 1-D"),
        ({"x_train": np.zeros(5)}, "x_train has shape (5,), expected (samples, features...)"),
        ({"x_test": np.zeros((3, 5))}, "x_test has features of shape (5,), but x_train has (4,)"),
        ({"x_train": np.array([["a"] * 4] * 5)}, "x_train has dtype <U1, expected real numbers"),
        ({"x_train": np.zeros((5, 4), complex)}, "x_train has dtype complex128, expected real"),
        ({"y_train": np.array(["a"] * 5)}, "y_train has dtype <U1, expected integer labels"),
        (
            {"x_train": np.zeros((0, 4)), "y_train": np.zeros(0, int)},
            "has an empty training set (x_train has 0 rows)",
        ),
    ],
)
def test_npz_malformed_node(tmp_path, override, fragment):
    d = save(tmp_path / "d", node(), node(seed=1, **override))
    msg = load_error(d)
    assert msg.startswith("data.path: node file 'node_01.npz'"), msg
    assert fragment in msg, msg


def test_npz_feature_shape_mismatch_across_nodes(tmp_path):
    d = save(tmp_path / "d", node(d=4), node(d=4), node(d=3))
    assert load_error(d) == (
        "data.path: node file 'node_02.npz': x_train has features of shape (3,), "
        "but 'node_00.npz' has (4,)"
    )


@pytest.mark.parametrize(
    "key, value, row",
    [
        ("x_train", np.nan, 2),
        ("x_test", np.inf, 2),
        ("x_test", -np.inf, 0),
        ("x_train", 1e39, 2),  # finite in float64, inf in float32
    ],
)
def test_npz_non_finite_features(tmp_path, key, value, row):
    bad = node(seed=1)
    bad[key] = bad[key].copy()
    bad[key][row, 1] = value
    d = save(tmp_path / "d", node(), bad)
    msg = load_error(d)
    assert msg.startswith(f"data.path: node file 'node_01.npz': {key} holds non-finite values")
    assert msg.endswith(f"first at row {row}")


def test_npz_non_finite_regression_labels(tmp_path):
    d = save(tmp_path / "d", node(y=[0.5, np.nan, 1, 2, 3], y_test=[0.0, 1.0, 2.0]))
    assert load_error(d).startswith(
        "data.path: node file 'node_00.npz': y_train holds non-finite regression labels"
    )


def test_npz_labels_mixing_int_and_float(tmp_path):
    d = save(tmp_path / "d", node(), node(y=np.ones(5, np.float32)))
    assert load_error(d) == (
        "data.path: labels mix integers and floats: 'node_00.npz' y_train is int64 but "
        "'node_01.npz' y_train is float32; use integer labels for classification or floating "
        "labels for regression in every file"
    )
    d2 = save(tmp_path / "d2", node(y_test=np.zeros(3)))  # within one file
    assert "'node_00.npz' y_test is float64" in load_error(d2)


def test_npz_negative_labels(tmp_path):
    d = save(tmp_path / "d", node(), node(y_test=[0, -1, 2]))
    assert load_error(d) == (
        "data.path: node file 'node_01.npz': y_test holds the negative label -1; "
        "class labels must be 0, 1, 2, ..."
    )
