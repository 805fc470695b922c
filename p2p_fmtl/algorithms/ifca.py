"""IFCA, decentralized: k gossiped models; each node trains and uses the one that fits it best.

Ghosh, Chung, Yin, Ramchandran, "An Efficient Framework for Clustered Federated
Learning" (NeurIPS 2020), Algorithm 2 (model averaging).  The server keeps k cluster
models θ_1..θ_k; each round client i estimates its cluster ĵ_i = argmin_j F_i(θ_j) on
its training data, runs local steps on θ_ĵ only, and the server sets θ_j to the average
of the models of the clients that chose j (θ_j unchanged if none did).

Decentralized (as here), node i keeps its own copies θ_{i,1..k} (like D-EM's components)
and all k are gossiped with the node's mixing weights.  Per round::

    ĵ_i ← argmin_j  mean over its training samples of ℓ(h_{θ_{i,j}}(x), y)
    θ_{i,ĵ} ← θ_{i,ĵ} after K local SGD steps (or E epochs) on f_i        (the others unchanged)
    θ_{i,j} ← Σ_l W_il θ_{l,j}                                          (gossip, every j)

The gossip is NOT weighted by cluster choice: model j is averaged over all neighbours,
including those that did not train it and send their unchanged copy.  So a trained
model is pulled back towards stale copies: on the complete graph with W = 11ᵀ/N, θ_j
moves by Σ_{i chose j} Δ_i / N, the server's step Σ_{i chose j} Δ_i / |S_j| shrunk by
the fraction |S_j| / N of nodes that chose j (the network mean of every θ_j is kept, as
in plain gossip).  Weighting model j by its choosers would need a weight per cluster in
the exchange, which the ``average`` exchange (one W for the whole shared part) does not
carry; with it, every exchange, fault and compressor applies to IFCA unchanged.

A node is scored (and its loss reported) with the model it chose at its last round
(``cluster``, saved beside the parameters), from its training data only (the reference
picks by the loss on the evaluated data itself).  A node that never trained (held out)
chooses among the models it borrows by its training loss.  With the default
``algorithm.init = "identical"`` every node starts with the same k models, as the
server's; with ``k = 1`` IFCA is D-SGD, using the very same random keys (tested).

Key ``clusters`` (k, default 2: the paper's synthetic experiments and the reference's
``synthetic/config.json``, ``"p": 2``; rotated MNIST uses 2 or 4).  Only the chosen model
trains (``Needs.copies = 1``), though each node holds k and evaluates all k on its
training data every round.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..schema import Key
from ..training import train_on_node
from .base import Algorithm, AlgorithmSpec, Context, Needs, PrivateWork
from .dem import component_keys


class IFCAState(NamedTuple):
    params: object  # pytree, leaves (k, ...)
    opt_state: object  # optimizer state per model, leaves (k, ...)
    cluster: jax.Array  # () int32: the model the node chose last


def build(ctx: Context) -> Algorithm:
    model, task, optimizer, work = ctx.model, ctx.task, ctx.optimizer, ctx.work
    k = ctx.config["clusters"]

    def per_sample_loss(params, x, y):
        return task.loss(model.apply(params, x), y)

    def choose(params, data):
        """argmin_j of model j's mean loss on the node's training samples."""
        mask = (jnp.arange(data.x_train.shape[0]) < data.n_train).astype(jnp.float32)
        losses = jax.vmap(per_sample_loss, in_axes=(0, None, None))(
            params, data.x_train, data.y_train
        )
        mean = jnp.sum(losses * mask, axis=1) / jnp.maximum(data.n_train, 1)
        return jnp.argmin(mean).astype(jnp.int32)

    def pick(tree, j):
        return jax.tree.map(lambda a: a[j], tree)

    def put(tree, j, part):
        return jax.tree.map(lambda a, b: a.at[j].set(b), tree, part)

    def init(key, data):
        params = jax.vmap(model.init)(component_keys(key, k))
        return IFCAState(params, jax.vmap(optimizer.init)(params), choose(params, data))

    def local_update(state, data, key, lr, inbox=None):
        j = choose(state.params, data)
        params, opt_state, loss = train_on_node(
            data,
            pick(state.params, j),
            pick(state.opt_state, j),
            key,
            lr,
            per_sample_loss=per_sample_loss,
            optimizer=optimizer,
            work=work,
        )
        new = IFCAState(put(state.params, j, params), put(state.opt_state, j, opt_state), j)
        return new, loss

    return Algorithm(
        name="ifca",
        init=init,
        local_update=local_update,
        shared=lambda s: s.params,
        replace_shared=lambda s, p: s._replace(params=p),
        params=lambda s: s.params,
        score=lambda s, x, y: task.score(model.apply(pick(s.params, s.cluster), x), y),
        loss=lambda s, x, y: per_sample_loss(pick(s.params, s.cluster), x, y),
        needs=needs(ctx.config),
        adapt=lambda s, data: s._replace(cluster=choose(s.params, data)),
        extras=lambda s: {"cluster": s.cluster},
    )


def needs(config) -> Needs:
    """Gossip averaging of all k models; only the chosen one trains."""
    return Needs(exchange="average", copies=1)


def privacy(config) -> PrivateWork | str:
    """With k = 1 the choice is fixed and IFCA is D-SGD; with more models the choice reads
    every training sample's loss, outside DP-SGD (and which model changed reveals it)."""
    if config["clusters"] == 1:
        return PrivateWork()
    return (
        f"with algorithm.clusters = {config['clusters']} chooses its model by the loss on "
        "all of a node's training samples, outside DP-SGD"
    )


SPEC = AlgorithmSpec(
    "ifca",
    build,
    keys={"clusters": Key(2, "int", lo=1, help="number of cluster models k")},
    doc=__doc__.splitlines()[0],
    needs=needs,
    privacy=privacy,
)
