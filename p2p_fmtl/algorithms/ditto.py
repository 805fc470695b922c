"""Ditto, decentralized: a gossiped global model w and a personal model v pulled towards it.

Li, Hu, Beirami, Smith, "Ditto: Fair and Robust Federated Learning Through
Personalization" (ICML 2021), Algorithm 1.  The server version trains the global model w
by FedAvg and, at each selected client k, a personal model v_k on

    h_k(v; w^t) = F_k(v) + (λ/2) ‖v − w^t‖²

where w^t is the global model the client received at the start of the round.
Decentralized (as here), w is D-SGD's model (the server average becomes gossip with the
node's mixing weights) and w^t is the node's w at the start of its round (its w after
the last gossip step).  Per round, at node i::

    w_ref ← w_i
    w_i ← w_i after K local SGD steps (or E epochs) on f_i                   (as D-SGD)
    v_i ← v_i after K local steps (or E epochs) on f_i(v) + (λ/2) ‖v − w_ref‖²
    w_i ← Σ_j W_ij w_j                                                        (gossip)

Only w is sent; v and both optimizer states stay on the node; scoring uses v.  Both
models walk the node's data in the same shuffled batches (the round's key), as the
reference takes one batch per local iteration for both; v starts as the initial w.
So w is D-SGD's model exactly, and with λ = 0 v is a ``local`` run's model exactly
(tested).  Each node trains two models per round (``Needs.copies = 2``).  With DP-SGD
(``[privacy]``) both take the same Poisson samples and noise of their own: two clipped
gradients of each sample per step (``PrivateWork(models=2)``: noise multiplier σ/√2 in
the accountant).  A node that
never trained (held out) is served v = the w it borrows from its neighbours.

Key ``lam`` (λ, default 1: the value of the authors' run scripts, ``--lam=1`` in
litian96/ditto ``run_fashion_clean_ditto_lam1.sh`` and ``run_vehicle_clean_ditto_lam1.sh``;
its per-device λ search tries {0.1, 1, 2}).  Saved parameters: ``personal/...`` (v) and
``global/...`` (w).
"""

from __future__ import annotations

from typing import NamedTuple

from ..schema import Key
from ..training import train_on_node
from .base import Algorithm, AlgorithmSpec, Context, Needs, PrivateWork
from .fedprox import proximal


class DittoState(NamedTuple):
    params: object  # w, the global model (gossiped)
    opt_state: object
    personal: object  # v, the personal model (scored)
    personal_opt: object


def build(ctx: Context) -> Algorithm:
    model, task, optimizer, work = ctx.model, ctx.task, ctx.optimizer, ctx.work
    lam = ctx.config["lam"]

    def per_sample_loss(params, x, y):
        return task.loss(model.apply(params, x), y)

    def init(key, data):
        w = model.init(key)
        return DittoState(w, optimizer.init(w), w, optimizer.init(w))

    def local_update(state, data, key, lr, inbox=None):
        anchor = state.params  # w^t: the global model at the start of the round
        train = dict(optimizer=optimizer, work=work)
        w, w_opt, _ = train_on_node(
            data, state.params, state.opt_state, key, lr, per_sample_loss=per_sample_loss, **train
        )

        def personal_loss(v, x, y):
            # per sample: the batch mean is f_batch(v) + (λ/2) ‖v − w^t‖²
            return per_sample_loss(v, x, y) + proximal(v, anchor, lam)

        v, v_opt, loss = train_on_node(
            data,
            state.personal,
            state.personal_opt,
            key,
            lr,
            per_sample_loss=personal_loss,
            noise_stream=1,  # DP-SGD: w's Poisson samples, noise of its own
            **train,
        )
        return DittoState(w, w_opt, v, v_opt), loss

    return Algorithm(
        name="ditto",
        init=init,
        local_update=local_update,
        shared=lambda s: s.params,
        replace_shared=lambda s, w: s._replace(params=w),
        params=lambda s: {"personal": s.personal, "global": s.params},
        score=lambda s, x, y: task.score(model.apply(s.personal, x), y),
        loss=lambda s, x, y: per_sample_loss(s.personal, x, y),
        needs=needs(ctx.config),
        adapt=lambda s, data: s._replace(personal=s.params),
    )


def needs(config) -> Needs:
    """Gossip averaging of w; two models (w and v) trained per round."""
    return Needs(exchange="average", copies=2)


SPEC = AlgorithmSpec(
    "ditto",
    build,
    keys={"lam": Key(1.0, "float", lo=0.0, help="λ: pull of the personal model towards w")},
    doc=__doc__.splitlines()[0],
    needs=needs,
    # w and v: two local_sgd passes with the same round key (the same Poisson samples)
    # and noise streams of their own
    privacy=lambda config: PrivateWork(models=2),
)
