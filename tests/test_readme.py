"""The README's examples stay true: its sweep file expands into configs that load on the
default install (no optional dependency), and its run-directory listing names the columns a
run writes."""

from __future__ import annotations

import re
from pathlib import Path

from p2p_fmtl import load_config, run
from p2p_fmtl.sweep import expand

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _block(after: str) -> str:
    """The first fenced block whose first line contains ``after``."""
    for block in re.findall(r"```\w*\n(.*?)```", README, flags=re.S):
        if after in block.splitlines()[0]:
            return block
    raise AssertionError(f"README has no block starting with {after!r}")


def test_the_readme_sweep_loads_every_config(tmp_path):
    text = _block("# my_sweep.toml")
    # the README puts the sweep file in the repository root (base is relative to it)
    path = ROOT / f".test_readme_sweep_{tmp_path.name}.toml"
    path.write_text(text)
    try:
        runs = expand(path)
    finally:
        path.unlink()
    assert len(runs) == 3 * 3 * 2
    for _, cfg in runs:
        assert cfg["topology"]["mixing"] == "metropolis"  # no cvxpy needed


def test_the_readme_lists_the_columns_a_run_writes(tmp_path):
    cfg = load_config(
        {
            "run": {"rounds": 2, "eval_every": 2},
            "topology": {"name": "ring", "n": 6},
            "data": {"dim": 5, "n_test": 20},
            "algorithm": {"name": "local", "batch_size": 16},
        }
    )
    out = tmp_path / "local"
    run(cfg, out=out)
    listing = _block("runs/local/config.toml")
    for name in ("metrics.csv", "nodes.csv"):
        line = next(ln for ln in listing.splitlines() if f"runs/local/{name}" in ln)
        documented = [c.strip() for c in line.split(name, 1)[1].split(",")]
        written = (out / name).read_text().splitlines()[0].split(",")
        assert documented == written, name
