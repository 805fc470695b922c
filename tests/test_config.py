"""Config resolution: defaults, overrides, and one-line errors for mistakes."""

import tomllib

import pytest

from p2p_fmtl import ConfigError, load_config
from p2p_fmtl.config import parse_override


def test_defaults_are_filled_and_written():
    cfg = load_config({"topology": {"name": "ring", "n": 8}})
    assert cfg["run"]["rounds"] == 100
    assert cfg["algorithm"]["batch_size"] == 128
    assert cfg["topology"]["seed"] == cfg["run"]["seed"]
    text = cfg.to_toml()
    again = load_config(tomllib.loads(text))
    assert again.to_dict() == cfg.to_dict()


def test_builder_keys_come_from_the_builder():
    cfg = load_config({"topology": {"name": "erdos_renyi", "n": 10, "p": 0.4}})
    assert cfg["topology"]["p"] == 0.4
    with pytest.raises(ConfigError, match=r"topology\.p: unknown key for 'ring'"):
        load_config({"topology": {"name": "ring", "n": 10, "p": 0.4}})


@pytest.mark.parametrize(
    "raw, pattern",
    [
        ({"rn": {}}, r"rn: unknown section.*did you mean 'run'"),
        ({"run": {"rouns": 3}}, r"run\.rouns: unknown key.*did you mean 'rounds'"),
        ({"run": {"rounds": -1}}, r"run\.rounds: got -1, expected an integer in \[0, 2147483647\]"),
        ({"run": {"rounds": "ten"}}, r"run\.rounds: got 'ten', expected an integer"),
        ({"algorithm": {"name": "dsdg"}}, r"algorithm\.name: unknown 'dsdg'.*did you mean 'dsgd'"),
        ({"algorithm": {"lr": 0}}, r"algorithm\.lr: got 0, expected a number in \(0, inf\)"),
        ({"algorithm": {"local_steps": 3, "local_epochs": 1}}, r"set exactly one"),
        ({"algorithm": {"optimizer": "sgdd"}}, r"algorithm\.optimizer: unknown 'sgdd'"),
        ({"algorithm": {"optimizer": "adam", "momentum": 0.9}}, r"takes no momentum"),
        ({"topology": {"mixing": "metropolis_hastings"}}, r"topology\.mixing: unknown"),
        ({"topology": {"name": "rign"}}, r"did you mean 'ring'"),
        ({"algorithm": {"name": "average"}, "data": {"name": "fedem_synthetic"}}, r"uses no data"),
        ({"faults": {"node_drop": 1.5}}, r"faults\.node_drop"),
        ({"model": {"loss": "hinge"}}, r"model\.loss: unknown 'hinge'"),
    ],
)
def test_mistakes_give_one_line_errors(raw, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        load_config(raw)
    assert "\n" not in str(e.value)


def test_local_steps_alone_switches_off_epochs():
    cfg = load_config({"algorithm": {"local_steps": 5}})
    assert cfg["algorithm"]["local_epochs"] == 0 and cfg["algorithm"]["local_steps"] == 5


def test_overrides_parse_as_toml():
    assert parse_override("algorithm.lr=0.05") == ("algorithm.lr", 0.05)
    assert parse_override("topology.name=ring") == ("topology.name", "ring")
    assert parse_override('topology.name="ring"') == ("topology.name", "ring")
    assert parse_override("model.hidden=[8, 4]") == ("model.hidden", [8, 4])
    cfg = load_config({}, overrides={"topology.name": "ring", "algorithm.lr": 0.5})
    assert cfg["topology"]["name"] == "ring" and cfg["algorithm"]["lr"] == 0.5
    with pytest.raises(ConfigError, match="expected a dotted key"):
        load_config({}, overrides={"lr": 0.5})


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nseed = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_edgelist_topology_needs_a_path(tmp_path):
    with pytest.raises(ConfigError, match=r"topology\.path: missing; 'edgelist' needs it"):
        load_config({"topology": {"name": "edgelist"}})
    f = tmp_path / "g.txt"
    f.write_text("0 1\n1 2\n2 0\n")
    cfg = load_config({"topology": {"name": "edgelist", "n": 3, "path": str(f)}})
    assert cfg["topology"]["path"] == str(f)
