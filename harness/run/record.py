"""run.json: a results directory belongs to the plan that made it.

Re-running the same protocol (same content, same cell ids) resumes the run. A directory holding another
protocol's run, or results with no run.json, is refused before anything is written or computed, unless the
caller extends it on purpose (``harness run --extend``): then the earlier cells stay listed in run.json and
their rows stay in results.parquet, so nothing a user produced is replaced silently.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.plan.protocol import Plan
from harness.store import atomic_write_json

# Where the plan came from is not its content: the same protocol by name or by path is the same run.
_NOT_CONTENT = ("source",)
_USER_FILES = ("results.parquet", "leaderboard.md", "leaderboard.csv", "index.html")


def _content(protocol: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in protocol.items() if k not in _NOT_CONTENT}


def protocol_content(plan: Plan) -> dict[str, Any]:
    """The protocol as run.json stores it (JSON types), without its file path."""
    return _content(json.loads(json.dumps(asdict(plan.protocol))))


def _read_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "run.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        record["protocol"], record["cells"]  # noqa: B018 - both must be there
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HarnessError(f"{path}: unreadable run record ({e}); it is not overwritten: choose another "
                           f"--results DIR, or move it away") from None
    return record


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``n: 100 -> 64; models differ``: the differing keys, with their values when they are short."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))

    def one(k: str) -> str:
        a, b = json.dumps(old.get(k)), json.dumps(new.get(k))
        return f"{k}: {a} -> {b}" if len(a) + len(b) <= 60 else f"{k} differ"

    return "; ".join(one(k) for k in keys[:4]) + (f"; +{len(keys) - 4} more" if len(keys) > 4 else "")


def claim_run_dir(plan: Plan, run_dir: Path, extend: bool) -> dict[str, dict[str, Any]]:
    """Refuse ``run_dir`` if it holds another plan's run (unless ``extend``). Returns the earlier cells to keep
    (cell id → its run.json entry; ``{}`` for a fresh directory or a plain resume of this plan)."""
    record = _read_record(run_dir)
    ids = {c.cell_id for c in plan.cells}
    hint = ("start a new run with another --results DIR, or add this protocol's cells to it on purpose with "
            "--extend (its earlier cells and results are kept)")
    if record is None:
        found = [name for name in _USER_FILES if (run_dir / name).exists()]
        if not found:
            return {}
        if not extend:
            raise HarnessError(f"{run_dir}: holds {', '.join(found)} but no run.json (not a run of this "
                               f"protocol); refusing to overwrite it: {hint}")
        return {}  # nothing listed to keep; with_kept_rows keeps the rows of results.parquet
    cells = {c["cell_id"]: c for c in record["cells"]}
    content = _content(record["protocol"])
    same = content == protocol_content(plan) and ids <= set(cells)
    if not same and not extend:
        what = _differences(content, protocol_content(plan)) or "same protocol, but other cell ids (another " \
                                                                 "harness sampling version)"
        raise HarnessError(f"{run_dir}: holds a run of protocol {record['protocol'].get('name')!r} that differs "
                           f"from this one ({what}); refusing to overwrite it: {hint}")
    return {c: entry for c, entry in cells.items() if c not in ids}


def write_run_record(run_dir: Path, plan: Plan, cell_dirs: dict[str, str], kept: dict[str, dict[str, Any]]) -> None:
    """run.json: what `harness status` and `harness report` read (no live launcher needed). Cells kept from an
    extended run come after this plan's, each with the shard size it was generated with."""
    p = plan.protocol
    previous = _read_record(run_dir) if kept else None
    history = (previous or {}).get("extended_from", [])
    if previous and _content(previous["protocol"]) != protocol_content(plan):
        history = [*history, previous["protocol"]]
    cells = [{"cell_id": c.cell_id, "dir": str(Path(cell_dirs[c.cell_id]).relative_to(run_dir)),
              "model": c.model.name, "dataset": c.dataset.id, "steps": c.settings.steps, "cfg": c.settings.cfg,
              "n": c.n, "shard_size": p.shard_size} for c in plan.cells]
    prior_size = (previous or {}).get("shard_size")
    cells += [{**entry, "shard_size": entry.get("shard_size", prior_size)} for entry in kept.values()]
    atomic_write_json(run_dir / "run.json", {"protocol": asdict(p), "shard_size": p.shard_size, "cells": cells,
                                             **({"extended_from": history} if history else {})})


def with_kept_rows(frame: pd.DataFrame, run_dir: Path) -> pd.DataFrame:
    """This plan's rows followed by every earlier row of results.parquet that it does not recompute (another
    cell, or a metric this plan does not ask for). Only an extended directory has such rows: a plain resume
    of one plan recomputes (reads from cache) exactly the rows it had."""
    old = run_dir / "results.parquet"
    if not old.exists():
        return frame
    earlier = pd.read_parquet(old)
    fresh = set(zip(frame.cell_id, frame.metric, strict=True))
    earlier = earlier[[pair not in fresh for pair in zip(earlier.cell_id, earlier.metric, strict=True)]]
    return frame if earlier.empty else pd.concat([frame, earlier], ignore_index=True)
