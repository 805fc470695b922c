"""FedProx, decentralized: local steps with a proximal pull towards the last gossiped model.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous
Networks" (MLSys 2020).  The server version sends the global model w^t to the clients;
client i approximately solves

    min_w  f_i(w) + (μ/2) ‖w − w^t‖²

and the server averages the results.  Decentralized (as here), node i's reference is its
own model after the last gossip step, w_ref = θ_i (what the server's w^t was to a client),
and the server's average becomes gossip with the node's mixing weights.  Per round::

    θ_i ← θ_i after K local steps (or E epochs) on f_i(w) + (μ/2) ‖w − w_ref‖²,  w_ref = θ_i
    θ_i ← Σ_j W_ij θ_j                                                     (gossip)

With μ = 0 this is D-SGD, step for step (tested).  The proximal term acts on the shared
part (``shared``; all parameters by default); personal parameters train on f_i alone.
Key ``mu`` (μ, default 0.01, within the paper's grid {0.001, 0.01, 0.1, 0.5, 1}).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..schema import Key
from ..sharing import select
from ..training import train_on_node
from .base import Algorithm, AlgorithmSpec, Context, Needs, PrivateWork
from .dsgd import SGDState, sgd_algorithm


def proximal(params, anchor, mu: float):
    """(μ/2) ‖params − anchor‖² summed over the leaves."""
    sq = sum(
        jnp.sum((p - a) ** 2)
        for p, a in zip(jax.tree.leaves(params), jax.tree.leaves(anchor), strict=True)
    )
    return 0.5 * mu * sq


def build(ctx: Context) -> Algorithm:
    model, task, mu = ctx.model, ctx.task, ctx.config["mu"]
    spec = ctx.config["shared"]
    dsgd = sgd_algorithm(ctx, "fedprox", communicates=True)  # gossip, scoring, saving

    def local_update(state, data, key, lr, inbox=None):
        anchor = select(state.params, spec)  # w_ref: the model after the last gossip

        def loss(params, x, y):
            # per sample: averaging over a batch gives f_batch(w) + (μ/2) ‖s(w) − w_ref‖²
            prox = proximal(select(params, spec), anchor, mu)
            return task.loss(model.apply(params, x), y) + prox

        params, opt_state, batch_loss = train_on_node(
            data,
            state.params,
            state.opt_state,
            key,
            lr,
            per_sample_loss=loss,
            optimizer=ctx.optimizer,
            work=ctx.work,
        )
        return SGDState(params, opt_state), batch_loss

    return dsgd._replace(local_update=local_update)


SPEC = AlgorithmSpec(
    "fedprox",
    build,
    keys={
        "mu": Key(0.01, "float", lo=0.0, help="μ: weight of the proximal term"),
        "shared": Key("all", "any", help='"all" or a list of parameter paths to gossip'),
    },
    doc=__doc__.splitlines()[0],
    needs=lambda config: Needs(exchange="average"),
    # local_sgd only; the proximal term (data-free) is clipped with each sample's gradient
    privacy=lambda config: PrivateWork(),
)
