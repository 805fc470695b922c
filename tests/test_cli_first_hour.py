"""A new user's first hour: --version, `keys`, `topology --help` and --draw, the bench's
warnings, `run --unset` and its notes, and the Python API's graph/mixing pass-through."""

import json
from importlib import metadata

import numpy as np
import pytest

import topologies
from p2p_fmtl import bench, load_config, run
from p2p_fmtl.cli import main
from p2p_fmtl.config import SECTIONS

CONFIG = """
[run]
rounds = 2
eval_every = 2
[topology]
name = "erdos_renyi"
n = 6
p = 0.6
[data]
name = "clustered_linear"
dim = 5
n_test = 20
[algorithm]
name = "dsgd"
batch_size = 8
"""


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"p2p-fmtl {metadata.version('p2p-fmtl')}"


def _keys_json(capsys, *args) -> dict:
    assert main(["keys", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_keys_json_lists_exactly_the_keys_a_config_resolves_to(capsys):
    """Independent reference: the keys of a resolved config, for the default names and
    for every algorithm (the schema and registries agree with what `keys` prints)."""
    table = _keys_json(capsys)
    assert list(table) == list(SECTIONS)
    default = load_config({})
    for section in SECTIONS:
        body = table[section]
        name = default[section].get("name")
        listed = set(body["keys"]) | set(body.get("names", {}).get(name, {}))
        if section != "data" or name != "none":
            assert listed == set(default[section]), section
    for alg in table["algorithm"]["names"]:
        cfg = load_config({"algorithm": {"name": alg}})
        listed = {"name", *table["algorithm"]["names"][alg]}
        assert listed == set(cfg["algorithm"]), alg
    lr = table["algorithm"]["names"]["dsgd"]["lr"]
    assert lr == {
        "default": 0.1,
        "allowed": "a number in (0, inf)",
        "help": "learning rate",
        "required": False,
    }
    path = _keys_json(capsys, "topology", "--name", "edgelist")["topology"]["names"]["edgelist"]
    assert path["path"]["required"] and path["path"]["default"] is None


def test_keys_text_is_readable_and_documents_registry_keys(capsys):
    assert main(["keys", "run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[run]\n  seed = 0\n")
    assert "  max_loss_growth = 100.0\n      a number in [0, inf): stop as diverged" in out
    assert "  max_consensus_growth = 1e+12\n" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert main(["keys", "topology", "--name", "erdos_renyi"]) == 0
    out = capsys.readouterr().out
    assert '[topology] name = "erdos_renyi"\n  p = 0.5\n      a number: Edge probability' in out
    assert "barabasi_albert" not in out.split("[topology] name")[1]  # only that name
    assert main(["keys", "data"]) == 0
    out = capsys.readouterr().out
    for name in ("fedem_synthetic", "clustered_linear", "npz", "digits", "mnist1d"):
        assert f'[data] name = "{name}"' in out
    assert "variant = \"reference\"\n      one of 'reference', 'corrected'" in out
    assert main(["keys", "algorithm"]) == 0
    out = capsys.readouterr().out
    assert out.count("  lr = 0.1\n") == 1  # the optimizer keys once, not per algorithm
    assert "(algorithms that train: " in out and '[algorithm] name = "dem"' in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["keys", "rn"], "keys SECTION: unknown 'rn'"),
        (["keys", "--name", "ring"], "--name ring: give a section with names first"),
        (["keys", "run", "--name", "x"], "--name x: give a section with names first"),
        (["keys", "topology", "--name", "rign"], "did you mean 'ring'"),
    ],
)
def test_keys_mistakes_are_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_topology_help_lists_builders_and_mixing_rules(capsys):
    with pytest.raises(SystemExit):
        main(["topology", "--help"])
    out = capsys.readouterr().out
    for name in topologies.BUILDERS:
        assert f"\n  {name}" in out
    assert "erdos_renyi        p=0.5, max_tries=100" in out
    assert ", ".join(topologies.MIXING_RULES) in out and "sample_weighted" in out


@pytest.mark.parametrize(
    "where, message",
    [
        ("missing/g.png", "the folder {tmp}/missing does not exist; make it first"),
        ("afile/g.png", "{tmp}/afile is a file, not a folder"),
        ("g.jpg", "expected a file ending in .png, .svg, .pdf"),
        ("", "is a folder; give a file name"),
    ],
)
def test_draw_refuses_bad_places_before_building(where, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(topologies, "build", lambda *a, **k: pytest.fail("built the graph"))
    assert main(["topology", "ring", "--n", "6", "--draw", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err.strip()
    assert message.format(tmp=tmp_path) in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_draw_says_where_it_wrote(tmp_path, capsys):
    figure = tmp_path / "ring.png"
    assert main(["topology", "ring", "--n", "6", "--draw", str(figure)]) == 0
    assert f"figure: {figure}" in capsys.readouterr().out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ring.png"]  # no temporary file
    assert main(["topology", "ring", "--n", "6", "--json", "--draw", str(figure)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["nodes"] == 6 and f"figure: {figure}" in captured.err


def _row(**kw):
    row = {"status": "ok", "algorithm": "dem", "n": 30, "n_nodes": 30, "graph": "er"}
    row |= {"threads": "1", "s_per_round": 0.1, "node_rounds_per_s": 300.0, "compile_s": 1.0}
    row |= {"peak_rss_mb": 800.0, "padding_fraction": 0.1, "test_acc": 0.8}
    row |= {"other_load": 0.0, "cpu_per_wall": 1.0}
    return row | kw


def test_bench_warnings_say_why_and_what_to_do(monkeypatch, capsys):
    text = bench.format_table([_row(), _row(other_load=1.5)])
    warning = [line for line in text.splitlines() if "⚠" in line]
    assert len(warning) == 1
    assert "other processes kept 1.5 cores busy while its worker ran" in warning[0]
    assert "the machine was shared while it was timed" in warning[0]
    assert "Re-run it on an idle machine" in warning[0]
    monkeypatch.setattr(
        bench, "run_worker", lambda spec, timeout: {**spec, **_row(cpu_per_wall=0.5)}
    )
    bench.run_specs([{"algorithm": "dem", "n": 30, "threads": "1"}], timeout=1, quiet=False)
    err = capsys.readouterr().err
    assert "⚠ its single-thread worker got only 0.50 of a core while timed" in err


def test_run_unset_and_notes_of_dropped_keys(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "unset"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--unset", "topology.p"]) == 0
    assert "\np = 0.5\n" in (out / "config.toml").read_text()  # the builder's default
    out = tmp_path / "ring"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--set", "topology.name=ring"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert notes == ["p2p-fmtl: note: topology.p: dropped (not a key of 'ring')"]


def test_resume_without_a_checkpoint_says_it_starts_over(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    assert main(["run", str(cfg), "--out", str(tmp_path / "r"), "--quiet", "--resume"]) == 0
    assert "no checkpoint of an unfinished run" in capsys.readouterr().err


def test_python_run_passes_graph_and_mixing_and_writes_node_labels(tmp_path):
    """A user's graph with string labels and their own W: the run uses W (its gossip
    matches numpy's W @ X for one averaging round) and writes the labels."""
    import networkx as nx

    G = nx.cycle_graph(["a", "b", "c", "d"])
    W = np.array(
        [
            [0.5, 0.25, 0.0, 0.25],
            [0.25, 0.5, 0.25, 0.0],
            [0.0, 0.25, 0.5, 0.25],
            [0.25, 0, 0.25, 0.5],
        ]
    )
    raw = {"run": {"rounds": 1, "eval_every": 1}, "algorithm": {"name": "average", "dim": 3}}
    result = run(raw, graph=G, mixing=W, out=tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["node_labels"] == ["a", "b", "c", "d"]
    x0 = run({**raw, "run": {"rounds": 0, "eval_every": 1}}, graph=G, mixing=W).params
    (key,) = x0
    np.testing.assert_allclose(result.params[key], W @ x0[key], rtol=1e-6)
