"""Real(istic) data: MNIST-1D, digits, dialects (tiny LM + LoRA) and multi-task digits.

Five parts, each a small table in ``experiments/RESULTS.md`` (section ``real_data``):

1. **Sanity check** of data and models: MNIST-1D on the pooled data (4,000 train /
   1,000 test), MLP (100-100) and CNN with Adam.  The engine refuses one node (every
   topology builder needs ``n >= 2``), so the pooled run is 2 nodes with the iid
   partition, D-SGD on the complete graph with uniform mixing and one local step per
   round: both nodes hold the same averaged model after every round, i.e. minibatch
   training on the pooled data (batch 2 x 50; each node keeps its own Adam moments).
2. **Label skew vs latent mixtures** on digits and MNIST-1D, 32 nodes on a small-world
   graph (k = 4, beta = 0.1), MLP: local, D-SGD, D-EM (M = 3) and graph_mtl, same lr,
   rounds and local epochs for all; Dirichlet (alpha = 0.3) and mixture (3 components,
   label permutations that disagree on every class, node weights ~ Dirichlet(0.1)).
3. **MIRA-style personalised LMs** on ``dialects`` (3 Markov-chain dialects, 12 nodes,
   small world): ``tiny_lm`` with a frozen random base and LoRA adapters (rank 8, on
   every projection and the output head); local LoRA vs D-SGD over the adapters vs
   graph_mtl over the adapters (lam swept); the byte ledger counts adapters only.
4. **Multi-task nodes** (``digits_multitask``: class / parity / ink heads): local vs D-SGD
   sharing the trunk (``dense_0``) vs D-SGD sharing everything; per-head metrics and
   Delta_m (mean relative improvement over local training, FMTL-Bench).
5. **Decoupled aggregation** (``algorithm.aggregation = "decoupled"``): D-SGD and
   graph_mtl with and without it on ``digits_multitask`` (one shared model for tasks
   that disagree).

    python experiments/real_data.py               # about 10 min on 2 cores
    python experiments/real_data.py --quick --no-record   # seconds: the smoke test

Tables also go to ``experiments/results/real_data/*.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

from p2p_fmtl import load_config, run
from p2p_fmtl.metrics import delta_m as p2p_delta_m

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "real_data"
HEADS = (("class", "test_class_acc", +1), ("parity", "test_parity_acc", +1))
HEADS += (("ink", "test_ink_mse", -1),)


# ----------------------------------------------------------------------------- helpers
def one(cfg: dict, log: list) -> dict:
    """Run one config; return its summary plus the final bytes and the wall time."""
    t0 = time.perf_counter()
    res = run(load_config(cfg), quiet=True)
    s = dict(res.summary)
    s["bytes_total"] = res.metrics[-1]["bytes_total"] if res.metrics else 0
    s["run_s"] = time.perf_counter() - t0
    s["_nodes"] = res.nodes
    log.append(s["run_s"])
    return s


def mb(x: float) -> str:
    return f"{x / 1e6:.1f}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def delta_m(metrics: dict[str, float], local: dict[str, float]) -> float:
    """FMTL-Bench's Delta_m against local training (:func:`p2p_fmtl.metrics.delta_m`)."""
    heads = {name: key.rsplit("_", 1)[1] for name, key, _ in HEADS}
    return p2p_delta_m(metrics, local, heads)


def write_csv(name: str, rows: list[dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(OUT / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


# ----------------------------------------------------------------------------- part 1
def part_sanity(quick: bool, log: list) -> tuple[str, list[dict]]:
    rows = []
    models = {
        "mlp (100, 100)": ({"name": "mlp", "hidden": [100, 100]}, 200 if quick else 6000),
        "cnn (32, 32 ch, k 5)": ({"name": "cnn"}, 20 if quick else 1000),
    }
    if quick:  # the smoke test: the MLP only
        models.pop("cnn (32, 32 ch, k 5)")
    for label, (model, rounds) in models.items():
        cfg = {
            "run": {"rounds": rounds, "eval_every": rounds, "seed": 0},
            "topology": {"name": "complete", "n": 2, "mixing": "uniform"},
            "data": {"name": "mnist1d", "partition": "iid", "test_fraction": 0.2},
            "model": model,
            "algorithm": {
                "name": "dsgd",
                "optimizer": "adam",
                "lr": 0.01,
                "batch_size": 50,
                "local_steps": 1,
            },
        }
        s = one(cfg, log)
        rows.append(
            {"model": label, "steps": rounds, "test_acc": s["test_acc"], "run_s": s["run_s"]}
        )
    lines = [
        "**1. Sanity check: MNIST-1D, pooled data** (4,000 train / 1,000 test; 2 iid nodes, "
        "complete graph, uniform mixing, one Adam step (lr 0.01, batch 50 per node) per round "
        "= minibatch training on the pool; the engine refuses `topology.n = 1`).",
        "",
        "| model | steps | test acc (%) | reference | run (s) |",
        "|---|---:|---:|---|---:|",
    ]
    ref = {
        "mlp (100, 100)": "68 % (MNIST-1D paper); 66 % plain optax",
        "cnn (32, 32 ch, k 5)": "clearly more; 93 % plain optax",
    }
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['steps']} | {pct(r['test_acc'])} | {ref[r['model']]} | "
            f"{r['run_s']:.0f} |"
        )
    return "\n".join(lines), rows


# ----------------------------------------------------------------------------- part 2
PARTITIONS = {
    "dirichlet (alpha 0.3)": {"partition": "dirichlet", "alpha": 0.3},
    "mixture (3 label maps, pi ~ Dir(0.1))": {
        "partition": "mixture",
        "components": 3,
        "transform": "label",
        "alpha": 0.1,
    },
}
METHODS2 = {
    "local": {"name": "local"},
    "dsgd": {"name": "dsgd"},
    "dem (M = 3)": {"name": "dem", "components": 3},
    "graph_mtl (lam 0.1)": {"name": "graph_mtl", "lam": 0.1},
}


def part_partitions(quick: bool, log: list) -> tuple[str, list[dict]]:
    n, rounds = (8, 5) if quick else (32, 300)
    seeds = [0] if quick else [0, 1, 2]
    rows = []
    datasets = ["digits"] if quick else ["digits", "mnist1d"]
    for dname in datasets:
        for pname, part in PARTITIONS.items():
            if quick and part["partition"] != "mixture":
                continue
            for mname, alg in METHODS2.items():
                if quick and mname not in ("local", "dem (M = 3)"):
                    continue
                for seed in seeds:  # a new partition, graph and initialization per seed
                    cfg = {
                        "run": {"rounds": rounds, "eval_every": rounds, "seed": seed},
                        "topology": {"name": "small_world", "n": n, "k": 4, "beta": 0.1},
                        "data": {"name": dname, **part, "seed": seed},
                        "model": {"name": "mlp", "hidden": [64]},
                        "algorithm": {
                            **alg,
                            "lr": 0.05,
                            "optimizer": "sgd",
                            "momentum": 0.9,
                            "batch_size": 32,
                            "local_epochs": 1,
                        },
                    }
                    s = one(cfg, log)
                    rows.append(
                        {
                            "data": dname,
                            "partition": pname,
                            "method": mname,
                            "seed": seed,
                            "test_acc": s["test_acc"],
                            "test_acc_p10": s["test_acc_p10"],
                            "bytes_total": s["bytes_total"],
                            "run_s": s["run_s"],
                        }
                    )
    lines = [
        f"**2. Dirichlet label skew vs latent mixtures** ({n} nodes, small world k = 4, "
        f"beta = 0.1, MLP (64), SGD lr 0.05 momentum 0.9, batch 32, one local epoch (per "
        f"component for D-EM), {rounds} rounds; mean ± sd over seeds "
        f"{', '.join(map(str, seeds))} (each seed: new partition, graph and init)).",
        "",
        "| data | partition | method | mean acc (%) | p10 acc (%) | MB sent (all nodes) |",
        "|---|---|---|---:|---:|---:|",
    ]

    def pm(vals: list[float]) -> str:
        if len(vals) < 2:
            return pct(vals[0])
        return f"{100 * np.mean(vals):.1f} ± {100 * np.std(vals, ddof=1):.1f}"

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["partition"], r["method"]), []).append(r)
    means = {k: float(np.mean([r["test_acc"] for r in g])) for k, g in groups.items()}
    for (dname, pname, mname), g in groups.items():
        best = max(v for k, v in means.items() if k[:2] == (dname, pname))
        acc = pm([r["test_acc"] for r in g])
        acc = f"**{acc}**" if means[(dname, pname, mname)] == best else acc
        lines.append(
            f"| {dname} | {pname} | {mname} | {acc} | {pm([r['test_acc_p10'] for r in g])} | "
            f"{mb(float(np.mean([r['bytes_total'] for r in g])))} |"
        )
    return "\n".join(lines), rows


# ----------------------------------------------------------------------------- part 3
LORA = {
    "name": "tiny_lm",
    "freeze_base": True,
    "lora_rank": 8,
    "lora_targets": "q,k,v,o,mlp_in,mlp_out,head",
}


def dialects_config(quick: bool, alg: dict, rounds: int) -> dict:
    return {
        "run": {"rounds": rounds, "eval_every": rounds, "seed": 0},
        "topology": {"name": "small_world", "n": 6 if quick else 12, "k": 4, "beta": 0.1},
        "data": {"name": "dialects", "clusters": 3, "samples": 32, "test_samples": 32},
        "model": LORA,
        "algorithm": {
            **alg,
            "lr": 0.003,
            "optimizer": "adam",
            "batch_size": 32,
            "local_epochs": 1,
        },
    }


def adapter_bytes(cfg: dict) -> tuple[int, int, int]:
    """(adapter values, all values, predicted adapter bytes) for the config's run."""
    import jax

    import topologies
    from p2p_fmtl.models import build_model

    c = load_config(cfg)
    model = build_model(c["model"], (32,), 32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    n_lora = sum(math.prod(x.shape) for x in jax.tree.leaves(params["lora"]))
    n_all = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    topo = c["topology"]
    G = topologies.build(
        topo["name"], n=topo["n"], k=topo["k"], beta=topo["beta"], seed=c["run"]["seed"]
    )
    degree_sum = 2 * G.number_of_edges()
    return n_lora, n_all, n_lora * 4 * degree_sum * c["run"]["rounds"]


def part_dialects(quick: bool, log: list) -> tuple[str, list[dict]]:
    from p2p_fmtl.data import dataset_params, load_dataset

    rounds = 3 if quick else 100
    lams = [1.0] if quick else [0.3, 1.0, 3.0]
    methods = {"local LoRA": {"name": "local"}}
    if not quick:
        methods["dsgd over adapters"] = {"name": "dsgd", "shared": ["lora"]}
    for lam in lams:
        methods[f"graph_mtl over adapters (lam {lam:g}, uniform)"] = {
            "name": "graph_mtl",
            "shared": ["lora"],
            "lam": lam,
            "relation": "uniform",
        }
    rows = []
    for mname, alg in methods.items():
        s = one(dialects_config(quick, alg, rounds), log)
        rows.append(
            {
                "method": mname,
                "test_loss": s["test_loss"],
                "test_loss_p90": s.get("test_loss_p90", math.nan),
                "bytes_total": s["bytes_total"],
                "run_s": s["run_s"],
            }
        )
    # the byte ledger: adapters only vs everything, one short D-SGD run each
    short = 2
    b = {}
    for shared in (["lora"], "all"):
        cfg = dialects_config(quick, {"name": "dsgd", "shared": shared}, short)
        b[str(shared)] = one(cfg, log)["bytes_total"]
    n_lora, n_all, predicted = adapter_bytes(dialects_config(quick, {"name": "dsgd"}, short))
    cfg = dialects_config(quick, {"name": "local"}, rounds)
    ds = load_dataset({**dataset_params("dialects"), **cfg["data"]}, cfg["topology"]["n"])
    cluster = np.asarray(ds.info["cluster"])
    floor = float(np.mean(np.asarray(ds.info["entropy_rate"])[cluster]))
    lines = [
        f"**3. Personalised LMs on `dialects`** (3 Markov-chain dialects over 32 tokens, "
        f"{cfg['topology']['n']} nodes, small world k = 4, 32 train / 32 test sequences of "
        f"32 tokens per node; `tiny_lm` with a frozen *random* base and LoRA rank 8 on "
        f"q, k, v, o, mlp_in, mlp_out and the head; Adam lr 3e-3, batch 32, one epoch, "
        f"{rounds} rounds). Mean per-node test loss (nats/token): uniform = ln 32 = 3.47, "
        f"entropy-rate floor (mean over nodes) = {floor:.3f}.",
        "",
        "| method | mean test loss | p90 test loss | MB sent |",
        "|---|---:|---:|---:|",
    ]
    best = min(r["test_loss"] for r in rows)
    for r in rows:
        loss = f"{r['test_loss']:.3f}"
        loss = f"**{loss}**" if r["test_loss"] == best else loss
        lines.append(
            f"| {r['method']} | {loss} | {r['test_loss_p90']:.3f} | {mb(r['bytes_total'])} |"
        )
    lines += [
        "",
        f'Byte ledger ({short}-round D-SGD): `shared = ["lora"]` sent {b[str(["lora"])]:,} '
        f'bytes, `shared = "all"` {b["all"]:,} bytes; adapters = {n_lora:,} of {n_all:,} '
        f"values, and adapters x 4 bytes x sum of degrees x rounds = {predicted:,} bytes "
        f"({'matches' if predicted == b[str(['lora'])] else 'DOES NOT match'} the ledger).",
    ]
    rows.append({"method": "ledger", "lora_bytes": b[str(["lora"])], "all_bytes": b["all"]})
    rows[-1].update(predicted=predicted, n_lora=n_lora, n_all=n_all, floor=floor)
    return "\n".join(lines), rows


# ----------------------------------------------------------------------------- part 4/5
def multitask_config(quick: bool, alg: dict) -> dict:
    rounds = 5 if quick else 200
    return {
        "run": {"rounds": rounds, "eval_every": rounds, "seed": 0},
        "topology": {"name": "small_world", "n": 6 if quick else 30, "k": 4, "beta": 0.1},
        "data": {"name": "digits_multitask", "partition": "iid"},
        "model": {"name": "mlp", "hidden": [64]},
        "algorithm": {
            **alg,
            "lr": 0.05,
            "optimizer": "sgd",
            "momentum": 0.9,
            "batch_size": 32,
            "local_epochs": 1,
        },
    }


def multitask_table(rows: list[dict], local: dict) -> list[str]:
    lines = [
        "| method | class acc (%) | parity acc (%) | ink MSE | Delta_m vs local (%) | MB sent |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {pct(r['test_class_acc'])} | {pct(r['test_parity_acc'])} | "
            f"{r['test_ink_mse']:.3f} | {delta_m(r, local):+.1f} | {mb(r['bytes_total'])} |"
        )
    return lines


def mt_row(mname: str, s: dict) -> dict:
    row = {"method": mname, "bytes_total": s["bytes_total"], "run_s": s["run_s"]}
    for _, key, _ in HEADS:
        row[key] = s[key]
    return row


def part_multitask(quick: bool, log: list) -> tuple[str, list[dict], dict]:
    methods = {
        "local": {"name": "local"},
        'dsgd, shared = ["dense_0"] (trunk; heads personal)': {
            "name": "dsgd",
            "shared": ["dense_0"],
        },
        'dsgd, shared = "all"': {"name": "dsgd", "shared": "all"},
    }
    if quick:
        methods.pop('dsgd, shared = "all"')
    rows = [mt_row(m, one(multitask_config(quick, a), log)) for m, a in methods.items()]
    local = rows[0]
    cfg = multitask_config(quick, {"name": "local"})
    lines = [
        f"**4. Multi-task nodes** (`digits_multitask`: node i learns head i mod 3 = class "
        f"(10-way), parity or ink (regression, standardized); {cfg['topology']['n']} nodes, "
        f"small world, MLP (64) whose last layer holds all heads, SGD lr 0.05 momentum 0.9, "
        f"{cfg['run']['rounds']} rounds). Delta_m = mean over heads of "
        f"+-(M - M_local) / M_local x 100 (+ for accuracy, - for MSE).",
        "",
        *multitask_table(rows, local),
    ]
    return "\n".join(lines), rows, local


def decoupled_available() -> bool:
    try:
        load_config({"algorithm": {"name": "dsgd", "aggregation": "decoupled"}})
        return True
    except Exception:
        return False


def part_decoupled(quick: bool, log: list, local: dict) -> tuple[str, list[dict]]:
    if not decoupled_available():  # TODO: algorithm.aggregation = "decoupled" not in package
        return "**5. Decoupled aggregation**: TODO, `algorithm.aggregation` not available.", []
    methods = {
        'dsgd (shared "all")': {"name": "dsgd"},
        'dsgd (shared "all") + decoupled': {"name": "dsgd", "aggregation": "decoupled"},
        "graph_mtl (lam 0.1)": {"name": "graph_mtl", "lam": 0.1},
        "graph_mtl (lam 0.1) + decoupled": {
            "name": "graph_mtl",
            "lam": 0.1,
            "aggregation": "decoupled",
        },
    }
    if quick:
        methods = {k: v for k, v in methods.items() if k.startswith("dsgd")}
    rows = [mt_row(m, one(multitask_config(quick, a), log)) for m, a in methods.items()]
    lines = [
        '**5. Decoupled aggregation** (`algorithm.aggregation = "decoupled"`, rho = 0.1 '
        "default) on the multi-task nodes of part 4 (same config; Delta_m vs the local row "
        "of part 4).",
        "",
        *multitask_table(rows, local),
    ]
    return "\n".join(lines), rows


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and rounds (smoke test)")
    ap.add_argument("--no-record", action="store_true", help="do not touch RESULTS.md")
    ap.add_argument(
        "--parts", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="which parts to run"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    log: list[float] = []
    sections, local = [], None
    if 1 in args.parts:
        text, rows = part_sanity(args.quick, log)
        sections.append(text)
        write_csv("sanity", rows)
    if 2 in args.parts:
        text, rows = part_partitions(args.quick, log)
        sections.append(text)
        write_csv("partitions", rows)
    if 3 in args.parts:
        text, rows = part_dialects(args.quick, log)
        sections.append(text)
        write_csv("dialects", rows)
    if 4 in args.parts or 5 in args.parts:
        text, rows, local = part_multitask(args.quick, log)
        sections.append(text)
        write_csv("multitask", rows)
    if 5 in args.parts:
        text, rows = part_decoupled(args.quick, log, local)
        sections.append(text)
        if rows:
            write_csv("decoupled", rows)
    total = time.perf_counter() - t0
    body = "\n\n".join(sections)
    body += (
        f"\n\n{len(log)} runs, {total / 60:.1f} min on 2 CPU cores (`experiments/real_data.py`)."
    )
    print(body)
    if not args.no_record and not args.quick:
        sys.path.insert(0, str(HERE))
        from reproduce_fedem_synthetic import write_section

        write_section(HERE / "RESULTS.md", "real_data", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
