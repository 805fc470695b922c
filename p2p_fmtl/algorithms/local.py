"""Local training: every node trains on its own data and never communicates.

The baseline every collaborative method must beat.  Same local work as D-SGD
(:mod:`p2p_fmtl.algorithms.dsgd`) without the gossip step; no bytes are sent.
"""

from __future__ import annotations

from .base import Algorithm, AlgorithmSpec, Context, PrivateWork
from .dsgd import sgd_algorithm, sgd_needs


def build(ctx: Context) -> Algorithm:
    return sgd_algorithm(ctx, "local", communicates=False)


SPEC = AlgorithmSpec(
    "local",
    build,
    communicates=False,
    doc=__doc__.splitlines()[0],
    needs=lambda config: sgd_needs(config, communicates=False),
    privacy=lambda config: PrivateWork(),  # D-SGD's local work
)
