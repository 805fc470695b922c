"""Tests of the real and semi-real datasets: digits, mnist1d, leaf, dialects, digits_multitask,
and the partitioners of ``p2p_fmtl.data.partitions``."""

from __future__ import annotations

import importlib
import json
import random

import numpy as np
import pytest

import p2p_fmtl
from p2p_fmtl.data import DATASETS, dataset_params, load_dataset, pack, validate_dataset
from p2p_fmtl.data.base import FederatedDataset, NodeDataset
from p2p_fmtl.data.dialects import dialects
from p2p_fmtl.data.digits import digits, digits_pool
from p2p_fmtl.data.leaf import ALL_LETTERS, leaf
from p2p_fmtl.data.mnist1d import mnist1d, mnist1d_pool
from p2p_fmtl.data.multitask import HEADS, digits_multitask
from p2p_fmtl.data.partitions import (
    MixtureComponents,
    dirichlet_partition,
    pathological_partition,
    quantity_partition,
    split_node,
)
from p2p_fmtl.errors import ConfigError

mnist1d_module = importlib.import_module("p2p_fmtl.data.mnist1d")  # the name is the function


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch):
    monkeypatch.setenv("P2P_FMTL_CACHE", "off")


def label_entropy(counts: np.ndarray) -> np.ndarray:
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


def pairs(ds):
    return ds.info["train_index"], ds.info["test_index"]


def assert_same(a: FederatedDataset, b: FederatedDataset) -> None:
    assert (a.task, a.num_classes, a.num_nodes) == (b.task, b.num_classes, b.num_nodes)
    for na, nb in zip(a.nodes, b.nodes, strict=True):
        for k in ("x_train", "y_train", "x_test", "y_test"):
            assert np.array_equal(getattr(na, k), getattr(nb, k)), k


# --------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------


def test_registered_with_their_config_keys():
    for name, fn in [
        ("digits", digits),
        ("mnist1d", mnist1d),
        ("leaf", leaf),
        ("dialects", dialects),
        ("digits_multitask", digits_multitask),
    ]:
        assert DATASETS[name] is fn
    common = {
        "partition": "dirichlet",
        "alpha": 0.5,
        "classes_per_node": 2,
        "components": 3,
        "transform": "label",
        "min_samples": 10,
        "test_fraction": 0.2,
        "seed": 0,
    }
    assert dataset_params("digits") == common
    assert dataset_params("mnist1d") == {"num_samples": 5000, **common}
    assert dataset_params("leaf") == {"path": "", "num_classes": 0}
    assert set(dataset_params("dialects")) == {
        "clusters",
        "vocab",
        "seq_len",
        "samples",
        "test_samples",
        "concentration",
        "size_sigma",
        "seed",
    }


# --------------------------------------------------------------------------------------
# digits and the partitions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["dirichlet", "pathological", "mixture", "quantity", "iid"])
def test_digits_shapes_determinism_and_coverage(scheme):
    ds = digits(12, partition=scheme, seed=3)
    assert ds.task == "multiclass" and ds.num_classes == 10 and ds.feature_shape == (8, 8)
    x, y = digits_pool()
    assert x.shape == (1797, 8, 8) and x.dtype == np.float32 and 0 <= x.min() < x.max() <= 1
    used = np.concatenate(ds.info["train_index"] + ds.info["test_index"])
    assert len(np.unique(used)) == len(used)  # disjoint
    if scheme != "pathological":
        assert len(used) == 1797  # every sample used
    for i, nd in enumerate(ds.nodes):
        assert nd.x_train.dtype == nd.x_test.dtype == np.float32
        assert nd.y_train.dtype == nd.y_test.dtype == np.int32
        assert nd.x_train.shape == (nd.n_train, 8, 8) and nd.y_train.shape == (nd.n_train,)
        n = nd.n_train + nd.n_test
        assert nd.n_test == pytest.approx(0.2 * n, abs=1 + 0.2 * 10)  # per stratum <= 1 off
        if scheme != "mixture":
            assert np.array_equal(nd.x_train, x[ds.info["train_index"][i]])
            assert np.array_equal(nd.y_test, y[ds.info["test_index"][i]])
    assert_same(ds, digits(12, partition=scheme, seed=3))
    other = digits(12, partition=scheme, seed=4)
    assert not all(
        np.array_equal(a.y_train, b.y_train) for a, b in zip(ds.nodes, other.nodes, strict=False)
    )
    validate_dataset(ds)


def test_dirichlet_small_alpha_skews_labels_more():
    skewed = digits(20, partition="dirichlet", alpha=0.05, min_samples=5)
    flat = digits(20, partition="dirichlet", alpha=100.0, min_samples=5)
    h_skewed = label_entropy(skewed.info["label_counts"]).mean()
    h_flat = label_entropy(flat.info["label_counts"]).mean()
    assert h_skewed < 0.6 * h_flat
    assert h_flat > 0.95 * np.log(10)
    sizes = [len(a) + len(b) for a, b in zip(*pairs(skewed), strict=True)]
    assert min(sizes) >= 5


def test_dirichlet_min_samples_top_up():
    y = np.repeat(np.arange(10), 100)
    rng = np.random.default_rng(0)
    parts = dirichlet_partition(y, 50, 0.01, rng, min_samples=15)  # resampling cannot succeed
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 15 and sizes.sum() == 1000
    assert len(np.unique(np.concatenate(parts))) == 1000
    with pytest.raises(ConfigError, match=r"^data.min_samples: got 30, but 50 nodes x 30"):
        dirichlet_partition(y, 50, 0.5, rng, min_samples=30)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_nodes_hold_exactly_k_classes(k):
    ds = digits(30, partition="pathological", classes_per_node=k, seed=1)
    y = digits_pool()[1]
    holders = np.zeros(10, int)
    for i, nd in enumerate(ds.nodes):
        node_classes = np.unique(
            y[np.concatenate([ds.info["train_index"][i], ds.info["test_index"][i]])]
        )
        assert len(node_classes) == k
        assert len(np.unique(nd.y_train)) == k  # the stratified split keeps them all in train
        holders[node_classes] += 1
    assert holders.max() - holders.min() <= 1  # balanced


def test_pathological_too_few_samples():
    y = np.repeat(np.arange(4), 3)
    with pytest.raises(ConfigError, match="class .* has 3 samples for"):
        pathological_partition(y, 10, 2, np.random.default_rng(0))


def test_quantity_sizes_are_skewed_but_labels_iid():
    rng = np.random.default_rng(0)
    skew = [len(p) for p in quantity_partition(2000, 20, 0.3, rng, min_samples=7)]
    even = [len(p) for p in quantity_partition(2000, 20, 1000.0, rng, min_samples=7)]
    assert min(skew) >= 7 and sum(skew) == sum(even) == 2000
    assert np.std(skew) > 4 * np.std(even)
    ds = digits(10, partition="quantity", alpha=1000.0)
    assert label_entropy(ds.info["label_counts"]).mean() > 0.95 * np.log(10)


def test_split_node_is_stratified():
    strata = np.repeat(np.arange(5), [10, 20, 3, 2, 40])
    rng = np.random.default_rng(0)
    tr, te = split_node(strata, 0.25, rng)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(75))
    for s, n in zip(range(5), [10, 20, 3, 2, 40], strict=True):
        assert abs(np.sum(strata[te] == s) - 0.25 * n) <= 1
        assert np.sum(strata[tr] == s) >= 1
    tr, te = split_node(np.zeros(1, int), 0.99, rng)
    assert len(tr) == 1 and len(te) == 0
    tr, te = split_node(np.zeros(10, int), 0.0, rng)
    assert len(te) == 0


@pytest.mark.parametrize("transform", ["label", "pixel", "both", "mixed"])
def test_mixture_components_and_weights(transform):
    m = 5 if transform == "mixed" else 3
    ds = digits(6, partition="mixture", components=m, transform=transform, alpha=0.5, seed=2)
    info = ds.info
    pi = info["mixture_weights"]
    assert pi.shape == (6, m) and np.all(pi >= 0) and np.allclose(pi.sum(axis=1), 1)
    assert len(info["components"]) == m and info["components"][0] == "identity"
    if transform == "mixed":
        assert info["components"][1:4] == ["label_shift", "pixel_permutation", "flip"]
    mc = MixtureComponents.from_info(info)
    x, y = digits_pool()
    for i, nd in enumerate(ds.nodes):
        for split in ("train", "test"):
            idx, comp = info[f"{split}_index"][i], info[f"{split}_component"][i]
            xs, ys = getattr(nd, f"x_{split}"), getattr(nd, f"y_{split}")
            assert len(idx) == len(comp) == len(ys)
            for c in range(m):
                sel = comp == c
                tx, ty = mc.apply(c, x[idx[sel]], y[idx[sel]])
                assert np.array_equal(xs[sel], tx) and np.array_equal(ys[sel], ty)
    # label-mapped components disagree with each other on every class
    maps = info["label_maps"]
    labelled = [0] + [j for j, name in enumerate(info["components"]) if "label" in name]
    for a in labelled:
        for b in labelled:
            if a < b:
                assert np.all(maps[a] != maps[b])
    for j, name in enumerate(info["components"]):
        perm = info["feature_perms"][j]
        assert sorted(perm.tolist()) == list(range(64))
        assert ("pixel" in name) == (not np.array_equal(perm, np.arange(64)))
        assert ("label" in name) == (not np.array_equal(maps[j], np.arange(10)))


def test_mixture_samples_follow_the_weights():
    ds = digits(4, partition="mixture", components=3, alpha=1.0, min_samples=1, seed=5)
    for i in range(4):
        comp = np.concatenate([ds.info["train_component"][i], ds.info["test_component"][i]])
        freq = np.bincount(comp, minlength=3) / len(comp)
        assert np.abs(freq - ds.info["mixture_weights"][i]).max() < 0.1  # ~450 samples
    # the test set follows the node's components: same proportions within one sample per stratum
    for i in range(4):
        tr = np.bincount(ds.info["train_component"][i], minlength=3)
        te = np.bincount(ds.info["test_component"][i], minlength=3)
        assert np.all(np.abs(te - 0.25 * tr) <= 10 + 1)


def test_mixture_label_components_conflict_for_a_global_model():
    """The best single labelling of the identical image is right for one component only."""
    ds = digits(3, partition="mixture", components=3, alpha=100.0, seed=0)
    maps = ds.info["label_maps"]
    # for each true digit, the three components produce three different labels
    assert all(len(set(maps[:, c].tolist())) == 3 for c in range(10))


# --------------------------------------------------------------------------------------
# mnist1d
# --------------------------------------------------------------------------------------


def test_mnist1d_pool_is_the_package_generator_and_restores_global_rng(tmp_path, monkeypatch):
    from mnist1d.data import get_dataset_args, make_dataset

    monkeypatch.setenv("P2P_FMTL_CACHE", str(tmp_path / "cache"))
    mnist1d_module._pool.cache_clear()
    np.random.seed(123)
    random.seed(7)
    before_np, before_py = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(7)
    x, y = mnist1d_pool(300)
    assert (np.random.random(), random.random()) == (before_np, before_py)
    assert x.shape == (300, 40) and x.dtype == np.float32 and y.shape == (300,)
    args = get_dataset_args()
    args.num_samples = 300
    ref = make_dataset(args)
    assert np.array_equal(x, np.concatenate([ref["x"], ref["x_test"]]).astype(np.float32))
    assert np.array_equal(y, np.concatenate([ref["y"], ref["y_test"]]))
    # cached on disk, and the disk copy is used after the in-process cache is cleared
    files = list((tmp_path / "cache").glob("mnist1d-300-*.npz"))
    assert len(files) == 1
    mnist1d_module._pool.cache_clear()
    x2, y2 = mnist1d_pool(300)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    files[0].write_bytes(b"corrupt")
    mnist1d_module._pool.cache_clear()
    assert np.array_equal(mnist1d_pool(300)[0], x)  # regenerated
    mnist1d_module._pool.cache_clear()


def test_mnist1d_dataset():
    ds = mnist1d(8, num_samples=500, partition="pathological", classes_per_node=2)
    assert ds.feature_shape == (40,) and ds.num_classes == 10
    assert all(len(np.unique(nd.y_train)) == 2 for nd in ds.nodes)
    assert_same(ds, mnist1d(8, num_samples=500, partition="pathological", classes_per_node=2))
    with pytest.raises(ConfigError, match=r"^data.num_samples: got 5, expected an integer >= 10"):
        mnist1d(4, num_samples=5)


# --------------------------------------------------------------------------------------
# dialects
# --------------------------------------------------------------------------------------


def test_dialects_shapes_and_clusters():
    ds = dialects(7, clusters=3, vocab=16, seq_len=10, samples=20, test_samples=5)
    assert ds.task == "lm" and ds.num_classes == 16 and ds.feature_shape == (10,)
    assert ds.info["cluster"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    for nd in ds.nodes:
        assert nd.x_train.shape == nd.y_train.shape == (20, 10)
        assert nd.x_test.shape == nd.y_test.shape == (5, 10)
        assert nd.x_train.dtype == nd.y_train.dtype == np.int32
        assert np.array_equal(nd.x_train[:, 1:], nd.y_train[:, :-1])  # y is x shifted by one
        assert 0 <= nd.x_train.min() and nd.y_train.max() < 16
    P = ds.info["transitions"]
    assert P.shape == (3, 16, 16) and np.allclose(P.sum(axis=2), 1)
    assert np.all(ds.info["entropy_rate"] < 0.75 * np.log(16))  # peaked rows
    assert not np.allclose(P[0], P[1])
    assert_same(ds, dialects(7, clusters=3, vocab=16, seq_len=10, samples=20, test_samples=5))
    b = pack(ds, batch_size=8).buckets[0]
    assert b.x_train.dtype == b.y_train.dtype == np.int32 and b.y_train.shape == (7, 20, 10)
    varied = dialects(40, samples=50, size_sigma=0.8)
    sizes = varied.info["num_samples"]
    assert sizes.min() >= 1 and sizes.std() > 10 and 30 < sizes.mean() < 75
    validate_dataset(ds)


def test_dialects_empirical_transitions_and_entropy_floor():
    ds = dialects(2, clusters=2, vocab=8, seq_len=50, samples=2000, test_samples=400, seed=1)
    P, mu = ds.info["transitions"], ds.info["stationary"]
    for i, nd in enumerate(ds.nodes):
        c = ds.info["cluster"][i]
        counts = np.zeros((8, 8))
        np.add.at(counts, (nd.x_train.ravel(), nd.y_train.ravel()), 1)
        visits = counts.sum(axis=1)
        freq = counts / np.maximum(visits[:, None], 1)
        often = visits >= 200
        assert often.sum() >= 4
        tol = 5 * np.sqrt(P[c] * (1 - P[c]) / np.maximum(visits, 1)[:, None]) + 1e-3
        assert np.all(np.abs(freq - P[c])[often] <= tol[often])
        assert np.abs(visits / visits.sum() - mu[c]).max() < 0.02
        # the true chain's mean loss is the entropy rate
        loss = -np.log(P[c][nd.x_train, nd.y_train]).mean()
        assert loss == pytest.approx(ds.info["entropy_rate"][c], rel=0.05)


# --------------------------------------------------------------------------------------
# digits_multitask
# --------------------------------------------------------------------------------------


def test_digits_multitask():
    ds = digits_multitask(7)
    assert ds.task == "multitask" and ds.num_classes == 13
    assert ds.info["heads"] == [dict(h) for h in HEADS]
    assert ds.info["node_task"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    x, y = digits_pool()
    ink = x.reshape(len(x), -1).mean(axis=1)
    ink = (ink - ink.mean()) / ink.std()
    for i, nd in enumerate(ds.nodes):
        t = ds.info["node_task"][i]
        idx = ds.info["train_index"][i]
        assert nd.y_train.shape == (nd.n_train, 2) and nd.y_train.dtype == np.float32
        assert np.all(nd.y_train[:, 1] == t) and np.all(nd.y_test[:, 1] == t)
        want = [y[idx], y[idx] % 2, ink[idx]][t]
        np.testing.assert_allclose(nd.y_train[:, 0], want, rtol=1e-6, atol=1e-6)
        assert np.array_equal(nd.x_train, x[idx])
    b = pack(ds, batch_size=16).buckets[0]
    assert b.y_train.dtype == np.float32 and b.y_train.shape[2:] == (2,)
    assert digits_multitask(6, assignment="contiguous").info["node_task"].tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    rnd = digits_multitask(9, assignment="random", partition="dirichlet", seed=1)
    assert sorted(rnd.info["node_task"].tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    validate_dataset(rnd)


def test_validate_lm_and_multitask():
    def one(x, y, task, classes, info=None):
        nd = NodeDataset(x, y, x[:1], y[:1])
        return FederatedDataset([nd], task, classes, info or {})

    tokens = np.zeros((3, 4), np.int32)
    validate_dataset(one(tokens, tokens, "lm", 5))
    with pytest.raises(
        ConfigError, match="y_train labels in \\[5, 5\\], outside the model's classes 0..4"
    ):
        validate_dataset(one(tokens, tokens + 5, "lm", 5))
    with pytest.raises(ConfigError, match="x_train tokens in \\[-1, -1\\]"):
        validate_dataset(one(tokens - 1, tokens, "lm", 5))
    with pytest.raises(ConfigError, match="expected \\(samples, tokens\\)"):
        validate_dataset(one(tokens, tokens[:, 0], "lm", 5))
    heads = {"heads": [dict(h) for h in HEADS]}
    x = np.zeros((3, 2), np.float32)
    good = np.array([[9, 0], [1, 1], [-3.5, 2]], np.float32)
    validate_dataset(one(x, good, "multitask", 13, heads))
    for bad, msg in [
        (good[:, :1], "expected \\(samples, 2\\)"),
        (np.array([[0, 3]] * 3, np.float32), "head ids in \\[3.0, 3.0\\]"),
        (np.array([[2, 1]] * 3, np.float32), "for head 'parity'"),
        (np.array([[0.5, 0]] * 3, np.float32), "for head 'class'"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            validate_dataset(one(x, bad, "multitask", 13, heads))
    with pytest.raises(ConfigError, match="num_classes is 12"):
        validate_dataset(one(x, good, "multitask", 12, heads))


# --------------------------------------------------------------------------------------
# leaf
# --------------------------------------------------------------------------------------


def write_leaf(root, split, files: dict[str, dict]) -> None:
    d = root / split
    d.mkdir(parents=True, exist_ok=True)
    for name, user_data in files.items():
        blob = {
            "users": list(user_data),
            "num_samples": [len(v["y"]) for v in user_data.values()],
            "user_data": user_data,
        }
        (d / name).write_text(json.dumps(blob))


def femnist_users(rng, users, n):
    return {
        u: {"x": rng.random((n, 784)).round(3).tolist(), "y": rng.integers(0, 20, n).tolist()}
        for u in users
    }


def test_leaf_femnist_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "femnist"
    train_a = femnist_users(rng, ["f_02", "f_00"], 5)
    train_b = femnist_users(rng, ["f_01", "f_03"], 4)
    test = femnist_users(rng, ["f_00", "f_01", "f_02", "f_03"], 2)
    write_leaf(root, "train", {"a.json": train_a, "b.json": train_b})
    write_leaf(root, "test", {"all.json": test})
    ds = leaf(3, path=str(root))
    assert ds.info["users"] == ["f_00", "f_01", "f_02"] and ds.info["flavour"] == "femnist"
    assert ds.task == "multiclass" and ds.num_classes == 62  # 784 features, path names femnist
    assert ds.feature_shape == (28, 28)
    train = {**train_a, **train_b}
    for u, nd in zip(ds.info["users"], ds.nodes, strict=True):
        assert nd.x_train.dtype == np.float32 and nd.y_train.dtype == np.int32
        np.testing.assert_array_equal(
            nd.x_train, np.asarray(train[u]["x"], np.float32).reshape(-1, 28, 28)
        )
        assert nd.y_train.tolist() == train[u]["y"]
        assert nd.y_test.tolist() == test[u]["y"]
    other = tmp_path / "other"
    write_leaf(other, "train", {"a.json": train_a})
    write_leaf(other, "test", {"a.json": test})
    top = max(max(d[u]["y"]) for d in (train_a, test) for u in train_a)
    assert leaf(2, path=str(other)).num_classes == top + 1
    assert leaf(2, path=str(other), num_classes=30).num_classes == 30
    cfg = {"name": "leaf", **dataset_params("leaf"), "path": str(root)}
    assert load_dataset(cfg, 4).num_nodes == 4


def test_leaf_shakespeare_round_trip(tmp_path):
    assert len(ALL_LETTERS) == 80
    rng = np.random.default_rng(1)

    def text(n):
        xs = ["".join(rng.choice(list(ALL_LETTERS), 80)) for _ in range(n)]
        return {"x": xs, "y": [str(rng.choice(list(ALL_LETTERS))) for _ in range(n)]}

    train = {"KING_LEAR": text(6), "HAMLET": text(3)}
    test = {"KING_LEAR": text(2), "HAMLET": text(1)}
    write_leaf(tmp_path, "train", {"t.json": train})
    write_leaf(tmp_path, "test", {"t.json": test})
    ds = leaf(2, path=str(tmp_path))
    assert ds.info["users"] == ["HAMLET", "KING_LEAR"] and ds.info["flavour"] == "shakespeare"
    assert ds.num_classes == 80 and ds.feature_shape == (80,)
    nd = ds.nodes[1]
    assert nd.x_train.dtype == np.int32 and nd.x_train.shape == (6, 80)
    decoded = ["".join(ALL_LETTERS[t] for t in row) for row in nd.x_train]
    assert decoded == train["KING_LEAR"]["x"]
    assert [ALL_LETTERS[t] for t in nd.y_test] == test["KING_LEAR"]["y"]
    assert pack(ds).buckets[0].x_train.dtype == np.int32
    bad = {"A": {"x": ["a" * 79 + "\u00e9"], "y": ["a"]}}
    write_leaf(tmp_path, "train", {"t.json": bad})
    write_leaf(tmp_path, "test", {"t.json": bad})
    with pytest.raises(ConfigError, match="character 'é' is not in LEAF's ALL_LETTERS"):
        leaf(1, path=str(tmp_path))


def test_leaf_errors(tmp_path):
    def err(n, path, **kw) -> str:
        with pytest.raises(ConfigError) as e:
            leaf(n, path=str(path), **kw)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert err(1, "").startswith("data.path: missing; 'leaf' needs a directory")
    assert err(1, tmp_path / "nope").startswith("data.path: directory not found")
    assert "has no train/ subdirectory" in err(1, tmp_path)
    rng = np.random.default_rng(0)
    write_leaf(tmp_path, "train", {"a.json": femnist_users(rng, ["u1", "u2"], 3)})
    assert "has no test/ subdirectory" in err(1, tmp_path)
    write_leaf(tmp_path, "test", {"a.json": femnist_users(rng, ["u1"], 3)})
    assert err(2, tmp_path) == ("data.path: user 'u2' is in train/ but not in test/ (1 such users)")
    assert leaf(1, path=str(tmp_path)).num_nodes == 1
    assert err(3, tmp_path).startswith("topology.n: got 3, but data.path")
    (tmp_path / "test" / "bad.json").write_text("{not json")
    assert err(1, tmp_path).startswith("data.path: test/bad.json is not valid JSON")
    (tmp_path / "test" / "bad.json").write_text("[1, 2]")
    assert err(1, tmp_path).startswith("data.path: test/bad.json: expected an object")
    (tmp_path / "test" / "bad.json").write_text(
        json.dumps({"users": ["u1"], "user_data": {"u1": {"x": [[0.5] * 784], "y": [1, 2]}}})
    )
    assert "has 1 x but 2 y" in err(1, tmp_path)
    (tmp_path / "test" / "bad.json").unlink()
    assert "expected at least" in err(1, tmp_path, num_classes=2)
    with pytest.raises(ConfigError, match="^data.path: missing"):
        load_dataset({"name": "leaf", "path": "", "num_classes": 0}, 2)


# --------------------------------------------------------------------------------------
# config errors and end to end
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, key, value, fragment",
    [
        ("digits", "partition", "shards", "data.partition: got 'shards', expected one of"),
        ("digits", "alpha", 0.0, "data.alpha: got 0.0, expected a number in (0, inf)"),
        ("digits", "classes_per_node", 11, "data.classes_per_node: got 11, expected an integer"),
        ("digits", "test_fraction", 1.0, "data.test_fraction: got 1.0, expected a number in"),
        ("digits", "min_samples", 500, "data.min_samples: got 500, but 8 nodes x 500"),
        ("digits", "transform", "rotate", "data.transform: got 'rotate'"),
        ("mnist1d", "seed", -1, "data.seed: got -1, expected an integer >= 0"),
        ("dialects", "clusters", 9, "data.clusters: got 9, expected an integer in [1, 8]"),
        ("dialects", "vocab", 1, "data.vocab: got 1, expected an integer >= 2"),
        ("dialects", "concentration", -1.0, "data.concentration: got -1.0"),
        ("digits_multitask", "partition", "mixture", "data.partition: got 'mixture'"),
        ("digits_multitask", "assignment", "mod", "data.assignment: got 'mod'"),
    ],
)
def test_bad_values_raise_config_errors(name, key, value, fragment):
    cfg = {"name": name, **dataset_params(name), key: value}
    if name == "mnist1d":
        cfg["num_samples"] = 200
    with pytest.raises(ConfigError) as e:
        load_dataset(cfg, 8)
    assert str(e.value).startswith(fragment), str(e.value)
    assert "\n" not in str(e.value)


def test_mixture_components_beyond_label_maps():
    with pytest.raises(ConfigError, match="^data.components: got 11, but transform 'label'"):
        digits(4, partition="mixture", components=11)
    assert (
        len(digits(4, partition="mixture", transform="pixel", components=12).info["components"])
        == 12
    )


def test_config_keys_and_unknown_key():
    cfg = p2p_fmtl.load_config(
        {
            "topology": {"name": "ring", "n": 4},
            "data": {"name": "digits", "alpha": 1, "partition": "pathological"},
        }
    )
    assert cfg["data"]["alpha"] == 1.0 and cfg["data"]["classes_per_node"] == 2
    with pytest.raises(ConfigError, match="data"):
        p2p_fmtl.load_config(
            {"topology": {"name": "ring", "n": 4}, "data": {"name": "digits", "alpah": 1.0}}
        )


@pytest.mark.parametrize(
    "data",
    [
        {"name": "digits", "partition": "dirichlet", "alpha": 1.0},
        {"name": "mnist1d", "num_samples": 1000, "partition": "iid"},
    ],
)
def test_dsgd_end_to_end(data):
    cfg = p2p_fmtl.load_config(
        {
            "run": {"rounds": 6, "eval_every": 3, "seed": 0},
            "topology": {"name": "ring", "n": 6},
            "data": data,
            "model": {"name": "mlp", "hidden": [16]},
            "algorithm": {"name": "dsgd", "lr": 0.1, "batch_size": 32, "local_steps": 4},
        }
    )
    res = p2p_fmtl.run(cfg)
    assert [r["round"] for r in res.metrics] == [0, 3, 6]
    assert res.metrics[-1]["train_loss"] < res.metrics[0]["train_loss"]
    assert np.isfinite(res.metrics[-1]["test_acc"])
