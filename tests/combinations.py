"""The combination matrix: algorithm × exchange × schedule × fault × cost model × mode.

Every combination of the axes below is a *case*: a tiny run (8 nodes, 4 rounds).  Loading
its config either refuses it with one line that names two settings, or the case runs,
and then it must keep these invariants (checked by ``tests/test_combinations.py``):

(a) the byte ledger equals the messages that actually crossed an edge, recounted here
    from the run's own network (each round's W, alive nodes and live edges, replayed
    with the run's keys) times the encoded size of one message, computed here from the
    compressor's definition;
(b) a batched run (``run_batch`` of this case and a second seed) equals the run alone
    to 1e-6;
(c) on 2 (forced CPU) devices the run equals the 1-device run to 1e-5;
    (b) and (c) compare the parameters and the final evaluation's train loss: a mode with
    ``+finetune`` runs the case with ``algorithm.finetune_epochs = 1`` (algorithms that
    take it), so that the loss is of a fine-tuned copy, and checks under (d) that
    fine-tuning changed it;
(d) a fault, compression or gossip-period setting with a non-zero rate changes the
    result against the same case without it;
(e) where the docs say so (``average``: gossip, pairwise and CHOCO exchanges; push-sum
    keeps the y-weighted sum) the network mean is preserved, and plain gossip's final
    values are the product of the replayed W's applied to the starting values.

A new algorithm joins the matrix by being registered in ``p2p_fmtl.algorithms``; a new
exchange, schedule, fault or compressor by getting an entry in the tables below.

Run as a worker (``python tests/combinations.py worker CASES.json``, with 2 forced CPU
devices) it runs the given cases and prints one JSON line per case, so that the test can
put each case under a timeout (a hang fails) and use both cores.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import time
import traceback
from typing import Any

import jax
import numpy as np

ROUNDS = 4
N = 8
# Worker processes run tiny programs a few rounds each: LLVM's optimisation passes cost
# them more than they save (about half of their compile time).
FAST_COMPILE = " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _algorithm_variants() -> dict[str, dict[str, Any]]:
    from p2p_fmtl.algorithms import ALGORITHMS

    variants = {name: {"name": name} for name in ALGORITHMS}
    variants.update(
        {
            "dsgd/decoupled": {"name": "dsgd", "aggregation": "decoupled", "rho": 0.5},
            "graph_mtl/laplacian": {"name": "graph_mtl", "order": "local_then_laplacian"},
            "graph_mtl/learned": {"name": "graph_mtl", "relation": "learned"},
            "propagation/graph": {"name": "propagation", "relation": "graph"},
            # D-EM's symmetry-breaking start (a step counter and a draw in the state)
            # and its oracle (reads each sample's true component from the node data)
            "dem/warm": {"name": "dem", "warm_start": "random_node", "warm_rounds": 2},
            "dem/oracle": {"name": "dem", "responsibilities": "oracle"},
        }
    )
    return variants


# variants that differ from another only in the relation weights their inbox carries: in
# the full matrix, not in the suite's covering (graph_mtl/learned on 2 devices has a
# regression test of its own)
FULL_ONLY = ("graph_mtl/learned", "propagation/graph")

EXCHANGES: dict[str, dict[str, dict[str, Any]]] = {
    "sync": {},
    "every2": {"algorithm": {"gossip_every": 2}},
    "pairwise": {"algorithm": {"gossip": "pairwise", "gossip_ticks": 3}},
    "choco_top_k": {"compression": {"name": "top_k", "ratio": 0.5, "gamma": 0.5}},
    "plain_qsgd": {"compression": {"name": "qsgd", "levels": 3, "method": "plain"}},
    "deepsqueeze_sign": {
        "compression": {"name": "sign", "method": "plain", "error_feedback": True, "gamma": 0.5}
    },
    "plain_random_k_f16": {
        "compression": {"name": "random_k", "ratio": 0.5, "dtype": "float16", "method": "plain"}
    },
}
SCHEDULES: dict[str, dict[str, Any]] = {
    "static": {},
    "random_matching": {"schedule": "random_matching"},
    "one_peer_exponential": {"schedule": "one_peer_exponential"},
    "resample": {"schedule": "resample", "resample_p": 0.5},
    "list": {"schedule": "list", "graphs": ["ring", "star"]},
}
FAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "node_drop": {"node_drop": 0.4},
    "link_drop": {"link_drop": 0.5},
    "churn": {"churn": 0.3, "churn_rounds": 2},
    "straggler": {"straggler": 0.6, "straggler_work": [0.2, 0.6]},
}
COSTS: dict[str, dict[str, Any]] = {"off": {}, "on": {"enabled": True, "latency_s": 0.001}}
MODES = ("single", "batched", "devices")
FINETUNE = "+finetune"  # a mode's suffix: the case with algorithm.finetune_epochs = 1
STORAGE16 = "+bf16"  # a mode's suffix: the case with data.storage = "bfloat16"
PRIVATE = "+dp"  # a mode's suffix: the case with DP-SGD local training ([privacy])
ATTACKED = "+attack"  # a mode's suffix: 2 of the 8 nodes send ALIE messages
ROBUST = "+robust"  # ... sign-flip nodes redrawn each round, trimmed-mean aggregation
# what each suffix adds to a case's config (sections merged key by key)
SUFFIXES: dict[str, dict[str, dict[str, Any]]] = {
    STORAGE16: {"data": {"storage": "bfloat16"}},
    PRIVATE: {"privacy": {"enabled": True, "noise_multiplier": 0.5, "clip_norm": 1.0}},
    ATTACKED: {"attack": {"kind": "alie", "fraction": 0.25}},
    ROBUST: {
        "attack": {"kind": "sign_flip", "fraction": 0.25, "redraw": True},
        "algorithm": {"robust": "trimmed_mean", "trim": 1},
    },
}
AXES = ("algorithm", "exchange", "schedule", "fault", "cost")


def all_cases() -> list[tuple[str, ...]]:
    """Every (algorithm, exchange, schedule, fault, cost) combination."""
    return list(itertools.product(_algorithm_variants(), EXCHANGES, SCHEDULES, FAULTS, COSTS))


def case_id(case) -> str:
    return "|".join(case)


def trains(alg_name: str) -> bool:
    """Whether an algorithm variant does local work (the cost model charges compute)."""
    from p2p_fmtl.algorithms import ALGORITHMS

    return ALGORITHMS[_algorithm_variants()[alg_name]["name"]].trains


def accepts(case, mode: str) -> bool:
    """Whether a case's config loads with the settings of ``mode``'s suffixes."""
    from p2p_fmtl import ConfigError

    try:
        load(case_config(case, mode=mode))
    except ConfigError:
        return False
    return True


def uses_data(alg_name: str) -> bool:
    """Whether an algorithm variant reads node data (so ``data.storage`` applies)."""
    from p2p_fmtl.algorithms import ALGORITHMS

    return ALGORITHMS[_algorithm_variants()[alg_name]["name"]].uses_data


def finetunes(alg_name: str) -> bool:
    """Whether an algorithm variant takes ``algorithm.finetune_epochs = 1`` (its config
    loads with it: it trains, and its local update trains what it scores)."""
    from p2p_fmtl import ConfigError

    try:
        load(case_config((alg_name, "sync", "static", "none", "off"), finetune=1))
    except ConfigError:
        return False
    return True


def case_config(
    case,
    seed: int = 0,
    devices: int = 1,
    finetune: int = 0,
    mode: str = "",
) -> dict[str, Any]:
    """The raw config of a case (``finetune``: algorithm.finetune_epochs, when not 0;
    ``mode``: the run mode, whose :data:`SUFFIXES` add their settings)."""
    from p2p_fmtl.algorithms import ALGORITHMS

    alg_name, ex, sched, fault, cost = case
    alg = dict(_algorithm_variants()[alg_name])
    spec = ALGORITHMS[alg["name"]]
    if spec.trains:
        alg.update(batch_size=16, local_steps=2, lr=0.05)
    if finetune:
        alg["finetune_epochs"] = finetune
    if not spec.uses_data:
        alg["dim"] = 4
    cfg: dict[str, Any] = {
        "run": {"rounds": ROUNDS, "eval_every": ROUNDS, "seed": seed, "devices": devices},
        "topology": {"name": "ring", "n": N, "seed": 0, **SCHEDULES[sched]},
        "algorithm": alg,
        "faults": dict(FAULTS[fault]),
        "cost": dict(COSTS[cost]),
    }
    if spec.uses_data:
        cfg["data"] = {"name": "fedem_synthetic", "dim": 4, "n_test": 8}
    for section, keys in EXCHANGES[ex].items():
        cfg.setdefault(section, {}).update(keys)
    for suffix, extra in SUFFIXES.items():
        if suffix in mode:
            for section, keys in extra.items():
                if section in cfg or section != "data":  # (no data: nothing to store)
                    cfg.setdefault(section, {}).update(keys)
    return cfg


def refusal(case) -> str | None:
    """The one-line refusal of a case, or ``None`` when its config loads."""
    from p2p_fmtl import ConfigError, load_config

    try:
        load_config(case_config(case))
    except ConfigError as e:
        return str(e)
    return None


def exchange_of(case) -> str:
    """The exchange an accepted case runs with (chosen from the config, nothing built)."""
    from p2p_fmtl.algorithms import needs_of
    from p2p_fmtl.exchange import check_settings

    cfg = load(case_config(case))
    return check_settings(cfg, needs_of(cfg["algorithm"])).name


def summary_counts(refused: dict) -> list[str]:
    """The lines of ``docs/combinations.md`` that state the matrix's size."""
    total = len(refused)
    n_ref = sum(m is not None for m in refused.values())
    return [
        f"- cases: **{total}** ({' × '.join(str(len(a)) for a in _axes())} combinations)",
        f"- refused when the config loads: **{n_ref}**",
        f"- accepted (they run): **{total - n_ref}**",
    ]


def _axes():
    return (_algorithm_variants(), EXCHANGES, SCHEDULES, FAULTS, COSTS)


def write_docs(path) -> None:
    """Regenerate ``docs/combinations.md`` from the matrix (counts and refusal reasons)."""
    import collections
    from pathlib import Path

    cases = all_cases()
    refused = {c: refusal(c) for c in cases}
    by_exchange = collections.Counter(exchange_of(c) for c in cases if refused[c] is None)
    reasons = collections.Counter(
        re.sub(r"'[^']*'", "'…'", m) for m in refused.values() if m is not None
    )
    algs = list(_algorithm_variants())
    rows = []
    for a in algs:
        cells = []
        for ex in EXCHANGES:
            sub = [c for c in cases if c[0] == a and c[1] == ex]
            ok = sum(refused[c] is None for c in sub)
            cells.append(f"{ok}/{len(sub)}")
        rows.append(f"| {a} | " + " | ".join(cells) + " |")
    text = [
        "# The combination matrix",
        "",
        "Generated by `python tests/combinations.py docs`; checked by "
        "`tests/test_combinations.py`.",
        "",
        "Every algorithm (and the variants that change how it exchanges) × exchange "
        "setting × schedule × fault × cost model is a case: a run of 8 nodes and "
        f"{ROUNDS} rounds.  Loading its config either refuses it with one line that names "
        "two settings, or accepts it, and then it runs alone, batched with a second seed "
        "(`run_batch`) and on 2 forced CPU devices, with these invariants: the byte ledger "
        "equals the messages that crossed an edge (recounted from the run's replayed "
        "network) × one message's encoded size; batched equals alone to 1e-6 and 2 devices "
        "equal 1 to 1e-5 (parameters and the final train loss); a fault, compression or "
        "gossip-period setting changes the result; "
        "`average` keeps the network mean under gossip, pairwise gossip and CHOCO (push-sum: "
        "the y-weighted sum), and plain gossip ends at the product of the replayed W's.",
        "",
        *summary_counts(refused),
        "",
        "Axes: algorithms "
        + ", ".join(f"`{a}`" for a in algs)
        + "; exchange settings "
        + ", ".join(f"`{e}`" for e in EXCHANGES)
        + "; schedules "
        + ", ".join(f"`{x}`" for x in SCHEDULES)
        + "; faults "
        + ", ".join(f"`{x}`" for x in FAULTS)
        + "; cost model off / on.",
        "",
        "Settings layered on a case (suffixes of its run mode, each an axis of the suite's "
        "all-pairs covering wherever the case's config accepts it): "
        + "; ".join(
            f"`{x}` = "
            + ", ".join(
                f"{sec}.{k} = {v!r}" for sec, keys in extra.items() for k, v in keys.items()
            )
            for x, extra in {FINETUNE: {"algorithm": {"finetune_epochs": 1}}, **SUFFIXES}.items()
        )
        + ".  With attackers or a robust rule, `average` is not expected to keep the "
        "network mean.",
        "",
        "Accepted cases by the exchange that runs them: "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_exchange.items()))
        + ".",
        "",
        "## Accepted / all, by algorithm and exchange setting",
        "",
        "| algorithm | " + " | ".join(EXCHANGES) + " |",
        "|---|" + "---:|" * len(EXCHANGES),
        *rows,
        "",
        "## Why cases are refused (values elided)",
        "",
        "| cases | message |",
        "|---:|---|",
        *(f"| {k} | {m} |" for m, k in reasons.most_common()),
        "",
        "## Which cases run",
        "",
        "`pytest tests/test_combinations.py` (part of the suite) runs an all-pairs covering "
        "of the accepted cases: every pair of values of two axes (algorithm, exchange "
        "setting, schedule, fault, cost model, and batched or 2 devices) that occurs in an "
        "accepted case occurs in a case that runs, each case alone plus batched or on 2 "
        "devices, except that an algorithm meets each exchange setting through its class "
        "(what the exchange sees of it, its declared needs: e.g. every algorithm that "
        "gossip-averages its shared part with one copy of local work is one class), while "
        "it meets every schedule, fault, cost model and mode itself.  One more axis of the "
        "covering is local fine-tuning before evaluation or not (`algorithm.finetune_epochs "
        "= 1`, for algorithms that take it): fine-tuned, the final train loss (of the "
        "fine-tuned copies) must also equal the run alone's, batched or on 2 devices, and "
        "differ from the untuned one's.  "
        "`P2P_FMTL_MATRIX=full pytest tests/test_combinations.py` runs every accepted case "
        "in both modes (fine-tuned when the algorithm takes it).",
        "",
    ]
    Path(path).write_text("\n".join(text))


# --------------------------------------------------------------------------- selection
def covering(cases, skip=()) -> list[tuple]:
    """A greedy all-pairs covering of ``cases`` (tuples of equal length): every pair of
    values of two positions that occurs in some case occurs in a chosen one, except the
    pairs of positions listed in ``skip``."""
    idx = range(len(cases[0])) if cases else ()
    pairs = [p for p in itertools.combinations(idx, 2) if p not in skip]
    need = {(i, c[i], j, c[j]) for c in cases for i, j in pairs}
    chosen, remaining = [], list(cases)
    while need:
        best, best_gain = None, 0
        for c in remaining:
            gain = sum((i, c[i], j, c[j]) in need for i, j in pairs)
            if gain > best_gain:
                best, best_gain = c, gain
        chosen.append(best)
        remaining.remove(best)
        for i, j in pairs:
            need.discard((i, best[i], j, best[j]))
    return chosen


def exchange_class(alg_name: str) -> str:
    """What an exchange sees of an algorithm variant: its declared needs (how it exchanges,
    its copies of local work, the relation weights its inbox carries)."""
    from p2p_fmtl.algorithms import needs_of

    case = (alg_name, "sync", "static", "none", "off")
    n = needs_of(load(case_config(case))["algorithm"])
    return f"{n.exchange}/{n.copies}/{n.relation}"


# --------------------------------------------------------------------------- expectations
def wire_bytes(dtype: str) -> int:
    return 2 if dtype in ("float16", "bfloat16") else 4


def bytes_per_message(leaf_sizes, comp: dict[str, Any], push_sum: bool) -> int:
    """One message's encoded bytes, from the compressors' definitions (per leaf)."""
    b = wire_bytes(comp["dtype"])
    total = 0
    for d in leaf_sizes:
        k = max(1, min(d, int(round(comp["ratio"] * d))))
        total += {
            "none": d * b,
            "top_k": k * (b + 4),  # values and int32 indices
            "random_k": k * b + 4,  # values and the shared seed
            "qsgd": b + math.ceil(d * (1 + math.ceil(math.log2(comp["levels"] + 1))) / 8),
            "sign": b + math.ceil(d / 8),
        }[comp["name"]]
    return total + (4 if push_sum else 0)


def expected_messages(kind: str, trace, u, v, ticks: int) -> int:
    """Messages that crossed an edge, recounted from the replayed network."""
    total = 0
    for t in range(len(trace["gossip"])):
        if not trace["gossip"][t]:
            continue
        alive, live = trace["alive"][t], trace["edge_alive"][t]
        if kind in ("gossip", "choco", "compressed"):
            off = trace["W"][t] - np.diag(np.diag(trace["W"][t]))
            total += int(np.count_nonzero(off > 0))  # j → i wherever W_ij > 0
        elif kind == "pairwise":
            total += 2 * ticks if live.any() else 0  # both ends of every tick
        elif kind == "inbox":
            total += 2 * int(np.sum(live & alive[u] & alive[v]))  # both ends of a live edge
    return total


# --------------------------------------------------------------------------- one case
def _run(cfg):
    """A run as ``p2p_fmtl.run`` does it, keeping the simulation and starting values."""
    from p2p_fmtl.runner import Simulation

    sim = Simulation(cfg)
    x0 = [np.asarray(x, np.float64) for x in jax.tree.leaves(sim.alg.shared(sim.state))]
    sim.evaluate()
    sim.advance(ROUNDS)
    sim.evaluate()
    return sim, sim.result(), x0


def _params_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def _loss_diff(a, b) -> float:
    """The final evaluations' mean train losses apart (0 for runs without data)."""
    la, lb = a.metrics[-1].get("train_loss"), b.metrics[-1].get("train_loss")
    return 0.0 if la is None and lb is None else abs(la - lb)


_CACHE: dict[str, Any] = {}


def _cached_params(case, mode: str = ""):
    """The final parameters of a case run alone with ``mode``'s suffixes (fine-tuning,
    which changes no parameter, aside)."""
    extras = "".join(x for x in SUFFIXES if x in mode)
    key = case_id(case) + extras
    if key not in _CACHE:
        _, res, _ = _run(load(case_config(case, mode=extras)))
        _CACHE[key] = res.params
    return _CACHE[key]


def load(raw):
    from p2p_fmtl import load_config

    return load_config(raw)


def run_case(case, mode: str, changes: bool = True) -> dict[str, Any]:
    """Run one case and measure everything the invariants need: alone, and batched with a
    second seed and/or on 2 devices (``mode``: ``"batched"``, ``"devices"`` or
    ``"batched+devices"``, each optionally followed by ``"+finetune"``); with ``changes``,
    also the same case without its fault, and without its compression or gossip period."""
    from p2p_fmtl.batched import run_batch

    alg_name, ex, sched, fault, cost = case
    out: dict[str, Any] = {"case": case_id(case), "mode": mode}
    why = refusal(case)
    if why is not None:
        return {**out, "status": "refused", "message": why}
    tune = int(FINETUNE in mode)
    cfg = load(case_config(case, finetune=tune, mode=mode))
    sim, res, x0 = _run(cfg)
    out["status"] = "ok"
    out["exchange"] = sim.exchange.name

    # (c) on 2 devices against 1 device
    if "devices" in mode:
        sim2, res2, _ = _run(load(case_config(case, devices=2, finetune=tune, mode=mode)))
        out["devices"] = {
            "params_diff": _params_diff(res.params, res2.params),
            "loss_diff": _loss_diff(res, res2),
            "shards": len(jax.tree.leaves(sim2.state)[0].sharding.device_set),
            "bytes": [res.metrics[-1]["bytes_total"], res2.metrics[-1]["bytes_total"]],
            "sim_time": [res.metrics[-1].get("sim_time_s"), res2.metrics[-1].get("sim_time_s")],
            "energy": [res.metrics[-1].get("energy_j"), res2.metrics[-1].get("energy_j")],
        }

    # (a) the ledger against the replayed network
    trace = sim.network_trace()
    net = sim.inputs.net
    u, v = np.asarray(net.u), np.asarray(net.v)
    message = sim.engine.message(sim.state)
    sizes = [int(np.prod(x.shape[1:])) for x in jax.tree.leaves(message)]
    comp = cfg["compression"]
    push_sum = getattr(sim.exchange, "push_sum", False)
    per_msg = bytes_per_message(sizes, comp, push_sum) if sim.exchange.name != "none" else 0
    ticks = cfg["algorithm"].get("gossip_ticks", 1)
    msgs = expected_messages(sim.exchange.name, trace, u, v, ticks)
    out["ledger"] = {
        "bytes_total": res.metrics[-1]["bytes_total"],
        "expected": msgs * per_msg + int(sim.setup_bytes.sum()),
        "message_bytes": res.summary["message_bytes"],
        "expected_message_bytes": per_msg,
        "nodes_bytes": sum(r["bytes_sent"] for r in res.nodes),
    }
    out["sim_time_s"] = res.metrics[-1].get("sim_time_s")
    out["energy_j"] = res.metrics[-1].get("energy_j")

    # (e) the network mean, and plain gossip as the product of the replayed W's (not
    # with Byzantine messages or a robust rule: neither keeps the mean, by design)
    byzantine = ATTACKED in mode or ROBUST in mode
    if not sim.spec.trains and not byzantine:
        x1 = [np.asarray(x, np.float64) for x in jax.tree.leaves(sim.alg.shared(sim.state))]
        a0, a1 = x0[0], x1[0]
        out["mean_drift"] = float(np.max(np.abs(a1.mean(0) - a0.mean(0))))
        if push_sum:
            y = np.asarray(sim.carry.exchange, np.float64)
            out["weighted_drift"] = float(np.max(np.abs((y[:, None] * a1).sum(0) - a0.sum(0))))
        if sim.exchange.name == "gossip" and not push_sum:
            x = a0
            for t in range(ROUNDS):
                if trace["gossip"][t]:
                    x = trace["W"][t] @ x
            out["product_error"] = float(np.max(np.abs(x - a1)))

    # (d) a setting with a non-zero rate changes the result
    out["changes"] = found = {}
    if tune:  # the same final state scored without fine-tuning (every node is seen)
        plain = sim.engine.evaluate(sim.state, sim.layout, sim.active, sim.borrow)["train_loss"]
        plain = float(np.sum(plain * sim.n_train) / np.sum(sim.n_train))
        found["finetune"] = abs(res.metrics[-1]["train_loss"] - plain)
    if not changes:
        pass
    elif fault != "none":
        off = (alg_name, ex, sched, "none", cost)
        found[f"faults:{fault}"] = _params_diff(res.params, _cached_params(off, mode))
    if changes and ex not in ("sync", "pairwise"):
        off = (alg_name, "sync", sched, fault, cost)
        if refusal(off) is None:
            found[f"exchange:{ex}"] = _params_diff(res.params, _cached_params(off, mode))

    # (b) batched (this case and another seed) against the run alone
    if "batched" in mode:
        other = load(case_config(case, seed=1, finetune=tune, mode=mode))
        batch = run_batch([cfg, other])
        b0 = batch[0]
        out["batched"] = {
            "params_diff": _params_diff(res.params, b0.params),
            "loss_diff": _loss_diff(res, b0),
            "bytes": [res.metrics[-1]["bytes_total"], b0.metrics[-1]["bytes_total"]],
            "sim_time": [res.metrics[-1].get("sim_time_s"), b0.metrics[-1].get("sim_time_s")],
            "energy": [res.metrics[-1].get("energy_j"), b0.metrics[-1].get("energy_j")],
            "seeds_differ": _params_diff(b0.params, batch[1].params) > 0,
        }
    return out


def worker(path: str) -> int:
    """Run the cases listed in ``path`` (JSON: [[case..., mode, changes], ...]), one JSON
    line each."""
    with open(path) as f:
        todo = json.load(f)
    for *case, mode, changes in todo:
        t0 = time.perf_counter()
        try:
            row = run_case(tuple(case), mode, changes)
        except Exception as e:  # an unexpected error is a failure of the case, not a crash
            row = {
                "case": case_id(case),
                "mode": mode,
                "status": "error",
                "message": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-3000:],
            }
        row["seconds"] = round(time.perf_counter() - t0, 3)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        sys.exit(worker(sys.argv[2]))
    if len(sys.argv) == 2 and sys.argv[1] == "docs":
        from pathlib import Path

        write_docs(Path(__file__).resolve().parent.parent / "docs" / "combinations.md")
        sys.exit(0)
    print("usage: python tests/combinations.py worker CASES.json | docs", file=sys.stderr)
    sys.exit(2)
