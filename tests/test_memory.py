"""The memory estimate: runs that used to grow until killed are refused at once, in one
line naming the sizes; the estimate's pieces against what they estimate."""

import re
import time
import warnings

import jax
import numpy as np
import pytest

import topologies
from p2p_fmtl import UserError, load_config, memory
from p2p_fmtl.assemble import LearningRates, assemble
from p2p_fmtl.data import load_dataset, pack
from p2p_fmtl.data.packing import plan_groups
from p2p_fmtl.models import build_model
from p2p_fmtl.optim import lr_schedule, make_optimizer

GIB = float(1 << 30)
BASE = {
    "run": {"rounds": 2, "eval_every": 1},
    "topology": {"name": "ring", "n": 8},
    "data": {"name": "clustered_linear", "dim": 4, "n_test": 5},
    "algorithm": {"name": "dsgd", "batch_size": 8},
}


@pytest.fixture
def machine(monkeypatch):
    """A machine with 16 GiB available, whatever this one has."""
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * GIB)
    monkeypatch.delenv(memory.ENV, raising=False)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _stray_label_npz(root, nodes=20, samples=50):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(nodes):
        y = rng.integers(0, 3, samples)
        if i == 3:
            y[7] = 5_000_000  # one mistyped label
        x = rng.normal(size=(samples, 4)).astype(np.float32)
        np.savez(root / f"node_{i:03d}.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10] % 3)


def _raw(**sections):
    raw = {s: dict(b) for s, b in BASE.items()}
    for s, body in sections.items():
        raw[s] = body if s == "data" else {**raw.get(s, {}), **body}
    return raw


CASES = {
    "a billion nodes": (
        _raw(topology={"name": "small_world", "n": 10**9}),
        r"graph: 1000000000 nodes",
    ),
    # a ring is built as edge arrays (no networkx object): its data outweigh its graph
    "a billion-node ring": (_raw(topology={"n": 10**9}), r"largest: data: ~3e\+10 samples"),
    "a billion rounds": (_raw(run={"rounds": 10**9}), r"evaluations kept \(run\.rounds"),
    "a billion test samples": (
        _raw(data={"name": "clustered_linear", "dim": 4, "n_test": 10**9}),
        r"data: .*data\.n_test",
    ),
    "a complete graph of 20,000 nodes": (
        _raw(topology={"name": "complete", "n": 20_000}),
        r"graph: 20000 nodes and ~2e\+08 edges",
    ),
    "a dense random graph of 20,000 nodes": (
        _raw(topology={"name": "erdos_renyi", "n": 20_000, "p": 0.5}),
        r"topology\.name = 'erdos_renyi'",
    ),
    "a million D-EM components": (
        _raw(
            topology={"n": 30},
            data={"name": "fedem_synthetic", "n_test": 100},
            algorithm={"name": "dem", "components": 10**6},
        ),
        r"models: 30 nodes x 1000000 copies",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_runs_that_cannot_fit_are_refused_at_once(machine, case):
    raw, pattern = CASES[case]
    cfg = load_config(raw)
    before, t0 = _rss(), time.perf_counter()
    with pytest.raises(
        UserError,
        match=r"^memory: the run needs ~[\d.e+]+ [GTP]iB, this machine "
        r"has 16 GiB available \(estimate: .*\); largest: ",
    ) as e:
        assemble(cfg)
    assert time.perf_counter() - t0 < 5 and _rss() - before < 200 << 20, case
    assert re.search(pattern, str(e.value)), str(e.value)
    assert "\n" not in str(e.value) and "P2P_FMTL_MEMORY_CHECK=0" in str(e.value)


def test_a_stray_label_is_refused_and_named(machine, tmp_path):
    _stray_label_npz(tmp_path / "npz")
    cfg = load_config(_raw(topology={"n": 20}, data={"name": "npz", "path": str(tmp_path / "npz")}))
    before = _rss()
    with (
        pytest.warns(UserWarning, match=r"5000001 outputs.*only 4 distinct labels occur"),
        pytest.raises(
            UserError,
            match=r"memory: .*the model has 5000001 outputs, as the labels "
            r"reach 5000000 \(a stray label\?\)",
        ),
    ):
        assemble(cfg)
    assert _rss() - before < 200 << 20


def test_a_run_near_the_limit_warns_and_the_switch_turns_the_check_off(monkeypatch):
    cfg = load_config(_raw(topology={"n": 10**6}))
    need = memory.estimate_config(cfg).total
    monkeypatch.setattr(memory, "available_bytes", lambda: need / 0.8)
    with pytest.warns(UserWarning, match=r"^memory: the run needs ~.* of the .* available"):
        memory.check(memory.estimate_config(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        memory.check(memory.estimate_config(cfg), warn=False)
    monkeypatch.setattr(memory, "available_bytes", lambda: need / 2)
    with pytest.raises(UserError):
        memory.check(memory.estimate_config(cfg))
    monkeypatch.setenv(memory.ENV, "0")
    memory.check(memory.estimate_config(cfg))  # off: no error


def test_available_memory_is_read_from_the_system():
    avail = memory.available_bytes()
    with open("/proc/meminfo") as f:
        total = next(float(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal"))
    assert 0 < avail <= total


def test_small_runs_pass_the_check(machine):
    parts = assemble(load_config(BASE))
    assert parts.n == 8


# ----------------------------------------------------------------------- pieces of the estimate
@pytest.mark.parametrize(
    "name, n, params",
    [
        ("complete", 60, {}),
        ("erdos_renyi", 300, {"p": 0.1}),
        ("random_regular", 200, {"d": 6}),
        ("small_world", 200, {"k": 6}),
        ("barabasi_albert", 300, {"m": 3}),
        ("random_geometric", 300, {}),
        ("hypercube", 256, {}),
        ("exponential", 200, {}),
        ("two_cliques", 60, {}),
        ("planted_partition", 240, {"groups": 4, "p_in": 0.3, "p_out": 0.02}),
        ("ring", 50, {}),
        ("torus", 64, {}),
        ("star", 30, {}),
    ],
)
def test_expected_edges_match_the_builders(name, n, params):
    G = topologies.build(name, n, seed=0, **params)
    expected = memory.expected_edges({"name": name, **params}, n)
    assert abs(expected - G.number_of_edges()) <= 0.25 * G.number_of_edges() + 2, name


def test_fedem_sizes_follow_the_capped_lognormal():
    """The closed form against the generator's own draws (1,500 nodes)."""
    ds = load_dataset(
        {"name": "fedem_synthetic", **load_config({})["data"], "dim": 2, "n_test": 1}, 1500
    )
    mean = np.mean([nd.n_train for nd in ds.nodes])
    assert mean == pytest.approx(memory._lognormal_capped_mean(4, 2, 50, 1000), rel=0.08)


def test_packed_bytes_and_parameters_match_what_is_built():
    cfg = load_config(
        _raw(topology={"n": 12}, data={"name": "fedem_synthetic", "dim": 6, "n_test": 7})
    )
    ds = load_dataset(cfg["data"], 12)
    groups = plan_groups(np.array([nd.n_train for nd in ds.nodes]), 8, "full", 4)
    packed = pack(ds, batch_size=8, bucketing="full", max_buckets=4)
    data = sum(
        getattr(b, f).nbytes
        for b in packed.buckets
        for f in ("x_train", "y_train", "x_test", "y_test")
    )
    assert memory.packed_bytes(ds, groups) == data
    model = build_model({"name": "mlp", "hidden": [5], "activation": "relu"}, (6,), 3)
    params = model.init(jax.random.PRNGKey(0))
    assert (
        memory.param_count(model)
        == sum(p.size for p in jax.tree.leaves(params))
        == 6 * 5 + 5 + 5 * 3 + 3
    )
    alg = dict(load_config({})["algorithm"])
    ratio = lambda **kw: memory.optimizer_state_ratio(make_optimizer({**alg, **kw}))  # noqa: E731
    assert ratio() == 0 and ratio(momentum=0.9) == 1 and ratio(optimizer="adam") == 2


def test_the_learning_rates_are_computed_when_read():
    """Per-round rates equal the old per-round list (the schedule called round by round)."""
    alg = dict(load_config({})["algorithm"])
    for kw in ({}, {"schedule": "cosine", "lr_min": 0.01}, {"schedule": "multistep"}):
        a = {**alg, **kw}
        lrs = LearningRates(a, 40, True)
        sched = lr_schedule(a, 40)
        old = np.asarray([sched(t) for t in range(40)], np.float32)
        assert len(lrs) == 40 and np.array_equal(np.asarray(lrs), old)
        assert np.array_equal(lrs[np.array([3, 39, 39])], old[[3, 39, 39]])
    assert np.array_equal(LearningRates(alg, 0, False)[np.arange(1)], np.zeros(1, np.float32))
    big = LearningRates(alg, 2**31 - 1, True)  # nothing stored per round
    assert len(big) == 2**31 - 1 and big[np.array([2**31 - 2])][0] == np.float32(alg["lr"])
