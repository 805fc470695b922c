"""D-SGD: decentralized (local) SGD with gossip averaging.

Lian et al., "Can decentralized algorithms outperform centralized algorithms?"
(NeurIPS 2017); Koloskova et al., "A unified theory of decentralized SGD with
changing topology and local updates" (ICML 2020).  Per round, at node i::

    θ_i ← θ_i after K local SGD steps (or E local epochs) on f_i
    θ_i ← Σ_j W_ij θ_j                      (gossip)

With the complete graph and W = 11ᵀ/N this is FedAvg with full participation.
Optimizer state (momentum buffers) stays on the node.  With ``shared`` = a list of
parameter paths only those are gossiped (a shared trunk with personal heads, as in
FedPer / FedRep); the rest stays local.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from ..config import Key
from ..sharing import check_shared, merge, select
from ..training import train_on_node
from .base import Algorithm, AlgorithmSpec, Context


class SGDState(NamedTuple):
    params: object
    opt_state: object


def sgd_algorithm(ctx: Context, name: str, communicates: bool) -> Algorithm:
    model, task, optimizer = ctx.model, ctx.task, ctx.optimizer
    spec = ctx.config.get("shared", "all")
    check_shared(spec, jax.eval_shape(model.init, jax.random.PRNGKey(0)))

    def per_sample_loss(params, x, y):
        return task.loss(model.apply(params, x), y)

    def init(key, data):
        params = model.init(key)
        return SGDState(params, optimizer.init(params))

    def local_update(state, data, key, lr, inbox=None):
        params, opt_state, loss = train_on_node(
            data,
            state.params,
            state.opt_state,
            key,
            lr,
            per_sample_loss=per_sample_loss,
            optimizer=optimizer,
            work=ctx.work,
        )
        return SGDState(params, opt_state), loss

    def score(state, x, y):
        return task.score(model.apply(state.params, x), y)

    return Algorithm(
        name=name,
        init=init,
        local_update=local_update,
        shared=lambda s: select(s.params, spec),
        replace_shared=lambda s, p: s._replace(params=merge(s.params, spec, p)),
        params=lambda s: s.params,
        score=score,
        loss=lambda s, x, y: per_sample_loss(s.params, x, y),
        communicates=communicates,
    )


def build(ctx: Context) -> Algorithm:
    return sgd_algorithm(ctx, "dsgd", communicates=True)


SPEC = AlgorithmSpec(
    "dsgd",
    build,
    keys={"shared": Key("all", "any", help='"all" or a list of parameter paths to gossip')},
    doc=__doc__.splitlines()[0],
)
