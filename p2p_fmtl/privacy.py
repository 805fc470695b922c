"""Differentially private local training (DP-SGD) and each node's privacy budget ε.

With ``[privacy] enabled`` every node trains with DP-SGD (Abadi et al., CCS 2016): each
local step takes a Poisson sample of its training rows (rate ``q_i = min(1, B / n_i)``),
clips every per-sample gradient to norm C = ``clip_norm`` and adds Gaussian noise of std
σ C, σ = ``noise_multiplier`` (:func:`p2p_fmtl.training.local_sgd`).  An algorithm may be
run privately only if its spec DECLARES (``AlgorithmSpec.privacy`` →
:class:`~p2p_fmtl.algorithms.base.PrivateWork`) that its local work reads the data only
through such steps; then everything the node sends, and its whole state, is a
post-processing of the noised gradients, whatever the exchange, compression, faults or
schedule, and ε bounds what its neighbours (or anyone who sees its messages) can learn
about any one of its training samples.

**What ε counts.**  Node i's ε for ``delta`` is that of ``T_i`` self-compositions of the
Poisson-subsampled Gaussian mechanism ``PoissonSampledDpEvent(q_i, GaussianDpEvent(σ /
√models))`` (add-or-remove-one adjacency), computed by Google's ``dp-accounting``
library (its RDP or PLD accountant, ``privacy.accountant``); nothing here is a
hand-written accountant.  ``T_i`` is every DP-SGD step node i could take in the rounds
run so far: ``rounds × (E · ceil(n_i / B)`` or ``K``, plus the declared extra epochs), an
upper bound: steps a straggler skipped, and rounds in which the node was down, are still
counted (the accountant never sees which steps happened, which would depend on the
network's draws, not on the data).  Nodes held out of training never touch their data
through training: ε = 0, as for a node without training data.

**What ε does not cover.**  The dataset sizes n_i are public (as in DP-SGD practice: the
sampling rate, the step count, the expected batch size and some mixing rules read them).
Evaluation reads the data outside the accountant, as every evaluation does: test scores,
training losses, and the copies that fine-tuning (``algorithm.finetune_epochs``, itself
DP-SGD steps on a stream of keys of its own) and an unseen node's ``adapt`` produce
for scoring.  These are never sent to a neighbour nor carried into the next round, so
fine-tuning is allowed with privacy on; its steps are not counted.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import ConfigError


def check_privacy(cfg: dict[str, dict[str, Any]], spec) -> None:
    """Refuse, in one line, a ``[privacy]`` section this run cannot honour: no noise, an
    algorithm that does not declare its local work all DP-SGD, or a relation built from
    raw data statistics."""
    privacy, alg = cfg["privacy"], cfg["algorithm"]
    if not privacy["enabled"]:
        return
    if privacy["noise_multiplier"] <= 0:
        raise ConfigError(
            f"privacy.noise_multiplier: got {privacy['noise_multiplier']}, but "
            "privacy.enabled = true needs Gaussian noise; allowed: a number > 0 (or "
            "privacy.enabled = false)"
        )
    declared = spec.privacy(alg)
    if isinstance(declared, str):
        raise ConfigError(
            f"privacy.enabled: got true, but algorithm.name = {alg['name']!r} {declared}; "
            f"allowed: false, or algorithm.name in {', '.join(private_algorithms())}"
        )
    from .algorithms import algorithm_keys, needs_of

    if needs_of(alg).relation == "similarity":
        others = [r for r in algorithm_keys(alg["name"])["relation"].choices if r != "similarity"]
        raise ConfigError(
            "privacy.enabled: got true, but algorithm.relation = 'similarity' sends each "
            "node's data statistics to its neighbours outside DP-SGD; allowed: "
            f"privacy.enabled = false, or algorithm.relation in {', '.join(others)}"
        )


def private_algorithms() -> list[str]:
    """Algorithms whose default settings declare their local work all DP-SGD."""
    from .algorithms import ALGORITHMS, algorithm_keys

    names = []
    for name, spec in ALGORITHMS.items():
        defaults = {k: key.default for k, key in algorithm_keys(name).items()}
        if not isinstance(spec.privacy({"name": name, **defaults}), str):
            names.append(name)
    return sorted(names)


def round_steps(alg: dict[str, Any], n_train, declared) -> np.ndarray:
    """DP-SGD steps per round of each node (N,): ``E · ceil(n_i / B)`` (local epochs) or
    ``K`` (local steps), plus ``declared.extra_epochs · ceil(n_i / B)``; 0 without data."""
    n = np.asarray(n_train, dtype=np.int64)
    per_epoch = -(-n // alg["batch_size"])
    steps = alg["local_epochs"] * per_epoch if alg["local_epochs"] > 0 else alg["local_steps"]
    return np.where(n > 0, steps + declared.extra_epochs * per_epoch, 0)


def epsilons(
    n_train,
    *,
    batch_size: int,
    steps_per_round: np.ndarray | Callable[[np.ndarray], np.ndarray],
    rounds,
    noise_multiplier: float,
    delta: float,
    accountant: str = "rdp",
    models: int = 1,
    releases: int = 0,
) -> np.ndarray:
    """Each node's ε (N,) for ``delta`` after ``rounds`` rounds (an int, or per node).

    Node i composes ``T_i = rounds_i · steps_i`` Poisson-subsampled Gaussian mechanisms of
    rate ``min(1, batch_size / n_i)`` and noise multiplier ``noise_multiplier /
    √models``, plus ``rounds_i · releases`` Gaussian mechanisms of noise multiplier
    ``noise_multiplier`` on all its samples; ε = 0 where T_i = 0 or n_i = 0.
    ``steps_per_round`` is an array (N,) or a
    function of ``n_train``.  Nodes with the same (q, T) share one computation, and
    computations are cached across calls.
    """
    n = np.asarray(n_train, dtype=np.int64)
    steps = steps_per_round(n) if callable(steps_per_round) else steps_per_round
    total = np.broadcast_to(np.asarray(rounds, dtype=np.int64), n.shape) * np.asarray(steps)
    sigma = noise_multiplier / math.sqrt(models)
    out = np.zeros(n.shape, dtype=np.float64)
    full = np.broadcast_to(np.asarray(rounds, dtype=np.int64), n.shape) * int(releases)
    for size, t, r in set(zip(n.tolist(), total.tolist(), full.tolist(), strict=True)):
        if size > 0 and t > 0:
            q = min(1.0, batch_size / size)
            eps = epsilon(q, sigma, t, delta, accountant, r, noise_multiplier)
            out[(n == size) & (total == t) & (full == r)] = eps
    return out


@functools.lru_cache(maxsize=4096)
def epsilon(
    q: float,
    sigma: float,
    steps: int,
    delta: float,
    accountant: str,
    releases: int = 0,
    release_sigma: float = 1.0,
) -> float:
    """ε of ``steps`` self-compositions of ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))``
    (composed with ``releases`` of ``GaussianDpEvent(release_sigma)``) at ``delta``, by
    dp-accounting's ``RdpAccountant`` (default orders) or ``PLDAccountant`` (default
    discretization)."""
    import dp_accounting

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    if releases:
        full = dp_accounting.GaussianDpEvent(release_sigma)
        event = dp_accounting.ComposedDpEvent(
            [event, dp_accounting.SelfComposedDpEvent(full, releases)]
        )
    if accountant == "rdp":
        acc = dp_accounting.rdp.RdpAccountant()
    else:
        acc = dp_accounting.pld.PLDAccountant()
    log = logging.getLogger("absl")  # RDP warns for each fractional order it drops
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return float(acc.compose(event).get_epsilon(delta))
    finally:
        log.setLevel(level)


def node_epsilons(
    cfg: dict[str, dict[str, Any]], n_train, rounds_done: int, holdout=None
) -> np.ndarray | None:
    """Each node's ε (N,) after ``rounds_done`` rounds of the run ``cfg`` (``None`` when
    privacy is off); held-out nodes (``holdout``, a bool (N,)) never train: ε = 0."""
    privacy, alg = cfg["privacy"], cfg["algorithm"]
    if not privacy["enabled"]:
        return None
    from .algorithms import ALGORITHMS

    declared = ALGORITHMS[alg["name"]].privacy(alg)
    rounds = np.full(np.shape(n_train), int(rounds_done), dtype=np.int64)
    if holdout is not None:
        rounds[np.asarray(holdout, dtype=bool)] = 0
    return epsilons(
        n_train,
        batch_size=alg["batch_size"],
        steps_per_round=round_steps(alg, n_train, declared),
        rounds=rounds,
        noise_multiplier=privacy["noise_multiplier"],
        delta=privacy["delta"],
        accountant=privacy["accountant"],
        models=declared.models,
        releases=declared.releases,
    )
