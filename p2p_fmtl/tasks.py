"""What a model's outputs mean: the loss, class probabilities and the test score.

``binary``     one logit, logistic loss, ``p(y=1) = sigmoid(z)``;
``multiclass`` K logits, softmax cross-entropy;
``regression`` one output, squared loss ``(h - y)^2 / 2``, scored by squared error.
All functions act on one batch (per-sample outputs), so they vmap over nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from .errors import ConfigError


class Task(NamedTuple):
    kind: str  # binary | multiclass | regression
    loss_name: str
    out_dim: int
    num_classes: int
    loss: Callable  # (outputs (B, out), y (B,)) -> per-sample loss (B,)
    probs: Callable  # outputs -> (B, C) class probabilities (regression: the prediction)
    score_probs: Callable  # (probs, y) -> per-sample correct (0/1) or squared error

    @property
    def metric(self) -> str:
        return "mse" if self.kind == "regression" else "acc"

    def score(self, out, y):
        """Per-sample test score of model outputs: correct (0/1) or squared error."""
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


def make_task(kind: str, num_classes: int, loss: str = "auto") -> Task:
    """The task for data of ``kind`` with the model loss named in ``model.loss``."""
    if loss == "auto":
        loss = {"binary": "logistic", "multiclass": "softmax", "regression": "squared"}[kind]
    allowed = {
        "binary": ("logistic", "softmax"),
        "multiclass": ("softmax",),
        "regression": ("squared",),
    }[kind]
    if loss not in allowed:
        raise ConfigError(
            f"model.loss: got {loss!r}, but the data is a {kind} task; allowed: "
            f"'auto', {', '.join(repr(a) for a in allowed)}"
        )
    if loss == "logistic":
        return Task(kind, loss, 1, 2, _logistic_loss, _binary_probs, _correct)
    if loss == "softmax":
        return Task(kind, loss, num_classes, num_classes, _softmax_loss, jax.nn.softmax, _correct)
    return Task(kind, loss, 1, 1, _squared_loss, lambda out: out, _squared_error)
