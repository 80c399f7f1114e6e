"""``harness plan | run | status | report | ls | validate | score``.

Errors the user can fix print as one line (``error: ...``) and exit 2, before any compute is spent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import __version__
from harness.cli.checks import (
    OneLineParser,
    check_device,
    os_error_line,
    positive_int,
    quiet_broken_pipe,
    read_json_file,
    run_dir,
)
from harness.errors import HarnessError

PROTOCOLS_DIR = Path(__file__).resolve().parents[2] / "protocols"


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
    parser = OneLineParser(prog="harness", description="Fair benchmarking of image generators.")
    parser.add_argument("--version", action="version", version=f"onestep-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="print the cells, shards, samples, total NFE and estimated GPU-hours of a protocol")
    _add_protocol_args(p)
    p.add_argument("--calibrate", type=run_dir, action="append", default=[], metavar="RUN_DIR",
                   help="run directories whose completed shards calibrate cards without a cost block "
                        "(repeatable; default: results/<protocol name> when it exists)")
    p = sub.add_parser("validate", help="check a protocol (schema and model capabilities) without running it")
    _add_protocol_args(p)
    p = sub.add_parser("run", help="generate, extract, score and report (resumes; skips what is done)")
    _add_protocol_args(p)
    p.add_argument("--results", type=Path, help="run directory (default: results/<protocol name>)")
    p.add_argument("--extend", action="store_true",
                   help="add this protocol's cells to a run directory that holds another protocol's run, keeping "
                        "its cells and results (without it such a directory is refused)")
    p.add_argument("--executor", default="local", choices=["debug", "local", "slurm"])
    p.add_argument("--workers", type=positive_int, default=None,
                   help="processes for --executor local, >= 1 (default: one per visible GPU, pinned to it; else 2)")
    p.add_argument("--cache", type=Path, default=None,
                   help="feature/reference cache (default: $HARNESS_CACHE or ~/.cache/onestep-bench)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--profile", help="--executor slurm: cluster profile YAML (or a name in slurm/profiles/)")
    p.add_argument("--wait", action="store_true",
                   help="--executor slurm: block until the arrays and the collect job ended (default: return "
                        "after submission)")
    p.add_argument("--allow-large", action="store_true",
                   help="run a sweep above the size limits (harness/plan/cost.py: 20,000,000 samples or "
                        "500,000 shards)")
    p = sub.add_parser("status", help="progress of a run directory, read from its files (Slurm asked only "
                                      "about shards with no manifest)")
    p.add_argument("run_dir", nargs="?", type=Path, help="run directory (same as --results)")
    p.add_argument("--results", type=Path)
    p = sub.add_parser("report", help="leaderboards (md/csv/tex/html), plots and comparisons from results.parquet")
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN", help="run directories (several are merged)")
    p.add_argument("--results", type=Path, action="append", default=[], help="a run directory (same as RUN)")
    p.add_argument("--out", type=Path, help="where to write (default: the run; required when merging runs)")
    p.add_argument("--compare", type=Path, metavar="OTHER", help="paired differences RUN − OTHER with CIs")
    p.add_argument("--mmhm-metrics", help="comma-separated metrics MMHM combines "
                   "(default: fid,is,clip_score,pickscore ∩ the metrics present)")
    p.add_argument("--bounds", type=Path, help="frozen MMHM bounds file (mmhm_bounds_<dataset>.json of another run)")
    p.add_argument("--mmhm-best", choices=["rows", "real"], default="rows",
                   help="MMHM's best bound per metric: the best cell (rows, default) or the real-data floor (real: "
                        "the protocol's `real:` cell of each dataset)")
    p = sub.add_parser("score", help="metrics of a folder or .npz of images against a reference (no protocol)")
    p.add_argument("images", type=Path, help="folder of images (recursive) or ADM-style .npz (arr_0 uint8 NHWC)")
    p.add_argument("--metrics", required=True, help="comma-separated metric names, e.g. fid_tf1,is,kid")
    p.add_argument("--reference", help="folder, image .npz, dataset id, or statistics .npz")
    p.add_argument("--reference-format", help="for a foreign mu/sigma .npz: adm, clean-fid, clean-fid-legacy-tf, "
                                              "pytorch-fid")
    p.add_argument("--reference-n", type=int, help="reference images (dataset id; or N of a foreign stats file)")
    p.add_argument("--bootstrap", type=int, default=0, help="bootstrap replicates for CIs (default 0: off)")
    p.add_argument("--out", type=Path, default=Path("score.parquet"), help="tidy rows (default score.parquet)")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("ls", help="list adapters, cards, datasets, metrics, extractors or protocols")
    p.add_argument("what", nargs="?", default="all",
                   choices=["all", "adapters", "cards", "datasets", "metrics", "extractors", "protocols"])
    p = sub.add_parser("dataset", help="scan and validate a dataset; print its manifest (files, digest, histogram)")
    p.add_argument("name", help="dataset name (see `harness ls datasets`)")
    p = sub.add_parser("weights", help="list, fetch (networked machine) or verify the weights extractors and "
                                       "model cards need")
    p.add_argument("action", choices=["list", "fetch", "verify"])
    p.add_argument("names", nargs="*", help="weights names (see `harness weights list`) or model card names "
                                            "(their hub repo and the files their params name)")
    return parser


def cmd_plan(args: argparse.Namespace, print_table: bool) -> int:
    from harness.models.adapters import get_adapter_class
    from harness.plan.cost import plan_size_warnings
    from harness.plan.protocol import load_protocol, make_plan

    plan = make_plan(load_protocol(_protocol_path(args.protocol), args.overrides))
    p = plan.protocol
    total_shards = sum(plan.shard_count(c) for c in plan.cells)
    total_nfe = 0
    lines = []
    adaptive = 0
    for c in plan.cells:
        adapter = get_adapter_class(c.model.family)(c.model)
        caps = adapter.capabilities
        nfe = adapter.expected_nfe(c.settings)
        if nfe is None:
            adaptive += 1
        else:
            total_nfe += nfe * c.n
        cfg = "none" if c.settings.cfg is None else f"{c.settings.cfg:g}"
        knobs = "".join(f" {k}={v}" for k, v in c.settings.knobs)
        knobs += f" resize={c.resize[0]}px/{c.resize[1]}" if c.resize else ""
        cell_id = f"~{c.cell_id}" if c.provisional else f" {c.cell_id}"
        lines.append(f" {cell_id}  {c.model.name:<18} {c.dataset.id:<13} steps={c.settings.steps:<4} "
                     f"cfg={cfg:<5} guidance={caps.guidance:<8} sampler={c.settings.sampler:<6} n={c.n:<6} "
                     f"shards={plan.shard_count(c):<4} nfe/sample={'adaptive' if nfe is None else nfe}{knobs}")
    lines += _refused_lines(plan)
    if print_table:
        print(f"protocol {p.name} ({p.source})")
        for dataset_id, why in plan.missing_data.items():
            print(f"  provisional dataset {dataset_id}: files absent, cell ids marked ~ are placeholders "
                  f"(`harness run` refuses them): {why}")
        if p.reference_stats:
            absent = f"; absent (`harness run` refuses): {plan.missing_reference}" if plan.missing_reference else ""
            print(f"  reference statistics: {p.reference_stats.file} ({p.reference_stats.format}), not the "
                  f"datasets' images{absent}")
        print("\n".join(lines))
    unknown = f" (+ {adaptive} adaptive-solver cells, NFE known after sampling)" if adaptive else ""
    refused = f"; {len(plan.refused)} refused settings listed, not run" if plan.refused else ""
    provisional = f"; provisional ids (data absent: {', '.join(plan.missing_data)})" if plan.missing_data else ""
    print(f"{len(plan.cells)} cells, {total_shards} shards, {len(plan.cells) * p.n} samples, "
          f"{total_nfe} total NFE{unknown}; metrics: {', '.join(p.metrics) or 'none'}{refused}{provisional}")
    cost = _gpu_hours(plan, getattr(args, "calibrate", []))
    print(f"generation estimate: {cost}")
    for warning in plan_size_warnings(plan, Path("results") / p.name, cost.gpu_hours):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _gpu_hours(plan, calibrate: list[Path]):
    """GPU-hours from the cards' cost blocks, else calibrated from completed shards of earlier runs."""
    from harness.plan.cost import estimate_plan_gpu_hours

    default = Path("results") / plan.protocol.name
    dirs = calibrate or ([default] if default.is_dir() and (default / "cells").is_dir() else [])
    return estimate_plan_gpu_hours(plan, dirs)


def _refused_lines(plan) -> list[str]:
    """Settings listed as refused (``unsupported: list``), one line per model, sampler and reason."""
    steps: dict[tuple[str, str, str, str], list[int]] = {}
    for r in plan.refused:
        cfg = "none" if r.settings.cfg is None else f"{r.settings.cfg:g}"
        steps.setdefault((r.model, cfg, r.settings.sampler, r.reason), []).append(r.settings.steps)
    return [f"  refused            {model:<18} steps={','.join(map(str, s))} cfg={cfg} sampler={sampler} "
            f"not run: {reason}" for (model, cfg, sampler, reason), s in steps.items()]


def cmd_run(args: argparse.Namespace) -> int:
    from harness.cli.weights import require_for_metrics
    from harness.executors.base import make_executor
    from harness.plan.cost import check_plan_size
    from harness.plan.protocol import load_protocol, make_plan
    from harness.run.runner import run_plan
    from harness.store import default_cache_dir, ensure_writable

    if args.workers is not None and args.executor != "local":
        raise HarnessError(f"--workers {args.workers} applies to --executor local only (got --executor "
                           f"{args.executor})")
    if args.executor != "slurm" and (args.profile or args.wait):
        raise HarnessError("--profile and --wait apply to --executor slurm only")
    check_device(args.device, local=args.executor != "slurm")
    plan = make_plan(load_protocol(_protocol_path(args.protocol), args.overrides))
    plan.require_data()  # provisional cell ids (a dataset's files absent): refused before anything else
    require_for_metrics(plan.protocol.metrics)  # missing weights: refused before any compute
    check_plan_size(plan, args.allow_large)  # a typo'd n must not list millions of shards first
    run_dir = args.results or Path("results") / plan.protocol.name
    cache = args.cache or default_cache_dir()
    ensure_writable(run_dir)
    ensure_writable(cache, "cache directory", "--cache DIR (or $HARNESS_CACHE)")
    if args.executor == "slurm":
        return _run_on_slurm(args, plan, run_dir)
    executor = make_executor(args.executor, args.workers, args.device)
    try:
        run_plan(plan, run_dir, cache, executor, args.device, extend=args.extend)
    finally:
        executor.close()
    return 0


def _run_on_slurm(args: argparse.Namespace, plan, run_dir: Path) -> int:
    from harness.executors.slurm_profile import load_profile
    from harness.run.slurm import submit_plan
    from harness.store import default_cache_dir

    if not args.profile:
        raise HarnessError("--executor slurm needs --profile FILE (see slurm/profiles/, e.g. --profile ci)")
    profile = load_profile(args.profile)
    submit_plan(plan, run_dir.resolve(), (args.cache or default_cache_dir()).resolve(), profile, args.device, args.wait,
                extend=args.extend)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from harness.run.status import run_status

    if (args.run_dir is None) == (args.results is None):
        raise HarnessError("status: give the run directory once, as `harness status RUN` or --results RUN")
    args.results = args.run_dir or args.results
    if (args.results / "run.json").exists():  # a damaged record is named here, not as a traceback below
        read_json_file(args.results / "run.json", "run record", ("shard_size", "cells"))
    rows, stages = run_status(args.results)
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
    for stage, counts in stages.items():  # Slurm runs only: the jobs after generation
        print(f"slurm {stage} jobs: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.reports import load_runs, write_comparison, write_results_report
    from harness.reports.mmhm import load_bounds
    from harness.store import ensure_writable

    runs = [*args.runs, *args.results]
    if not runs:
        raise HarnessError("report: name at least one run directory (harness report RUN [RUN ...])")
    if len(runs) > 1 and args.out is None:
        raise HarnessError(f"report: merging {len(runs)} runs needs --out DIR (not written into any one of them)")
    out = args.out or runs[0]
    metrics = [m.strip() for m in args.mmhm_metrics.split(",") if m.strip()] if args.mmhm_metrics else None
    bounds = load_bounds(args.bounds) if args.bounds else None
    results = load_runs(runs)
    other = load_runs([args.compare]) if args.compare else None
    ensure_writable(out, "report directory", "--out DIR")  # before anything is written
    ensure_writable(out / "plots", "report plots directory", "--out DIR")
    written = write_results_report(results, out, metrics, bounds, args.mmhm_best)
    if other is not None:
        written += write_comparison(results, other, out, metrics, bounds)
    shown = [str(w.relative_to(out)) for w in written if w.parent == out]
    print(f"wrote {len(written)} files under {out}: {', '.join(shown)} and plots/")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from harness.cli.score import score_frame, score_images
    from harness.reports import write_parquet
    from harness.store import default_cache_dir

    check_device(args.device)
    rows = score_images(args.images, [m.strip() for m in args.metrics.split(",") if m.strip()], args.reference,
                        args.cache or default_cache_dir(), args.reference_format, args.reference_n, args.bootstrap,
                        args.device)
    for r in rows:
        ci = "" if r.ci_low is None else f"  [{r.ci_low:.6g}, {r.ci_high:.6g}]"
        print(f"{r.metric:<12} {r.value:.6g}{ci}  n={r.n}  ({r.variant})")
    write_parquet(score_frame(rows), args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    """``harness dataset NAME``: scan + validate (errors name the path), then print the manifest as JSON."""
    import json

    from harness.datasets import get_dataset

    dataset = get_dataset(args.name)
    record = getattr(dataset, "manifest_record", None)
    manifest = record() if record else dataset.manifest() if hasattr(dataset, "manifest") else None
    if not isinstance(manifest, dict):
        manifest = {"dataset": args.name, "digest": dataset.digest, "size": dataset.size}
    print(json.dumps(manifest, indent=1))
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("plan", "validate"):
        return cmd_plan(args, print_table=args.command == "plan")
    if args.command == "weights":
        from harness.cli.weights import run_cli

        return run_cli(args.action, args.names)
    if args.command == "ls":
        from harness.cli.ls import cmd_ls

        return cmd_ls(args, PROTOCOLS_DIR)
    return {"run": cmd_run, "status": cmd_status, "report": cmd_report, "score": cmd_score,
            "dataset": cmd_dataset}[args.command](args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # inside the handlers: a closed pipe surfaces at this flush, not at interpreter exit
        return code
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return quiet_broken_pipe()
    except OSError as e:  # anything the checks above did not anticipate: still one line naming the path
        print(f"error: {os_error_line(e, args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
