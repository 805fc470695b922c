"""``algorithm.finetune_epochs``: scores of a locally fine-tuned copy (the reference's FedAvg+).

Independent reference: D-SGD with full-batch local work, where one epoch of fine-tuning
is one gradient step on the node's mean logistic loss, computed here in numpy from the
run's final parameters and data.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from p2p_fmtl import ConfigError, load_config, run
from p2p_fmtl.batched import run_batch
from p2p_fmtl.data import load_dataset

N = 6


def config(k=None, **alg):
    """A tiny D-SGD run; ``k``: algorithm.finetune_epochs (None: the key left out)."""
    algorithm = {"name": "dsgd", "batch_size": 64, "lr": 0.5, **alg}
    if k is not None:
        algorithm["finetune_epochs"] = k
    return {
        "run": {"rounds": 4, "eval_every": 2},
        "topology": {"name": "ring", "n": N},
        "data": {"dim": 5, "n_test": 20, "min_samples": 10, "max_samples": 40},
        "algorithm": algorithm,
    }


@pytest.fixture(scope="module")
def runs():
    return {k: run(load_config(config(k))) for k in (None, 0, 1)}


def _metrics(res):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in res.metrics]


def test_zero_epochs_change_nothing(runs):
    """The exact limit: finetune_epochs = 0 is the run without the key, bit for bit."""
    plain, zero = runs[None], runs[0]
    assert _metrics(zero) == _metrics(plain)
    assert zero.nodes == plain.nodes
    for key in plain.params:
        assert np.array_equal(zero.params[key], plain.params[key])
    assert "finetune_epochs" not in zero.summary


def test_fine_tuning_leaves_the_trained_run_unchanged(runs):
    """k > 0 changes the scores, not the trajectory: parameters, consensus distance,
    bytes and learning rates are bit-identical to k = 0."""
    zero, one = runs[0], runs[1]
    for key in zero.params:
        assert np.array_equal(one.params[key], zero.params[key])
    for a, b in zip(zero.metrics, one.metrics, strict=True):
        for col in ("round", "consensus_distance", "bytes_total", "lr"):
            assert a[col] == b[col], col
    assert [r["train_loss"] for r in one.metrics] != [r["train_loss"] for r in zero.metrics]
    assert one.summary["finetune_epochs"] == 1


def _loss_and_grad(w, b, x, y):
    """Mean logistic loss of a linear model and its gradient (float64, numpy)."""
    z = x @ w[:, 0] + b[0]
    p = 1.0 / (1.0 + np.exp(-z))
    loss = np.mean(np.logaddexp(0.0, z) - y * z)
    r = (p - y) / len(y)
    return loss, (x.T @ r)[:, None], np.array([r.sum()])


@pytest.mark.parametrize("tune_lr", [0.0, 0.7])
def test_fine_tuned_scores_match_gradient_steps_by_hand(tune_lr):
    """k = 2 with full batches: each node takes two gradient steps on its own mean loss
    at the last round's learning rate (a multistep schedule halves it at round 2; or at
    ``algorithm.finetune_lr`` when it is set), from the final parameters; test accuracy
    and train loss of that copy, per node."""
    alg = dict(schedule="multistep", milestones=[2], gamma=0.5, finetune_lr=tune_lr)
    cfg = load_config(config(2, **alg))
    res = run(cfg)
    assert res.metrics[-1]["lr"] == 0.5 * 0.5
    lr = tune_lr or 0.5 * 0.5
    ds = load_dataset(cfg["data"], N)
    assert max(nd.n_train for nd in ds.nodes) <= 64  # one batch = one epoch
    w_all, b_all = res.params["w"].astype(np.float64), res.params["b"].astype(np.float64)
    for i, nd in enumerate(ds.nodes):
        x, y = nd.x_train.astype(np.float64), nd.y_train.astype(np.float64)
        w, b = w_all[i], b_all[i]
        for _ in range(2):
            _, gw, gb = _loss_and_grad(w, b, x, y)
            w, b = w - lr * gw, b - lr * gb
        loss, _, _ = _loss_and_grad(w, b, x, y)
        acc = np.mean(((nd.x_test @ w[:, 0] + b[0]) > 0) == nd.y_test)
        row = res.nodes[i]
        assert row["train_loss"] == pytest.approx(loss, abs=1e-5)
        assert row["test_acc"] == pytest.approx(acc, abs=1e-6)


HELD_OUT = {"data": {"dim": 5, "n_test": 20, "min_samples": 10, "max_samples": 40,
                     "holdout_nodes": [3]}}  # fmt: skip


def _tuned(seed=0, devices=1):
    cfg = config(1, momentum=0.9)  # optimizer state travels with the copy
    cfg["data"] = HELD_OUT["data"]
    cfg["run"].update(seed=seed, devices=devices)
    return load_config(cfg)


COLUMNS = ("test_acc", "test_acc_unseen", "train_loss")


@pytest.fixture(scope="module")
def alone():
    """Fine-tuned scores of a run with a held-out node and momentum, alone."""
    return run(_tuned())


def test_batched_runs_fine_tune_as_runs_alone(alone):
    batch = run_batch([_tuned(), _tuned(seed=1)])
    for a, b in zip(alone.metrics, batch[0].metrics, strict=True):
        for col in COLUMNS:
            assert b[col] == pytest.approx(a[col], abs=1e-6), col
    assert batch[0].summary["finetune_epochs"] == 1
    assert batch[1].metrics[-1]["train_loss"] != batch[0].metrics[-1]["train_loss"]


SCRIPT = r"""
import json, sys
sys.path.insert(0, "tests")
from test_finetune import _tuned
from p2p_fmtl import run
two = run(_tuned(devices=2))
print(json.dumps({
    "metrics": two.metrics,
    "shards": len(two.state.params["w"].sharding.device_set),
}))
"""


def test_two_devices_fine_tune_as_one(alone):
    from combinations import FAST_COMPILE

    flags = os.environ.get("XLA_FLAGS", "") + FAST_COMPILE
    env = {**os.environ, "XLA_FLAGS": flags + " --xla_force_host_platform_device_count=2"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shards"] == 2
    for a, b in zip(alone.metrics, out["metrics"], strict=True):
        for col in COLUMNS:
            assert b[col] == pytest.approx(a[col], abs=1e-5), col


def test_an_algorithm_that_does_not_train_is_refused():
    raw = {"algorithm": {"name": "average", "dim": 3, "finetune_epochs": 1}}
    with pytest.raises(ConfigError) as e:
        load_config(raw)
    message = str(e.value)
    assert "\n" not in message
    assert "algorithm.finetune_epochs" in message and "algorithm.name = 'average'" in message
    with pytest.raises(ConfigError, match=r"algorithm\.finetune_epochs: got -1"):
        load_config(config(-1))


def test_an_algorithm_declaring_it_cannot_be_fine_tuned_is_refused(monkeypatch):
    """``AlgorithmSpec.finetunes = False``: its local update trains a model its score does
    not read (fine-tuning would change nothing); the declaration, not the name, refuses."""
    import dataclasses

    from p2p_fmtl.algorithms import ALGORITHMS

    spec = dataclasses.replace(ALGORITHMS["dsgd"])
    object.__setattr__(spec, "finetunes", False)
    monkeypatch.setitem(ALGORITHMS, "dsgd", spec)
    load_config(config(0))  # 0 is always fine
    with pytest.raises(ConfigError) as e:
        load_config(config(2))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("algorithm.finetune_epochs: got 2, but algorithm.name = 'dsgd'")


def test_the_memory_estimate_counts_the_fine_tuned_copy():
    from p2p_fmtl import memory
    from p2p_fmtl.models import build_model
    from p2p_fmtl.optim import make_optimizer

    est = {}
    for k in (0, 3):
        cfg = load_config(config(k, optimizer="adam"))
        ds = load_dataset(cfg["data"], N)
        model = build_model(cfg["model"], ds.feature_shape, 1)
        est[k] = memory.estimate_parts(
            cfg, n=N, edges=N, max_degree=2, ds=ds, model=model,
            optimizer=make_optimizer(cfg["algorithm"]),
        )  # fmt: skip
    p = memory.param_count(model)
    # one more copy of the parameters and of Adam's two moments, 4 bytes each
    assert est[3].models - est[0].models == pytest.approx(4.0 * N * p * 3)
    assert "finetune_epochs" in est[3].why["models"]


def test_keys_lists_the_setting(capsys):
    from p2p_fmtl.cli import main

    assert main(["keys", "algorithm"]) == 0
    out = capsys.readouterr().out
    head = out.split('[algorithm] name = "')[0]  # the keys of every algorithm that trains
    assert "  finetune_epochs = 0\n      an integer in [0, 2147483647]: at every evaluation" in head
