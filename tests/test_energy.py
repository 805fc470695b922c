"""The cost model's energy: J/FLOP × FLOPs of the samples processed + J/byte × bytes sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import p2p_fmtl
from p2p_fmtl.batched import run_batch
from p2p_fmtl.models import build_model, model_params
from p2p_fmtl.runner import Simulation, checkpoint_path
from p2p_fmtl.training import train_flops_per_sample

DIM = 5
JPF, JPB = 1e-9, 1e-6  # coefficients far from the defaults: both parts show


def cfg(rounds=3, cost=None, **sections):
    out = {
        "run": {"rounds": rounds, "eval_every": 1},
        "topology": {"name": "ring", "n": 6},
        "data": {"name": "fedem_synthetic", "dim": DIM, "n_test": 20},
        "algorithm": {"name": "dsgd", "lr": 0.1, "batch_size": 8, "local_epochs": 1},
        "cost": {"enabled": True, "joules_per_flop": JPF, "joules_per_byte": JPB, **(cost or {})},
    }
    for k, v in sections.items():
        out[k] = {**out.get(k, {}), **v}
    return out


def linear_flops(d: int, o: int) -> float:
    """Training FLOPs of one sample of x W + b: 3 × (2·d·o multiply-adds + o bias adds)."""
    return 3.0 * (2 * d * o + o)


def _outputs(res) -> int:
    return int(np.shape(res.params[[k for k in res.params if k.endswith("b")][0]])[-1])


@pytest.mark.parametrize("d, o", [(5, 1), (7, 3)])
def test_flops_of_a_linear_model_are_the_closed_form(d, o):
    model = build_model({"name": "linear"}, (d,), o)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    x = jax.ShapeDtypeStruct((1, d), jnp.float32)
    assert train_flops_per_sample(model.apply, params, x) == linear_flops(d, o)
    p = d * o + o  # ≈ 6 FLOPs per parameter and training sample
    assert train_flops_per_sample(model.apply, params, x) == pytest.approx(6 * p, rel=0.1)


def test_flops_of_an_mlp_are_six_per_parameter():
    model = build_model({"name": "mlp", **model_params("mlp")}, (10,), 3)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    p = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    flops = train_flops_per_sample(model.apply, params, jax.ShapeDtypeStruct((1, 10), jnp.float32))
    assert flops == pytest.approx(6 * p, rel=0.05)


@pytest.mark.parametrize(
    "algorithm, copies",
    [({}, 1), ({"name": "dem", "components": 2}, 2)],
    ids=["dsgd", "dem_M2"],
)
def test_energy_is_flops_of_the_samples_plus_bytes(algorithm, copies):
    """Static graph, no stragglers: after t rounds, t · Σ_i n_i · copies · FLOPs · J/FLOP
    + bytes_total · J/byte (one local epoch processes each training sample once)."""
    res = p2p_fmtl.run(cfg(algorithm=algorithm))
    samples = sum(row["n_train"] for row in res.nodes) * copies
    flops = linear_flops(DIM, _outputs(res))
    assert [row["round"] for row in res.metrics] == [0, 1, 2, 3]
    for row in res.metrics:
        expected = row["round"] * samples * flops * JPF + row["bytes_total"] * JPB
        assert row["energy_j"] == pytest.approx(expected, rel=1e-6)
    assert res.metrics[-1]["energy_j"] > res.metrics[1]["energy_j"] > 0


def test_energy_follows_the_bytes_and_vanishes_without_coefficients():
    comp = {"name": "top_k", "ratio": 0.1}
    off = p2p_fmtl.run(cfg(cost={"joules_per_flop": 0.0}))
    on = p2p_fmtl.run(cfg(cost={"joules_per_flop": 0.0}, compression=comp))
    b_off, b_on = off.metrics[-1]["bytes_total"], on.metrics[-1]["bytes_total"]
    assert b_off > b_on > 0
    assert off.metrics[-1]["energy_j"] == pytest.approx(b_off * JPB, rel=1e-6)
    assert on.metrics[-1]["energy_j"] == pytest.approx(b_on * JPB, rel=1e-6)
    both = p2p_fmtl.run(cfg(compression=comp))
    assert both.metrics[-1]["energy_j"] > on.metrics[-1]["energy_j"]  # plus the compute
    zero = p2p_fmtl.run(cfg(cost={"joules_per_flop": 0.0, "joules_per_byte": 0.0}))
    assert [row["energy_j"] for row in zero.metrics] == [0.0] * 4
    assert zero.metrics[-1]["sim_time_s"] > 0
    assert "energy_j" not in Simulation(cfg(cost={"enabled": False})).evaluate()


def test_energy_counts_the_work_done_by_stragglers_and_live_nodes():
    """Replayed network: Σ_t Σ_i alive_ti · f_ti · n_i samples (dead nodes do nothing)."""
    faults = {"straggler": 0.5, "straggler_work": [0.2, 0.6], "node_drop": 0.3}
    sim = Simulation(cfg(rounds=4, cost={"joules_per_byte": 0.0}, faults=faults))
    sim.evaluate()
    for _ in range(4):
        sim.advance(1)
        sim.evaluate()
    trace = sim.network_trace()
    n_train = np.asarray(sim.n_train, np.float64)
    work = (trace["alive"] * trace["budget"] * n_train).sum()
    assert 0 < work < 4 * n_train.sum()  # some nodes were slowed or down
    flops = linear_flops(DIM, sim.task.out_dim)
    assert sim.history[-1]["energy_j"] == pytest.approx(work * flops * JPF, rel=1e-5)


def test_a_resumed_run_continues_its_energy(tmp_path):
    faults = {"straggler": 0.5, "node_drop": 0.2}
    whole = p2p_fmtl.run(cfg(rounds=4, faults=faults))
    part = Simulation(cfg(rounds=4, faults=faults))
    part.evaluate()
    for _ in range(2):
        part.advance(1)
        part.evaluate()
    out = tmp_path / "run"
    part.checkpoint(checkpoint_path(out))
    resumed = p2p_fmtl.run(cfg(rounds=4, faults=faults), out=out, resume=True)
    assert [r["energy_j"] for r in resumed.metrics] == [r["energy_j"] for r in whole.metrics]


def test_batched_energy_equals_energy_alone():
    faults = {"straggler": 0.5, "node_drop": 0.2}
    a, b = cfg(faults=faults), cfg(faults=faults, run={"seed": 1})
    batch = run_batch([a, b])
    for one, alone in zip(batch, (p2p_fmtl.run(a), p2p_fmtl.run(b)), strict=True):
        assert [r["energy_j"] for r in one.metrics] == [r["energy_j"] for r in alone.metrics]
    assert batch[0].metrics[-1]["energy_j"] != batch[1].metrics[-1]["energy_j"]


def test_energy_on_two_devices_equals_one_device():
    """The samples processed (the energy's compute part) on 2 devices, split by node."""
    script = """
import json
from p2p_fmtl.runner import Simulation
from test_energy import cfg
out = []
for devices in (1, 2):
    sim = Simulation(cfg(faults={"straggler": 0.5, "node_drop": 0.2}, run={"devices": devices}))
    before = str(sim.carry.work.sharding)
    sim.advance(3)
    out.append([sim.work_samples, before == str(sim.carry.work.sharding)])
print(json.dumps(out))
"""
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (one, _), (two, same_sharding) = json.loads(proc.stdout.strip().splitlines()[-1])
    assert one > 0 and two == pytest.approx(one, rel=1e-6)
    assert same_sharding  # the carried work keeps its placement: no recompilation for it
