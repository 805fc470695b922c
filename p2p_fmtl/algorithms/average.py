"""Gossip averaging (consensus only): no data and no training.

Every node starts from its own random vector x_i(0) ~ N(0, I_dim) and repeats
``x_i ← Σ_j W_ij x_j``.  For a symmetric doubly stochastic W on a connected graph,
the consensus distance (1/N) Σ_i ‖x_i − x̄‖² decays like |λ₂(W)|^(2t), where
|λ₂| is the second-largest eigenvalue modulus (Boyd et al., "Randomized gossip
algorithms", IEEE Trans. Inf. Theory 2006).
"""

from __future__ import annotations

import jax

from ..schema import Key
from .base import Algorithm, AlgorithmSpec, Context, Needs

NEEDS = Needs(exchange="average", copies=0)  # gossip only: no local work


def build(ctx: Context) -> Algorithm:
    dim = ctx.config["dim"]

    def init(key, data):
        return jax.random.normal(key, (dim,))

    return Algorithm(
        name="average",
        init=init,
        local_update=lambda state, data, key, lr, inbox=None: (state, 0.0 * state[0]),
        shared=lambda s: s,
        replace_shared=lambda s, x: x,
        score=None,
        loss=None,
        needs=NEEDS,
    )


SPEC = AlgorithmSpec(
    "average",
    build,
    trains=False,
    uses_data=False,
    keys={
        "dim": Key(100, "int", lo=1, help="length of each node's random vector"),
        "init": Key("independent", "str", choices=("independent",)),
    },
    doc=__doc__.splitlines()[0],
    needs=lambda config: NEEDS,
    privacy=lambda config: "uses no data, so DP-SGD has nothing to protect",
)
