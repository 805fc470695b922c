"""A new user's first hour: mistakes that used to crash or run silently wrong, now refused
in one line at config load (or fixed), and the config tools a new user reaches for
(``unset``, switching a builder / generator / model / algorithm by override)."""

import warnings

import numpy as np
import pytest

from p2p_fmtl import ConfigError, UserError, load_config
from p2p_fmtl import config as config_mod
from p2p_fmtl.config import SECTIONS, _section_schema, apply_overrides, parse_override
from p2p_fmtl.data import FederatedDataset, NodeDataset, load_dataset, validate_dataset
from p2p_fmtl.models import build_model, model_factory, model_params
from p2p_fmtl.models.adapters import builds_a_module

BASE = {
    "run": {"rounds": 2, "eval_every": 1},
    "topology": {"name": "ring", "n": 8},
    "data": {"name": "clustered_linear", "dim": 4, "n_test": 5},
    "algorithm": {"name": "dsgd", "batch_size": 8},
}


def _refused(raw, pattern, **kw):
    with pytest.raises(ConfigError, match=pattern) as e:
        load_config(raw, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def _with(section, **kw):
    raw = {s: dict(b) for s, b in BASE.items()}
    raw.setdefault(section, {}).update(kw)
    return raw


# ----------------------------------------------------------------------- files and numbers
def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"[run]\nrounds = 2 # caf\xe9\n")
    msg = _refused(bad, r"latin1\.toml: not UTF-8 text \(byte 0xe9 at offset 22\)")
    assert "save the config file as UTF-8" in msg
    bom = tmp_path / "bom.toml"  # what some Windows editors write: accepted
    bom.write_bytes(b"\xef\xbb\xbf[run]\nrounds = 3\n")
    assert load_config(bom)["run"]["rounds"] == 3


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("run.seed=18446744073709551616", r"run\.seed: got 18446744073709551616.*fits in 64 bits"),
        ("run.rounds=1e400", r"run\.rounds: got inf, expected an integer"),
        ("run.rounds=1000000000000", r"run\.rounds: got 1000000000000.*2147483647"),
        ("algorithm.lr=1e400", r"algorithm\.lr: got inf"),
        ("algorithm.lr=1" + "0" * 400, r"algorithm\.lr: got 10+, expected a number"),
        ("algorithm.milestones=[1e400]", r"algorithm\.milestones: got \[inf\]"),
        ("algorithm.batch_size=9.5e18", r"algorithm\.batch_size: got 9\.5e\+18.*64 bits"),
        ("topology.seed=-9223372036854775809", r"topology\.seed: got -9223372036854775809"),
    ],
)
def test_overflowing_values_are_one_line_errors(text, pattern):
    key, value = parse_override(text)
    _refused(BASE, pattern, overrides={key: value})


def test_every_integer_key_is_held_to_64_bits():
    """2**70 for every integer key of every section: one line naming it, never a crash."""
    names = {"topology": "erdos_renyi", "data": "fedem_synthetic", "model": "mlp"}
    names["algorithm"] = "dem"
    for section in SECTIONS:
        for key, spec in _section_schema(section, names.get(section)).items():
            if spec.kind not in ("int", "int|list[int]", "list[int]"):
                continue
            value = [2**70] if spec.kind == "list[int]" else 2**70
            body = {"name": names[section]} if section in names else {}
            raw = {section: {**body, key: value}}
            if section == "algorithm" and key == "local_steps":
                raw["algorithm"]["local_epochs"] = 0
            _refused(raw, rf"^{section}\.{key}: got \[?{2**70}\]?, .*64 bits")
    cfg = load_config({"run": {"seed": 2**63 - 1}})  # the largest int64 is fine
    assert cfg["run"]["seed"] == 2**63 - 1


# ----------------------------------------------------------------------- optimizer, schedule
def test_lbfgs_is_refused_with_the_optimizers_that_work():
    msg = _refused(_with("algorithm", optimizer="lbfgs"), r"algorithm\.optimizer: got 'lbfgs'")
    allowed = msg.split("allowed: ")[1].split(", ")
    assert "sgd" in allowed and "adam" in allowed and "lbfgs" not in allowed
    assert "line search" in msg


def test_a_cosine_schedule_cannot_end_above_its_start():
    raw = _with("algorithm", schedule="cosine", lr=0.1, lr_min=0.5)
    _refused(raw, r"algorithm\.lr_min: got 0\.5, above algorithm\.lr = 0\.1.*cosine")
    assert load_config(_with("algorithm", schedule="cosine", lr=0.1, lr_min=0.1))
    assert load_config(_with("algorithm", schedule="multistep", lr=0.1, lr_min=0.5))


def test_node_drop_of_one_is_refused_with_the_reason():
    msg = _refused(_with("faults", node_drop=1.0), r"faults\.node_drop: got 1\.0")
    assert "nothing trains" in msg and "[0, 1)" in msg
    assert load_config(_with("faults", node_drop=0.99))["faults"]["node_drop"] == 0.99


def test_fmmc_loads_without_cvxpy(monkeypatch):
    """The fastest-mixing rules use the first-order solver (numpy/scipy): no cvxpy needed."""
    monkeypatch.setattr(config_mod, "_installed", lambda name: name != "cvxpy")
    for rule in ("fmmc", "fmmc_zero_diagonal"):
        assert load_config(_with("topology", mixing=rule))["topology"]["mixing"] == rule


# ----------------------------------------------------------------------- data and model
@pytest.mark.parametrize("model", ["linear", "mlp", "cnn"])
def test_next_token_data_needs_a_sequence_model(model):
    raw = {"data": {"name": "dialects"}, "model": {"name": model}}
    msg = _refused(raw, rf"model\.name: got '{model}', but data\.name = 'dialects'")
    assert "'tiny_lm'" in msg
    assert load_config({"data": {"name": "dialects"}, "model": {"name": "tiny_lm"}})


@pytest.mark.parametrize("data", ["leaf", "fedem_synthetic", "npz", "digits"])
def test_a_language_model_needs_next_token_data(data):
    raw = {"data": {"name": data}, "model": {"name": "tiny_lm"}}
    if data in ("leaf", "npz"):
        raw["data"]["path"] = "/nowhere"
    msg = _refused(raw, rf"model\.name: got 'tiny_lm'.*data\.name = '{data}'")
    assert "allowed with 'tiny_lm': data.name = 'dialects'" in msg
    assert ("Shakespeare" in msg) == (data == "leaf")


def test_data_without_features_is_refused(tmp_path):
    for i in range(3):
        x = np.zeros((4, 0), np.float32)
        np.savez(tmp_path / f"n{i}.npz", x_train=x, y_train=np.zeros(4, int), x_test=x, y_test=[])
    with pytest.raises(ConfigError, match=r"x_train has shape \(4, 0\), with no features"):
        load_dataset({"name": "npz", "path": str(tmp_path)}, 3)
    x = np.zeros((3, 2, 0), np.float32)
    nd = NodeDataset(x, np.zeros(3, int), x, np.zeros(3, int))
    with pytest.raises(ConfigError, match=r"samples have shape \(2, 0\), with no features"):
        validate_dataset(FederatedDataset([nd, nd], "binary", 2))
    for name in ("fedem_synthetic", "clustered_linear"):
        cfg = load_config({"data": {"name": name, "dim": 0}})
        with pytest.raises(ConfigError, match=r"data\.dim: got 0"):
            load_dataset(cfg["data"], 4)


# ----------------------------------------------------------------------- model modules
CALLS = []


def _side_effect(**kwargs):  # importable, callable, and not a model: must never be called
    CALLS.append(kwargs)


@model_factory
def _marked(out_dim, *, input_shape, key):
    from p2p_fmtl.models.flax_example import EqxMLP

    return EqxMLP(out_dim, input_shape=input_shape, hidden=4, key=key)


def test_a_module_that_builds_no_model_is_refused_without_being_called():
    for name in ("flax", "equinox"):
        cfg = {"name": name, **model_params(name), "module": f"{__name__}:_side_effect"}
        with pytest.raises(ConfigError, match=r"model\.module: got .*_side_effect', a function"):
            build_model(cfg, (6,), 3)
    cfg = {"name": "flax", **model_params("flax"), "module": "os:system"}
    with pytest.raises(ConfigError, match=r"'os:system', a builtin_function_or_method"):
        build_model(cfg, (6,), 3)
    assert CALLS == []
    assert not builds_a_module(print) and not builds_a_module(dict)
    from p2p_fmtl.models.flax_example import NNXMLP, EqxMLP, FlaxMLP

    assert all(builds_a_module(c) for c in (FlaxMLP, NNXMLP, EqxMLP, _marked))


def test_a_marked_factory_builds_a_model():
    import jax

    cfg = {"name": "equinox", **model_params("equinox"), "module": f"{__name__}:_marked"}
    init, apply = build_model(cfg, (6,), 3)
    params = init(jax.random.PRNGKey(0))
    assert apply(params, np.ones((5, 6), np.float32)).shape == (5, 3)
    with pytest.raises(TypeError, match="expected a function"):
        model_factory(3)


# ----------------------------------------------------------------------- unset and overrides
def test_unset_removes_keys_of_the_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[topology]\nname = "erdos_renyi"\nn = 10\np = 0.4\n[run]\nrounds = 3\n')
    cfg = load_config(f, unset=["topology.p", "run.rounds"])
    assert cfg["topology"]["p"] == 0.5 and cfg["run"]["rounds"] == 100
    ring = load_config(f, overrides={"topology.name": "ring"}, unset=["topology.p"])
    assert "p" not in ring["topology"]
    _refused(
        f,
        r"^unset topology\.q: not set in the config; \[topology\] holds n, name, p$",
        unset=["topology.q"],
    )
    _refused(f, r"^unset data\.dim: not set in the config; it has no \[data\]$", unset=["data.dim"])
    _refused(f, r"^unset 'p': expected a dotted key", unset=["p"])


def test_a_new_name_drops_the_files_keys_it_does_not_take(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(
        '[topology]\nname = "erdos_renyi"\nn = 10\np = 0.4\n'
        '[data]\nname = "clustered_linear"\ndim = 4\nclusters = 2\n'
        '[algorithm]\nname = "dem"\ncomponents = 2\n'
    )
    with pytest.warns(UserWarning) as record:
        cfg = load_config(
            f,
            overrides={
                "topology.name": "ring",
                "data.name": "fedem_synthetic",
                "algorithm.name": "dsgd",
            },
        )
    said = sorted(str(w.message) for w in record)
    assert said == [
        "algorithm.components: dropped (not a key of 'dsgd')",
        "data.clusters: dropped (not a key of 'fedem_synthetic')",
        "topology.p: dropped (not a key of 'ring')",
    ]
    assert "p" not in cfg["topology"] and cfg["data"]["dim"] == 4  # fedem_synthetic takes dim
    with pytest.warns(UserWarning) as record:
        avg = load_config(f, overrides={"algorithm.name": "average"})
    assert sorted(str(w.message) for w in record) == [
        "algorithm.components: dropped (not a key of 'average')",
        *(
            f"data.{k}: dropped (algorithm 'average' uses no data)"
            for k in ("clusters", "dim", "name")
        ),
    ]
    assert avg["data"] == {"name": "none"}
    # a key given in the overrides is never dropped: still an error
    _refused(
        f,
        r"topology\.p: unknown key for 'ring'",
        overrides={"topology.name": "ring", "topology.p": 0.3},
    )
    with warnings.catch_warnings():  # the same name again drops nothing
        warnings.simplefilter("error")
        assert load_config(f, overrides={"topology.name": "erdos_renyi"})["topology"]["p"] == 0.4


def test_apply_overrides_matches_the_sweeps_rule():
    """Independent reference: the sweep's own base-key dropping (p2p_fmtl.sweep)."""
    from p2p_fmtl import sweep

    base = {
        "topology": {"name": "erdos_renyi", "p": 0.3, "n": 12},
        "data": {"name": "clustered_linear", "dim": 3, "clusters": 2},
        "model": {"name": "mlp", "hidden": [8]},
        "algorithm": {"name": "dem", "components": 2, "lr": 0.05},
    }
    cases = [
        {"topology.name": "ring"},
        {"topology.name": "small_world", "topology.k": 2},
        {"data.name": "fedem_synthetic"},
        {"model.name": "linear"},
        {"algorithm.name": "graph_mtl"},
        {"algorithm.name": "average"},
        {"topology.name": "erdos_renyi", "run.rounds": 3},
        {"topology.name": "rign"},
    ]
    for o in cases:
        assert apply_overrides(base, o, warn=False) == sweep.apply_overrides(base, o), o


def test_config_override_drops_like_load_config():
    cfg = load_config({"topology": {"name": "erdos_renyi", "p": 0.3, "n": 8}})
    with pytest.warns(UserWarning, match=r"topology\.p: dropped"):
        ring = cfg.override({"topology.name": "ring"})
    assert ring["topology"]["name"] == "ring" and "p" not in ring["topology"]


def test_given_is_a_topology_name_only_for_python(tmp_path):
    from p2p_fmtl.assemble import build_graph

    cfg = load_config({"topology": {"name": "given", "n": 8}})  # a run's written config
    with pytest.raises(UserError, match=r"topology\.name: got 'given'.*graph=G"):
        build_graph(cfg)
    _refused({"topology": {"name": "given", "p": 0.3}}, r"topology\.p: unknown key for 'given'")
