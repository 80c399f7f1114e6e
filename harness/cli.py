"""``harness plan | run | status | report | ls | validate``.

Errors the user can fix print as one line (``error: ...``) and exit 2, before any compute is spent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import HarnessError

PROTOCOLS_DIR = Path(__file__).resolve().parent.parent / "protocols"


def _add_protocol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("protocol", help="protocol YAML file (or the name of one in protocols/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a protocol key, value parsed as YAML (repeatable), e.g. --set steps=[1,2]")


def _protocol_path(arg: str) -> Path:
    path = Path(arg)
    if not path.exists() and (PROTOCOLS_DIR / f"{arg}.yaml").exists():
        return PROTOCOLS_DIR / f"{arg}.yaml"
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Fair benchmarking of image generators.")
    parser.add_argument("--version", action="version", version=f"onestep-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="print the cells, shards, samples and total NFE of a protocol")
    _add_protocol_args(p)
    p = sub.add_parser("validate", help="check a protocol (schema and model capabilities) without running it")
    _add_protocol_args(p)
    p = sub.add_parser("run", help="generate, extract, score and report (resumes; skips what is done)")
    _add_protocol_args(p)
    p.add_argument("--results", type=Path, help="run directory (default: results/<protocol name>)")
    p.add_argument("--executor", default="local", choices=["debug", "local", "slurm"])
    p.add_argument("--workers", type=int, default=None, help="processes for --executor local (default: 2)")
    p.add_argument("--cache", type=Path, default=None,
                   help="feature/reference cache (default: $HARNESS_CACHE or ~/.cache/onestep-bench)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--profile", help="--executor slurm: cluster profile YAML (or a name in slurm/profiles/)")
    p.add_argument("--wait", action="store_true",
                   help="--executor slurm: block until the arrays and the collect job ended (default: return "
                        "after submission)")
    p = sub.add_parser("status", help="progress of a run directory, read from its files (Slurm asked only "
                                      "about shards with no manifest)")
    p.add_argument("run_dir", nargs="?", type=Path, help="run directory (same as --results)")
    p.add_argument("--results", type=Path)
    p = sub.add_parser("report", help="rewrite leaderboard.md and plots from results.parquet")
    p.add_argument("--results", type=Path, required=True)
    p = sub.add_parser("ls", help="list adapters, cards, datasets, metrics, extractors or protocols")
    p.add_argument("what", nargs="?", default="all",
                   choices=["all", "adapters", "cards", "datasets", "metrics", "extractors", "protocols"])
    return parser


def cmd_plan(args: argparse.Namespace, print_table: bool) -> int:
    from .adapters import get_adapter_class
    from .protocol import load_protocol, make_plan

    plan = make_plan(load_protocol(_protocol_path(args.protocol), args.overrides))
    p = plan.protocol
    total_shards = sum(plan.shard_count(c) for c in plan.cells)
    total_nfe = 0
    lines = []
    for c in plan.cells:
        adapter = get_adapter_class(c.model.family)(c.model)
        nfe = adapter.expected_nfe(c.settings)
        total_nfe += nfe * c.n
        cfg = "none" if c.settings.cfg is None else f"{c.settings.cfg:g}"
        lines.append(f"  {c.cell_id}  {c.model.name:<18} {c.dataset.id:<10} steps={c.settings.steps:<4} "
                     f"cfg={cfg:<5} n={c.n:<6} shards={plan.shard_count(c):<4} nfe/sample={nfe}")
    if print_table:
        print(f"protocol {p.name} ({p.source})")
        print("\n".join(lines))
    print(f"{len(plan.cells)} cells, {total_shards} shards, {len(plan.cells) * p.n} samples, "
          f"{total_nfe} total NFE; metrics: {', '.join(p.metrics) or 'none'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .execution import make_executor
    from .pipeline import default_cache_dir
    from .protocol import load_protocol, make_plan
    from .runner import run_plan

    plan = make_plan(load_protocol(_protocol_path(args.protocol), args.overrides))
    run_dir = args.results or Path("results") / plan.protocol.name
    if args.executor == "slurm":
        return _run_on_slurm(args, plan, run_dir)
    if args.profile or args.wait:
        raise HarnessError("--profile and --wait apply to --executor slurm only")
    executor = make_executor(args.executor, args.workers, args.device)
    try:
        run_plan(plan, run_dir, args.cache or default_cache_dir(), executor, args.device)
    finally:
        executor.close()
    return 0


def _run_on_slurm(args: argparse.Namespace, plan, run_dir: Path) -> int:
    from .pipeline import default_cache_dir
    from .slurm_profile import load_profile
    from .slurm_run import submit_plan

    if not args.profile:
        raise HarnessError("--executor slurm needs --profile FILE (see slurm/profiles/, e.g. --profile ci)")
    profile = load_profile(args.profile)
    submit_plan(plan, run_dir.resolve(), (args.cache or default_cache_dir()).resolve(), profile, args.device, args.wait)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .runner import run_status

    if (args.run_dir is None) == (args.results is None):
        raise HarnessError("status: give the run directory once, as `harness status RUN` or --results RUN")
    args.results = args.run_dir or args.results
    rows = run_status(args.results)
    done = sum(r["shards_done"] for r in rows)
    planned = sum(r["shards_planned"] for r in rows)
    for r in rows:
        cfg = "none" if r["cfg"] is None else f"{r['cfg']:g}"
        state = "done" if r["shards_done"] == r["shards_planned"] else "pending"
        busy = f" ({r['in_progress']} in progress)" if r["in_progress"] else ""
        busy += f" ({r['corrupt']} corrupt: regenerated by the next run)" if r["corrupt"] else ""
        busy += "".join(f" [slurm: {n} {state}]" for state, n in sorted(r.get("slurm", {}).items()))
        print(f"  {r['cell_id']}  {r['model']:<18} steps={r['steps']:<4} cfg={cfg:<5} "
              f"shards {r['shards_done']}/{r['shards_planned']}{busy}  {state}")
    print(f"{done}/{planned} shards complete; results.parquet "
          f"{'present' if (args.results / 'results.parquet').exists() else 'not written yet'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import read_results, write_report

    written = write_report(args.results, read_results(args.results))
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from .adapters import discover
    from .cards import available_cards, load_card
    from .datasets import available_datasets
    from .features import available_extractors
    from .metrics import available_metrics

    sections = {
        "adapters": lambda: [f"{name}  ({cls.__module__})" for name, cls in sorted(discover().items())],
        "cards": lambda: [f"{n}  family={load_card(n).family}  {p}" for n, p in available_cards().items()],
        "datasets": available_datasets,
        "metrics": available_metrics,
        "extractors": available_extractors,
        "protocols": lambda: [str(p) for p in sorted(PROTOCOLS_DIR.glob("*.yaml"))],
    }
    for name, listing in sections.items():
        if args.what in ("all", name):
            print(f"{name}:")
            for line in listing():
                print(f"  {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("plan", "validate"):
            return cmd_plan(args, print_table=args.command == "plan")
        return {"run": cmd_run, "status": cmd_status, "report": cmd_report, "ls": cmd_ls}[args.command](args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
