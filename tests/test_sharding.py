"""The node axis sharded over 4 (forced CPU) devices gives the single-device numbers."""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json
import numpy as np
from p2p_fmtl import load_config, run
out = {}
# every algorithm x exchange x network on 2 devices: tests/test_combinations.py; here the
# sparse operator of a large graph and chunks of nodes, on 4 devices
cases = [
    ("dsgd", {"name": "ring", "n": 400, "operator": "sparse"}, {}),
    # chunks of 3 nodes per device: every device scans its own chunks
    ("dem_chunked", {"name": "random_regular", "n": 48, "d": 4}, {"node_chunk": 3}),
]
for name, topo, extra in cases:
    alg = name.split("_chunked")[0]
    # two buckets: a bucket is a copy of the round in the program (compile time)
    data = {"name": "fedem_synthetic", "dim": 10, "n_test": 30, "bucketing": "full",
            "max_buckets": 2}
    base = {"run": {"rounds": 6, "eval_every": 3, "seed": 1, **extra}, "topology": topo,
            "data": data,
            "algorithm": {"name": alg, "batch_size": 32, "momentum": 0.9}}
    one = run(load_config(base))
    four = run(load_config(base, overrides={"run.devices": 4}))
    if extra:
        assert any(four.summary["node_chunks"]), four.summary["node_chunks"]
    out[name] = {
        "diff": max(float(np.max(np.abs(one.params[k] - four.params[k]))) for k in one.params),
        "acc": [one.summary["test_acc"], four.summary["test_acc"]],
        "shards": len(four.state.params["w"].sharding.device_set),
    }
print(json.dumps(out))
"""


def test_four_devices_match_one_device():
    from combinations import FAST_COMPILE

    flags = os.environ.get("XLA_FLAGS", "") + FAST_COMPILE
    flags += " --xla_force_host_platform_device_count=4"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for alg, r in out.items():
        assert r["shards"] == 4, alg
        assert r["diff"] < 1e-5, (alg, r)
        assert abs(r["acc"][0] - r["acc"][1]) < 1e-5, (alg, r)


def test_too_many_devices_is_a_clear_error():
    import pytest

    from p2p_fmtl import ConfigError, load_config, run

    with pytest.raises(ConfigError, match=r"run\.devices: got 64, but only \d+ devices"):
        run(
            load_config(
                {
                    "run": {"devices": 64},
                    "topology": {"name": "ring", "n": 64},
                    "data": {"dim": 5, "n_test": 5},
                }
            )
        )
