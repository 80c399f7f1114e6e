"""The parser and dispatch of ``harness plan | validate | run | status | report | score | cost | ls | dataset |
weights``.

Errors the user can fix print as one line (``error: ...``) and exit 2, before any compute is spent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import __version__
from harness.cli.checks import (
    PROTOCOLS_DIR,
    OneLineParser,
    os_error_line,
    positive_int,
    quiet_broken_pipe,
    run_dir,
)
from harness.errors import HarnessError
from harness.executors import EXECUTORS


def _add_protocol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("protocol", help="protocol YAML file (or the name of one in protocols/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a protocol key, value parsed as YAML (repeatable), e.g. --set steps=[1,2]")


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
    p.add_argument("--executor", default="local",
                   help=f"where the stages run: {', '.join(EXECUTORS)}, or one a plugin registers (harness/plugins.py)")
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
    from harness.cli.cost import add_cost_parser  # imports nothing heavy at parse time

    add_cost_parser(sub, positive_int)
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


def _dispatch(args: argparse.Namespace) -> int:
    """Import only the verb's own module: ``harness ls`` never loads torch."""
    if args.command in ("plan", "validate"):
        from harness.cli.plan import cmd_plan

        return cmd_plan(args, print_table=args.command == "plan")
    if args.command == "weights":
        from harness.cli.weights import run_cli

        return run_cli(args.action, args.names)
    if args.command == "ls":
        from harness.cli.ls import cmd_ls

        return cmd_ls(args, PROTOCOLS_DIR)
    if args.command in ("run", "status"):
        from harness.cli.run import cmd_run, cmd_status

        return (cmd_run if args.command == "run" else cmd_status)(args)
    if args.command == "report":
        from harness.cli.report import cmd_report

        return cmd_report(args)
    if args.command == "cost":
        from harness.cli.cost import cmd_cost

        return cmd_cost(args)
    if args.command == "score":
        from harness.cli.score import cmd_score

        return cmd_score(args)
    from harness.cli.ls import cmd_dataset

    return cmd_dataset(args)


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
