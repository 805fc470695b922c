"""D-EM: decentralized FedEM (Marfoq, Neglia, Bellet, Kameni, Vidal; NeurIPS 2021).

"Federated Multi-Task Learning under a Mixture of Distributions", Algorithm 3.
Node i's data distribution is a mixture of M shared distributions with its own
weights π_i.  Node i keeps M component models θ_{i,1..M} and π_i.  One round::

    E-step   q_i(m | s) = softmax_m( log π_{i,m} − ℓ(h_{θ_{i,m}}(x_s), y_s) )   over its train set
    M-step   π_{i,m} ← mean_s q_i(m | s)
             θ_{i,m} ← local SGD on Σ_s q_i(m|s) ℓ(h_{θ_{i,m}}(x_s), y_s) / batch   (each m)
    gossip   θ_{i,m} ← Σ_j W_ij θ_{j,m}                                        (each m)

π, q and the optimizer state never leave the node.  Prediction is the π-weighted
mixture of the components' probabilities, p_i(y|x) = Σ_m π_{i,m} p_{θ_{i,m}}(y|x).

An *unseen* node (one that never trained) borrows its neighbours' components and fits
only its π by ``adapt_iters`` E/M iterations on its own training data (§3.3 of the paper).

With M = 1 the E-step gives q = 1 and D-EM is D-SGD, using the very same random keys.

``component_batches = "shared"`` (default) lets the M components of a node walk its data
in the same shuffled order each epoch, so each minibatch is gathered once and used by all
components (about 2× faster on CPU); the reference shuffles independently for each
component (``"independent"``).  Both are the same algorithm in distribution.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..schema import Key
from ..training import train_on_node
from .base import Algorithm, AlgorithmSpec, Context, Needs


class DEMState(NamedTuple):
    params: object  # pytree, leaves (M, ...)
    opt_state: object  # optimizer state per component, leaves (M, ...)
    pi: jax.Array  # (M,) mixture weights on the simplex


def component_keys(key, m: int):
    """One key per component (the key itself when M = 1, so that D-EM(M=1) = D-SGD)."""
    return key[None] if m == 1 else jax.random.split(key, m)


def responsibilities(log_pi, losses, mask):
    """q(m|s) = softmax_m(log π_m − ℓ_{m,s}) for real samples, 0 for padding; (M, S)."""
    q = jax.nn.softmax(log_pi[:, None] - losses, axis=0)
    return q * mask[None, :]


def _log(pi):
    return jnp.log(jnp.maximum(pi, jnp.finfo(pi.dtype).tiny))


def build(ctx: Context) -> Algorithm:
    model, task, optimizer, work = ctx.model, ctx.task, ctx.optimizer, ctx.work
    m = ctx.config["components"]
    adapt_iters = ctx.config["adapt_iters"]
    batches = ctx.config["component_batches"]

    def per_sample_loss(params, x, y):
        return task.loss(model.apply(params, x), y)

    def component_losses(params, x, y):
        return jax.vmap(per_sample_loss, in_axes=(0, None, None))(params, x, y)  # (M, S)

    def e_and_pi_step(params, pi, x, y, count):
        mask = (jnp.arange(x.shape[0]) < count).astype(jnp.float32)
        q = responsibilities(_log(pi), component_losses(params, x, y), mask)
        new_pi = q.sum(axis=1) / jnp.maximum(count, 1)
        return q, new_pi

    def init(key, data):
        params = jax.vmap(model.init)(component_keys(key, m))
        return DEMState(params, jax.vmap(optimizer.init)(params), jnp.full((m,), 1.0 / m))

    def local_update(state, data, key, lr, inbox=None):
        q, pi = e_and_pi_step(state.params, state.pi, data.x_train, data.y_train, data.n_train)

        def train_component(params, opt_state, weights, k):
            return train_on_node(
                data,
                params,
                opt_state,
                k,
                lr,
                weights=weights,
                per_sample_loss=per_sample_loss,
                optimizer=optimizer,
                work=work,
            )

        if batches == "shared":  # one epoch order per node, used by every component
            params, opt_state, losses = jax.vmap(train_component, in_axes=(0, 0, 0, None))(
                state.params, state.opt_state, q, key
            )
        else:
            params, opt_state, losses = jax.vmap(train_component)(
                state.params, state.opt_state, q, component_keys(key, m)
            )
        return DEMState(params, opt_state, pi), jnp.sum(pi * losses)

    def mixture_probs(state, x):
        probs = jax.vmap(lambda p: task.probs(model.apply(p, x)))(state.params)  # (M, B, C)
        return jnp.tensordot(state.pi, probs, axes=1)

    def score(state, x, y):
        return task.score_probs(mixture_probs(state, x), y)

    def loss(state, x, y):
        """Negative log-likelihood of the mixture: −log Σ_m π_m exp(−ℓ_m)."""
        ll = jax.nn.logsumexp(_log(state.pi)[:, None] - component_losses(state.params, x, y), 0)
        return -ll

    def adapt(state, data):
        """Fit π only, from uniform, with the (borrowed) components fixed."""
        losses = component_losses(state.params, data.x_train, data.y_train)
        mask = (jnp.arange(losses.shape[1]) < data.n_train).astype(jnp.float32)

        def em(pi, _):
            q = responsibilities(_log(pi), losses, mask)
            return q.sum(axis=1) / jnp.maximum(data.n_train, 1), None

        pi, _ = jax.lax.scan(em, jnp.full((m,), 1.0 / m), None, length=adapt_iters)
        return state._replace(pi=pi)

    return Algorithm(
        name="dem",
        init=init,
        local_update=local_update,
        shared=lambda s: s.params,
        replace_shared=lambda s, p: s._replace(params=p),
        score=score,
        loss=loss,
        needs=needs(ctx.config),
        adapt=adapt,
        extras=lambda s: {"pi": s.pi},
    )


def needs(config) -> Needs:
    """Gossip averaging of the M components; each node trains M copies of its model."""
    return Needs(exchange="average", copies=config["components"])


SPEC = AlgorithmSpec(
    "dem",
    build,
    keys={
        "components": Key(3, "int", lo=1, help="number of mixture components M"),
        "adapt_iters": Key(20, "int", lo=0, help="E/M iterations fitting an unseen node's π"),
        "component_batches": Key(
            "shared",
            "str",
            choices=("shared", "independent"),
            help="all components use the node's epoch order, or each its own (the reference)",
        ),
    },
    doc=__doc__.splitlines()[0],
    needs=needs,
)
