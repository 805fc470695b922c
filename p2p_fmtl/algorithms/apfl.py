"""APFL, decentralized: a gossiped model w and a personal model v, served as α v + (1 − α) w.

Deng, Kamani, Mahdavi, "Adaptive Personalized Federated Learning" (arXiv:2003.13461,
2020), Algorithm 1.  Node i keeps the local copy w_i of the global model and its
personal model v_i; its personalised model is ``v̄_i = α_i v_i + (1 − α_i) w_i``.  Every
local step draws one minibatch ξ and, from the same (old) values::

    w_i ← w_i − η ∇f_i(w_i; ξ)                         (plain local SGD on f_i)
    v_i ← v_i − η ∇_v f_i(v̄_i; ξ) = v_i − η α_i ∇f_i(v̄_i; ξ)
    α_i ← clip(α_i − η_α ⟨v_i − w_i, ∇f_i(v̄_i; ξ)⟩, 0, 1)    (adaptive α, if η_α > 0)

and the server's average of the w_i becomes gossip with the node's mixing weights,
``w_i ← Σ_j W_ij w_j``: only w is sent (``shared``), v and α never leave the node.
Scores and the train loss are those of v̄ (the paper's output).  w and v start from the
same initial model, so v̄ = w before any training, whatever α.

Both models take the node's optimizer (the ``[algorithm]`` optimizer, one state each) and
learning rate; α takes plain SGD with step ``alpha_lr`` (η_α) and stays fixed when it is
0.  Limits (tested exactly): α = 0 gives D-SGD (v̄ = w, and w is trained and gossiped
as D-SGD's model, with the same batches); α = 1 trains v exactly as ``local`` trains its
model (v̄ = v, gradient ∇f_i(v)).

Keys: ``alpha`` (α_i at the start, default 0.5: the middle of the paper's grid
{0.25, 0.5, 0.75}; the FedEM reference's APFLAggregator takes it without a default) and
``alpha_lr`` (η_α, default 0: fixed α; the reference implementations add a small L2 term
0.02 α to α's gradient, not the paper, and not done here).  A node that never trained
serves the shared model it borrows (``adapt``: v ← w).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..optim import set_learning_rate
from ..schema import Key
from ..training import train_on_node
from .base import Algorithm, AlgorithmSpec, Context, Needs, PrivateWork


class Models(NamedTuple):
    """What local SGD trains: the shared model, the personal model and α."""

    w: Any
    v: Any
    alpha: jax.Array  # () in [0, 1]


class PairState(NamedTuple):
    """Optimizer state of :func:`paired`; ``hyperparams`` holds the round's learning rate
    (set by :func:`p2p_fmtl.training.local_sgd`) and is passed to both inner states."""

    hyperparams: dict
    w: Any
    v: Any


def paired(optimizer: optax.GradientTransformation, alpha_lr: float):
    """The node's optimizer applied to w and to v separately (one state each, as two
    optimizers would), and projected SGD on α with step ``alpha_lr`` (no step if 0)."""

    def init(p: Models):
        sw = optimizer.init(p.w)
        return PairState(
            {"learning_rate": sw.hyperparams["learning_rate"]}, sw, optimizer.init(p.v)
        )

    def update(grads: Models, state: PairState, p: Models):
        lr = state.hyperparams["learning_rate"]
        uw, sw = optimizer.update(grads.w, set_learning_rate(state.w, lr), p.w)
        uv, sv = optimizer.update(grads.v, set_learning_rate(state.v, lr), p.v)
        ua = jnp.zeros_like(p.alpha)
        if alpha_lr > 0:
            ua = jnp.clip(p.alpha - alpha_lr * grads.alpha, 0.0, 1.0) - p.alpha
        return Models(uw, uv, ua), PairState(state.hyperparams, sw, sv)

    return optax.GradientTransformation(init, update)


class APFLState(NamedTuple):
    models: Models
    opt_state: PairState


def mixed(m: Models, stop_w: bool = False):
    """v̄ = α v + (1 − α) w (with w held constant when ``stop_w``: v̄'s loss trains v and
    α only)."""
    w = jax.lax.stop_gradient(m.w) if stop_w else m.w
    return jax.tree.map(lambda v, w: m.alpha * v + (1.0 - m.alpha) * w, m.v, w)


def build(ctx: Context) -> Algorithm:
    model, task = ctx.model, ctx.task
    alpha0 = float(ctx.config["alpha"])
    optimizer = paired(ctx.optimizer, float(ctx.config["alpha_lr"]))

    def per_sample_loss(params, x, y):
        return task.loss(model.apply(params, x), y)

    def both_losses(m: Models, x, y):
        # w's gradient comes from f(w) alone; v's and α's from f(v̄)
        return per_sample_loss(m.w, x, y) + per_sample_loss(mixed(m, stop_w=True), x, y)

    def init(key, data):
        w = model.init(key)
        m = Models(w, w, jnp.asarray(alpha0, jnp.float32))
        return APFLState(m, optimizer.init(m))

    def local_update(state, data, key, lr, inbox=None):
        m, opt_state, loss = train_on_node(
            data,
            state.models,
            state.opt_state,
            key,
            lr,
            per_sample_loss=both_losses,
            optimizer=optimizer,
            work=ctx.work,
        )
        return APFLState(m, opt_state), loss

    def score(state, x, y):
        return task.score(model.apply(mixed(state.models), x), y)

    def replace_w(state, w):
        return state._replace(models=state.models._replace(w=w))

    def adapt(state, data):
        """A node that never trained serves the shared model it borrowed: v ← w."""
        return state._replace(models=state.models._replace(v=state.models.w))

    return Algorithm(
        name="apfl",
        init=init,
        local_update=local_update,
        shared=lambda s: s.models.w,
        replace_shared=replace_w,
        params=lambda s: {"shared": s.models.w, "personal": s.models.v},
        score=score,
        loss=lambda s, x, y: per_sample_loss(mixed(s.models), x, y),
        needs=needs(ctx.config),
        adapt=adapt,
        extras=lambda s: {"alpha": s.models.alpha},
    )


def needs(config) -> Needs:
    """Gossip averaging of w; each step trains two models (w and v) on the batch."""
    return Needs(exchange="average", copies=2)


SPEC = AlgorithmSpec(
    "apfl",
    build,
    keys={
        "alpha": Key(0.5, "float", lo=0.0, hi=1.0, help="α: weight of the personal model in v̄"),
        "alpha_lr": Key(0.0, "float", lo=0.0, help="step of α's projected SGD (0: α stays fixed)"),
    },
    doc=__doc__.splitlines()[0],
    needs=needs,
    privacy=lambda config: PrivateWork(),  # one local_sgd over (w, v, α), clipped as a whole
)
