"""Model propagation (Vanhaesebrouck, Bellet, Tommasi; AISTATS 2017).

"Decentralized Collaborative Learning of Personalized Models over Networks", §3.
Each node trains a purely local model θ_i^loc and smooths it over the graph: the
propagated models minimise

    Q(Θ) = ½ Σ_{{i,j}∈E} a_ij ‖θ_i − θ_j‖² + (μ/2) Σ_i D_i c_i ‖θ_i − θ_i^loc‖²,

with D_i = Σ_j a_ij and confidences c_i ∈ (0, 1] (default c_i = n_i / max_j n_j: nodes
with more data trust their own model more).  Setting ∂Q/∂θ_i = 0 gives the Jacobi
iteration run once per round, after a round of local training of θ^loc:

    θ_i ← ( Σ_j a_ij θ_j + μ D_i c_i θ_i^loc ) / ( D_i (1 + μ c_i) ),

whose fixed point is the linear system ( D(I + μC) − A ) Θ = μ D C Θ^loc.  (The paper's
α ∈ (0, 1) is 1/(1 + μ).)  Only θ is sent to neighbours; θ^loc stays on the node.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..schema import Key
from ..sharing import path_str
from ..training import train_on_node
from .base import Algorithm, AlgorithmSpec, Context, Needs, PrivateWork


class PropagationState(NamedTuple):
    params: object  # θ_i, the propagated (personalized) model
    local_params: object  # θ_i^loc, trained on the node's data only
    opt_state: object
    confidence: object  # c_i


def build(ctx: Context) -> Algorithm:
    model, task, optimizer, work = ctx.model, ctx.task, ctx.optimizer, ctx.work
    mu, conf = ctx.config["mu"], ctx.config["confidence"]

    def per_sample_loss(params, x, y):
        return task.loss(model.apply(params, x), y)

    def init(key, data):
        params = model.init(key)
        c = data.size_fraction if conf == "samples" else jnp.ones((), jnp.float32)
        return PropagationState(params, params, optimizer.init(params), c)

    def local_update(state, data, key, lr, inbox=None):
        local, opt_state, loss = train_on_node(
            data,
            state.local_params,
            state.opt_state,
            key,
            lr,
            per_sample_loss=per_sample_loss,
            optimizer=optimizer,
            work=work,
        )
        return state._replace(local_params=local, opt_state=opt_state), loss

    def combine(state, inbox, lr):
        a, c = inbox.weights, state.confidence
        d = a.sum()
        denom = jnp.maximum(d * (1.0 + mu * c), 1e-30)

        def jacobi(own_loc, nbrs):
            smoothed = (jnp.tensordot(a, nbrs, axes=1) + mu * d * c * own_loc) / denom
            return jnp.where(d > 0, smoothed, own_loc)

        params = jax.tree.map(jacobi, state.local_params, inbox.models)
        return state._replace(params=params)

    return Algorithm(
        name="propagation",
        init=init,
        local_update=local_update,
        shared=lambda s: s.params,
        replace_shared=lambda s, p: s._replace(params=p),
        score=lambda s, x, y: task.score(model.apply(s.params, x), y),
        loss=lambda s, x, y: per_sample_loss(s.params, x, y),
        needs=needs(ctx.config),
        combine=combine,
        params=lambda s: s.params,
        extras=lambda s: {
            "local/" + path_str(p): leaf
            for p, leaf in jax.tree_util.tree_flatten_with_path(s.local_params)[0]
        },
    )


def needs(config) -> Needs:
    """A Jacobi step over the neighbours' propagated models after local training."""
    relation = config["relation"]
    return Needs(exchange="combine", relation="mixing" if relation == "graph" else relation)


SPEC = AlgorithmSpec(
    "propagation",
    build,
    keys={
        "mu": Key(1.0, "float", lo=0.0, lo_open=True, help="trust in the local model (μ)"),
        "confidence": Key("samples", "str", choices=("samples", "uniform")),
        "relation": Key("uniform", "str", choices=("uniform", "graph", "similarity")),
    },
    doc=__doc__.splitlines()[0],
    needs=needs,
    finetunes=False,  # local work trains θ^loc; the score reads the propagated θ
    # θ^loc by local_sgd; θ post-processes it (the confidence c_i reads only n_i, public)
    privacy=lambda config: PrivateWork(),
)
