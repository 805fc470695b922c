"""pFedMe, decentralized: personal models θ_i as Moreau-envelope proximal points of w_i.

T. Dinh, Tran, Nguyen, "Personalized Federated Learning with Moreau Envelopes"
(NeurIPS 2020), Algorithm 1.  Node i keeps its local model w_i (gossiped) and its
personal model θ_i.  Every local step draws one minibatch D and::

    θ_i ← K steps of  θ ← θ − p (∇f_i(θ; D) + λ (θ − w_i))    ≈ argmin_θ f_i(θ; D) + λ/2 ‖θ − w_i‖²
    w_i ← w_i − η λ (w_i − θ_i)                       (a step on the Moreau envelope of f_i)

K = ``inner_steps``, p = ``personal_lr``, λ = ``mu`` (the FedEM reference's name for the
proximal weight; the paper's λ), η the ``[algorithm]`` learning rate.  As in the
reference code, θ starts each round's local work at w_i and is warm-started from one
local step to the next.  The envelope gradient λ (w_i − θ_i) goes through the node's
optimizer (plain ``sgd``: the update above); the inner steps are plain gradient steps.

The server step ``w ← (1 − β) w_t + β · mean_i w_i`` becomes, at node i, in every gossip
round::

    w_i ← (1 − β) w_i^last + β Σ_j W_ij w_j

where w_i^last is node i's own w after its previous gossip step (its initial model before
the first): what the server's w_t was to its clients; Σ_j W_ij w_j stands for what the
exchange returns (push-sum, CHOCO or compressed gossip included).  β = ``beta`` (default
1: plain gossip of w).  Only w is sent (``shared``); θ stays on the node.  A node that is
down in a gossip round keeps its w only when β = 1 or it did no local work since its last
gossip step (the mixing leaves a down node its own model, and the β step still applies).

Scores and the train loss are those of the personal model θ_i (the paper's
"personalized" pFedMe); the saved parameters are both (``shared`` = w, ``personal`` = θ).
A node that never trained serves the shared model it borrows (``adapt``: θ ← w; with
β ≠ 1 that is its own β step from its initial model).

Exact limits (tested): with K = 1, p λ = 1 and one local step per round, θ = w − p ∇f_i(w)
and the w step is D-SGD's step (to rounding, same batches); on least squares, the inner
steps converge to the closed-form proximal point (A + λI)⁻¹(b + λ w).

Defaults from the paper's experiments and its reference code (CharlieDinh/pFedMe, main.py):
λ = 15, K = 5, p = 0.09, β = 1 (its η is 0.005: set ``lr``; η λ should stay below 2, and
p (L + λ) too, L the smoothness of f_i).  The reference's inner optimizer also decays θ by
0.001 θ per step (its ``mu``); the paper has no such term and it is not done here.
The FedEM reference's ``pFedMe`` (aggregator ``personalized``, optimizer ``prox_sgd``
with its ``mu``) is a simplification, "Richtarik's formulation" in its scripts: the
personal model takes proximal SGD steps towards the average model, which is the average of
the personal models (mu = 1 on CIFAR-10); here is the paper's algorithm.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..optim import set_learning_rate
from ..schema import Key
from ..training import scan_batches
from .base import Algorithm, AlgorithmSpec, Context, Needs


class PFedMeState(NamedTuple):
    w: Any  # the local model, gossiped
    opt_state: Any  # the node's optimizer on w
    theta: Any  # the personal model
    last: Any = None  # w after the last gossip step (only kept when β ≠ 1)


def prox_point(grad_f, theta, w, lam: float, lr: float, steps: int):
    """``steps`` gradient steps from ``theta`` on f(θ) + λ/2 ‖θ − w‖² (``grad_f(θ) ->
    (f(θ), ∇f(θ))``); returns θ and f at the last step's start."""

    def one(th, _):
        loss, g = grad_f(th)
        th = jax.tree.map(lambda t, gt, wt: t - lr * (gt + lam * (t - wt)), th, g, w)
        return th, loss

    theta, losses = jax.lax.scan(one, theta, None, length=steps)
    return theta, losses[-1]


def build(ctx: Context) -> Algorithm:
    model, task, optimizer, work = ctx.model, ctx.task, ctx.optimizer, ctx.work
    lam, p = float(ctx.config["mu"]), float(ctx.config["personal_lr"])
    k, beta = int(ctx.config["inner_steps"]), float(ctx.config["beta"])

    def per_sample_loss(params, x, y):
        return task.loss(model.apply(params, x), y)

    def init(key, data):
        w = model.init(key)
        return PFedMeState(w, optimizer.init(w), w, None if beta == 1.0 else w)

    def local_update(state, data, key, lr, inbox=None):
        x, y = data.x_train, data.y_train

        def step(carry, batch):
            w, opt_state, theta = carry
            idx, valid = batch
            xb, yb = x[idx], y[idx]
            n_real = jnp.maximum(valid.sum(), 1.0)

            def batch_loss(th):
                return jnp.sum(valid * per_sample_loss(th, xb, yb)) / n_real

            theta_new, loss = prox_point(jax.value_and_grad(batch_loss), theta, w, lam, p, k)
            envelope_grad = jax.tree.map(lambda a, t: lam * (a - t), w, theta_new)
            updates, opt_new = optimizer.update(envelope_grad, opt_state, w)
            new = (optax.apply_updates(w, updates), opt_new, theta_new)
            nonempty = valid.sum() > 0  # an empty batch leaves everything as it was
            carry = jax.tree.map(lambda a, b: jnp.where(nonempty, a, b), new, carry)
            return carry, (loss, nonempty)

        carry = (state.w, set_learning_rate(state.opt_state, lr), state.w)  # θ starts at w
        budget = getattr(data, "budget", None)
        (w, opt_state, theta), loss = scan_batches(
            step, carry, key, data.n_train, x.shape[0], work, budget
        )
        return state._replace(w=w, opt_state=opt_state, theta=theta), loss

    def replace_shared(state, mixed):
        if beta == 1.0:
            return state._replace(w=mixed)
        w = jax.tree.map(lambda a, m: (1.0 - beta) * a + beta * m, state.last, mixed)
        return state._replace(w=w, last=w)

    def score(state, x, y):
        return task.score(model.apply(state.theta, x), y)

    return Algorithm(
        name="pfedme",
        init=init,
        local_update=local_update,
        shared=lambda s: s.w,
        replace_shared=replace_shared,
        params=lambda s: {"shared": s.w, "personal": s.theta},
        score=score,
        loss=lambda s, x, y: per_sample_loss(s.theta, x, y),
        needs=needs(ctx.config),
        adapt=lambda s, data: s._replace(theta=s.w),
    )


def needs(config) -> Needs:
    """Gossip averaging of w; each local step takes K gradients on its batch."""
    return Needs(exchange="average", copies=config["inner_steps"])


SPEC = AlgorithmSpec(
    "pfedme",
    build,
    keys={
        "mu": Key(15.0, "float", lo=0.0, help="λ: weight of the proximal term ‖θ − w‖²/2"),
        "inner_steps": Key(5, "int", lo=1, hi=10_000, help="K: gradient steps per θ update"),
        "personal_lr": Key(
            0.09, "float", lo=0.0, lo_open=True, help="p: step of the inner θ updates"
        ),
        "beta": Key(
            1.0, "float", lo=0.0, lo_open=True, help="β: w ← (1 − β) w_last + β · gossiped"
        ),
    },
    doc=__doc__.splitlines()[0],
    needs=needs,
    privacy=lambda config: (
        "solves its proximal problem with plain (unclipped, noiseless) batch gradients"
    ),
)
