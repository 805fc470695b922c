"""Graph-regularized multi-task learning, fully decentralized.

Every node i learns its own model w_i; related nodes are pulled together:

    min_w  Σ_i f_i(w_i) + (λ/2) Σ_{{i,j} ∈ E} a_ij ‖s(w_i) − s(w_j)‖²
         = Σ_i f_i(w_i) + (λ/2) tr(S(W)ᵀ (L_A ⊗ I) S(W))

with f_i node i's average loss, a_ij ≥ 0 relation weights on the graph's edges, L_A the
weighted Laplacian, and s(·) the shared part of the parameters (all of them, or the paths
in ``shared``).  Each edge is counted once; summing over ordered pairs (i, j) and (j, i)
instead is the same objective with λ halved.  Stationary points satisfy

    ∇f_i(w_i) + λ Σ_j a_ij (w_i − w_j) = 0        for every node i.

Update orders (``order``):

``joint`` (default)
    Node i receives its neighbours' models w_j at the start of the round and takes its
    K local steps on  f_i(w) + (λ/2) Σ_j a_ij ‖w − w_j‖²  (neighbours held fixed).  A fixed
    point of this round satisfies the stationarity condition above exactly, for any K
    and step size: with full-batch gradients the simulator converges to the optimum of
    the objective (tested against the closed form for squared losses).
``local_then_laplacian``
    dFedU-style (Dinh et al., 2021): K local steps on f_i alone, exchange, then the
    Laplacian step  w_i ← w_i − η λ Σ_j a_ij (w_i − w_j).  At a fixed point the K steps'
    drift −η Σ_k ∇f_i(w_i^(k)) must cancel the Laplacian step, so for K > 1 the fixed point
    is that of f_i weighted K-fold against the regularizer, plus O(η) curvature terms:
    a bias that vanishes only as η → 0 with K = 1.

Relation weights a_ij (``relation``):

``uniform``     1 on every edge (L_A is the graph Laplacian);
``graph``       the mixing weights W_ij of the topology's mixing rule;
``similarity``  exp(−‖s_i − s_j‖² / 2h²) from data statistics s_i = X_iᵀ(y_i − ȳ_i)/n_i
                (the direction a linear task's labels point to), h² the median over edges,
                scaled to mean 1; computed once (one exchange of s_i per edge);
``learned``     MOCHA-style alternation (Smith et al. 2017; Zhang & Yeung 2010): each round
                node i estimates its row of the task-precision matrix from the models it
                can see — its own and its neighbours' — as
                Σ = K^{1/2}/tr(K^{1/2}), K = V Vᵀ + εI (V the stacked shared parameter
                vectors of the closed neighbourhood), Ω = Σ⁻¹, â_ij = max(0, −Ω_ij),
                rescaled to mean 1 over its neighbours (uniform if all vanish).
                Approximations: MOCHA's Ω couples all tasks, here only graph neighbours
                and only through the closed neighbourhood's Gram matrix; each node uses
                its own estimate of its row, so a_ij and a_ji may differ.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ..aggregation import decouple
from ..schema import AGGREGATION_KEYS, Key
from ..sharing import check_shared, merge, select
from ..training import train_on_node
from .base import Algorithm, AlgorithmSpec, Context, Needs, PrivateWork


class GraphMTLState(NamedTuple):
    params: object
    opt_state: object
    sent: object = None  # decoupled aggregation: the model w̃ neighbours receive


def squared_distance(tree, nbr_tree):
    """Σ over leaves of ‖w − w_k‖² for each neighbour k: (K,)."""
    total = 0.0
    for w, wk in zip(jax.tree.leaves(tree), jax.tree.leaves(nbr_tree), strict=True):
        diff = (w[None] - wk).reshape(wk.shape[0], -1)
        total = total + jnp.sum(diff**2, axis=1)
    return total


@jax.custom_batching.custom_vmap
def _eigh(a):
    """``jnp.linalg.eigh`` that, vmapped over nodes, decomposes one matrix at a time.

    On CPU, a batched ``eigh`` spreads the batch over XLA's intra-op thread pool; with
    several CPU devices (``run.devices``) the devices' calls wait on each other's pool
    and the run deadlocks (jax 0.10; seen with 33×33 matrices).  Decomposing the
    matrices in a ``lax.map`` keeps every LAPACK call single-threaded.
    """
    w, v = jnp.linalg.eigh(a)
    return w, v


@_eigh.def_vmap
def _eigh_vmap(axis_size, in_batched, a):
    return jax.lax.map(_eigh, a), (True, True)


def learned_relation(own, nbr_models, mask, eps: float = 1e-3):
    """MOCHA-style relation weights of one node from its closed neighbourhood's models."""
    v0, _ = ravel_pytree(own)
    vk = jax.vmap(lambda t: ravel_pytree(t)[0])(nbr_models) * mask[:, None]
    V = jnp.concatenate([v0[None], vk], axis=0)
    gram = V @ V.T
    k = gram.shape[0]
    gram = gram + eps * jnp.trace(gram) / k * jnp.eye(k) + 1e-12 * jnp.eye(k)
    evals, U = _eigh(gram)
    root = jnp.sqrt(jnp.maximum(evals, 1e-30))
    omega = (U * (jnp.sum(root) / root)) @ U.T  # Σ⁻¹ with Σ = K^{1/2} / tr(K^{1/2})
    a = jnp.maximum(-omega[0, 1:], 0.0) * mask
    deg = mask.sum()
    total = a.sum()
    return jnp.where(total > 0, a * deg / jnp.maximum(total, 1e-30), mask)


def build(ctx: Context) -> Algorithm:
    model, task, optimizer, work = ctx.model, ctx.task, ctx.optimizer, ctx.work
    cfg = ctx.config
    lam, order, relation, spec = cfg["lam"], cfg["order"], cfg["relation"], cfg["shared"]
    decoupled = cfg.get("aggregation", "average") == "decoupled"
    check_shared(spec, jax.eval_shape(model.init, jax.random.PRNGKey(0)))

    def per_sample_loss(params, x, y):
        return task.loss(model.apply(params, x), y)

    def weights_of(params, inbox):
        mask = (inbox.weights > 0).astype(jnp.float32)
        if relation == "learned":
            return learned_relation(select(params, spec), inbox.models, mask)
        return inbox.weights

    def init(key, data):
        params = model.init(key)
        sent = select(params, spec) if decoupled else None
        return GraphMTLState(params, optimizer.init(params), sent)

    def finish(state, params, opt_state):
        sent = None
        if decoupled:
            sent = decouple(select(state.params, spec), select(params, spec), cfg["rho"])
        return GraphMTLState(params, opt_state, sent)

    def train(state, data, key, lr, loss_fn):
        params, opt_state, loss = train_on_node(
            data,
            state.params,
            state.opt_state,
            key,
            lr,
            per_sample_loss=loss_fn,
            optimizer=optimizer,
            work=work,
        )
        return params, opt_state, loss

    def local_update(state, data, key, lr, inbox=None):
        if order == "local_then_laplacian":
            params, opt_state, loss = train(state, data, key, lr, per_sample_loss)
            return finish(state, params, opt_state), loss
        a = weights_of(state.params, inbox)

        def regularized(params, x, y):
            # f_i's per-sample loss plus the (per-sample constant) Laplacian term: averaging
            # over a batch gives  f_batch(w) + (λ/2) Σ_k a_k ‖s(w) − s(w_k)‖².
            reg = 0.5 * lam * jnp.sum(a * squared_distance(select(params, spec), inbox.models))
            return per_sample_loss(params, x, y) + reg

        params, opt_state, loss = train(state, data, key, lr, regularized)
        return finish(state, params, opt_state), loss

    def combine(state, inbox, lr):
        """The Laplacian step of ``local_then_laplacian``: w ← w − η λ Σ_k a_k (w − w_k)."""
        a = weights_of(state.params, inbox)
        own = select(state.params, spec)
        stepped = jax.tree.map(
            lambda w, wk: w - lr * lam * jnp.tensordot(a, w[None] - wk, axes=1),
            own,
            inbox.models,
        )
        return state._replace(params=merge(state.params, spec, stepped))

    return Algorithm(
        name="graph_mtl",
        init=init,
        local_update=local_update,
        shared=lambda s: select(s.params, spec),
        replace_shared=lambda s, x: s._replace(params=merge(s.params, spec, x)),
        score=lambda s, x, y: task.score(model.apply(s.params, x), y),
        loss=lambda s, x, y: per_sample_loss(s.params, x, y),
        needs=needs(cfg),
        combine=combine if order == "local_then_laplacian" else None,
        params=lambda s: s.params,
        message=(lambda s: s.sent) if decoupled else None,
    )


RELATIONS = ("uniform", "graph", "similarity", "learned")
RELATION_WEIGHTS = {"graph": "mixing"}  # the config's name -> the Needs name


def needs(config) -> Needs:
    """Neighbours' models before local work (``joint``) or in a Laplacian step after it."""
    exchange = "inbox" if config["order"] == "joint" else "combine"
    relation = config["relation"]
    return Needs(exchange=exchange, relation=RELATION_WEIGHTS.get(relation, relation))


SPEC = AlgorithmSpec(
    "graph_mtl",
    build,
    keys={
        "lam": Key(0.1, "float", lo=0.0, help="λ of the Laplacian regularizer"),
        "relation": Key("uniform", "str", choices=RELATIONS, help="where a_ij comes from"),
        "order": Key("joint", "str", choices=("joint", "local_then_laplacian")),
        "shared": Key("all", "any", help='"all" or a list of parameter paths'),
        **AGGREGATION_KEYS,
    },
    doc=__doc__.splitlines()[0],
    needs=needs,
    # local_sgd only (the Laplacian term reads neighbours' messages, clipped with each
    # sample's gradient); relation = 'similarity' is refused by the Needs it declares
    privacy=lambda config: PrivateWork(),
)
