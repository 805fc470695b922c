"""Smoke test of experiments/real_data.py: every part runs on tiny sizes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import real_data  # noqa: E402


def test_delta_m_signs():
    local = {"test_class_acc": 0.8, "test_parity_acc": 0.5, "test_ink_mse": 0.5}
    better = {"test_class_acc": 0.88, "test_parity_acc": 0.55, "test_ink_mse": 0.45}
    assert abs(real_data.delta_m(better, local) - 10.0) < 1e-9
    assert real_data.delta_m(local, local) == 0.0


def test_real_data_quick_runs(tmp_path, monkeypatch):
    """Parts 1, 2 and 4 (pooled sanity check, partitions, multi-task); the LoRA dialects
    (3) and decoupled aggregation (5) parts are covered by tests of their own parts
    (tests/test_models_extra.py, tests/test_netsim.py) and cost a minute here."""
    monkeypatch.setattr(real_data, "OUT", tmp_path)
    assert real_data.main(["--quick", "--no-record", "--parts", "1", "2", "4"]) == 0
    assert (tmp_path / "partitions.csv").exists()
    text = (tmp_path / "multitask.csv").read_text()
    assert "test_ink_mse" in text
