"""Data generated while packed (NodeStream): the same packed arrays and the same run as
the list of per-node arrays, each node validated as it is generated."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from p2p_fmtl import load_config
from p2p_fmtl.data import FederatedDataset, NodeDataset, NodeStream, pack, validate_dataset
from p2p_fmtl.errors import ConfigError
from p2p_fmtl.runner import Simulation

fs = importlib.import_module("p2p_fmtl.data.fedem_synthetic")  # the module, not the function


def test_stream_packs_the_same_arrays():
    listed = fs.fedem_synthetic(9, dim=4, n_test=7, _stream=False)
    streamed = fs.fedem_synthetic(9, dim=4, n_test=7, _stream=True)
    assert streamed.streamed and not listed.streamed
    assert np.array_equal(streamed.n_train, listed.n_train)
    assert streamed.feature_shape == listed.feature_shape == (4,)
    kw = dict(batch_size=32, bucketing="full", max_buckets=3, chunk_bytes=2048)
    a, b = pack(listed, **kw), pack(streamed, **kw)
    assert len(a.buckets) == len(b.buckets) == 3
    for ba, bb in zip(a.buckets, b.buckets, strict=True):
        for f in ba._fields:
            x, y = getattr(ba, f), getattr(bb, f)
            assert (x is None and y is None) or np.array_equal(x, y), f
    # every pass over a stream draws the same nodes
    first, again = list(streamed.nodes), list(streamed.nodes)
    assert all(np.array_equal(p.x_train, q.x_train) for p, q in zip(first, again, strict=True))
    assert np.array_equal(streamed.nodes[4].y_test, listed.nodes[4].y_test)


def _cfg():
    return load_config(
        {
            "run": {"seed": 1, "rounds": 2, "eval_every": 2},
            "topology": {"name": "ring", "n": 6},
            "data": {"name": "fedem_synthetic", "dim": 4, "n_test": 10, "max_samples": 80},
            "algorithm": {"name": "dem", "lr": 0.1, "batch_size": 16, "components": 2},
        }
    )


def test_streamed_run_equals_listed_run(monkeypatch):
    ref = Simulation(_cfg())
    ref.advance(2)
    monkeypatch.setattr(fs, "STREAM_FROM", 1)  # every size streams
    sim = Simulation(_cfg())
    sim.advance(2)
    assert sim.dataset_info.get("component_train") is None  # no per-sample records
    assert ref.dataset_info["component_train"] is not None
    for x, y in zip(_leaves(ref.state), _leaves(sim.state), strict=True):
        assert np.array_equal(x, y)
    assert ref.evaluate()["test_acc"] == sim.evaluate()["test_acc"]


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_stream_nodes_are_validated_while_generated():
    def nodes():
        for i in range(3):
            y = np.array([0, 1, 5 if i == 2 else 1], np.int32)
            yield NodeDataset(np.ones((3, 2), np.float32), y, np.ones((1, 2)), y[:1])

    stream = NodeStream([3, 3, 3], [1, 1, 1], (2,), nodes)
    ds = FederatedDataset(stream, task="binary", num_classes=2)
    validate_dataset(ds, "data.name = 'x'")  # shapes only: nothing generated yet
    with pytest.raises(ConfigError, match=r"node 2 has y_train labels in \[0, 5\]"):
        pack(ds, batch_size=2)
    with pytest.raises(IndexError):
        stream[3]


gen = importlib.import_module("topologies.generators")


def _ring_run(**faults):
    cfg = {
        "run": {"seed": 2, "rounds": 3, "eval_every": 3},
        "topology": {"name": "ring", "n": 8},
        "data": {"name": "fedem_synthetic", "dim": 4, "n_test": 10, "holdout_nodes": [3]},
        "algorithm": {"name": "dsgd", "lr": 0.1, "batch_size": 16},
        "faults": faults,
    }
    sim = Simulation(load_config(cfg))
    sim.advance(3)
    return sim


@pytest.mark.parametrize("faults", [{}, {"node_drop": 0.3}])
def test_a_run_on_edge_arrays_equals_the_run_on_networkx(monkeypatch, faults):
    import topologies

    ref = _ring_run(**faults)
    monkeypatch.setattr(gen, "LARGE_GRAPH_NODES", 2)  # every ring as an EdgeGraph
    sim = _ring_run(**faults)
    assert isinstance(sim.network.graph, topologies.EdgeGraph)
    assert not isinstance(ref.network.graph, topologies.EdgeGraph)
    for x, y in zip(_leaves(ref.state), _leaves(sim.state), strict=True):
        assert np.array_equal(x, y)
    a, b = ref.evaluate(), sim.evaluate()
    a.pop("wall_s"), b.pop("wall_s")
    assert a == b


def test_topology_command_describes_a_large_graph_without_a_dense_matrix(monkeypatch, capsys):
    from p2p_fmtl import cli

    monkeypatch.setattr(cli, "SPECTRUM_LIMIT", 10)
    assert cli.main(["topology", "random_regular", "--n", "40", "--json"]) == 0
    out = capsys.readouterr()
    info = __import__("json").loads(out.out)
    assert info["nodes"] == 40 and info["max_degree"] == info["min_degree"] == 4
    assert info["spectral_gap"] is None and "computed up to 10 nodes" in out.err
