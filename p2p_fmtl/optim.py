"""Optimizers through optax, by name, with a learning-rate schedule over rounds.

The learning rate is injected into the optimizer state
(:func:`optax.inject_hyperparams`) and set once per round from a schedule of the
round index, as the reference implementations step their schedulers per round:

* ``constant``  lr,
* ``multistep`` lr · gamma^(milestones passed) (:func:`optax.piecewise_constant_schedule`),
* ``cosine``    lr_min + (lr − lr_min)(1 + cos(π t / R)) / 2 (:func:`optax.cosine_decay_schedule`).

Weight decay is passed to optimizers that take it (``adamw``, ``lion``, ...); for the
others it is PyTorch-style coupled L2, ``g ← g + wd·θ`` before the optimizer, so
``sgd`` with ``momentum`` and ``weight_decay`` is exactly ``torch.optim.SGD``.
"""

from __future__ import annotations

import inspect
from typing import Any

import optax

from .errors import ConfigError, did_you_mean


def _optax_optimizers() -> list[str]:
    names = []
    for name in dir(optax):
        fn = getattr(optax, name)
        if name.startswith("_") or not inspect.isfunction(fn):
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # pragma: no cover
            continue
        if "learning_rate" in params and not name.endswith("schedule"):
            names.append(name)
    return sorted(names)


def check_optimizer(alg: dict[str, Any]) -> None:
    """Validate ``algorithm.optimizer`` and the keys that must be accepted by it."""
    name = alg["optimizer"]
    allowed = _optax_optimizers()
    if name not in allowed:
        raise ConfigError(
            f"algorithm.optimizer: unknown {name!r}; allowed: any optax optimizer such as "
            f"sgd, adam, adamw, rmsprop, adagrad, lion{did_you_mean(name, allowed)}"
        )
    params = inspect.signature(getattr(optax, name)).parameters
    if alg["momentum"] and "momentum" not in params:
        raise ConfigError(
            f"algorithm.momentum: got {alg['momentum']}, but optax.{name} takes no momentum; "
            "allowed: 0 (or use optimizer = 'sgd')"
        )
    if alg["nesterov"] and "nesterov" not in params:
        raise ConfigError(f"algorithm.nesterov: optax.{name} has no nesterov option")
    sched = alg["schedule"]
    if sched == "multistep" and not alg["milestones"]:
        raise ConfigError("algorithm.milestones: got [], expected at least one milestone")


def make_optimizer(alg: dict[str, Any]) -> optax.GradientTransformation:
    """The optax optimizer of the ``[algorithm]`` section, with an injectable learning rate."""
    name = alg["optimizer"]
    fn = getattr(optax, name)
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {}
    if "momentum" in params and alg["momentum"]:
        kwargs["momentum"] = alg["momentum"]
    if "nesterov" in params and alg["nesterov"]:
        kwargs["nesterov"] = True
    wd = alg["weight_decay"]
    decoupled = "weight_decay" in params
    if decoupled:
        kwargs["weight_decay"] = wd

    def factory(learning_rate):
        opt = fn(learning_rate, **kwargs)
        if wd and not decoupled:
            opt = optax.chain(optax.add_decayed_weights(wd), opt)
        return opt

    return optax.inject_hyperparams(factory)(learning_rate=alg["lr"])


def set_learning_rate(opt_state, lr):
    """Return ``opt_state`` with the injected learning rate replaced by ``lr``."""
    hyper = dict(opt_state.hyperparams)
    hyper["learning_rate"] = lr
    return opt_state._replace(hyperparams=hyper)


def lr_schedule(alg: dict[str, Any], rounds: int):
    """The learning rate as a function of the round index ``t`` (0-based)."""
    lr = alg["lr"]
    kind = alg["schedule"]
    if kind == "constant":
        return optax.constant_schedule(lr)
    if kind == "multistep":
        bounds: dict[int, float] = {}
        for m in alg["milestones"]:
            r = int(round(m * rounds)) if m < 1 else int(m)
            bounds[r] = bounds.get(r, 1.0) * alg["gamma"]
        return optax.piecewise_constant_schedule(lr, bounds)
    return optax.cosine_decay_schedule(lr, decay_steps=max(rounds, 1), alpha=alg["lr_min"] / lr)
