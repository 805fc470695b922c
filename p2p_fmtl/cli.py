"""The ``p2p-fmtl`` command line.

Exit status: 0 success; 2 a user mistake (one line on stderr naming the field or
file, the value and what is allowed; no traceback unless ``--debug``); 1 anything else.
Notes (a key dropped when ``--set`` changed a name, a resume that starts over) go to
stderr as ``p2p-fmtl: note: ...``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import textwrap
import time
import warnings
from importlib import resources
from pathlib import Path

from .errors import UserError, unknown_name


def _overrides(pairs: list[str] | None) -> dict:
    from .config import parse_override

    return dict(parse_override(p) for p in pairs or [])


def _note(message: object) -> None:
    print(f"p2p-fmtl: note: {message}", file=sys.stderr)


def _load_config(source, overrides: dict, unset: list[str] | None = None):
    """``load_config`` with the UserWarnings it raises (e.g. a key dropped because
    ``--set`` changed the builder or algorithm) printed as notes."""
    from .config import load_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        cfg = load_config(source, overrides=overrides, unset=unset or [])
    for w in caught:
        if issubclass(w.category, UserWarning):
            _note(w.message)
        else:  # not ours to announce: hand it back to the warnings machinery
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return cfg


def _default_out(cfg, stem: str) -> Path:
    return Path("runs") / f"{stem}-{cfg['algorithm']['name']}-{time.strftime('%Y%m%d-%H%M%S')}"


def _distributed(args) -> bool:
    """Join a multi-process run (``--coordinator``, ``--num-processes``, ``--process-id``:
    the arguments of ``jax.distributed.initialize``, called here before any other use of
    JAX); return whether this process writes (process 0, or a single process)."""
    given = [args.coordinator, args.num_processes, args.process_id]
    if all(v is None for v in given):
        return True
    if any(v is None for v in given):
        raise UserError(
            "--coordinator, --num-processes, --process-id: give all three for a "
            "multi-process run (e.g. --coordinator host0:1234 --num-processes 2 --process-id 0)"
        )
    host, _, port = args.coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(
            f"--coordinator: got {args.coordinator!r}, expected HOST:PORT with a port in "
            "1..65535 (e.g. host0:1234)"
        )
    if args.num_processes < 1:
        raise UserError(f"--num-processes: got {args.num_processes}, expected at least 1")
    if not 0 <= args.process_id < args.num_processes:
        raise UserError(
            f"--process-id: got {args.process_id}, expected 0..{args.num_processes - 1} "
            f"(--num-processes {args.num_processes})"
        )
    import jax

    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    return args.process_id == 0


def cmd_run(args) -> int:
    from .runner import check_out, lead_agrees, run

    if args.resume and args.out is None:
        raise UserError("--resume: needs --out DIR (the run directory to continue)")
    lead = _distributed(args)
    cfg = _load_config(args.config, _overrides(args.set), args.unset)
    out = Path(args.out) if args.out is not None else _default_out(cfg, Path(args.config).stem)
    flags = {"resume": args.resume, "overwrite": args.overwrite}
    plan, refused = None, None
    try:
        if lead:
            plan = check_out(args.out if args.out is not None else out, **flags)  # before work
    except UserError as e:
        refused = e
    if not lead_agrees(refused is None):  # across processes, all stop when process 0 does
        raise refused or UserError("--out: refused by process 0 (see its error); stopping")
    if not lead:  # processes 1..: the same run, but process 0 alone writes --out
        run(cfg, quiet=True, out=out, **flags)
        return 0
    if args.resume and not plan.resume:
        _note(f"no checkpoint of an unfinished run at --out {out}; starting at round 0")
    try:
        result = run(cfg, quiet=args.quiet, out=plan.path, **flags)
    except KeyboardInterrupt:
        if plan.checkpoint.exists():
            _note(f"continue the run with: p2p-fmtl run {args.config} --out {out} --resume")
        raise
    if not args.quiet:
        print(_table([result.summary]))
    print(f"run directory: {out}")
    return 0


DEMO_ALGORITHMS = ("local", "dsgd", "dem")


def cmd_demo(args) -> int:
    from .runner import check_out, run

    text = resources.files("p2p_fmtl").joinpath("configs/demo.toml").read_text()
    import tomllib

    base = tomllib.loads(text)
    if args.out is not None and not args.out.strip():
        raise UserError(f"--out: got {args.out!r}, expected a folder such as runs/demo")
    out = Path(args.out if args.out is not None else "runs/demo")
    if out.exists() and not out.is_dir():
        raise UserError(
            f"--out {out}: exists and is not a folder (the demo writes three runs in it)"
        )
    # the demo replaces its own earlier runs (run directories of this tool, never anything
    # else), so the README's first command can be run again
    overwrite = True
    for name in DEMO_ALGORITHMS:  # every place is checked before the first run starts
        check_out(out / name, overwrite=overwrite)
    print(
        f"p2p-fmtl demo: {base['topology']['n']} nodes of FedEM synthetic data on an "
        f"Erdős–Rényi graph, {base['run']['rounds']} rounds\n"
    )
    rows = []
    for name in DEMO_ALGORITHMS:
        cfg = _load_config(base, {"algorithm.name": name})
        result = run(cfg, quiet=args.quiet, out=out / name, overwrite=overwrite)
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


SPECTRUM_LIMIT = 5000  # nodes: `topology` reports the spectrum (dense W) up to here


def cmd_topology(args) -> int:
    import topologies

    params = _overrides(args.param)
    if args.draw is not None:
        _check_figure_path(args.draw)  # before building: a large graph takes a while
    try:
        G = topologies.build(args.name, args.n, seed=args.seed, **params)
        if G.number_of_nodes() <= SPECTRUM_LIMIT:
            W = topologies.mixing_matrix(G, rule=args.mixing)
            topologies.validate_mixing(W, G)
        else:  # the weights as edge lists; no dense n x n matrix nor spectrum
            topologies.mixing_edges(G, rule=args.mixing)
            W = None
        info = topologies.describe(G, W, args.mixing)
    except topologies.TopologyError as e:
        raise UserError(str(e)) from None
    if W is None:
        print(
            f"note: spectral_gap and slem are computed up to {SPECTRUM_LIMIT} nodes (a dense "
            "eigendecomposition)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:>14}: {v}")
    if args.draw is not None:
        gap = info["spectral_gap"]
        title = f"{args.name} (n={G.number_of_nodes()}" + (
            ")" if gap is None else f", gap={gap:.4f})"
        )
        _draw(G, args.draw, title)
        print(f"figure: {args.draw}", file=sys.stderr if args.json else sys.stdout)
    return 0


FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def _check_figure_path(path: str) -> None:
    """Refuse, in one line, a figure path that cannot be written: no name, a format
    matplotlib is not asked for, a folder, a missing or unwritable parent folder."""
    p = Path(path)
    if not path.strip() or p.name in ("", ".", ".."):
        raise UserError(f"--draw: got {path!r}, expected a file name such as graph.png")
    if p.is_dir():
        raise UserError(f"--draw {path}: is a folder; give a file name such as {p / 'graph.png'}")
    if p.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"--draw {path}: expected a file ending in {', '.join(FIGURE_SUFFIXES)}")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"--draw {path}: {parent} is a file, not a folder")
    if not parent.is_dir():
        raise UserError(f"--draw {path}: the folder {parent} does not exist; make it first")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"--draw {path}: cannot write there (permission denied)")


def _draw(G, path: str, title: str) -> None:
    """Draw ``G`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    import tempfile

    import matplotlib

    import topologies

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    G = topologies.as_networkx(G)
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
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, format=target.suffix[1:].lower())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- keys
NAMED_SECTIONS = ("topology", "data", "model", "algorithm")
NAME_HELP = {
    "topology": "graph builder",
    "data": "data set: a generator, or a loader of your files (npz, leaf)",
    "model": "model",
    "algorithm": "decentralized learning algorithm",
}


def cmd_keys(args) -> int:
    from .config import SECTIONS, _names

    if args.section is not None and args.section not in SECTIONS:
        raise unknown_name("keys SECTION", args.section, SECTIONS)
    if args.name is not None:
        if args.section not in NAMED_SECTIONS:
            raise UserError(
                f"--name {args.name}: give a section with names first "
                f"({', '.join(NAMED_SECTIONS)}), e.g. p2p-fmtl keys topology --name ring"
            )
        if args.name not in _names(args.section):
            raise unknown_name(f"{args.section}.name", args.name, _names(args.section))
    sections = [args.section] if args.section else list(SECTIONS)
    table = {s: section_keys(s, args.name) for s in sections}
    print(json.dumps(table, indent=2) if args.json else _keys_text(table, args.name))
    return 0


def section_keys(section: str, name: str | None = None) -> dict:
    """Every key of ``section`` from the schema and the registries, as plain data:
    ``{"keys": {key: entry}}``, plus ``"names": {name: {key: entry}}`` (the keys each
    builder, generator, model or algorithm adds) for sections with a name, only
    ``name``'s when given.  An entry has ``default``, ``allowed``, ``help`` and
    ``required``."""
    from .config import _names, _registry_keys, _section_schema

    names = list(_names(section))
    if not names:
        return {
            "keys": {k: _entry(section, k, v) for k, v in _section_schema(section, None).items()}
        }
    ref = name or names[0]
    own = _registry_keys(section, ref)
    common = {k: v for k, v in _section_schema(section, ref).items() if k not in own}
    return {
        "keys": {k: _entry(section, k, v) for k, v in common.items()},
        "names": {
            n: {k: _entry(section, k, v, n) for k, v in _registry_keys(section, n).items()}
            for n in ([name] if name else names)
        },
    }


def _entry(section: str, key: str, spec, name: str | None = None) -> dict:
    from .config import _names

    documented = _param_help(section, name) if name else {}
    doc_type, doc_help = documented.get(key, ("", ""))
    allowed = _allowed(section, key) or _describe(spec)
    if key == "name" and section in NAMED_SECTIONS:
        allowed = "one of " + ", ".join(_names(section))
    elif doc_type.startswith("{") and spec.kind == "str":  # numpydoc {"a", "b"}
        allowed = "one of " + doc_type.strip("{}").replace('"', "'")
    help_text = spec.help or doc_help or (NAME_HELP[section] if key == "name" else "")
    return {
        "default": None if spec.required else spec.default,
        "allowed": allowed,
        "help": help_text,
        "required": spec.required,
    }


def _describe(spec) -> str:
    from .schema import describe

    return describe(spec)


def _allowed(section: str, key: str) -> str | None:
    """Allowed values the schema checks outside its Key objects."""
    if (section, key) == ("topology", "mixing"):
        import topologies

        from .network import SERVER_RULES

        return "one of " + ", ".join([*topologies.MIXING_RULES, *sorted(SERVER_RULES)])
    return None


def _param_help(section: str, name: str) -> dict[str, tuple[str, str]]:
    """``{parameter: (its type, the first sentence of its description)}`` from the
    numpydoc docstring of the builder, generator or model ``name`` (their keys carry no
    help of their own)."""
    fn = None
    if section == "topology":
        import topologies

        fn = topologies.BUILDERS.get(name)
    elif section == "data":
        from .data import DATASETS

        fn = DATASETS.get(name)
    elif section == "model":
        from .models import MODELS

        fn = MODELS.get(name)
    lines = (inspect.getdoc(fn) or "").splitlines() if fn is not None else []
    if "Parameters" not in lines:
        return {}
    types: dict[str, str] = {}
    out: dict[str, str] = {}
    names: list[str] = []
    i = lines.index("Parameters") + 2
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            break  # the next section
        if line and not line[0].isspace():
            head, _, kind = line.partition(" : ")
            names = [n.strip() for n in head.split(",")]
            types.update(dict.fromkeys(names, kind.strip()))
        elif line.strip():
            for n in names:
                out[n] = f"{out.get(n, '')} {line.strip()}".strip()
        i += 1
    return {k: (types[k], _first_sentence(v.replace("``", ""))) for k, v in out.items()}


def _first_sentence(text: str) -> str:
    cut = text.find(". ")
    return text if cut < 0 else text[: cut + 1]


def _keys_text(table: dict, name: str | None) -> str:
    """The key table for a terminal: one block per key (``key = default``, then what
    is allowed and the help, wrapped)."""
    width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    lines: list[str] = []

    def block(title: str, keys: dict) -> None:
        lines.append(title)
        if not keys:
            lines.append("  (no keys of its own)")
        for k, e in keys.items():
            default = "(required)" if e["required"] else _toml(e["default"])
            lines.append(f"  {k} = {default}")
            text = e["allowed"] + (f": {e['help']}" if e["help"] else "")
            lines.append(
                textwrap.fill(text, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
            )

    for section, body in table.items():
        if "names" not in body:
            block(f"[{section}]", body["keys"])
        elif section == "algorithm" and name is None:
            _algorithm_blocks(body, block)
        else:
            block(f"[{section}]" + ("" if name else "  (every name)"), body["keys"])
            for n, keys in body["names"].items():
                block(f"[{section}] name = {_toml(n)}", keys)
        lines.append("")
    return "\n".join(lines).rstrip()


def _algorithm_blocks(body: dict, block) -> None:
    """The algorithm section without --name: the optimizer keys of every algorithm that
    trains and the gossip keys of every one that communicates once, then each one's own."""
    from .algorithms import ALGORITHMS
    from .schema import GOSSIP_KEYS, OPTIMIZER_KEYS

    block("[algorithm]  (every name)", body["keys"])
    names = body["names"]
    for title, group, has in (
        ("that train", OPTIMIZER_KEYS, lambda s: s.trains),
        ("that communicate", GOSSIP_KEYS, lambda s: s.communicates),
    ):
        which = [n for n in names if has(ALGORITHMS[n])]
        first = names[which[0]] if which else {}
        block(
            f"[algorithm]  (algorithms {title}: {', '.join(which)})",
            {k: first[k] for k in group if k in first},
        )
    for n, keys in names.items():
        shared = {*OPTIMIZER_KEYS, *GOSSIP_KEYS}
        block(f"[algorithm] name = {_toml(n)}", {k: e for k, e in keys.items() if k not in shared})


def _toml(value) -> str:
    """A default as it is written in TOML (``(unset)`` for none)."""
    if value is None:
        return "(unset)"
    if isinstance(value, float) and value and not 1e-4 <= abs(value) < 1e6:
        return f"{value:g}"
    return json.dumps(value, ensure_ascii=False)


def version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    from importlib import metadata

    try:
        return metadata.version("p2p-fmtl")
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


OUT_HELP = (
    "--out takes a new or empty directory, or a run directory p2p-fmtl wrote (files "
    "config.toml, metrics.csv, nodes.csv, summary.json, params.npz only); nothing else is "
    "ever written over. A complete run is replaced only with --overwrite. A run killed "
    "before the end keeps a checkpoint beside --out: --resume continues it, --overwrite "
    "starts over. --resume on a complete run is refused (exit 2): there is nothing to "
    "resume."
)


def _topology_epilog() -> str:
    import topologies

    from .network import SERVER_RULES

    rows = []
    for name in topologies.BUILDERS:
        params = ", ".join(
            k + ("" if v is inspect.Parameter.empty else f"={v!r}")
            for k, v in topologies.builder_params(name).items()
        )
        rows.append(f"  {name:<18} {params}".rstrip())
    rules = ", ".join(topologies.MIXING_RULES)
    return (
        "builders and their --param keys (defaults):\n"
        + "\n".join(rows)
        + f"\n\nmixing rules (--mixing): {rules}\n"
        + textwrap.fill(
            f"(runs also accept topology.mixing = {', '.join(sorted(SERVER_RULES))}: "
            "weights by training-set size, complete graphs only)",
            88,
        )
        + "\n\nEvery config key: p2p-fmtl keys topology"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="p2p-fmtl",
        description="Simulate fully decentralized federated multi-task learning on gossip graphs.",
    )
    p.add_argument("--version", action="version", version=f"p2p-fmtl {version()}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the embedded demo (no files needed)", epilog=OUT_HELP)
    d.add_argument(
        "--out",
        help="folder for the three run directories (default runs/demo; the demo replaces "
        "its own earlier runs there)",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="run one simulation from a TOML config", epilog=OUT_HELP)
    r.add_argument("config", help="config file (TOML)")
    r.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set algorithm.lr=0.05 (repeatable)",
    )
    r.add_argument(
        "--unset",
        action="append",
        metavar="KEY",
        help="drop a key of the config file (it takes its default), e.g. --unset topology.p "
        "(repeatable)",
    )
    r.add_argument("--out", help="run directory (default runs/<config>-<algorithm>-<time>)")
    r.add_argument("--quiet", action="store_true", help="no progress bar or table")
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run whose checkpoint is beside --out",
    )
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the complete run in --out (or start an unfinished one over)",
    )
    r.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="multi-process run: process 0's address (jax.distributed.initialize); "
        "run.devices = all processes' devices, process 0 writes --out",
    )
    r.add_argument("--num-processes", type=int, metavar="P", help="multi-process run: P")
    r.add_argument(
        "--process-id", type=int, metavar="I", help="multi-process run: this process, 0..P-1"
    )
    r.set_defaults(func=cmd_run)

    t = sub.add_parser(
        "topology",
        help="build a graph and report its mixing matrix",
        epilog=_topology_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("name", help="builder name (listed below)")
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
    t.add_argument(
        "--draw",
        metavar="FILE",
        help="draw the graph to FILE (.png, .svg or .pdf) in an existing folder",
    )
    t.set_defaults(func=cmd_topology)

    k = sub.add_parser(
        "keys",
        help="every config key: default, allowed values and help",
        description="Every config key with its default, allowed values and help, from the "
        "schema and the registries of builders, data sets, models and algorithms.",
    )
    k.add_argument("section", nargs="?", help="only this section (run, topology, data, ...)")
    k.add_argument("--name", help="only this builder / data set / model / algorithm of SECTION")
    k.add_argument("--json", action="store_true", help="print one JSON object")
    k.set_defaults(func=cmd_keys)
    from . import sweep

    sw = sub.add_parser("sweep", help="run a grid/zip sweep of configs in parallel (resumable)")
    sweep.add_arguments(sw)
    sw.set_defaults(func=sweep.sweep_command)

    from . import plots

    pl = sub.add_parser("plot", help="figures from a run directory or a sweep")
    plots.add_arguments(pl)
    pl.set_defaults(func=plots.plot_command)

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
    shown = warnings.showwarning

    def note(message, category, filename, lineno, file=None, line=None):
        """The tool's own warnings (a memory estimate close to the limit, a stray label)
        as one note line, not a Python warning with a source location."""
        if issubclass(category, UserWarning) and not args.debug:
            _note(message)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = note
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
    except BrokenPipeError:  # e.g. `p2p-fmtl keys | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
