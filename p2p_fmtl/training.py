"""Local minibatch training of one node on its padded dataset.

Everything here acts on ONE node (the engine vmaps it over nodes, D-EM also over
components).  A node's data are the first ``count`` rows of arrays padded to ``S``.

* ``local_epochs = E``: E passes over the node's own samples, reshuffled each epoch,
  in batches of ``B``; the last batch of an epoch may be partial (like a PyTorch
  ``DataLoader`` without ``drop_last``).  A node takes ``ceil(count / B)`` steps per
  epoch; the packed scan runs ``ceil(S / B)`` and skips the empty batches, leaving
  parameters and optimizer state untouched (so momentum and weight decay do not
  act on padding).
* ``local_steps = K``: K steps over the same epoch-reshuffled stream of batches.

The batch loss is ``Σ_s w_s ℓ_s / (number of real samples in the batch)`` with
per-sample weights ``w`` (all ones for plain SGD, responsibilities for D-EM).

A straggler (``budget`` f < 1, drawn by the network process) takes the first
:func:`straggler_steps` of its steps: ``f · T`` rounded stochastically, so its work is
unbiased at any step count T, even T = 1.

**DP-SGD** (``LocalWork.clip_norm`` set: ``[privacy] enabled``; Abadi et al., "Deep
Learning with Differential Privacy", CCS 2016).  The node takes the same number of steps
(and a straggler the same first steps), but each step draws a Poisson sample: every real
row independently with probability ``q = min(1, B / count)`` (padding never), so the
batch size varies around ``q · count``.  The step's gradient is the sum over the sample of
the per-sample gradients (of ``w_s ℓ_s``), each clipped to L2 norm ≤ C over the whole
parameter pytree, plus Gaussian noise of std ``σ C`` on every coordinate, divided by the
EXPECTED batch size ``q · count`` (a constant, as in Opacus); the optimizer then applies
it, so momentum and weight decay act on the noised gradient.  A step whose sample happens
to be empty still applies the noise (skipping it would reveal the sample's size).  Under
``jit`` the shapes are fixed: a step computes the per-sample gradients of all ``S``
padded rows (in chunks of ``B``) and masks them, so its cost grows with ``S``.  The masks
and the noise come from the node's round key and the step's index (drawn at
``rng_size`` and truncated), so batched, sharded, bucketed and unbucketed runs draw the
same numbers; a ``noise_stream`` gives models trained on the same samples noises of
their own.  :mod:`p2p_fmtl.privacy` turns the steps into each node's ε.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .optim import set_learning_rate

STRAGGLE_SALT = 0x73747261  # a straggler's rounding draw: fold_in(node key, STRAGGLE_SALT)
DP_SALT = 0x64707367  # DP-SGD's samples and noise: fold_in(fold_in(node key, DP_SALT), step)


class LocalWork(NamedTuple):
    """How much local work a node does per round (static: it fixes the scan lengths).

    ``rng_size`` is the largest training set in the network: shuffles are drawn at that
    size and truncated, so a node's batches do not depend on how its data were padded
    (bucketed and unbucketed layouts give identical results).

    ``clip_norm`` (C) and ``noise`` (σ): DP-SGD when ``clip_norm`` is set (see the module
    docstring), plain minibatch SGD when it is ``None``.
    """

    batch_size: int
    epochs: int
    steps: int
    rng_size: int = 0
    clip_norm: float | None = None
    noise: float = 0.0

    @property
    def private(self) -> bool:
        return self.clip_norm is not None

    @classmethod
    def from_config(
        cls, alg: dict[str, Any], rng_size: int = 0, privacy: dict[str, Any] | None = None
    ) -> LocalWork:
        """From the ``[algorithm]`` section and, when it is enabled, ``[privacy]``."""
        work = cls(alg["batch_size"], alg["local_epochs"], alg["local_steps"], rng_size)
        if privacy and privacy["enabled"]:
            work = work._replace(
                clip_norm=float(privacy["clip_norm"]), noise=float(privacy["noise_multiplier"])
            )
        return work


def _epoch_order(key, count, size, rng_size):
    """A random order of the node's ``count`` real rows, padding rows last.

    One single-operand sort of packed uint32 keys: random high bits, the row index in
    the low ``b = bit_length(rng_size − 1)`` bits (unique keys, so the sort is a
    permutation), and the top bit set for padding rows.  This is about 6× faster on CPU
    than ``argsort`` of random floats (a two-operand sort).  Ties of the random part
    (31 − b bits) are broken by index, a negligible bias for b ≤ 16; larger nodes fall
    back to ``argsort``.  Keys are drawn at ``rng_size`` and truncated, so the order of
    the real rows does not depend on the padded size.
    """
    n = max(rng_size, size)
    b = max((n - 1).bit_length(), 1)
    if b > 16:
        r = jax.random.uniform(key, (n,))[:size]
        return jnp.argsort(jnp.where(jnp.arange(size) < count, r, 2.0))
    low = (1 << b) - 1
    idx = jnp.arange(size, dtype=jnp.uint32)
    bits = jax.random.bits(key, (n,), jnp.uint32)[:size]
    keys = (bits & jnp.uint32(0x7FFFFFFF & ~low)) | idx
    keys = jnp.where(idx < count, keys, keys | jnp.uint32(0x80000000))
    return (jnp.sort(keys) & jnp.uint32(low)).astype(jnp.int32)


def straggler_steps(budget, total, key):
    """How many of its ``total`` steps a node with work fraction ``budget`` takes.

    ``floor(f · T)`` steps and one more with probability ``frac(f · T)`` (stochastic
    rounding), so ``E[steps] = f · T`` exactly for every T: with one step per round a
    straggler trains in a fraction f of its rounds instead of always (``ceil``) or never
    (``floor``).  We round rather than keep each step with probability f: the count stays
    within one step of ``f · T`` (least variance), and is exactly ``f · T`` when that is
    an integer.  The draw comes from the node's round key (``key``), so it is the same
    batched and sharded (D-EM's components, with keys of their own under independent
    batches, round independently, each unbiased); the cost model charges the mean,
    ``f · T`` (:mod:`p2p_fmtl.netsim`).
    """
    target = budget * total
    whole = jnp.floor(target)
    u = jax.random.uniform(jax.random.fold_in(key, STRAGGLE_SALT))
    return whole + (u < target - whole)


def local_sgd(
    params,
    opt_state,
    x: jax.Array,
    y: jax.Array,
    count: jax.Array,
    weights: jax.Array | None,
    key: jax.Array,
    lr: jax.Array,
    *,
    per_sample_loss: Callable[[Any, jax.Array, jax.Array], jax.Array],
    optimizer: optax.GradientTransformation,
    work: LocalWork,
    budget: jax.Array | None = None,
    noise_stream: Any = 0,
):
    """Run one round of local work; return ``(params, opt_state, mean batch loss)``.

    ``per_sample_loss(params, xb, yb) -> (B,)``.  ``weights`` is ``(S,)`` or ``None``.
    ``budget`` (a straggler's fraction f of its work this round): only the first
    :func:`straggler_steps` of the node's real steps are taken, the rest are skipped
    like empty batches.  With ``work.private`` every step is a DP-SGD step
    (:func:`poisson_sample`, :func:`private_gradient`).  ``noise_stream`` (an int, may be
    traced) selects the DP noise, not the samples: several models trained on the same
    Poisson samples (the same ``key``) must each draw noise of their own (Ditto's w and v,
    D-EM's components), else the difference of their updates would be noise-free.
    """
    size = x.shape[0]
    opt_state = set_learning_rate(opt_state, lr)
    w_all = jnp.ones((size,), jnp.float32) if weights is None else weights

    def apply(params, opt_state, grads, take):
        updates, new_opt = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(take, new, old)  # noqa: E731
        return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_opt, opt_state)

    def step(carry, batch):
        params, opt_state = carry
        idx, valid = batch
        xb, yb, wb = x[idx], y[idx], w_all[idx] * valid
        n_real = jnp.maximum(valid.sum(), 1.0)

        def loss_fn(p):
            return jnp.sum(wb * per_sample_loss(p, xb, yb)) / n_real

        loss, grads = jax.value_and_grad(loss_fn)(params)
        nonempty = valid.sum() > 0
        return apply(params, opt_state, grads, nonempty), (loss, nonempty)

    def private_step(carry, batch):
        params, opt_state = carry
        step_key, active = batch
        mask, noise_key = poisson_sample(step_key, count, size, work)
        noise_key = jax.random.fold_in(noise_key, noise_stream)
        grads, loss = private_gradient(
            per_sample_loss, params, x, y, w_all, mask, noise_key, count, work
        )
        return apply(params, opt_state, grads, active > 0), (loss, active)

    (params, opt_state), mean_loss = scan_batches(
        private_step if work.private else step, (params, opt_state), key, count, size, work, budget
    )
    return params, opt_state, mean_loss


def poisson_sample(step_key, count, size: int, work: LocalWork):
    """A DP-SGD step's Poisson sample of the node's real rows, each included with
    probability ``q = min(1, B / count)`` (padding rows never): a ``(size,)`` float mask,
    and the key of the step's noise.  Drawn at ``rng_size`` and truncated, so the mask
    of the real rows does not depend on the padding."""
    k_mask, k_noise = jax.random.split(step_key)
    q = jnp.minimum(1.0, work.batch_size / jnp.maximum(count, 1))
    u = jax.random.uniform(k_mask, (max(work.rng_size, size),))[:size]
    return ((u < q) & (jnp.arange(size) < count)).astype(jnp.float32), k_noise


def private_gradient(per_sample_loss, params, x, y, loss_weights, mask, key, count, work):
    """DP-SGD's gradient ``(Σ_s mask_s clip_C(∇ w_s ℓ_s) + N(0, σ²C² I)) / (q · count)``.

    Per-sample gradients (a vmap of ``grad`` over single rows) are clipped to L2 norm
    ≤ C over the whole parameter pytree; the rows go in chunks of B, which bounds the
    per-sample gradients held at once to B copies of the parameters.  The divisor is the
    expected batch size ``q · count = min(B, count)``, not the sample's size (that would
    depend on the data).  Returns ``(gradient, mean loss over the sample)``.
    """
    size = x.shape[0]
    c = min(work.batch_size, size)
    chunks = -(-size // c)
    rows = jnp.minimum(jnp.arange(chunks * c), size - 1).reshape(chunks, c)
    masks = jnp.pad(mask, (0, chunks * c - size)).reshape(chunks, c)

    def clipped(xs, ys, ws):
        def loss(p):
            return ws * per_sample_loss(p, xs[None], ys[None])[0]

        value, g = jax.value_and_grad(loss)(params)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(g)))
        scale = jnp.minimum(1.0, work.clip_norm / jnp.maximum(norm, 1e-12))
        return value, jax.tree.map(lambda leaf: leaf * scale, g)

    def chunk(acc, xs):
        idx, m = xs
        values, g = jax.vmap(clipped)(x[idx], y[idx], loss_weights[idx])
        total = jax.tree.map(lambda a, gl: a + jnp.tensordot(m, gl, axes=1), acc[0], g)
        return (total, acc[1] + jnp.sum(m * values)), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (total, loss_sum), _ = jax.lax.scan(chunk, (zeros, jnp.zeros(())), (rows, masks))
    if work.noise > 0:
        leaves, treedef = jax.tree.flatten(total)
        std = work.noise * work.clip_norm
        keys = jax.random.split(key, len(leaves))
        leaves = [
            leaf + std * jax.random.normal(k, leaf.shape, leaf.dtype)
            for leaf, k in zip(leaves, keys, strict=True)
        ]
        total = jax.tree.unflatten(treedef, leaves)
    expected = jnp.minimum(work.batch_size, jnp.maximum(count, 1)).astype(jnp.float32)
    grads = jax.tree.map(lambda leaf: leaf / expected, total)
    return grads, loss_sum / jnp.maximum(mask.sum(), 1.0)


def scan_batches(step, carry, key, count, size: int, work, budget=None):
    """Scan ``step(carry, (idx, valid)) -> (carry, (loss, used))`` over the minibatches of
    one round of local work, as :func:`local_sgd` draws them (same keys, epoch orders,
    partial batches and straggler cut-off).  ``idx`` (B,)
    indexes the node's samples, ``valid`` (B,) marks the real ones; ``used`` says whether
    the step took a real batch.  Returns ``(carry, mean loss over the steps taken)``.
    Algorithms whose step is not one optimizer update (pFedMe's inner solve) scan it too,
    so their batches are D-SGD's.

    With ``work.private`` (DP-SGD) the step gets ``(step_key, active)`` instead: the key
    of its Poisson sample and noise (:func:`poisson_sample`) and whether the node takes
    the step (1.0) or skips it (0.0): the same number of steps, and straggler cut-off,
    as without privacy; a node without data takes none."""
    b = min(work.batch_size, size)
    per_epoch = jnp.maximum(-(-count // b), 1)
    total = work.epochs * per_epoch if work.epochs > 0 else work.steps
    limit = total if budget is None else straggler_steps(budget, total, key)

    if work.private:
        n_steps = work.epochs * -(-size // b) if work.epochs > 0 else work.steps
        k = jnp.arange(n_steps)
        dp_key = jax.random.fold_in(key, DP_SALT)
        step_keys = jax.vmap(lambda i: jax.random.fold_in(dp_key, i))(k)
        active = ((k < total) & (k < limit) & (count > 0)).astype(jnp.float32)
        carry, (losses, used) = jax.lax.scan(step, carry, (step_keys, active))
    elif work.epochs > 0:
        n_batches = -(-size // b)
        pos = jnp.arange(n_batches * b).reshape(n_batches, b)

        def epoch(carry, xs):
            ekey, e = xs
            order = _epoch_order(ekey, count, size, work.rng_size)
            valid = (pos < count).astype(jnp.float32)
            if budget is not None:
                valid = valid * (e * per_epoch + jnp.arange(n_batches) < limit)[:, None]
            return jax.lax.scan(step, carry, (order[jnp.minimum(pos, size - 1)], valid))

        xs = (jax.random.split(key, work.epochs), jnp.arange(work.epochs))
        carry, (losses, used) = jax.lax.scan(epoch, carry, xs)
    else:

        def batch_at(k):
            e, j = k // per_epoch, k % per_epoch
            order = _epoch_order(jax.random.fold_in(key, e), count, size, work.rng_size)
            p = j * b + jnp.arange(b)
            valid = (p < count).astype(jnp.float32)
            if budget is not None:
                valid = valid * (k < limit)
            return order[jnp.minimum(p, size - 1)], valid

        batches = jax.vmap(batch_at)(jnp.arange(work.steps))
        carry, (losses, used) = jax.lax.scan(step, carry, batches)
    return carry, jnp.sum(losses * used) / jnp.maximum(used.sum(), 1)


def train_on_node(
    data,
    params,
    opt_state,
    key,
    lr,
    *,
    per_sample_loss,
    optimizer,
    work,
    weights=None,
    noise_stream=0,
):
    """:func:`local_sgd` on a node's own training rows (``data`` is its ``NodeData``)."""
    return local_sgd(
        params,
        opt_state,
        data.x_train,
        data.y_train,
        data.n_train,
        weights,
        key,
        lr,
        per_sample_loss=per_sample_loss,
        optimizer=optimizer,
        work=work,
        budget=getattr(data, "budget", None),
        noise_stream=noise_stream,
    )


def train_flops_per_sample(apply, params, x) -> float:
    """FLOPs of training on one sample: 3 × the forward FLOPs of ``apply(params, x)``.

    ``x`` is one sample with a batch axis of 1 (an array or ``jax.ShapeDtypeStruct``),
    ``params`` the parameters or their shapes.  The forward FLOPs are XLA's count for the
    lowered program (a dense layer of P parameters: about 2P, a multiply-add per weight);
    the backward pass costs about twice the forward (gradients with respect to the
    weights and to the activations), the usual 3× (the 6N per sample of Kaplan et al.
    2020 for a forward of 2N).  The optimizer's per-step update is not counted.  Falls
    back to 2 FLOPs per parameter when the backend reports no count.
    """
    analysis = jax.jit(apply).lower(params, x).cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX: one dict per program
        analysis = analysis[0] if analysis else None
    forward = (analysis or {}).get("flops")
    if not forward or forward < 0:
        forward = 2.0 * sum(int(np.prod(np.shape(p))) for p in jax.tree.leaves(params))
    return 3.0 * float(forward)


def model_train_flops(model_cfg: dict[str, Any], packed, task) -> float:
    """:func:`train_flops_per_sample` of the ``[model]`` built for ``packed`` data and
    ``task`` (shapes only: nothing is initialised or run)."""
    from .models import build_model

    model = build_model(model_cfg, packed.feature_shape, task.out_dim)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    dtype = packed.buckets[0].x_train.dtype
    return train_flops_per_sample(
        model.apply, params, jax.ShapeDtypeStruct((1, *packed.feature_shape), dtype)
    )
