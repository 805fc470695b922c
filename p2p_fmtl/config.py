"""Configs: TOML in, a fully resolved and validated nested dict out.

A config has the sections ``run``, ``topology``, ``data``, ``model``, ``algorithm``,
``faults`` and ``compression``.  Each section has common keys and, beside ``name``,
keys that belong to the named builder, generator, model or algorithm.  Resolution

1. rejects unknown sections and keys (with "did you mean"),
2. fills every default so the written ``config.toml`` is complete,
3. checks types, ranges and allowed names, one clear line per mistake
   (:class:`~p2p_fmtl.errors.ConfigError`: field, value given, what is allowed),
4. checks combinations that cannot work together.

Python use::

    cfg = load_config("exp.toml", overrides={"run.rounds": 50})
    cfg["algorithm"]["lr"], cfg.get("algorithm.lr")
    cfg2 = cfg.override({"topology.name": "ring"})
"""

from __future__ import annotations

import copy
import inspect
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

import topologies

from .errors import ConfigError, did_you_mean, unknown_name

DEFAULT_DATA = "fedem_synthetic"
DEFAULT_ALGORITHM = "dsgd"
SECTIONS = ("run", "topology", "data", "model", "algorithm", "faults", "compression", "cost")


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


def _kind_of(value: Any) -> str:
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


def _describe(key: Key) -> str:
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


def _check_value(field: str, value: Any, key: Key) -> Any:
    """Return the value coerced to the key's kind, or raise a one-line ConfigError."""
    bad = ConfigError(f"{field}: got {value!r}, expected {_describe(key)}")
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
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if kind == "int" and not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise bad
        if kind in ("float", "number|none"):
            value = float(value)
            if not math.isfinite(value):
                raise bad
        _check_range(field, value, key, bad)
        return value
    if kind in ("list[int]", "list[float]", "int|list[int]"):
        if kind == "int|list[int]" and isinstance(value, int) and not isinstance(value, bool):
            _check_range(field, value, key, bad)
            return value
        if not isinstance(value, list):
            raise bad
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise bad
            if kind != "list[float]" and not float(v).is_integer():
                raise bad
            v = float(v) if kind == "list[float]" else int(v)
            _check_range(field, v, key, bad)
            out.append(v)
        return out
    raise AssertionError(f"unknown key kind {kind}")  # pragma: no cover


def _check_range(field: str, value: float, key: Key, bad: ConfigError) -> None:
    if key.lo is not None and (value < key.lo or (key.lo_open and value == key.lo)):
        raise bad
    if key.hi is not None and value > key.hi:
        raise bad


# --------------------------------------------------------------------------- schemas
RUN_KEYS = {
    "seed": Key(0, "int", lo=0, help="one seed for everything random in the run"),
    "rounds": Key(100, "int", lo=0, help="communication rounds"),
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
        help="gossip as a dense W @ X or an edge list with segment_sum",
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
    "batch_size": Key(128, "int", lo=1),
    "local_epochs": Key(1, "int", lo=0, help="local epochs per round (or local_steps)"),
    "local_steps": Key(0, "int", lo=0, help="local steps per round (0: use local_epochs)"),
    "optimizer": Key("sgd", "str", help="any optax optimizer by name"),
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
}

MODEL_KEYS = {
    "name": Key("linear", "str"),
    "loss": Key("auto", "str", choices=("auto", "logistic", "softmax", "squared")),
}

FAULT_KEYS = {
    "node_drop": Key(0.0, "float", lo=0.0, hi=1.0, help="probability a node is down each round"),
    "link_drop": Key(0.0, "float", lo=0.0, hi=1.0, help="probability an edge carries nothing"),
    "churn": Key(0.0, "float", lo=0.0, hi=1.0, help="probability a live node leaves each round"),
    "churn_rounds": Key(10, "int", lo=1, help="rounds a churned node stays away"),
    "straggler": Key(0.0, "float", lo=0.0, hi=1.0, help="fraction of nodes slowed each round"),
    "straggler_work": Key(
        [0.1, 0.9], "list[float]", lo=0.0, hi=1.0, help="a straggler does U(a, b) of its work"
    ),
    "reweight": Key(
        "metropolis",
        "str",
        choices=("metropolis", "self"),
        help="live-subgraph weights: Metropolis, or the rule's weights with lost ones on W_ii",
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
    "enabled": Key(False, "bool", help="simulate time: adds a sim_time_s column"),
    "compute_s_per_sample": Key(1e-5, "float", lo=0.0, help="compute seconds per sample"),
    "bandwidth_bytes_per_s": Key(
        1.25e6, "float", lo=0.0, lo_open=True, help="per-link bandwidth (1.25e6 = 10 Mbit/s)"
    ),
    "latency_s": Key(0.01, "float", lo=0.0, help="per-message latency"),
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
    "gossip_ticks": Key(1, "int", lo=1, help="pairwise: random edges averaged per round"),
    "gossip_every": Key(1, "int", lo=1, help="gossip only every k rounds"),
}


def _keys_from_defaults(defaults: Mapping[str, Any]) -> dict[str, Key]:
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
        kind = _kind_of(d)
        if d is None:
            kind = "number|none"
        elif kind == "list":
            kind = "any"
        out[k] = Key(d, kind)
    return out


def _registry_keys(section: str, name: str) -> dict[str, Key]:
    """Keys that belong to the named builder / generator / model / algorithm."""
    if section == "topology":
        return _keys_from_defaults(topologies.builder_params(name))
    if section == "data":
        from .data import dataset_params

        return _keys_from_defaults(dataset_params(name))
    if section == "model":
        from .models import model_params

        return _keys_from_defaults(model_params(name))
    if section == "algorithm":
        from .algorithms import algorithm_keys

        return algorithm_keys(name)
    return {}


def _names(section: str) -> tuple[str, ...]:
    if section == "topology":
        return tuple(topologies.BUILDERS)
    if section == "data":
        from .data import DATASETS

        return tuple(DATASETS)
    if section == "model":
        from .models import MODELS

        return tuple(MODELS)
    if section == "algorithm":
        from .algorithms import ALGORITHMS

        return tuple(ALGORITHMS)
    return ()


def _section_schema(section: str, name: str | None) -> dict[str, Key]:
    if section == "run":
        return dict(RUN_KEYS)
    if section == "faults":
        return dict(FAULT_KEYS)
    if section == "compression":
        return dict(COMPRESSION_KEYS)
    if section == "cost":
        return dict(COST_KEYS)
    common = {
        "topology": TOPOLOGY_KEYS,
        "data": {
            "name": Key(DEFAULT_DATA, "str"),
            "holdout_nodes": Key(
                0.0, "any", help="unseen nodes: a fraction in [0, 1) or a list of node ids"
            ),
            "bucketing": Key(
                "auto",
                "str",
                choices=("auto", "full", "none"),
                help="group nodes by batches per epoch and pad within groups, or pad all",
            ),
            "max_buckets": Key(8, "int", lo=1, help="at most this many buckets"),
        },
        "model": MODEL_KEYS,
        "algorithm": {"name": Key(DEFAULT_ALGORITHM, "str")},
    }[section]
    return {**common, **_registry_keys(section, name)}


# --------------------------------------------------------------------------- resolution
def resolve(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate a raw (user) config and return it with every default filled in."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a table of sections, got {type(raw).__name__}")
    for section, body in raw.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{section}: unknown section; allowed: {', '.join(SECTIONS)}"
                f"{did_you_mean(section, SECTIONS)}"
            )
        if not isinstance(body, Mapping):
            raise ConfigError(f"{section}: expected a table [{section}], got {body!r}")

    out: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        body = dict(raw.get(section, {}))
        name = None
        if section in ("topology", "data", "model", "algorithm"):
            default_names = {
                "topology": TOPOLOGY_KEYS["name"].default,
                "data": DEFAULT_DATA,
                "model": MODEL_KEYS["name"].default,
                "algorithm": DEFAULT_ALGORITHM,
            }
            name = body.get("name", default_names[section])
            field = f"{section}.name"
            if not isinstance(name, str):
                raise ConfigError(f"{field}: got {name!r}, expected a string")
            if name not in _names(section):
                raise unknown_name(field, name, _names(section))
        schema = _section_schema(section, name)
        resolved = {}
        for key, value in body.items():
            if key not in schema:
                allowed = ", ".join(sorted(schema))
                what = f" for {name!r}" if name else ""
                raise ConfigError(
                    f"{section}.{key}: unknown key{what}; allowed: {allowed}"
                    f"{did_you_mean(key, schema)}"
                )
            resolved[key] = _check_value(f"{section}.{key}", value, schema[key])
        for key, spec in schema.items():
            if key not in resolved:
                if spec.required:
                    raise ConfigError(
                        f"{section}.{key}: missing; {name!r} needs it ({_describe(spec)})"
                    )
                resolved[key] = copy.deepcopy(spec.default)
        out[section] = resolved
    _check_combinations(out, raw)
    return out


def _check_combinations(cfg: dict[str, dict[str, Any]], raw: Mapping[str, Any]) -> None:
    run, topo, alg = cfg["run"], cfg["topology"], cfg["algorithm"]
    if topo["seed"] is None:
        topo["seed"] = run["seed"]
    from .network import SERVER_RULES

    rules = {*topologies.MIXING_RULES, *SERVER_RULES}
    if topo["mixing"] not in rules:
        raise unknown_name("topology.mixing", topo["mixing"], rules)
    from .algorithms import ALGORITHMS

    spec = ALGORITHMS[alg["name"]]
    if spec.trains:
        raw_alg = raw.get("algorithm", {})
        if raw_alg.get("local_steps", 0) > 0 and "local_epochs" not in raw_alg:
            alg["local_epochs"] = 0
        if (alg["local_epochs"] > 0) == (alg["local_steps"] > 0):
            raise ConfigError(
                f"algorithm.local_epochs / algorithm.local_steps: got {alg['local_epochs']} and "
                f"{alg['local_steps']}; set exactly one of them to a positive integer"
            )
        from .optim import check_optimizer

        check_optimizer(alg)
    _check_network(cfg, spec)
    if not spec.uses_data:
        data_name = raw.get("data", {}).get("name")
        if data_name not in (None, "none"):
            raise ConfigError(
                f"data.name: got {data_name!r}, but algorithm {alg['name']!r} uses no data; "
                "allowed: 'none' (or leave [data] out)"
            )
        cfg["data"] = {"name": "none"}
    elif cfg["data"]["name"] == "none":
        raise ConfigError(
            f"data.name: got 'none', but algorithm {alg['name']!r} trains on data; "
            f"allowed: {', '.join(n for n in _names('data') if n != 'none')}"
        )


def _check_network(cfg: dict[str, dict[str, Any]], spec) -> None:
    """Schedules, faults, asynchronous gossip and compression that cannot work together."""
    topo, alg, faults, comp = cfg["topology"], cfg["algorithm"], cfg["faults"], cfg["compression"]
    schedule = topo["schedule"]
    graphs = topo["graphs"]
    if schedule == "list":
        if (
            not isinstance(graphs, list)
            or not graphs
            or not all(isinstance(g, str) for g in graphs)
        ):
            raise ConfigError(
                f"topology.graphs: got {graphs!r}, expected a non-empty list of builder names "
                'or edge-list files (schedule = "list")'
            )
    elif graphs not in ([], None):
        raise ConfigError(
            f"topology.graphs: got {graphs!r}, but it is used only with schedule = 'list' "
            f"(schedule is {schedule!r})"
        )
    lo, hi = (faults["straggler_work"] + [None, None])[:2]
    if len(faults["straggler_work"]) != 2 or lo > hi:
        raise ConfigError(
            f"faults.straggler_work: got {faults['straggler_work']!r}, expected [a, b] "
            "with 0 <= a <= b <= 1"
        )
    uses_inbox = spec.name in ("graph_mtl", "propagation")
    pairwise = alg.get("gossip", "sync") == "pairwise"
    if pairwise and schedule != "static":
        raise ConfigError(
            f"algorithm.gossip: got 'pairwise', which picks edges of the static graph; "
            f"allowed with topology.schedule = 'static' only (got {schedule!r})"
        )
    if uses_inbox and schedule not in ("static", "random_matching"):
        raise ConfigError(
            f"topology.schedule: got {schedule!r}, but {spec.name!r} reads a fixed neighbour "
            "table; allowed: 'static', 'random_matching'"
        )
    if uses_inbox and pairwise:
        raise ConfigError(f"algorithm.gossip: got 'pairwise', not supported by {spec.name!r}")
    if comp["name"] != "none" or comp["dtype"] != "float32":
        if not spec.communicates:
            raise ConfigError(
                f"compression.name: got {comp['name']!r}, but algorithm {spec.name!r} sends "
                "nothing; allowed: 'none'"
            )
        if uses_inbox or pairwise:
            raise ConfigError(
                f"compression.name: got {comp['name']!r}; compression works with synchronous "
                f"gossip averaging (dsgd, dem, average), not with "
                f"{'pairwise gossip' if pairwise else spec.name!r}"
            )
    if topo["mixing"] == "sample_weighted" and (
        schedule != "static" or any(faults[k] for k in ("node_drop", "link_drop", "churn"))
    ):
        raise ConfigError(
            "topology.mixing: 'sample_weighted' is a server's average; it cannot be combined "
            "with time-varying schedules or faults"
        )


# --------------------------------------------------------------------------- Config object
def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``dotted = "a.b"`` (creating tables)."""
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{dotted}: expected a dotted key SECTION.KEY such as 'algorithm.lr'")
    section, key = parts
    if section not in SECTIONS:
        raise ConfigError(
            f"{dotted}: unknown section {section!r}; allowed: {', '.join(SECTIONS)}"
            f"{did_you_mean(section, SECTIONS)}"
        )
    node = tree.setdefault(section, {})
    if not isinstance(node, dict):
        raise ConfigError(f"{section}: expected a table, got {node!r}")
    node[key] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` where VALUE is TOML (bare words are taken as strings)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. --set algorithm.lr=0.05")
    key, value = text.split("=", 1)
    key = key.strip()
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key, parsed


class Config(Mapping):
    """A resolved config: a read-only mapping of sections to dicts of values."""

    def __init__(self, raw: Mapping[str, Any] | None = None, *, source: str | None = None):
        self._raw = copy.deepcopy(dict(raw or {}))
        self._resolved = resolve(self._raw)
        self.source = source

    # Mapping protocol
    def __getitem__(self, section: str) -> dict[str, Any]:
        return self._resolved[section]

    def __iter__(self):
        return iter(self._resolved)

    def __len__(self) -> int:
        return len(self._resolved)

    def get(self, dotted: str, default: Any = None) -> Any:  # type: ignore[override]
        section, _, key = dotted.partition(".")
        if not key:
            return self._resolved.get(section, default)
        return self._resolved.get(section, {}).get(key, default)

    @property
    def raw(self) -> dict[str, Any]:
        return copy.deepcopy(self._raw)

    def override(self, overrides: Mapping[str, Any]) -> Config:
        """A new config with dotted-key overrides applied to the user's raw values."""
        raw = self.raw
        for k, v in overrides.items():
            set_dotted(raw, k, v)
        return Config(raw, source=self.source)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._resolved)

    def to_toml(self) -> str:
        """The resolved config as TOML (keys whose value is None are left out)."""
        clean = {
            s: {k: v for k, v in body.items() if v is not None}
            for s, body in self._resolved.items()
        }
        return tomli_w.dumps(clean)

    def __repr__(self) -> str:
        return f"Config({self._resolved!r})"


def read_toml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Read a TOML file, with one-line errors for a missing file or invalid TOML."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None


def load_config(
    path: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> Config:
    """Load a TOML config file (or a dict), apply dotted overrides, resolve and validate."""
    if isinstance(path, Mapping):
        raw, source = copy.deepcopy(dict(path)), None
    else:
        raw, source = read_toml(path, "config file"), str(path)
    for k, v in (overrides or {}).items():
        set_dotted(raw, k, v)
    return Config(raw, source=source)
