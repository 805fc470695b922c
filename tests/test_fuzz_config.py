"""Fuzzed configs: either a valid config or a one-line ConfigError, never anything else."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p_fmtl import ConfigError, load_config
from p2p_fmtl.config import SECTIONS, parse_override

KEYS = {
    "run": ["seed", "rounds", "eval_every", "devices"],
    "topology": [
        "name",
        "n",
        "mixing",
        "seed",
        "operator",
        "schedule",
        "graphs",
        "resample_p",
        "p",
        "k",
        "d",
        "beta",
        "m",
        "rows",
        "radius",
        "groups",
        "p_in",
        "p_out",
        "path",
        "bridges",
    ],
    "data": [
        "name",
        "dim",
        "components",
        "alpha",
        "noise",
        "n_test",
        "variant",
        "seed",
        "holdout_nodes",
        "bucketing",
        "max_buckets",
        "clusters",
        "samples",
        "path",
        "task",
    ],
    "model": ["name", "loss", "hidden", "activation"],
    "algorithm": [
        "name",
        "lr",
        "batch_size",
        "local_epochs",
        "local_steps",
        "optimizer",
        "momentum",
        "weight_decay",
        "schedule",
        "milestones",
        "gamma",
        "components",
        "lam",
        "relation",
        "order",
        "shared",
        "mu",
        "dim",
        "init",
    ],
    "faults": ["node_drop", "link_drop", "straggler", "straggler_work", "churn", "reweight"],
    "compression": ["name", "ratio", "levels", "method", "gamma", "dtype"],
    "cost": ["enabled", "latency_s"],
}
NAMES = [
    "ring",
    "torus",
    "erdos_renyi",
    "complete",
    "dsgd",
    "dem",
    "local",
    "graph_mtl",
    "average",
    "propagation",
    "linear",
    "mlp",
    "fedem_synthetic",
    "clustered_linear",
    "npz",
    "metropolis",
    "sgd",
    "adam",
    "constant",
    "multistep",
    "cosine",
    "none",
    "top_k",
    "qsgd",
    "random_matching",
    "one_peer_exponential",
]

scalars = st.one_of(
    st.integers(-5, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(NAMES),
    st.text(max_size=8),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)


@st.composite
def raw_configs(draw):
    raw = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "bogus"]), max_size=4, unique=True)):
        keys = KEYS.get(section, ["x"]) + ["zzz"]
        body = draw(st.dictionaries(st.sampled_from(keys), values, max_size=4))
        raw[section] = body
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_configs())
def test_random_configs_resolve_or_raise_config_error(raw):
    try:
        cfg = load_config(raw)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert set(cfg) == set(SECTIONS)
    load_config(cfg.to_dict())  # the resolved config is itself valid


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_random_overrides_parse_or_raise_config_error(text):
    try:
        key, value = parse_override(text)
        load_config({}, overrides={key: value})
    except ConfigError as e:
        assert "\n" not in str(e)


COMMON_TOPOLOGY_KEYS = {"name", "n", "mixing", "seed", "operator"}
TOPO_PARAMS = [k for k in KEYS["topology"] if k not in COMMON_TOPOLOGY_KEYS] + [
    "max_tries",
    "bogus",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from([*__import__("topologies").BUILDERS, "rign", ""]),
    n=st.one_of(st.integers(-3, 70), st.floats(allow_nan=True), st.none(), st.text(max_size=3)),
    params=st.dictionaries(st.sampled_from(TOPO_PARAMS), scalars, max_size=3),
    seed=st.one_of(st.integers(-2, 5), st.none()),
)
def test_random_topologies_build_or_raise_topology_error(name, n, params, seed):
    """Any size and parameters: a connected graph on 0..n-1, or a one-line TopologyError."""
    import networkx as nx

    import topologies

    try:
        G = topologies.build(name, n, seed=seed, **params)
    except topologies.TopologyError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert nx.is_connected(G) and sorted(G) == list(range(G.number_of_nodes()))
    W = topologies.mixing_matrix(G, "metropolis")
    topologies.validate_mixing(W, G)
