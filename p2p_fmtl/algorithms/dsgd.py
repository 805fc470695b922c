"""D-SGD: decentralized (local) SGD with gossip averaging.

Lian et al., "Can decentralized algorithms outperform centralized algorithms?"
(NeurIPS 2017); Koloskova et al., "A unified theory of decentralized SGD with
changing topology and local updates" (ICML 2020).  Per round, at node i::

    θ_i ← θ_i after K local SGD steps (or E local epochs) on f_i
    θ_i ← Σ_j W_ij θ_j                      (gossip)

With the complete graph and W = 11ᵀ/N this is FedAvg with full participation.
Optimizer state (momentum buffers) stays on the node.  With ``shared`` = a list of
parameter paths only those are gossiped (a shared trunk with personal heads, as in
FedPer / FedRep); the rest stays local.  ``aggregation = "decoupled"`` sends each
node's update restricted to its top-ρ coordinates, rescaled (:mod:`p2p_fmtl.aggregation`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from ..aggregation import decouple, mix_with_inbox
from ..schema import AGGREGATION_KEYS, Key
from ..sharing import check_shared, merge, select
from ..training import train_on_node
from .base import Algorithm, AlgorithmSpec, Context, Needs, PrivateWork


class SGDState(NamedTuple):
    params: object
    opt_state: object
    sent: object = None  # decoupled aggregation: the model w̃ neighbours receive


def sgd_algorithm(ctx: Context, name: str, communicates: bool) -> Algorithm:
    model, task, optimizer = ctx.model, ctx.task, ctx.optimizer
    spec = ctx.config.get("shared", "all")
    check_shared(spec, jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    needs = sgd_needs(ctx.config, communicates)
    decoupled = needs.exchange == "combine"
    rho = ctx.config.get("rho", 0.1)

    def per_sample_loss(params, x, y):
        return task.loss(model.apply(params, x), y)

    def init(key, data):
        params = model.init(key)
        sent = select(params, spec) if decoupled else None
        return SGDState(params, optimizer.init(params), sent)

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
        sent = None
        if decoupled:
            sent = decouple(select(state.params, spec), select(params, spec), rho)
        return SGDState(params, opt_state, sent), loss

    def combine(state, inbox, lr):
        """Decoupled aggregation: mix one's own model with neighbours' w̃ (W_ij weights)."""
        mixed = mix_with_inbox(select(state.params, spec), inbox)
        return state._replace(params=merge(state.params, spec, mixed))

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
        needs=needs,
        combine=combine if decoupled else None,
        message=(lambda s: s.sent) if decoupled else None,
    )


def sgd_needs(config, communicates: bool = True) -> Needs:
    """Gossip averaging; decoupled aggregation mixes neighbours' w̃ one by one after local
    work, with the round's mixing weights W_ij."""
    if not communicates:
        return Needs(exchange="none")
    if config.get("aggregation", "average") == "decoupled":
        return Needs(exchange="combine", relation="mixing")
    return Needs(exchange="average")


def build(ctx: Context) -> Algorithm:
    return sgd_algorithm(ctx, "dsgd", communicates=True)


SPEC = AlgorithmSpec(
    "dsgd",
    build,
    keys={
        "shared": Key("all", "any", help='"all" or a list of parameter paths to gossip'),
        **AGGREGATION_KEYS,
    },
    doc=__doc__.splitlines()[0],
    needs=sgd_needs,
    privacy=lambda config: PrivateWork(),  # local_sgd only; decoupled w̃ post-processes it
)
