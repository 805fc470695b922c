"""The config schema: every key of every section, its default, kind and allowed values.

A leaf module: it imports nothing of the simulator but :mod:`p2p_fmtl.errors`, so the
parts that declare their own keys (algorithms, data sets, models, topology builders)
import :class:`Key` from here, and :mod:`p2p_fmtl.config` reads all of them.

``check_value(field, value, key)`` coerces a user's value to the key's kind or raises a
one-line :class:`~p2p_fmtl.errors.ConfigError` naming the field, the value and what is
allowed.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, unknown_name

DEFAULT_DATA = "fedem_synthetic"
DEFAULT_ALGORITHM = "dsgd"
SECTIONS = (
    "run",
    "topology",
    "data",
    "model",
    "algorithm",
    "faults",
    "compression",
    "cost",
    "attack",
    "privacy",
)


# --------------------------------------------------------------------------- key specs
@dataclass(frozen=True)
class Key:
    """One config key: its default, its kind and its allowed values."""

    default: Any
    kind: str  # "int", "float", "str", "bool", "list[int]", "list[float]", "int|list[int]", "any"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] | None = None
    help: str = ""
    required: bool = False


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    return "any"


def describe(key: Key) -> str:
    if key.choices:
        return "one of " + ", ".join(repr(c) for c in key.choices)
    words = {
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "bool": "true or false",
        "list[int]": "a list of integers",
        "list[float]": "a list of numbers",
        "int|list[int]": "an integer or a list of integers",
        "number|none": "a number",
    }.get(key.kind, key.kind)
    if key.lo is not None or key.hi is not None:
        lo = "(" if key.lo_open else "["
        lo_v = "-inf" if key.lo is None else _fmt(key.lo)
        hi_v = "inf" if key.hi is None else _fmt(key.hi)
        hi = ")" if key.hi is None else "]"
        words += f" in {lo}{lo_v}, {hi_v}{hi}"
    return words


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def check_value(field: str, value: Any, key: Key) -> Any:
    """Return the value coerced to the key's kind, or raise a one-line ConfigError."""
    bad = ConfigError(f"{field}: got {value!r}, expected {describe(key)}")
    kind = key.kind
    if kind == "any":
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad
        if key.choices and value not in key.choices:
            raise unknown_name(field, value, key.choices)
        return value
    if kind in ("int", "float", "number|none"):
        value = _number(field, value, kind == "int", key, bad)
        _check_range(field, value, key, bad)
        return value
    if kind in ("list[int]", "list[float]", "int|list[int]"):
        if kind == "int|list[int]" and isinstance(value, int) and not isinstance(value, bool):
            value = _number(field, value, True, key, bad)
            _check_range(field, value, key, bad)
            return value
        if not isinstance(value, list):
            raise bad
        out = []
        for v in value:
            v = _number(field, v, kind != "list[float]", key, bad)
            _check_range(field, v, key, bad)
            out.append(v)
        return out
    raise AssertionError(f"unknown key kind {kind}")  # pragma: no cover


INT64_MAX = 2**63 - 1  # integers go to numpy / JAX as int64 at most
INT32_MAX = 2**31 - 1  # counts the compiled round reads as int32


def _number(field: str, value: Any, integer: bool, key: Key, bad: ConfigError) -> int | float:
    """One number of a key: an integer that fits in int64 (a float with an integer value is
    taken), or a finite float; anything else (inf, nan, 1e400, 2**64, a string) is ``bad``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad
    if integer:
        number = int(value) if isinstance(value, float) and value.is_integer() else value
        if not isinstance(number, int):
            raise bad
        if not -INT64_MAX - 1 <= number <= INT64_MAX:
            raise ConfigError(
                f"{field}: got {value!r}, expected {describe(key)} that fits in 64 bits "
                "(|value| < 2**63)"
            )
        return number
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range, e.g. 10**400
        raise bad from None
    if not math.isfinite(number):
        raise bad
    return number


def _check_range(field: str, value: float, key: Key, bad: ConfigError) -> None:
    if key.lo is not None and (value < key.lo or (key.lo_open and value == key.lo)):
        raise bad
    if key.hi is not None and value > key.hi:
        raise bad


# --------------------------------------------------------------------------- schemas
RUN_KEYS = {
    "seed": Key(0, "int", lo=0, help="one seed for everything random in the run"),
    "rounds": Key(100, "int", lo=0, hi=2**31 - 1, help="communication rounds (counted in 32 bits)"),
    "eval_every": Key(10, "int", lo=1, help="evaluate every this many rounds"),
    "devices": Key(1, "int", lo=1, help="shard the node axis over this many devices"),
    "chunking": Key(
        "auto",
        "str",
        choices=("auto", "on", "off"),
        help="local work of large buckets in chunks of nodes run in turn, so a chunk stays "
        "in cache; auto: on a CPU with one core per device (single-threaded, or "
        "run.devices = cores), off otherwise",
    ),
    "chunk_kib": Key(
        2048, "int", lo=1, help="training data per chunk of nodes, in KiB (sizes the chunks)"
    ),
    "node_chunk": Key(
        0,
        "int",
        lo=0,
        help="nodes per chunk, overriding run.chunk_kib (0: sized by run.chunk_kib)",
    ),
    "max_loss_growth": Key(
        100.0,
        "float",
        lo=0.0,
        help="stop as diverged when the mean train loss exceeds this many times its "
        "round-0 value (0: never). Logistic and softmax losses never become NaN, so a far "
        "too large learning rate would otherwise end 'complete' with a loss of 1e29. A "
        "run that learns stays far below 100: that is a mean cross-entropy of 69 nats for "
        "two classes (230 for ten), or 10 times the initial RMS error of a regression",
    ),
    "max_consensus_growth": Key(
        1e12,
        "float",
        lo=0.0,
        help="stop as diverged when the consensus distance exceeds this many times its "
        "first positive value after round 0 (0: never); an infinite one always stops the "
        "run. It is a squared distance: 1e12 is a million-fold growth of the models' "
        "spread, which training from one initial model never needs",
    ),
}

TOPOLOGY_KEYS = {
    "name": Key("erdos_renyi", "str", help="graph builder"),
    "n": Key(30, "int", lo=1, help="number of nodes"),
    "mixing": Key("metropolis", "str", help="mixing-matrix rule"),
    "seed": Key(None, "int", lo=0, help="graph seed (default: run.seed)"),
    "operator": Key(
        "auto",
        "str",
        choices=("auto", "dense", "sparse"),
        help="gossip as a dense W @ X or a neighbour table (sparse, for large sparse graphs)",
    ),
    "schedule": Key(
        "static",
        "str",
        choices=("static", "random_matching", "one_peer_exponential", "resample", "list"),
        help="time-varying topology",
    ),
    "graphs": Key(
        [], "any", help='schedule = "list": builder names or edge-list files, cycled per round'
    ),
    "resample_p": Key(
        0.0, "float", lo=0.0, hi=1.0, help="schedule = resample: edge probability (0: graph's)"
    ),
}

OPTIMIZER_KEYS = {
    "lr": Key(0.1, "float", lo=0.0, lo_open=True, help="learning rate"),
    "batch_size": Key(128, "int", lo=1, hi=INT32_MAX),
    "local_epochs": Key(
        1, "int", lo=0, hi=INT32_MAX, help="local epochs per round (or local_steps)"
    ),
    "local_steps": Key(
        0, "int", lo=0, hi=INT32_MAX, help="local steps per round (0: use local_epochs)"
    ),
    "optimizer": Key(
        "sgd", "str", help="an optax optimizer by name (not lbfgs: it needs a line search)"
    ),
    "momentum": Key(0.0, "float", lo=0.0, hi=1.0),
    "nesterov": Key(False, "bool"),
    "weight_decay": Key(0.0, "float", lo=0.0),
    "schedule": Key("constant", "str", choices=("constant", "multistep", "cosine")),
    "milestones": Key(
        [0.5, 0.75],
        "list[float]",
        lo=0.0,
        help="multistep: rounds (>= 1) or fractions of run.rounds (< 1)",
    ),
    "gamma": Key(0.1, "float", lo=0.0, lo_open=True, help="multistep decay factor"),
    "lr_min": Key(0.0, "float", lo=0.0, help="cosine: final learning rate"),
    "init": Key(
        "identical",
        "str",
        choices=("identical", "independent"),
        help="same initial model on every node, or one per node",
    ),
    "finetune_epochs": Key(
        0,
        "int",
        lo=0,
        hi=INT32_MAX,
        help="at every evaluation, score a copy of each node's model after this many more "
        "epochs of the algorithm's local update on its own data (no messages, the last "
        "round's learning rate); the trained models are not changed. dsgd on a complete "
        "graph with uniform mixing then is FedAvg+",
    ),
    "finetune_lr": Key(
        0.0,
        "float",
        lo=0.0,
        help="learning rate of fine-tuning (finetune_epochs); 0: the last round's rate. The "
        "FedEM reference's FedAvg+ tunes at its initial rate to the end (its tuning copy's "
        "scheduler steps once per log)",
    ),
}

MODEL_KEYS = {
    "name": Key("linear", "str"),
    "loss": Key("auto", "str", choices=("auto", "logistic", "softmax", "squared")),
}

FAULT_KEYS = {
    "node_drop": Key(
        0.0, "float", lo=0.0, hi=1.0, help="probability a node is down each round (below 1)"
    ),
    "link_drop": Key(0.0, "float", lo=0.0, hi=1.0, help="probability an edge carries nothing"),
    "churn": Key(0.0, "float", lo=0.0, hi=1.0, help="probability a live node leaves each round"),
    "churn_rounds": Key(10, "int", lo=1, hi=INT32_MAX, help="rounds a churned node stays away"),
    "straggler": Key(0.0, "float", lo=0.0, hi=1.0, help="fraction of nodes slowed each round"),
    "straggler_work": Key(
        [0.1, 0.9],
        "list[float]",
        lo=0.0,
        hi=1.0,
        help="a straggler does f ~ U(a, b) of its work: f·T of its T steps, rounded "
        "stochastically (unbiased even for T = 1)",
    ),
    "reweight": Key(
        "rule",
        "str",
        choices=("rule", "metropolis", "self"),
        help="weights of a round whose graph changed: the topology's mixing rule recomputed "
        "on the live subgraph, Metropolis weights, or the rule's weights with lost ones on W_ii",
    ),
}

COMPRESSION_KEYS = {
    "name": Key(
        "none", "str", choices=("none", "top_k", "random_k", "qsgd", "sign"), help="compressor"
    ),
    "ratio": Key(0.1, "float", lo=0.0, hi=1.0, lo_open=True, help="top_k / random_k: k / d"),
    "levels": Key(7, "int", lo=1, help="qsgd: quantization levels s (7: 4 bits with sign)"),
    "method": Key(
        "choco",
        "str",
        choices=("choco", "plain"),
        help="CHOCO-gossip with public copies, or mixing compressed models directly",
    ),
    "gamma": Key(
        0.1, "float", lo=0.0, hi=1.0, lo_open=True, help="CHOCO / DeepSqueeze consensus step"
    ),
    "error_feedback": Key(False, "bool", help="plain: error-compensated (DeepSqueeze)"),
    "dtype": Key(
        "float32", "str", choices=("float32", "float16", "bfloat16"), help="wire value type"
    ),
}

COST_KEYS = {
    "enabled": Key(
        False, "bool", help="simulate time and energy: adds sim_time_s and energy_j columns"
    ),
    "compute_s_per_sample": Key(1e-5, "float", lo=0.0, help="compute seconds per sample"),
    "bandwidth_bytes_per_s": Key(
        1.25e6, "float", lo=0.0, lo_open=True, help="per-link bandwidth (1.25e6 = 10 Mbit/s)"
    ),
    "latency_s": Key(0.01, "float", lo=0.0, help="per-message latency"),
    "joules_per_flop": Key(
        1e-10,
        "float",
        lo=0.0,
        help="energy per FLOP of local training (1e-10 = 10 GFLOP/W: a general-purpose "
        "core spends ~70 pJ per instruction, Horowitz ISSCC 2014)",
    ),
    "joules_per_byte": Key(
        1e-7,
        "float",
        lo=0.0,
        help="energy per byte sent (1e-7 = 12.5 nJ/bit: a ~1 W radio at tens of Mbit/s; "
        "wired links less, Internet transport more, Baliga et al. Proc. IEEE 2011)",
    ),
}

ATTACK_KEYS = {
    "kind": Key(
        "none",
        "str",
        choices=("none", "sign_flip", "gaussian", "alie", "label_flip"),
        help="what Byzantine nodes do: send -scale x their model, Gaussian noise of std "
        "scale, 'a little is enough' (Baruch et al. 2019) from their neighbours' "
        "statistics, or train on flipped labels (honest protocol)",
    ),
    "fraction": Key(0.0, "float", lo=0.0, hi=1.0, help="share of the nodes that are Byzantine"),
    "redraw": Key(False, "bool", help="draw the Byzantine nodes anew every round"),
    "scale": Key(1.0, "float", lo=0.0, help="sign_flip: k in -k x; gaussian: the noise's std"),
    "z": Key(
        0.0,
        "float",
        lo=0.0,
        help="alie: standard deviations below the neighbours' mean (0: the paper's z_max "
        "from the neighbourhood size and the Byzantine share)",
    ),
}

PRIVACY_KEYS = {
    "enabled": Key(False, "bool", help="DP-SGD local training with a per-node privacy budget"),
    "clip_norm": Key(1.0, "float", lo=0.0, lo_open=True, help="per-sample gradient clipping C"),
    "noise_multiplier": Key(
        1.0, "float", lo=0.0, help="Gaussian noise std / clip_norm (sigma); above 0 when enabled"
    ),
    "delta": Key(1e-5, "float", lo=0.0, hi=1.0, lo_open=True, help="delta of (epsilon, delta)-DP"),
    "accountant": Key(
        "rdp", "str", choices=("rdp", "pld"), help="dp-accounting's RDP or PLD accountant"
    ),
}

AGGREGATION_KEYS = {  # dsgd and graph_mtl (p2p_fmtl/aggregation.py)
    "aggregation": Key(
        "average",
        "str",
        choices=("average", "decoupled"),
        help="neighbours' models as sent, or decoupled (our reading of FedDEA)",
    ),
    "rho": Key(0.1, "float", lo=0.0, hi=1.0, lo_open=True, help="decoupled: top fraction"),
}

GOSSIP_KEYS = {
    "gossip": Key(
        "sync",
        "str",
        choices=("sync", "pairwise"),
        help="synchronous W each round, or asynchronous pairwise averaging ticks",
    ),
    "gossip_ticks": Key(
        1, "int", lo=1, hi=INT32_MAX, help="pairwise: random edges averaged per round"
    ),
    "gossip_every": Key(1, "int", lo=1, hi=INT32_MAX, help="gossip only every k rounds"),
    "robust": Key(
        "none",
        "str",
        choices=("none", "clipped_gossip", "trimmed_mean", "median"),
        help="robust aggregation of what a node receives: self-centered clipping (He et "
        "al. 2022), coordinate-wise trimmed mean or median over the neighbourhood",
    ),
    "trim": Key(1, "int", lo=0, hi=INT32_MAX, help="trimmed_mean: values cut at each end (b)"),
    "clip_radius": Key(
        0.0,
        "float",
        lo=0.0,
        help="clipped_gossip: the clipping radius tau (0: by algorithm.clip_rule)",
    ),
    "clip_rule": Key(
        "theorem",
        "str",
        choices=("theorem", "farthest"),
        help="clipped_gossip with clip_radius = 0: the radius of the paper's theorem (reads "
        "who is Byzantine: an oracle) or its code's practical rule (clip the algorithm.trim "
        "farthest neighbours)",
    ),
}


def keys_from_defaults(defaults: Mapping[str, Any]) -> dict[str, Key]:
    """Keys for a builder's or generator's keyword parameters, typed by their defaults."""
    out = {}
    for k, d in defaults.items():
        if d is inspect.Parameter.empty:  # a required keyword, e.g. edgelist's path
            out[k] = Key(None, "str", required=True)
            continue
        if isinstance(d, tuple):  # sequence defaults are written as TOML lists
            d = list(d)
            kind = "list[int]" if all(isinstance(v, int) for v in d) else "list[float]"
            out[k] = Key(d, kind, lo=1 if kind == "list[int]" else None)
            continue
        kind = kind_of(d)
        if d is None:
            kind = "number|none"
        elif kind == "list":
            kind = "any"
        out[k] = Key(d, kind)
    return out
