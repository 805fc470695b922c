"""What a model's outputs mean: the loss, class probabilities and the test score.

``binary``     one logit, logistic loss, ``p(y=1) = sigmoid(z)``;
``multiclass`` K logits, softmax cross-entropy;
``regression`` one output, squared loss ``(h - y)^2 / 2``, scored by squared error;
``lm``         language modelling: outputs ``(B, T, V)`` logits, labels ``(B, T)`` int
               next tokens (labels ``< 0`` are ignored, e.g. padding); the per-sample loss
               AND the per-sample test score are the mean token cross-entropy over the
               sample's valid tokens (lower is better; ``Task.metric == "loss"``, so the
               runner writes ``test_loss``); ``probs`` is the softmax over the vocabulary;
               :func:`token_accuracy` gives the per-sample fraction of correct next tokens;
``multitask``  several prediction heads over one shared trunk: labels ``(B, 2)`` float32,
               ``[:, 0]`` the target and ``[:, 1]`` the (integer-valued) head index; the
               output width is the sum of the heads' widths (``classes`` for multiclass,
               2 for binary (a 2-way softmax), 1 for regression) and head ``h`` reads the
               column block ``[offset_h, offset_h + width_h)`` (for an ``mlp``, column blocks
               of the last dense layer). A sample's loss is the cross-entropy on its head's
               block (classification) or ``(h - y)^2 / 2`` (regression); its score is
               correct (0/1) or the squared error; ``Task.metric == "score"``.
               ``probs`` is the per-head softmax of each classification block (regression
               columns pass through), so mixtures of models (D-EM) average per-head
               probabilities and regression predictions.

All functions act on one batch (per-sample outputs, per-sample losses and scores of shape
``(B,)``), so they vmap over nodes and jit; the multitask head selection is vectorised
(``take_along_axis`` over per-head values stacked for every sample), never Python branching
on traced values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .errors import ConfigError

KINDS = ("binary", "multiclass", "regression", "lm", "multitask")
HEAD_KINDS = ("multiclass", "binary", "regression")


class Task(NamedTuple):
    kind: str  # binary | multiclass | regression | lm | multitask
    loss_name: str
    out_dim: int
    num_classes: int
    loss: Callable  # (outputs (B, out), y (B,)) -> per-sample loss (B,)
    probs: Callable  # outputs -> (B, C) class probabilities (regression: the prediction)
    score_probs: Callable  # (probs, y) -> per-sample correct (0/1) or squared error
    heads: tuple[dict[str, Any], ...] = ()  # multitask: {name, kind, classes, offset, width}

    @property
    def metric(self) -> str:
        return {"regression": "mse", "lm": "loss", "multitask": "score"}.get(self.kind, "acc")

    def score(self, out, y):
        """Per-sample test score of model outputs: correct (0/1), squared error, or
        (``lm``) mean token cross-entropy."""
        return self.score_probs(self.probs(out), y)


def _logistic_loss(out, y):
    return optax.sigmoid_binary_cross_entropy(out[:, 0], y.astype(out.dtype))


def _binary_probs(out):
    p1 = jax.nn.sigmoid(out[:, 0])
    return jnp.stack([1.0 - p1, p1], axis=-1)


def _softmax_loss(out, y):
    return optax.softmax_cross_entropy_with_integer_labels(out, y.astype(jnp.int32))


def _squared_loss(out, y):
    return 0.5 * (out[:, 0] - y) ** 2


def _correct(probs, y):
    return (jnp.argmax(probs, axis=-1) == y).astype(jnp.float32)


def _squared_error(pred, y):
    return (pred[:, 0] - y) ** 2


# ------------------------------------------------------------------------------ lm
def _token_mean(values, y):
    """Mean of per-token ``values (B, T)`` over each sample's valid tokens (``y >= 0``)."""
    valid = (y >= 0).astype(values.dtype)
    return jnp.sum(values * valid, axis=-1) / jnp.maximum(valid.sum(-1), 1.0)


def _lm_loss(out, y):
    y = y.astype(jnp.int32)
    ce = optax.softmax_cross_entropy_with_integer_labels(out, jnp.maximum(y, 0))
    return _token_mean(ce, y)


def _lm_score(probs, y):
    y = y.astype(jnp.int32)
    p = jnp.take_along_axis(probs, jnp.maximum(y, 0)[..., None], axis=-1)[..., 0]
    return _token_mean(-jnp.log(jnp.maximum(p, 1e-30)), y)


def token_accuracy(out, y):
    """Per-sample fraction of valid tokens whose argmax prediction is the label (``lm``)."""
    y = y.astype(jnp.int32)
    return _token_mean((jnp.argmax(out, axis=-1) == y).astype(jnp.float32), y)


# ------------------------------------------------------------------------------ multitask
def normalize_heads(heads) -> tuple[dict[str, Any], ...]:
    """Validate head dicts and add each head's column ``offset`` and ``width``."""
    if not isinstance(heads, list | tuple) or not heads:
        raise ConfigError(
            f"data.heads: got {heads!r}, expected a non-empty list of "
            '{"name", "kind", "classes"} dicts for a multitask dataset'
        )
    out, offset = [], 0
    for i, h in enumerate(heads):
        if not isinstance(h, dict):
            raise ConfigError(f"data.heads[{i}]: got {h!r}, expected a dict")
        kind = h.get("kind")
        if kind not in HEAD_KINDS:
            raise ConfigError(
                f"data.heads[{i}].kind: got {kind!r}, expected one of {', '.join(HEAD_KINDS)}"
            )
        classes = h.get("classes", {"binary": 2, "regression": 1}.get(kind))
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise ConfigError(
                f"data.heads[{i}].classes: got {classes!r}, expected a positive integer"
            )
        width = {"multiclass": classes, "binary": 2, "regression": 1}[kind]
        name = str(h.get("name", f"head_{i}"))
        out.append(
            {"name": name, "kind": kind, "classes": classes, "offset": offset, "width": width}
        )
        offset += width
    return tuple(out)


def _multitask_fns(heads):
    """(loss, probs, score_probs) for the normalized ``heads``; all vectorised."""
    n_heads = len(heads)

    def _split(out, y):
        target = y[:, 0]
        idx = jnp.clip(jnp.round(y[:, 1]).astype(jnp.int32), 0, n_heads - 1)
        return target, idx

    def _pick(per_head, idx):  # per_head: list of (B,) -> (B,) value of each sample's head
        stacked = jnp.stack(per_head, axis=-1)
        return jnp.take_along_axis(stacked, idx[:, None], axis=-1)[:, 0]

    def _label(target, h):
        return jnp.clip(jnp.round(target).astype(jnp.int32), 0, h["width"] - 1)

    def loss(out, y):
        target, idx = _split(out, y)
        per_head = []
        for h in heads:
            block = out[:, h["offset"] : h["offset"] + h["width"]]
            if h["kind"] == "regression":
                per_head.append(0.5 * (block[:, 0] - target) ** 2)
            else:
                per_head.append(
                    optax.softmax_cross_entropy_with_integer_labels(block, _label(target, h))
                )
        return _pick(per_head, idx)

    def probs(out):
        blocks = []
        for h in heads:
            block = out[:, h["offset"] : h["offset"] + h["width"]]
            blocks.append(block if h["kind"] == "regression" else jax.nn.softmax(block, -1))
        return jnp.concatenate(blocks, axis=-1)

    def score_probs(p, y):
        target, idx = _split(p, y)
        per_head = []
        for h in heads:
            block = p[:, h["offset"] : h["offset"] + h["width"]]
            if h["kind"] == "regression":
                per_head.append((block[:, 0] - target) ** 2)
            else:
                correct = jnp.argmax(block, axis=-1) == jnp.round(target).astype(jnp.int32)
                per_head.append(correct.astype(jnp.float32))
        return _pick(per_head, idx)

    return loss, probs, score_probs


# ------------------------------------------------------------------------------ make_task
def make_task(kind: str, num_classes: int, loss: str = "auto", heads=None) -> Task:
    """The task for data of ``kind`` with the model loss named in ``model.loss``.

    ``lm``: ``num_classes`` is the vocabulary size. ``multitask``: ``heads`` lists the
    head dicts (``num_classes`` is ignored; the task's ``num_classes`` is the output width).
    """
    if kind not in KINDS:
        raise ConfigError(f"data task: got {kind!r}, expected one of {', '.join(KINDS)}")
    if loss == "auto":
        loss = {
            "binary": "logistic",
            "multiclass": "softmax",
            "regression": "squared",
            "lm": "softmax",
            "multitask": "auto",
        }[kind]
    allowed = {
        "binary": ("logistic", "softmax"),
        "multiclass": ("softmax",),
        "regression": ("squared",),
        "lm": ("softmax",),
        "multitask": ("auto",),
    }[kind]
    if loss not in allowed:
        raise ConfigError(
            f"model.loss: got {loss!r}, but the data is a {kind} task; allowed: "
            f"'auto'{''.join(', ' + repr(a) for a in allowed if a != 'auto')}"
        )
    if kind == "multitask":
        hs = normalize_heads(heads)
        width = sum(h["width"] for h in hs)
        return Task(kind, "multitask", width, width, *_multitask_fns(hs), heads=hs)
    if kind == "lm":
        probs = lambda out: jax.nn.softmax(out, axis=-1)  # noqa: E731
        return Task(kind, "softmax", num_classes, num_classes, _lm_loss, probs, _lm_score)
    if loss == "logistic":
        return Task(kind, loss, 1, 2, _logistic_loss, _binary_probs, _correct)
    if loss == "softmax":
        return Task(kind, loss, num_classes, num_classes, _softmax_loss, jax.nn.softmax, _correct)
    return Task(kind, loss, 1, 1, _squared_loss, lambda out: out, _squared_error)
