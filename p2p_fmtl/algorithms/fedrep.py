"""FedRep, decentralized: a gossiped representation (body) and a personal head, trained in turn.

Collins, Hassani, Mokhtari, Shakkottai, "Exploiting Shared Representations for
Personalized Federated Learning" (ICML 2021), Algorithm 1.  The model is a body φ
(shared) and a head h_i (personal).  In the server version each client first updates
its head for τ_h local epochs with the body fixed, then the body for τ_φ epochs with the
new head fixed, and the server averages the bodies.  Decentralized (as here), the
server average becomes gossip of the body with the node's mixing weights.  Per round::

    h_i ← h_i after ``head_epochs`` epochs on f_i(φ_i, h)   (φ_i frozen)
    φ_i ← φ_i after K local steps (or E epochs) on f_i(φ, h_i)   (h_i frozen)
    φ_i ← Σ_j W_ij φ_j                                       (gossip)

Head and body keep optimizer states of their own (a frozen part is neither decayed nor
given momentum, as with PyTorch's ``requires_grad = False`` in the reference).  D-SGD
with ``shared`` = the body is FedPer (head and body trained together); FedRep adds the
alternation.  With ``head = []`` nothing is personal and FedRep is D-SGD exactly (the
body pass uses the round's key; the head pass a key of its own).

Keys: ``head``, the personal parameter paths (as in ``params.npz``: ``"dense_1"``,
``"dense_1/w"``), default ``"last"``: a subtree named ``head`` if the model has one
(``tiny_lm``'s ``base/head``), else its last layer (``mlp``'s and ``cnn``'s last
``dense_k``; layers in natural order); a one-layer model (``linear``) has no
representation to share apart from its head, and its default head is its bias (1-D
leaves: personal intercepts over a shared weight matrix).  ``head_epochs`` (τ_h,
default 10: the reference code's defaults, ``local_ep = 11`` epochs per round of which
``local_rep_ep = 1`` trains the representation); the body trains for the usual
``local_epochs`` / ``local_steps`` (one epoch in the reference).  A node that never trained
(held out) borrows its neighbours' body and trains only its head (the paper's new
clients), ``head_epochs`` epochs at ``lr`` (batches shuffled with a fixed key).

``Needs.copies`` is 1 (one model per node): the simulated time and energy of the cost
model count the body's local work only, not the head's extra epochs.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..errors import ConfigError
from ..schema import INT32_MAX, Key
from ..sharing import check_shared, leaf_paths, merge, select
from ..training import train_on_node
from .base import Algorithm, AlgorithmSpec, Context, Needs, PrivateWork

HEAD_SALT = 0x68656164  # the head pass's key: fold_in(round key, HEAD_SALT)


class FedRepState(NamedTuple):
    params: object  # the full model (body gossiped, head personal)
    opt_state: object  # the body's optimizer state
    head_opt: object  # the head's optimizer state (None without a head)


def _natural(text: str) -> list:
    """Sort key with digit runs as numbers: dense_2 before dense_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def default_head(params) -> list[str]:
    """The leaf paths of the model's last layer (see the module docstring)."""
    paths = leaf_paths(params)
    named = [p for p in paths if "head" in p.split("/")[:-1]]
    if named:
        return named
    layers: dict[str, list[str]] = {}
    for p in paths:
        layers.setdefault(p.rpartition("/")[0], []).append(p)
    last = max(layers, key=_natural)
    if last:
        return layers[last]
    # one layer (leaves at the top, like linear's w and b): its bias
    ndim = {p: len(leaf.shape) for p, leaf in zip(paths, jax.tree.leaves(params), strict=True)}
    bias = [p for p in paths if ndim[p] == 1]
    if not bias or len(bias) == len(paths):
        raise ConfigError(
            f"algorithm.head: got 'last', but the model's parameters ({', '.join(paths)}) "
            "have no last layer to keep personal; name the head's parameter paths"
        )
    return bias


def head_paths(spec: Any, params) -> list[str]:
    """The personal leaf paths named by ``head`` (checked against the model)."""
    if spec == "last":
        return default_head(params)
    if spec:
        check_shared(spec, params, field="algorithm.head")
    head = list(select(params, spec)) if spec else []
    if len(head) == len(leaf_paths(params)):
        raise ConfigError(
            f"algorithm.head: got {spec!r}, which is every parameter of the model and leaves "
            "no body to share; allowed: a part of " + ", ".join(leaf_paths(params))
        )
    return head


def build(ctx: Context) -> Algorithm:
    model, task, optimizer, work = ctx.model, ctx.task, ctx.optimizer, ctx.work
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    head = head_paths(ctx.config["head"], shapes)
    body = [p for p in leaf_paths(shapes) if p not in head] if head else "all"
    head_work = work._replace(epochs=ctx.config["head_epochs"], steps=0)
    trains_head = bool(head) and head_work.epochs > 0

    def train_part(params, spec, opt_state, data, key, lr, part_work):
        """Local work on the ``spec`` part of ``params``, the rest frozen."""

        def loss(part, x, y):
            return task.loss(model.apply(merge(params, spec, part), x), y)

        part, opt_state, batch_loss = train_on_node(
            data,
            select(params, spec),
            opt_state,
            key,
            lr,
            per_sample_loss=loss,
            optimizer=optimizer,
            work=part_work,
        )
        return merge(params, spec, part), opt_state, batch_loss

    def init(key, data):
        params = model.init(key)
        head_opt = optimizer.init(select(params, head)) if head else None
        return FedRepState(params, optimizer.init(select(params, body)), head_opt)

    def local_update(state, data, key, lr, inbox=None):
        params, head_opt = state.params, state.head_opt
        if trains_head:
            k_head = jax.random.fold_in(key, HEAD_SALT)
            params, head_opt, _ = train_part(params, head, head_opt, data, k_head, lr, head_work)
        params, opt_state, loss = train_part(params, body, state.opt_state, data, key, lr, work)
        return FedRepState(params, opt_state, head_opt), loss

    def adapt(state, data):
        """A new node: fit its head on its own data, the borrowed body frozen."""
        lr = jnp.asarray(ctx.config["lr"], jnp.float32)
        params, head_opt, _ = train_part(
            state.params, head, state.head_opt, data, jax.random.PRNGKey(0), lr, head_work
        )
        return state._replace(params=params, head_opt=head_opt)

    return Algorithm(
        name="fedrep",
        init=init,
        local_update=local_update,
        shared=lambda s: select(s.params, body),
        replace_shared=lambda s, p: s._replace(params=merge(s.params, body, p)),
        params=lambda s: s.params,
        score=lambda s, x, y: task.score(model.apply(s.params, x), y),
        loss=lambda s, x, y: task.loss(model.apply(s.params, x), y),
        needs=needs(ctx.config),
        adapt=adapt if trains_head else None,
    )


def needs(config) -> Needs:
    """Gossip averaging of the body.  Also checks the type of ``head`` when the config
    loads (its paths are checked against the model when it is built)."""
    spec = config["head"]
    if spec != "last" and not (isinstance(spec, list) and all(isinstance(p, str) for p in spec)):
        raise ConfigError(
            f"algorithm.head: got {spec!r}, expected 'last' or a list of parameter paths "
            "such as ['dense_1']"
        )
    return Needs(exchange="average")


def privacy(config) -> PrivateWork:
    """Two local_sgd passes: the head's ``head_epochs`` epochs (a key of their own, so
    Poisson samples of their own) and the body's usual work."""
    return PrivateWork(extra_epochs=config["head_epochs"] if config["head"] else 0)


SPEC = AlgorithmSpec(
    "fedrep",
    build,
    keys={
        "head": Key(
            "last", "any", help="'last' (the model's last layer) or the personal parameter paths"
        ),
        "head_epochs": Key(
            10, "int", lo=0, hi=INT32_MAX, help="epochs on the head (body frozen) per round"
        ),
    },
    doc=__doc__.splitlines()[0],
    needs=needs,
    privacy=privacy,
)
