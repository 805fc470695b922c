"""Where a run writes (--out): never over what the tool did not write, checked before any
work, and nothing left behind on any exit path.

The fuzz test runs ``p2p-fmtl run`` for every kind of output place and every flag, and
compares a hash of every file in the sandbox (hidden ones too) before and after.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from p2p_fmtl import load_config, run
from p2p_fmtl.cli import main
from p2p_fmtl.results import RUN_FILES, run_dir_state
from p2p_fmtl.runner import Simulation, checkpoint_path

CONFIG = """
[run]
rounds = 4
eval_every = 2
[topology]
name = "ring"
n = 4
[data]
name = "clustered_linear"
dim = 5
n_test = 20
[algorithm]
name = "dsgd"
batch_size = 8
"""


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` (hidden ones too): a content hash for a file, "dir" or
    "link -> target" otherwise."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """A config file, a complete run directory, an incomplete one and a checkpoint of
    an unfinished run, all of that config, made once and copied into each case."""
    root = tmp_path_factory.mktemp("templates")
    cfg = root / "c.toml"
    cfg.write_text(CONFIG)
    assert main(["run", str(cfg), "--out", str(root / "complete"), "--quiet"]) == 0
    diverged = root / "incomplete"
    lr = ["--set", "algorithm.lr=1e4"]
    assert main(["run", str(cfg), "--out", str(diverged), "--quiet", *lr]) == 2
    assert json.loads((diverged / "summary.json").read_text())["status"] == "incomplete"
    sim = Simulation(load_config(str(cfg)))
    sim.evaluate()
    sim.advance(2)
    sim.evaluate()
    sim.checkpoint(root / "checkpoint.npz")
    return root


def _place(kind: str, box: Path, templates: Path, monkeypatch) -> str:
    """Make an output place of ``kind`` in the sandbox ``box``; return the --out value."""
    (box / "keep.txt").write_text("the user's file")
    (box / ".hidden").write_text("the user's hidden file")
    target = box / "out"
    if kind == "file":
        target.write_text("not a directory")
    elif kind == "foreign":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
        (target / ".secret").write_text("mine too")
    elif kind == "run_plus_file":  # a run directory with something else in it
        shutil.copytree(templates / "complete", target)
        (target / "accuracy.png").write_bytes(b"a figure")
    elif kind == "complete":
        shutil.copytree(templates / "complete", target)
    elif kind == "incomplete":
        shutil.copytree(templates / "incomplete", target)
    elif kind == "unfinished":
        shutil.copy(templates / "checkpoint.npz", checkpoint_path(target))
    elif kind == "empty":
        target.mkdir()
    elif kind == "missing_parent":
        target = box / "a" / "b" / "out"
    elif kind == "parent_is_file":
        (box / "f").write_text("a file")
        target = box / "f" / "out"
    elif kind == "link":
        shutil.copytree(templates / "complete", box / "real")
        target.symlink_to(box / "real")
    elif kind == "cwd":  # --out . in a folder with files
        monkeypatch.chdir(box)
        return "."
    elif kind == "cwd_by_path":
        monkeypatch.chdir(box)
        return str(box)
    elif kind == "empty_string":
        return ""
    return str(target)


# kind -> exit status without flags, with --overwrite, with --resume
EXPECTED = {
    "file": (2, 2, 2),
    "foreign": (2, 2, 2),
    "run_plus_file": (2, 2, 2),
    "complete": (2, 0, 2),
    "incomplete": (0, 0, 0),
    "unfinished": (2, 0, 0),
    "empty": (0, 0, 0),
    "missing_parent": (0, 0, 0),
    "parent_is_file": (2, 2, 2),
    "link": (2, 2, 2),
    "cwd": (2, 2, 2),
    "cwd_by_path": (2, 2, 2),
    "empty_string": (2, 2, 2),
}
FLAGS = ([], ["--overwrite"], ["--resume"])


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_output_places_fuzz(kind, templates, tmp_path, monkeypatch, capsys):
    for flags, expected in zip(FLAGS, EXPECTED[kind], strict=True):
        box = tmp_path / f"box{len(flags) and flags[0]}"
        box.mkdir()
        out = _place(kind, box, templates, monkeypatch)
        before = _tree(box)
        code = main(["run", str(templates / "c.toml"), "--out", out, "--quiet", *flags])
        err = capsys.readouterr().err.strip()
        after = _tree(box)
        assert code == expected, (kind, flags, code, err)
        if code == 2:
            assert len(err.splitlines()) == 1 and err.startswith("p2p-fmtl: error: --out")
            assert after == before, (kind, flags)  # nothing changed, nothing left behind
        else:
            run_dir = Path(out)
            rel = str(run_dir.relative_to(box))
            ckpt = str(checkpoint_path(run_dir).relative_to(box))
            assert sorted(os.listdir(run_dir)) == sorted(RUN_FILES)
            assert run_dir_state(run_dir)[0] == "complete"
            mine = {p for p in after if p == rel or p.startswith(rel + os.sep)}
            made = {p for p in after if p not in before and rel.startswith(p + os.sep)}
            # every other path is as it was; the checkpoint is gone; nothing new besides
            assert {p: h for p, h in after.items() if p not in mine | made} == {
                p: h for p, h in before.items() if p not in mine and p != ckpt
            }, (kind, flags)
            assert ckpt not in after
        monkeypatch.chdir(tmp_path)


def test_resume_of_a_complete_run_and_both_flags_are_refused(templates, tmp_path, capsys):
    shutil.copytree(templates / "complete", tmp_path / "r")
    cfg = str(templates / "c.toml")
    assert main(["run", cfg, "--out", str(tmp_path / "r"), "--resume", "--quiet"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    flags = ["--resume", "--overwrite"]
    assert main(["run", cfg, "--out", str(tmp_path / "r"), *flags, "--quiet"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_unwritable_place_is_refused_before_any_work(templates, tmp_path, monkeypatch, capsys):
    """A folder without write permission (os.access, so that it also holds for root)."""
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    monkeypatch.setattr(Simulation, "__init__", lambda *a, **k: pytest.fail("built a run"))
    code = main(["run", str(templates / "c.toml"), "--out", str(locked / "new" / "r")])
    assert code == 2 and "cannot write in" in capsys.readouterr().err
    assert list(locked.iterdir()) == []


def test_python_run_refuses_and_overwrites_like_the_cli(templates, tmp_path):
    from p2p_fmtl import UserError

    cfg = load_config(str(templates / "c.toml"))
    shutil.copytree(templates / "complete", tmp_path / "r")
    with pytest.raises(UserError, match="holds a complete run; --overwrite replaces it"):
        run(cfg, out=tmp_path / "r")
    with pytest.raises(UserError, match="expected a directory path"):
        run(cfg, out="")
    old = (tmp_path / "r" / "summary.json").read_text()
    result = run(cfg, out=tmp_path / "r", overwrite=True)
    new = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert new["status"] == "complete" and (tmp_path / "r" / "summary.json").read_text() != old
    assert new["test_mse"] == pytest.approx(result.summary["test_mse"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_interrupted_run_keeps_only_a_resumable_checkpoint(
    templates, tmp_path, monkeypatch, capsys
):
    """Ctrl-C in round 3 of 4: the checkpoint of round 2 stays (with a note saying how to
    continue), no temporary file does, and --resume ends like an uninterrupted run."""
    cfg, out = str(templates / "c.toml"), tmp_path / "deep" / "r"
    advance = Simulation.advance

    def interrupted(self, rounds):
        if self.round >= 2:
            raise KeyboardInterrupt
        return advance(self, rounds)

    monkeypatch.setattr(Simulation, "advance", interrupted)
    assert main(["run", cfg, "--out", str(out), "--quiet"]) == 130
    assert "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == [checkpoint_path(out).name]
    monkeypatch.setattr(Simulation, "advance", advance)
    assert main(["run", cfg, "--out", str(out), "--quiet", "--resume"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["r"]
    resumed = (out / "nodes.csv").read_text()
    assert resumed == (templates / "complete" / "nodes.csv").read_text()


def test_failed_run_leaves_nothing_behind(templates, tmp_path, monkeypatch):
    """A user error after a checkpoint was written (here: the run directory's place is
    taken while the run runs) removes the checkpoint and the folders the run made."""
    from p2p_fmtl import UserError

    out = tmp_path / "a" / "b" / "r"
    checkpoint = Simulation.checkpoint

    def then_taken(self, path):
        checkpoint(self, path)
        out.mkdir()
        (out / "theirs.txt").write_text("someone else's")

    monkeypatch.setattr(Simulation, "checkpoint", then_taken)
    with pytest.raises(UserError, match="not a run directory"):
        run(load_config(str(templates / "c.toml")), out=out)
    assert _tree(tmp_path) == {
        "a": "dir",
        "a/b": "dir",
        "a/b/r": "dir",
        "a/b/r/theirs.txt": hashlib.sha256(b"someone else's").hexdigest(),
    }


def test_interrupt_while_replacing_restores_the_old_run(templates, tmp_path, monkeypatch):
    """Ctrl-C between moving the old run aside and renaming the new one into place."""
    from p2p_fmtl import results

    shutil.copytree(templates / "complete", tmp_path / "r")
    before = _tree(tmp_path)
    replace = os.replace

    def interrupt_swap(src, dst):
        if ".tmp-" in str(src):
            raise KeyboardInterrupt
        return replace(src, dst)

    result = run(load_config(str(templates / "c.toml")))
    monkeypatch.setattr(results.os, "replace", interrupt_swap)
    with pytest.raises(KeyboardInterrupt):
        result.save(tmp_path / "r", overwrite=True)
    assert _tree(tmp_path) == before


def test_interrupted_checkpoint_write_leaves_no_temporary_file(templates, tmp_path, monkeypatch):
    sim = Simulation(load_config(str(templates / "c.toml")))
    sim.evaluate()

    def broken(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(KeyboardInterrupt):
        sim.checkpoint(tmp_path / ".r.checkpoint.npz")
    assert list(tmp_path.iterdir()) == []


def _npz_nodes(folder: Path, shift: float = 0.0) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    for i in range(4):
        x, xt = rng.normal(size=(12, 3)), rng.normal(size=(6, 3))
        np.savez(
            folder / f"node{i}.npz",
            x_train=x.astype(np.float32),
            y_train=(x.sum(1) + shift * (i == 2)).astype(np.float32),
            x_test=xt.astype(np.float32),
            y_test=xt.sum(1).astype(np.float32),
        )


def test_resume_refuses_changed_data(tmp_path, capsys):
    """The checkpoint records a fingerprint of the node data: files changed between the
    kill and --resume are refused (and the checkpoint kept), unchanged ones resume."""
    _npz_nodes(tmp_path / "tasks")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[run]\nrounds = 4\neval_every = 2\n[topology]\nname = "ring"\nn = 4\n'
        f'[data]\nname = "npz"\npath = "{tmp_path / "tasks"}"\n'
        '[algorithm]\nname = "dsgd"\nbatch_size = 4\n'
    )
    out = tmp_path / "r"
    sim = Simulation(load_config(str(cfg)))
    sim.evaluate()
    sim.advance(2)
    sim.evaluate()
    sim.checkpoint(checkpoint_path(out))
    _npz_nodes(tmp_path / "tasks", shift=1.0)  # one node's labels change
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "written for other data or another graph" in err and len(err.splitlines()) == 1
    assert checkpoint_path(out).exists() and not out.exists()
    _npz_nodes(tmp_path / "tasks")  # the same data again
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0
    assert not checkpoint_path(out).exists()
    assert json.loads((out / "summary.json").read_text())["rounds"] == 4


def test_fingerprint_hashes_data_and_mixing_weights(templates):
    """Against an independent hash: the same config gives the same fingerprint, another
    data seed or another graph a different one."""
    cfg = load_config(str(templates / "c.toml"))
    a, b = Simulation(cfg), Simulation(cfg)
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 32
    other_data = Simulation(cfg.override({"data.seed": 1}))
    other_graph = Simulation(cfg.override({"topology.name": "complete"}))
    assert len({a.fingerprint(), other_data.fingerprint(), other_graph.fingerprint()}) == 3


def test_demo_checks_every_place_before_the_first_run(templates, tmp_path, monkeypatch, capsys):
    # the demo replaces its own earlier runs, but never a folder of the user's
    (tmp_path / "demo" / "dsgd").mkdir(parents=True)
    (tmp_path / "demo" / "dsgd" / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    monkeypatch.setattr(Simulation, "__init__", lambda *a, **k: pytest.fail("ran a demo run"))
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "dsgd: is not a run directory of p2p-fmtl (it holds notes.txt)" in err
    assert main(["demo", "--out", "", "--quiet"]) == 2
    assert "--out: got ''" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "file"), "--quiet"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert _tree(tmp_path) == {**before, "file": hashlib.sha256(b"x").hexdigest()}


def test_a_figure_plot_drew_into_a_run_goes_with_it_a_users_file_stays(templates, tmp_path):
    """``p2p-fmtl plot RUN`` draws RUN/accuracy.png by default: the run directory is still
    the tool's own (the figure is signed), so --overwrite replaces both; an unsigned image
    of the user's makes it a folder the tool never writes over."""
    cfg, out = templates / "c.toml", tmp_path / "r"
    shutil.copytree(templates / "complete", out)
    assert main(["plot", str(out)]) == 0
    assert (out / "accuracy.png").exists() and run_dir_state(out)[0] == "complete"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)

    (out / "mine.png").write_bytes(b"\x89PNG\r\n\x1a\n not the tool's")
    before = _tree(tmp_path)
    assert run_dir_state(out)[0] == "other"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 2
    assert _tree(tmp_path) == before
