"""The ``p2p-fmtl`` command line.

Exit status: 0 success; 2 a user mistake (one line on stderr naming the field or
file, the value and what is allowed; no traceback unless ``--debug``); 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path

from .errors import UserError


def _overrides(pairs: list[str] | None) -> dict:
    from .config import parse_override

    return dict(parse_override(p) for p in pairs or [])


def _default_out(cfg, stem: str) -> Path:
    return Path("runs") / f"{stem}-{cfg['algorithm']['name']}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_run(args) -> int:
    from .config import load_config
    from .runner import run

    cfg = load_config(args.config, overrides=_overrides(args.set))
    out = Path(args.out) if args.out else _default_out(cfg, Path(args.config).stem)
    if args.resume and not args.out:
        raise UserError("--resume: needs --out DIR (the run directory to continue)")
    result = run(cfg, quiet=args.quiet, out=out, resume=args.resume)
    if not args.quiet:
        print(_table([result.summary]))
    print(f"run directory: {out}")
    return 0


DEMO_ALGORITHMS = ("local", "dsgd", "dem")


def cmd_demo(args) -> int:
    from .config import load_config
    from .runner import run

    text = resources.files("p2p_fmtl").joinpath("configs/demo.toml").read_text()
    import tomllib

    base = tomllib.loads(text)
    out = Path(args.out or "runs/demo")
    print(
        f"p2p-fmtl demo: {base['topology']['n']} nodes of FedEM synthetic data on an "
        f"Erdős–Rényi graph, {base['run']['rounds']} rounds\n"
    )
    rows = []
    for name in DEMO_ALGORITHMS:
        cfg = load_config(base, overrides={"algorithm.name": name})
        result = run(cfg, quiet=args.quiet, out=out / name)
        rows.append(result.summary)
    print(_table(rows))
    print(f"\nrun directories: {out}/{{{','.join(DEMO_ALGORITHMS)}}}")
    return 0


def _table(summaries: list[dict]) -> str:
    cols = [
        ("algorithm", "algorithm", "{}"),
        ("test_acc", "mean acc", "{:.4f}"),
        ("test_acc_p10", "p10 acc", "{:.4f}"),
        ("test_mse", "mean mse", "{:.4g}"),
        ("train_loss", "train loss", "{:.4f}"),
        ("consensus_distance", "consensus", "{:.3g}"),
        ("bytes_total", "MB sent", "{}"),
        ("seconds_per_round", "s/round", "{:.4f}"),
    ]
    cols = [c for c in cols if any(s.get(c[0]) is not None for s in summaries)]
    cells = []
    for s in summaries:
        row = []
        for key, _, fmt in cols:
            v = s.get(key)
            if key == "bytes_total" and v is not None:
                v = f"{v / 1e6:.2f}"
            row.append("-" if v is None else fmt.format(v))
        cells.append(row)
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, (_, h, _) in enumerate(cols)]
    lines = ["  ".join(h.rjust(w) for (_, h, _), w in zip(cols, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def cmd_topology(args) -> int:
    import topologies

    params = _overrides(args.param)
    try:
        G = topologies.build(args.name, args.n, seed=args.seed, **params)
        W = topologies.mixing_matrix(G, rule=args.mixing)
        topologies.validate_mixing(W, G)
        info = topologies.describe(G, W, args.mixing)
    except topologies.TopologyError as e:
        raise UserError(str(e)) from None
    if args.draw:
        _draw(
            G, args.draw, f"{args.name} (n={G.number_of_nodes()}, gap={info['spectral_gap']:.4f})"
        )
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:>14}: {v}")
    return 0


def _draw(G, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    fig, ax = plt.subplots(figsize=(5, 5))
    pos = nx.kamada_kawai_layout(G) if G.number_of_nodes() <= 300 else nx.spring_layout(G, seed=0)
    nx.draw_networkx(
        G,
        pos,
        ax=ax,
        node_size=80,
        with_labels=G.number_of_nodes() <= 40,
        font_size=7,
        node_color="#4C72B0",
        edge_color="#999999",
    )
    ax.set_title(title)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_plot(args) -> int:
    import warnings

    from .plots import plot

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        path = plot(args.dir, args.kind, args.out)
    for w in caught:
        print(f"p2p-fmtl plot: note: {w.message}", file=sys.stderr)
    print(f"figure: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="p2p-fmtl",
        description="Simulate fully decentralized federated multi-task learning on gossip graphs.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the embedded demo (no files needed)")
    d.add_argument("--out", help="directory for the run directories (default runs/demo)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="run one simulation from a TOML config")
    r.add_argument("config", help="config file (TOML)")
    r.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set algorithm.lr=0.05 (repeatable)",
    )
    r.add_argument("--out", help="run directory (default runs/<config>-<algorithm>-<time>)")
    r.add_argument("--quiet", action="store_true", help="no progress bar or table")
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint of a run killed while writing to --out",
    )
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("topology", help="build a graph and report its mixing matrix")
    t.add_argument("name", help="builder name (ring, torus, erdos_renyi, ...)")
    t.add_argument("--n", type=int, default=None, help="number of nodes")
    t.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="builder parameter, e.g. --param p=0.3 (repeatable)",
    )
    t.add_argument("--mixing", default="metropolis", help="mixing rule (default metropolis)")
    t.add_argument("--seed", type=int, default=0, help="graph seed (default 0)")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.add_argument("--draw", metavar="FILE", help="draw the graph to an image file")
    t.set_defaults(func=cmd_topology)
    from . import sweep

    sw = sub.add_parser("sweep", help="run a grid/zip sweep of configs in parallel (resumable)")
    sweep.add_arguments(sw)
    sw.set_defaults(func=sweep.sweep_command)

    from .plots import KINDS

    pl = sub.add_parser("plot", help="figures from a run directory or a sweep")
    pl.add_argument("dir", help="a run directory, a sweep directory, or a folder of runs")
    pl.add_argument("--kind", default="accuracy", choices=KINDS, help="which figure")
    pl.add_argument("--out", help="output file (.png, .svg or .pdf; default DIR/KIND.png)")
    pl.set_defaults(func=cmd_plot)

    from . import bench

    b = sub.add_parser(
        "bench", help="seconds per round of D-EM and D-SGD", description=bench.DESCRIPTION
    )
    bench.add_arguments(b)
    b.set_defaults(func=bench.run_args)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"p2p-fmtl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("p2p-fmtl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
