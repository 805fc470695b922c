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

    cfg = load_config("exp.toml", overrides={"run.rounds": 50}, unset=["topology.p"])
    cfg["algorithm"]["lr"], cfg.get("algorithm.lr")
    cfg2 = cfg.override({"topology.name": "ring"})

An override that changes ``topology.name``, ``data.name``, ``model.name`` or
``algorithm.name`` away from the file's drops the file's keys of that section the new
builder, generator, model or algorithm does not take, with a warning per key
(:func:`apply_overrides`); keys given in the overrides themselves are never dropped.
"""

from __future__ import annotations

import copy
import importlib.util
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

import topologies

from .algorithms import ALGORITHMS, algorithm_keys, needs_of
from .errors import ConfigError, did_you_mean, unknown_name
from .schema import (  # noqa: F401  (re-exported: the schema's names, as before)
    AGGREGATION_KEYS,
    ATTACK_KEYS,
    COMPRESSION_KEYS,
    COST_KEYS,
    DEFAULT_ALGORITHM,
    DEFAULT_DATA,
    FAULT_KEYS,
    GOSSIP_KEYS,
    MODEL_KEYS,
    OPTIMIZER_KEYS,
    PRIVACY_KEYS,
    RUN_KEYS,
    SECTIONS,
    TOPOLOGY_KEYS,
    Key,
    check_value,
    describe,
    keys_from_defaults,
)

GIVEN = "given"  # topology.name / topology.mixing of a graph or matrix given in Python
NAMED_SECTIONS = ("topology", "data", "model", "algorithm")


def default_name(section: str) -> str:
    """The ``name`` a named section has when the config gives none."""
    return {
        "topology": TOPOLOGY_KEYS["name"].default,
        "data": DEFAULT_DATA,
        "model": MODEL_KEYS["name"].default,
        "algorithm": DEFAULT_ALGORITHM,
    }[section]


def _registry_keys(section: str, name: str) -> dict[str, Key]:
    """Keys that belong to the named builder / generator / model / algorithm."""
    if section == "topology":
        if name == GIVEN:  # a graph given to assemble(cfg, graph=G): no builder keys
            return {}
        return keys_from_defaults(topologies.builder_params(name))
    if section == "data":
        from .data import dataset_params

        return keys_from_defaults(dataset_params(name))
    if section == "model":
        from .models import model_params

        return keys_from_defaults(model_params(name))
    if section == "algorithm":
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
    if section == "attack":
        return dict(ATTACK_KEYS)
    if section == "privacy":
        return dict(PRIVACY_KEYS)
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
            "storage": Key(
                "float32",
                "str",
                choices=("float32", "bfloat16", "float16"),
                help="dtype the float features are stored in (16 bits: half the memory and "
                "bytes per round; models compute in float32)",
            ),
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
        if section in NAMED_SECTIONS:
            name = body.get("name", default_name(section))
            field = f"{section}.name"
            if not isinstance(name, str):
                raise ConfigError(f"{field}: got {name!r}, expected a string")
            given = section == "topology" and name == GIVEN
            if name not in _names(section) and not given:
                raise unknown_name(field, name, _names(section))
        schema = _section_schema(section, name)
        resolved = {}
        for key, value in body.items():
            if key not in schema:
                allowed = ", ".join(sorted(schema))
                if section == "algorithm":
                    _refuse_foreign_algorithm_key(key, name, allowed)
                what = f" for {name!r}" if name else ""
                raise ConfigError(
                    f"{section}.{key}: unknown key{what}; allowed: {allowed}"
                    f"{did_you_mean(key, schema)}"
                )
            resolved[key] = check_value(f"{section}.{key}", value, schema[key])
        for key, spec in schema.items():
            if key not in resolved:
                if spec.required:
                    raise ConfigError(
                        f"{section}.{key}: missing; {name!r} needs it ({describe(spec)})"
                    )
                resolved[key] = copy.deepcopy(spec.default)
        out[section] = resolved
    _check_combinations(out, raw)
    return out


def _refuse_foreign_algorithm_key(key: str, name: str, allowed: str) -> None:
    """A gossip key for an algorithm that sends nothing, an optimizer key for one that
    does no local work: say why, naming both settings."""
    spec = ALGORITHMS[name]
    if key in GOSSIP_KEYS and not spec.communicates:
        why = "sends nothing, so it has no gossip settings"
    elif key == "finetune_epochs" and not spec.trains:
        why = "does no local work, so it has nothing to fine-tune"
    elif key in OPTIMIZER_KEYS and not spec.trains:
        why = "does no local work, so it has no optimizer settings"
    else:
        return
    raise ConfigError(f"algorithm.{key}: algorithm.name = {name!r} {why}; allowed: {allowed}")


def _check_combinations(cfg: dict[str, dict[str, Any]], raw: Mapping[str, Any]) -> None:
    run, topo, alg = cfg["run"], cfg["topology"], cfg["algorithm"]
    if topo["seed"] is None:
        topo["seed"] = run["seed"]
    from .network import SERVER_RULES

    rules = {*topologies.MIXING_RULES, *SERVER_RULES}
    if topo["mixing"] not in rules and topo["mixing"] != GIVEN:
        raise unknown_name("topology.mixing", topo["mixing"], rules)
    if run["devices"] > topo["n"]:
        raise ConfigError(
            f"run.devices: got {run['devices']}, but topology.n = {topo['n']} and each device "
            f"holds at least one node; allowed: a divisor of {topo['n']}"
        )
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
        _check_training(alg)
        _check_finetune(alg, spec)
    _check_network(cfg)
    from .adversary import check_attack
    from .exchange import check_settings
    from .privacy import check_privacy

    check_settings(cfg, needs_of(alg))
    check_attack(cfg, spec)
    check_privacy(cfg, spec)
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
    else:
        _check_data_model(cfg["data"]["name"], cfg["model"]["name"])
        _check_known_components(cfg, needs_of(alg).components_known)


FMMC_RULES = ("fmmc", "fmmc_zero_diagonal")
INT32_MAX = 2**31 - 1
# optax optimizers local training cannot drive, and why
UNSUPPORTED_OPTIMIZERS = {
    "lbfgs": "it runs a line search that needs the loss itself (update(..., value=, grad=, "
    "value_fn=)), and local training passes only gradients",
}
LM_DATA = ("dialects",)  # data sets of next-token prediction (task "lm": a label per position)
SEQUENCE_MODELS = ("tiny_lm",)  # models with one output per position
USER_MODELS = ("flax", "equinox")  # any output shape: checked when the model is built


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def _check_training(alg: dict[str, Any]) -> None:
    """The optimizer and its schedule, for an algorithm that trains."""
    from .optim import _optax_optimizers, check_optimizer

    name = alg["optimizer"]
    if name in UNSUPPORTED_OPTIMIZERS:
        allowed = [o for o in _optax_optimizers() if o not in UNSUPPORTED_OPTIMIZERS]
        raise ConfigError(
            f"algorithm.optimizer: got {name!r}, but {UNSUPPORTED_OPTIMIZERS[name]}; "
            f"allowed: {', '.join(allowed)}"
        )
    check_optimizer(alg)
    if alg["schedule"] == "cosine" and alg["lr_min"] > alg["lr"]:
        raise ConfigError(
            f"algorithm.lr_min: got {alg['lr_min']}, above algorithm.lr = {alg['lr']}, so "
            "the cosine schedule would raise the learning rate over the run; expected "
            "0 <= lr_min <= lr"
        )


def _check_finetune(alg: dict[str, Any], spec) -> None:
    """``algorithm.finetune_epochs`` for an algorithm whose local update trains what it
    scores; one that declares otherwise (``AlgorithmSpec.finetunes = False``: its local
    update trains a model its score never reads) would report unchanged scores."""
    k = alg["finetune_epochs"]
    if k > 0 and not spec.finetunes:
        raise ConfigError(
            f"algorithm.finetune_epochs: got {k}, but algorithm.name = {alg['name']!r} scores "
            "a model its local update does not train, so fine-tuning would change nothing; "
            "allowed: 0"
        )


def _check_known_components(cfg: dict[str, dict[str, Any]], wanted: int) -> None:
    """An algorithm that reads each training sample's true component (``Needs.
    components_known``, D-EM's oracle) needs data that record that many components."""
    if not wanted:
        return
    from .data import DATASETS
    from .data.base import recorded_components

    data = cfg["data"]
    params = {k: v for k, v in data.items() if k != "name"}
    have = recorded_components(DATASETS.get(data["name"]), params)
    if have != wanted:
        what = f"record {have} components" if have else "record no sample's component"
        raise ConfigError(
            f"algorithm.responsibilities: got 'oracle' with algorithm.components = {wanted}, "
            f"but data.name = {data['name']!r} with these settings {what}; allowed: data "
            f"whose generator records {wanted} (fedem_synthetic, or digits / mnist1d with "
            f"partition = 'mixture' and components = {wanted})"
        )


def _check_data_model(data: str, model: str) -> None:
    """Data and model that cannot work together: a next-token data set needs a model with
    an output per position, and such a model needs next-token data."""
    if data in LM_DATA and model not in SEQUENCE_MODELS + USER_MODELS:
        raise ConfigError(
            f"model.name: got {model!r}, but data.name = {data!r} is next-token prediction "
            "(a label per position of each sequence) and needs a sequence model; allowed: "
            f"{', '.join(repr(m) for m in SEQUENCE_MODELS)} (or a flax / equinox module "
            "returning (batch, positions, vocab))"
        )
    if model in SEQUENCE_MODELS and data not in LM_DATA:
        why = " (LEAF Shakespeare: the one character after each 80-character string)"
        why = why if data == "leaf" else ""
        raise ConfigError(
            f"model.name: got {model!r}, a language model predicting the next token at "
            f"every position, but data.name = {data!r} gives one label per sample{why}; "
            f"allowed with {model!r}: data.name = {', '.join(repr(d) for d in LM_DATA)}"
        )


def _check_network(cfg: dict[str, dict[str, Any]]) -> None:
    """Values of the network sections that are wrong on their own; combinations of an
    algorithm, its exchange, the schedule, faults and compression are checked by the
    exchanges (:func:`p2p_fmtl.exchange.check_settings`)."""
    topo, faults = cfg["topology"], cfg["faults"]
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
    if faults["node_drop"] >= 1:
        raise ConfigError(
            f"faults.node_drop: got {faults['node_drop']}, but then every node is down every "
            "round and nothing trains or gossips; expected a probability in [0, 1)"
        )
    lo, hi = (faults["straggler_work"] + [None, None])[:2]
    if len(faults["straggler_work"]) != 2 or lo > hi:
        raise ConfigError(
            f"faults.straggler_work: got {faults['straggler_work']!r}, expected [a, b] "
            "with 0 <= a <= b <= 1"
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
        """A new config with dotted-key overrides applied to the user's raw values (a new
        name drops the old one's keys, with a warning each: :func:`apply_overrides`)."""
        return Config(apply_overrides(self._raw, overrides), source=self.source)

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
    """Read a TOML file, with one-line errors for a missing, unreadable, non-UTF-8 or
    invalid file (a UTF-8 byte-order mark is allowed)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the {what} ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            f"TOML files are UTF-8: save the {what} as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None


def _split(dotted: Any, what: str) -> tuple[str, str]:
    if not isinstance(dotted, str) or dotted.count(".") != 1 or not all(dotted.split(".")):
        raise ConfigError(
            f"{what} {dotted!r}: expected a dotted key SECTION.KEY such as 'topology.p'"
        )
    section, key = dotted.split(".")
    return section, key


def unset_keys(raw: dict[str, Any], keys: list[str] | tuple[str, ...]) -> None:
    """Remove dotted keys from a raw config (in place); a key it does not hold is an error
    naming the keys its section does hold."""
    if isinstance(keys, str):
        keys = [keys]
    for dotted in keys:
        section, key = _split(dotted, "unset")
        body = raw.get(section)
        if not isinstance(body, dict) or key not in body:
            held = sorted(body) if isinstance(body, dict) else []
            where = f"[{section}] holds {', '.join(held)}" if held else f"it has no [{section}]"
            raise ConfigError(f"unset {dotted}: not set in the config; {where}")
        del body[key]
        if not body:
            del raw[section]


def apply_overrides(
    base: Mapping[str, Any], overrides: Mapping[str, Any], *, warn: bool = True
) -> dict[str, Any]:
    """The base's raw config with dotted overrides, minus the base's keys a new name rejects.

    When the overrides change ``topology.name``, ``data.name``, ``model.name`` or
    ``algorithm.name`` away from the base's, the base's keys of that section that the new
    builder, generator, model or algorithm does not take are dropped (with ``warn``, a
    ``UserWarning`` each: ``"topology.p: dropped (not a key of 'ring')"``); an algorithm
    that uses no data drops the base's ``[data]``.  Keys given in the overrides are never
    dropped: one the new name does not take is still an error when the config resolves.
    """
    raw = copy.deepcopy(dict(base))
    for k, v in overrides.items():
        set_dotted(raw, k, copy.deepcopy(v))
    given = {tuple(k.split(".", 1)) for k in overrides}
    dropped: list[str] = []
    for section in NAMED_SECTIONS:
        base_body = base.get(section, {})
        if (section, "name") not in given or not isinstance(base_body, Mapping):
            continue
        old, new = base_body.get("name", default_name(section)), raw[section]["name"]
        known = new in _names(section) or (section == "topology" and new == GIVEN)
        if new == old or not isinstance(new, str) or not known:
            continue  # an unknown or malformed name: resolution reports it
        schema = _section_schema(section, new)
        for key in base_body:
            if (section, key) not in given and key not in schema:
                del raw[section][key]
                dropped.append(f"{section}.{key}: dropped (not a key of {new!r})")
    alg_name = raw["algorithm"]["name"] if ("algorithm", "name") in given else None
    base_data, base_alg = base.get("data"), base.get("algorithm", {})
    if isinstance(alg_name, str) and alg_name in ALGORITHMS and isinstance(base_data, Mapping):
        old = base_alg.get("name", DEFAULT_ALGORITHM) if isinstance(base_alg, Mapping) else None
        if not ALGORITHMS[alg_name].uses_data and alg_name != old:
            for key in base_data:
                if ("data", key) not in given and key in raw.get("data", {}):
                    del raw["data"][key]
                    dropped.append(f"data.{key}: dropped (algorithm {alg_name!r} uses no data)")
            if not raw["data"]:
                del raw["data"]
    if warn:
        for line in dropped:
            warnings.warn(line, UserWarning, stacklevel=3)
    return raw


def load_config(
    path: str | Path | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    unset: list[str] | tuple[str, ...] | None = None,
) -> Config:
    """Load a TOML config file (or a dict), remove the dotted keys in ``unset``, apply the
    dotted ``overrides`` (:func:`apply_overrides`), resolve and validate."""
    if isinstance(path, Mapping):
        raw, source = copy.deepcopy(dict(path)), None
    else:
        raw, source = read_toml(path, "config file"), str(path)
    unset_keys(raw, unset or [])
    return Config(apply_overrides(raw, overrides or {}), source=source)
