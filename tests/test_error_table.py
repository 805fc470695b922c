"""The twenty most likely mistakes, each run through the CLI: exit 2, one line, no traceback.

The test also produces the table in docs/errors.md; after changing a message, regenerate it
with ``P2P_FMTL_WRITE_DOCS=1 pytest tests/test_error_table.py``.
"""

import os
from pathlib import Path

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
    ("a generator key left behind", None, ["data.name=npz", 'data.path="/tmp"'], []),
    ("all nodes held out", None, ["data.holdout_nodes=0.95"], []),
    ("a shared path the model lacks", None, ['algorithm.shared=["dense_7"]'], []),
    ("more devices than exist", None, ["run.devices=64"], []),
    ("a learning rate that diverges", None, ["algorithm.lr=1e4"], []),
    ("--set without a value", None, ["algorithm.lr"], []),
    ("config file not found", None, [], ["missing"]),
]


def _row(tmp_path, capsys, i, mistake, extra, sets, other):
    cfg = tmp_path / f"c{i}.toml"
    text = BASE.replace("dim = 4\nn_test = 5\n", "") if extra == "NPZ" else BASE + (extra or "")
    cfg.write_text(text)
    target = str(tmp_path / "nope.toml") if other == ["missing"] else str(cfg)
    args = ["run", target, "--out", str(tmp_path / f"run{i}"), "--quiet"]
    for s in sets:
        args += ["--set", s]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, (mistake, code, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, (mistake, err)
    shown = err.replace(str(tmp_path), "DIR").replace("|", "\\|")
    how = " ".join(f"`--set {s}`" for s in sets) or ("`[rn]` section" if extra else "no file")
    if extra == "NPZ":
        how += " (no other [data] keys)"
    return f"| {i + 1} | {mistake} | {how} | `{shown}` |"


def test_twenty_likely_mistakes_give_one_line_errors(tmp_path, capsys):
    rows = [_row(tmp_path, capsys, i, *m) for i, m in enumerate(MISTAKES)]
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
