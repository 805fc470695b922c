"""Summary metrics computed from run results.

:func:`delta_m` is the multi-task headline of Maninis et al. (CVPR 2019), used by
FMTL-Bench (Yang et al.): the mean over tasks of the relative change of each task's
score against a baseline run (e.g. local training),

    Δm = (1/T) Σ_t (−1)^{l_t} (M_t − M_{b,t}) / M_{b,t} × 100 %,

with l_t = 1 when lower is better (squared error, loss) and 0 for accuracies.  A run's
``summary.json`` lists its heads and their metric under ``heads``; its metrics carry
``test_<head>_acc`` / ``test_<head>_mse``.  Accuracies and errors are never averaged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import UserError

LOWER_IS_BETTER = ("mse", "loss")


def delta_m(
    metrics: Mapping[str, Any], baseline: Mapping[str, Any], heads: Mapping[str, str]
) -> float:
    """Δm of ``metrics`` against ``baseline`` in percent (positive: better).

    ``metrics`` and ``baseline`` are metric rows or summaries (``test_<head>_<metric>``
    keys); ``heads`` maps each head to its metric (``summary["heads"]``).
    """
    if not heads:
        raise UserError("delta_m: heads is empty; expected {head: 'acc' | 'mse'}")
    terms = []
    for head, metric in heads.items():
        key = f"test_{head}_{metric}"
        for name, row in (("metrics", metrics), ("baseline", baseline)):
            if row.get(key) is None:
                raise UserError(f"delta_m: {name} has no {key!r}")
        base = float(baseline[key])
        if base == 0:
            raise UserError(f"delta_m: baseline {key} is 0; Δm is relative to it")
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        terms.append(sign * (float(metrics[key]) - base) / base * 100.0)
    return sum(terms) / len(terms)
