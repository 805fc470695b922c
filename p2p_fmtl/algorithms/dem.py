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

**One pass per minibatch** (``fused = true``, the default; it applies with estimated
responsibilities, no warm start, shared batches, local epochs and no DP-SGD, every other
setting runs the separate E-step).  The E-step's q(m|s) depends only on the round-start
components and π, so each minibatch step computes its samples' q and the training forward
of the current components together, as one vmap over the stacked [round-start; current]
components (one matmul for a dense first layer), then one gradient and a vmapped
optimizer step for all M components; π sums q over the first epoch, which visits every
real sample exactly once.  The result is the separate E-step's up to float rounding,
without its own pass over the data (``fused = false`` keeps that path).  On the CPU
benchmark it is no faster (see ``experiments/benchmarks/README.md``): there a round is
bound by per-operation and small-matmul costs, not by the E-step's pass.

**Breaking the symmetric start** (``warm_start``, for the node's first ``warm_rounds``
local updates; default ``"none"``: EM from the first round, as the reference).  With
``algorithm.init = "identical"`` every node starts from the same M components, which
differ only by their random initialisation.  When the mixture's components share their
inputs and differ in their labels (label permutations), no initial component fits one
latent component better than another: q(m|s) ≈ 1/M for every sample, every component
trains on every sample with about the same weight and learns the same blend of the
labellings, and only the slow amplification of small random differences separates them
(on digits, α = 0.5: for about 40 rounds; then latent components peel off one at a time,
and a component that blends two labellings is a stable fixed point of EM).  A warm start
replaces the M-step's weights q by hard ones (each sample trains one component) for the
first rounds; the E-step still runs and updates π, so prediction and the later EM rounds
are unchanged::

    "random_node"        node i trains only component c_i, drawn uniformly once per node:
                         the components' training sets differ by which nodes drew them,
                         a node-level (so systematic) imbalance of the latent components
                         that EM then amplifies (k-means started from a random partition);
    "disjoint"           sample s trains only component c_{i,s}, drawn uniformly once per
                         sample (M random disjoint subsets of each node's data);
    "hard_node"          all of node i's samples train argmin_m Σ_s ℓ_{m,s}, redone each
                         round (IFCA's choice; nodes with the same data choose the same
                         component, but two latent components may choose the same one);
    "hard_sample"        sample s trains argmax_m q(m|s) (classification EM);
    "lloyd_node"         random_node in the first round, then hard_node (Lloyd's k-means
                         iterations over nodes);
    "lloyd_sample"       random_node in the first round, then hard_sample;
    "stochastic_node"    node i's samples train one component drawn from
                         p(m | the node's data) ∝ exp(−Σ_s ℓ_{m,s}), redrawn each round
                         (stochastic EM for nodes of one component each);
    "stochastic_sample"  sample s trains one component drawn from q(·|s), redrawn each
                         round (stochastic EM, Celeux and Diebolt).

The draws of ``random_node`` / ``disjoint`` come from the node's key of its first round
(so nodes draw independently also with identical initial models) and stay fixed for the
warm-up; a counter of the node's local updates (``step``) lives in the state.  What each
start does on MNIST-1D and digits mixtures: ``experiments/dem_symmetric_start.py`` and
its section of ``experiments/RESULTS.md``.

**Oracle** (``responsibilities = "oracle"``): the true component of each training sample
is known (``NodeData.component``, from mixture data), so q(m|s) = 1[m = c_s] and π_i =
the node's empirical component fractions; everything else (M-step, gossip of the
components, π-mixture prediction) is D-EM's.  It bounds what D-EM's estimated
responsibilities can reach.  Latent component c is trained as component c, so it needs
``components`` = the data's number of components; a sample of no component (``-1``:
FedEM's reference synthetic data, a sample that kept the default label 0) trains no
component and is left out of π.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..errors import ConfigError
from ..optim import set_learning_rate
from ..schema import Key
from ..training import scan_batches, train_on_node
from .base import Algorithm, AlgorithmSpec, Context, Needs, PrivateWork


class DEMState(NamedTuple):
    params: object  # pytree, leaves (M, ...)
    opt_state: object  # optimizer state per component, leaves (M, ...)
    pi: jax.Array  # (M,) mixture weights on the simplex
    step: jax.Array  # () int32: local updates the node has done (the warm start's clock)
    warm_seed: jax.Array  # () int32: the node's warm-start draw (set at its first update)


WARM_STARTS = (
    "none",
    "random_node",
    "disjoint",
    "hard_node",
    "hard_sample",
    "lloyd_node",
    "lloyd_sample",
    "stochastic_node",
    "stochastic_sample",
)
WARM_SALT = 0x7761726D  # the warm-start draw: fold_in(the node's first round key, WARM_SALT)
PI_SALT = 0x7069  # DP-SGD: the noise of π's release, fold_in(the node's round key, PI_SALT)
PI_FLOOR = 1e-3  # DP-SGD: a noised π component is at least this share of the samples


def component_keys(key, m: int):
    """One key per component (the key itself when M = 1, so that D-EM(M=1) = D-SGD)."""
    return key[None] if m == 1 else jax.random.split(key, m)


def responsibilities(log_pi, losses, mask):
    """q(m|s) = softmax_m(log π_m − ℓ_{m,s}) for real samples, 0 for padding; (M, S)."""
    q = jax.nn.softmax(log_pi[:, None] - losses, axis=0)
    return q * mask[None, :]


def _log(pi):
    return jnp.log(jnp.maximum(pi, jnp.finfo(pi.dtype).tiny))


def oracle_responsibilities(component, count, m: int):
    """q(m|s) = 1[m = c_s] for real samples of a known component; π = their fractions.

    ``component`` (S,) int, −1 for no component and padding; returns ``(q (M, S), π (M,))``.
    """
    real = jnp.arange(component.shape[0]) < count
    q = jax.nn.one_hot(jnp.where(real, component, -1), m, axis=0)  # −1 → a zero column
    return q, q.sum(axis=1) / jnp.maximum(q.sum(), 1.0)


def warm_weights(kind: str, m: int, seed, first, q, losses, mask, rng_size: int, key=None):
    """The M-step's hard weights (M, S) of a warm start (see the module docstring);
    ``first``: whether this is the node's first local update; ``key``: this round's draws
    (the stochastic starts)."""
    size = mask.shape[0]
    width = max(rng_size, size)  # draws at the largest node's size: padding does not matter
    drawn = jnp.full((size,), jax.random.randint(jax.random.PRNGKey(seed), (), 0, m))
    total = (losses * mask).sum(axis=1)
    best_node = jnp.full((size,), jnp.argmin(total))
    if kind == "random_node":
        pick = drawn
    elif kind == "disjoint":
        pick = jax.random.randint(jax.random.PRNGKey(seed), (width,), 0, m)[:size]
    elif kind == "hard_node":
        pick = best_node
    elif kind == "hard_sample":
        pick = jnp.argmax(q, axis=0)
    elif kind == "lloyd_node":
        pick = jnp.where(first, drawn, best_node)
    elif kind == "lloyd_sample":
        pick = jnp.where(first, drawn, jnp.argmax(q, axis=0))
    elif kind == "stochastic_node":  # a draw from p(m | all the node's data), one m per node
        g = jax.random.gumbel(key, (m,))
        pick = jnp.full((size,), jnp.argmax(-total + g))
    else:  # stochastic_sample: a draw from q(· | s) per sample
        g = jax.random.gumbel(key, (m, width))[:, :size]
        pick = jnp.argmax(_log(q) + g, axis=0)
    return jax.nn.one_hot(pick, m, axis=0) * mask[None, :]


def build(ctx: Context) -> Algorithm:
    model, task, optimizer, work = ctx.model, ctx.task, ctx.optimizer, ctx.work
    m = ctx.config["components"]
    adapt_iters = ctx.config["adapt_iters"]
    batches = ctx.config["component_batches"]
    oracle = ctx.config["responsibilities"] == "oracle"
    warm, warm_rounds = ctx.config["warm_start"], ctx.config["warm_rounds"]
    rng_size = work.rng_size if work is not None else 0
    fused = (
        ctx.config.get("fused", True)
        and not oracle
        and warm == "none"
        and batches == "shared"
        and work is not None
        and work.epochs > 0
        and not getattr(work, "private", False)  # DP-SGD: local_sgd's private steps
    )

    def per_sample_loss(params, x, y):
        return task.loss(model.apply(params, x), y)

    def component_losses(params, x, y):
        return jax.vmap(per_sample_loss, in_axes=(0, None, None))(params, x, y)  # (M, S)

    def e_and_pi_step(params, pi, x, y, count):
        """The E-step and π's update; also the losses (M, S) and the real-row mask (S,)."""
        mask = (jnp.arange(x.shape[0]) < count).astype(jnp.float32)
        losses = component_losses(params, x, y)
        q = responsibilities(_log(pi), losses, mask)
        new_pi = q.sum(axis=1) / jnp.maximum(count, 1)
        return q, new_pi, losses, mask

    def known_components(data):
        if data.component is None:
            raise ConfigError(
                "algorithm.responsibilities: got 'oracle', but the data record no component "
                "per training sample; allowed: 'estimated', or data that record them "
                "(data.partition = 'mixture' of digits / mnist1d, or fedem_synthetic)"
            )
        return data.component

    def init(key, data):
        if oracle:
            known_components(data)
        params = jax.vmap(model.init)(component_keys(key, m))
        zero = jnp.zeros((), jnp.int32)
        return DEMState(
            params, jax.vmap(optimizer.init)(params), jnp.full((m,), 1.0 / m), zero, zero
        )

    def fused_update(state, data, key, lr):
        """The E-step, π's update and the M-step's local SGD in ONE scan over the node's
        minibatches (the common case: estimated responsibilities, no warm start, shared
        batches, local epochs).  Each step gathers its batch once and runs the forward of
        the round-start components (the E-step of the batch's samples: it depends only
        on the round-start parameters and π) and of the current ones as one vmap over the
        stacked [round-start; current] parameters, then one gradient for all M components
        and a vmapped optimizer update.  π sums q over the first epoch's real rows, where
        every real row appears exactly once (positions, not the straggler-cut ``valid``,
        so a straggler's π is the full E-step's).  Same result as :func:`local_update`'s
        separate E-step and vmapped :func:`~p2p_fmtl.training.local_sgd` up to float
        rounding, without the E-step's extra pass over the data."""
        x, y, count = data.x_train, data.y_train, data.n_train
        size = x.shape[0]
        b = min(work.batch_size, size)
        first_epoch_steps = -(-size // b)  # scan_batches' steps per epoch
        start, log_pi = jax.lax.stop_gradient(state.params), _log(state.pi)
        opt_state = jax.vmap(set_learning_rate, in_axes=(0, None))(state.opt_state, lr)

        def step(carry, batch):
            params, opt_state, q_sum, loss_sum, used, j = carry
            idx, valid = batch
            xb, yb = x[idx], y[idx]
            n_real = jnp.maximum(valid.sum(), 1.0)

            def loss_fn(p):
                both = jax.tree.map(lambda a, c: jnp.concatenate([a, c]), start, p)
                ell = component_losses(both, xb, yb)  # (2M, B): one pass over xb
                q = jax.nn.softmax(log_pi[:, None] - jax.lax.stop_gradient(ell[:m]), axis=0)
                per = jnp.sum(q * valid * ell[m:], axis=1) / n_real  # (M,) batch losses
                return per.sum(), (per, q)

            (_, (per, q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, new_opt = jax.vmap(optimizer.update)(grads, opt_state, params)
            new_params = jax.vmap(optax.apply_updates)(params, updates)
            nonempty = valid.sum() > 0
            keep = lambda new, old: jnp.where(nonempty, new, old)  # noqa: E731
            params = jax.tree.map(keep, new_params, params)
            opt_state = jax.tree.map(keep, new_opt, opt_state)
            real = (j * b + jnp.arange(b) < count) & (j < first_epoch_steps)
            q_sum = q_sum + jnp.sum(jnp.where(real, q, 0.0), axis=1)
            carry = (params, opt_state, q_sum, loss_sum + per * nonempty, used + nonempty, j + 1)
            return carry, (jnp.zeros(()), nonempty)

        zero_m = jnp.zeros((m,), jnp.float32)
        carry = (state.params, opt_state, zero_m, zero_m, jnp.zeros(()), jnp.zeros((), jnp.int32))
        budget = getattr(data, "budget", None)
        carry, _ = scan_batches(step, carry, key, count, size, work, budget)
        params, opt_state, q_sum, loss_sum, used, _ = carry
        pi = q_sum / jnp.maximum(count, 1)
        loss = jnp.sum(pi * loss_sum) / jnp.maximum(used, 1.0)
        return DEMState(params, opt_state, pi, state.step + 1, state.warm_seed), loss

    private = work is not None and work.private

    def private_pi(q, count, key):
        """π from the noised sum of the responsibilities: a Gaussian mechanism of noise
        multiplier σ (each sample adds a probability vector, L2 sensitivity √2), then
        projected on the simplex (post-processing)."""
        total = q.sum(axis=1) + jnp.sqrt(2.0) * work.noise * jax.random.normal(key, (m,))
        total = jnp.maximum(total, PI_FLOOR * jnp.maximum(count, 1))
        return total / total.sum()

    def local_update(state, data, key, lr, inbox=None):
        if fused:
            return fused_update(state, data, key, lr)
        seed = state.warm_seed
        if oracle:
            q, pi = oracle_responsibilities(known_components(data), data.n_train, m)
        else:
            q, pi, losses, mask = e_and_pi_step(
                state.params, state.pi, data.x_train, data.y_train, data.n_train
            )
        if warm != "none":  # (never with the oracle: refused by ``needs``)
            first = state.step == 0
            draw = jax.random.randint(jax.random.fold_in(key, WARM_SALT), (), 0, 2**31 - 1)
            seed = jnp.where(first, draw, state.warm_seed)
            k_now = jax.random.fold_in(key, WARM_SALT + 1)
            hard = warm_weights(warm, m, seed, first, q, losses, mask, rng_size, k_now)
            q = jnp.where(state.step < warm_rounds, hard, q)

        if private and not oracle:  # π released with Gaussian noise (see ``privacy``)
            pi = private_pi(q, data.n_train, jax.random.fold_in(key, PI_SALT))

        def train_component(params, opt_state, weights, k, stream):
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
                noise_stream=stream,  # DP-SGD: every component draws noise of its own
            )

        streams = jnp.arange(m)
        if batches == "shared":  # one epoch order per node, used by every component
            params, opt_state, losses = jax.vmap(train_component, in_axes=(0, 0, 0, None, 0))(
                state.params, state.opt_state, q, key, streams
            )
        else:
            params, opt_state, losses = jax.vmap(train_component)(
                state.params, state.opt_state, q, component_keys(key, m), streams
            )
        return DEMState(params, opt_state, pi, state.step + 1, seed), jnp.sum(pi * losses)

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
        """Fit π only, from uniform, with the (borrowed) components fixed (the oracle: π =
        the node's component fractions)."""
        if oracle:
            return state._replace(pi=oracle_responsibilities(data.component, data.n_train, m)[1])
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
    """Gossip averaging of the M components; each node trains M copies of its model.

    Refuses (when the config is loaded) a warm start for the oracle, which has no start
    to warm."""
    if config.get("responsibilities") == "oracle" and config.get("warm_start", "none") != "none":
        raise ConfigError(
            f"algorithm.warm_start: got {config['warm_start']!r}, but algorithm."
            "responsibilities = 'oracle' knows every sample's component and has no start "
            "to warm; allowed: 'none'"
        )
    oracle = config.get("responsibilities") == "oracle"
    m = config["components"]
    return Needs(exchange="average", copies=m, components_known=m if oracle else 0)


def privacy(config) -> PrivateWork | str:
    """DP-SGD D-EM.  Oracle responsibilities q(m|s) = 1[m = c_s] read sample s alone, and
    its gradient reaches only its own component (the others' are zero, every component
    draws noise of its own): one DP-SGD mechanism of sensitivity C per step.  Estimated
    responsibilities weight sample s in all M components (sensitivity √M · C per step:
    ``models = M``), and π, their mean over all of the node's samples, is released each
    round with Gaussian noise of multiplier σ (``releases = 1``); the E-step then reads
    only released values (π, the components) and the sample itself.  Warm starts choose
    hard assignments from node-level aggregates outside DP-SGD: refused."""
    if config["responsibilities"] == "oracle":
        return PrivateWork()
    if config.get("warm_start", "none") != "none":
        return (
            f"with algorithm.warm_start = {config['warm_start']!r} picks hard assignments "
            "from node-level losses outside DP-SGD (allowed: 'none')"
        )
    return PrivateWork(models=int(config["components"]), releases=1)


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
        "warm_start": Key(
            "none",
            "str",
            choices=WARM_STARTS,
            help="hard M-step weights for the node's first warm_rounds local updates, to "
            "break the symmetric start (none: EM from the start, as the reference)",
        ),
        "warm_rounds": Key(10, "int", lo=0, help="local updates a node's warm start lasts"),
        "fused": Key(
            True,
            "bool",
            help="one scan over each minibatch for the E-step and all M components' "
            "training (estimated responsibilities, no warm start, shared batches, local "
            "epochs, no DP-SGD; other settings always run the separate E-step); false: the "
            "separate E-step pass, the same result up to float rounding",
        ),
        "responsibilities": Key(
            "estimated",
            "str",
            choices=("estimated", "oracle"),
            help="E-step estimates, or each training sample's true component (needs data "
            "that record them)",
        ),
    },
    doc=__doc__.splitlines()[0],
    needs=needs,
    privacy=privacy,
)
