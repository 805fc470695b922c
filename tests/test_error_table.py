"""The most likely mistakes, each run through the CLI: exit 2, one line, no traceback.

The test also produces the table in docs/errors.md; after changing a message, regenerate it
with ``P2P_FMTL_WRITE_DOCS=1 pytest tests/test_error_table.py``.  The machine's available
memory is fixed at 16 GiB (and cvxpy taken as missing where a row says so) so that the
table does not depend on the machine.
"""

import os
from pathlib import Path

import numpy as np

from p2p_fmtl import config, memory
from p2p_fmtl.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
BASE = """[run]
rounds = 2
eval_every = 1
[topology]
name = "ring"
n = 8
[data]
name = "clustered_linear"
dim = 4
n_test = 5
[algorithm]
name = "dsgd"
batch_size = 8
"""

# (mistake, extra TOML appended to the base or None, --set overrides, other CLI args)
MISTAKES = [
    ("misspelt section", "[rn]\nseed = 1\n", [], []),
    ("misspelt key", None, ["run.rouns=3"], []),
    ("negative number of rounds", None, ["run.rounds=-1"], []),
    ("a word where a number goes", None, ['run.rounds="ten"'], []),
    ("misspelt algorithm", None, ["algorithm.name=dsdg"], []),
    ("zero learning rate", None, ["algorithm.lr=0"], []),
    (
        "both local_epochs and local_steps",
        None,
        ["algorithm.local_epochs=2", "algorithm.local_steps=5"],
        [],
    ),
    ("unknown optimizer", None, ["algorithm.optimizer=sgdd"], []),
    ("momentum with adam", None, ["algorithm.optimizer=adam", "algorithm.momentum=0.9"], []),
    ("misspelt topology", None, ["topology.name=rign"], []),
    ("a builder key for another builder", None, ["topology.p=0.3"], []),
    (
        "a graph too sparse to connect",
        None,
        ["topology.name=erdos_renyi", "topology.p=0.001", "topology.n=50"],
        [],
    ),
    ("hypercube of a non-power of two", None, ["topology.name=hypercube", "topology.n=12"], []),
    ("unknown mixing rule", None, ["topology.mixing=metropolis_hastings"], []),
    ("unknown data variant", None, ["data.name=fedem_synthetic", "data.variant=fixed"], []),
    ("npz directory missing", "NPZ", ["data.name=npz", 'data.path="/nonexistent/tasks"'], []),
    ("a key of another generator", "NPZ", ["data.name=npz", 'data.path="/tmp"', "data.dim=4"], []),
    ("all nodes held out", None, ["data.holdout_nodes=0.95"], []),
    ("a shared path the model lacks", None, ['algorithm.shared=["dense_7"]'], []),
    ("more devices than exist", None, ["run.devices=64", "topology.n=64"], []),
    ("a learning rate that diverges", None, ["algorithm.lr=1e4"], []),
    ("--set without a value", None, ["algorithm.lr"], []),
    ("config file not found", None, [], ["missing"]),
    ("a config file that is not UTF-8", "# caf\xe9\n".encode("latin-1"), [], []),
    ("a seed that overflows 64 bits", None, ["run.seed=18446744073709551616"], []),
    ("rounds beyond 32 bits", None, ["run.rounds=1000000000000"], []),
    ("an optimizer local training cannot drive", None, ["algorithm.optimizer=lbfgs"], []),
    (
        "a cosine schedule ending above its start",
        None,
        ["algorithm.schedule=cosine", "algorithm.lr_min=0.5"],
        [],
    ),
    ("every node down every round", None, ["faults.node_drop=1.0"], []),
    ("next-token data with a non-sequence model", "NPZ", ["data.name=dialects"], []),
    (
        "a language model on one-label data",
        "NPZ",
        ["data.name=leaf", 'data.path="/data/shakespeare"', "model.name=tiny_lm"],
        [],
    ),
    ("data without features", "NPZ", ["data.name=npz", 'data.path="DIR/npz0"'], ["npz0"]),
    (
        "a model module that builds no model",
        None,
        ["model.name=flax", 'model.module="os:system"'],
        [],
    ),
    ("more devices than nodes", None, ["run.devices=16"], []),
    ("a billion nodes", None, ["topology.n=1000000000"], []),
    ("a dense graph of 20,000 nodes", None, ["topology.name=complete", "topology.n=20000"], []),
    ("a billion rounds, each evaluated", None, ["run.rounds=1000000000"], []),
    # where the run goes (--out): checked before any work, nothing the tool did not write
    # is ever replaced
    ("--out names a file", None, [], ["out=file"]),
    ("--out is a folder of the user's files", None, [], ["out=folder"]),
    ("--out holds a complete run", None, [], ["out=complete"]),
    ("--resume on a complete run", None, [], ["out=complete", "--resume"]),
    ("--resume and --overwrite together", None, [], ["out=complete", "--resume", "--overwrite"]),
    ("--out is the current directory", None, [], ["out=."]),
    ("--out is empty", None, [], ["out="]),
    ("--out under a file", None, [], ["out=under-file"]),
]

# --out places made in the test's directory, and how the table describes them
OUT_PLACES = {
    "file": ("DIR/c.toml", "an existing file"),
    "folder": ("DIR/notes", "a folder holding notes.txt"),
    "complete": ("DIR/done", "a finished run"),
    ".": (".", "the working directory"),
    "": ("", "an empty string"),
    "under-file": ("DIR/c.toml/run", "a path under a file"),
}


def _write_npz0(root):
    """Per-node npz files whose samples have no features."""
    root.mkdir(exist_ok=True)
    for i in range(8):
        x, y = np.zeros((4, 0), np.float32), np.zeros(4, np.int64)
        np.savez(root / f"node_{i}.npz", x_train=x, y_train=y, x_test=x, y_test=y)


def _row(tmp_path, capsys, monkeypatch, i, mistake, extra, sets, other):
    cfg = tmp_path / f"c{i}.toml"
    if isinstance(extra, bytes):
        cfg.write_bytes(BASE.encode() + extra)
    else:
        text = BASE.replace("dim = 4\nn_test = 5\n", "") if extra == "NPZ" else BASE + (extra or "")
        cfg.write_text(text)
    if "npz0" in other:
        _write_npz0(tmp_path / "npz0")
    target = str(tmp_path / "nope.toml") if other == ["missing"] else str(cfg)
    out, out_how = str(tmp_path / f"run{i}"), None
    place = next((o[4:] for o in other if o.startswith("out=")), None)
    if place is not None:
        out, out_how = OUT_PLACES[place]
        out = out.replace("DIR", str(tmp_path))
        (tmp_path / "c.toml").write_text(BASE)
        (tmp_path / "notes").mkdir(exist_ok=True)
        (tmp_path / "notes" / "notes.txt").write_text("mine")
        if place == "complete" and not (tmp_path / "done").exists():
            assert main(["run", str(cfg), "--out", out, "--quiet"]) == 0
            capsys.readouterr()
        if place == ".":
            monkeypatch.chdir(tmp_path / "notes")
    flags = [o for o in other if o.startswith("--")]
    args = ["run", target, "--out", out, "--quiet", *flags]
    for s in sets:
        args += ["--set", s.replace("DIR", str(tmp_path))]
    with monkeypatch.context() as m:
        if "no-cvxpy" in other:
            m.setattr(config, "_installed", lambda name: name != "cvxpy")
        code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, (mistake, code, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, (mistake, err)
    shown = err.replace(str(tmp_path), "DIR").replace("|", "\\|")
    how = " ".join(f"`--set {s}`" for s in sets)
    if out_how is not None:
        how = f"`--out` {out_how}" + "".join(f" `{f}`" for f in flags)
    if not how:
        how = {bytes: "a byte 0xE9 (Latin-1) in the file", str: "`[rn]` section"}.get(
            type(extra), "no file"
        )
    if extra == "NPZ":
        how += " (no other [data] keys)"
    return f"| {i + 1} | {mistake} | {how} | `{shown}` |"


def test_the_likely_mistakes_give_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 16.0 * (1 << 30))
    rows = [_row(tmp_path, capsys, monkeypatch, i, *m) for i, m in enumerate(MISTAKES)]
    assert len(rows) >= 20
    table = "\n".join(
        [
            "# Error messages for the most likely mistakes",
            "",
            "Produced by `tests/test_error_table.py`, which runs each mistake through "
            "`p2p-fmtl run` and checks exit status 2, one line on stderr and no traceback. "
            "DIR stands for the test's temporary directory.",
            "",
            "| # | mistake | how | what `p2p-fmtl run` prints |",
            "|---:|---|---|---|",
            *rows,
            "",
        ]
    )
    if os.environ.get("P2P_FMTL_WRITE_DOCS"):
        DOC.write_text(table)
    assert DOC.read_text() == table, "docs/errors.md is stale: regenerate it (see docstring)"
