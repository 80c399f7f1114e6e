"""``harness score``: metrics of a folder (or .npz) of images against a reference, without a protocol.

A thin layer over the engine the Python API uses (harness/api/scoring.py, ``harness.score``): this module
parses the flags, prints one line per metric and writes the rows to ``--out``."""

from __future__ import annotations

import argparse

from harness.api.checks import check_device
from harness.api.images import BATCH, LOSSY, NPZ_DECODED, ImageSource, warn
from harness.api.scoring import (
    DEFAULT_DATASET_N,
    ScoreRow,
    extract_all,
    resolve_references,
    score_frame,
    score_images,
)
from harness.reports import write_parquet
from harness.store import default_cache_dir

# the engine's names, importable from here as before the API existed (bench/ scripts and tests use them)
__all__ = ["BATCH", "DEFAULT_DATASET_N", "LOSSY", "NPZ_DECODED", "ImageSource", "ScoreRow", "cmd_score",
           "extract_all", "resolve_references", "score_frame", "score_images", "warn"]


def cmd_score(args: argparse.Namespace) -> int:
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
