"""`harness report RUN --compare OTHER`: per-setting MMHM Δ under one set of bounds, with the CI of the
paired bootstrap replicates, checked against MMHM computed by hand from the same numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.reports import load_runs
from harness.reports.compare import mmhm_differences
from harness.reports.mmhm import Bounds
from tests.support.report_rows import make_run, sweep_cells, write_replicates

EPS = 1e-3


def _hand_mmhm(fid, is_, fid_range=(10.0, 20.0), is_range=(20.0, 30.0)) -> np.ndarray:
    """MMHM of (fid, is) by the docs/metrics.md formula, u clipped to [0, 1] (what replicates use)."""
    u_fid = np.clip((fid_range[1] - np.asarray(fid)) / (fid_range[1] - fid_range[0]), 0, 1)
    u_is = np.clip((np.asarray(is_) - is_range[0]) / (is_range[1] - is_range[0]), 0, 1)
    return 2.0 / (1.0 / (EPS + u_fid) + 1.0 / (EPS + u_is))


def _pair(tmp_path: Path, sd: float) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Two runs of the same two settings; 'good' moves from (12, 28) to (10, 30); 'flat' is the worst in both."""
    this = {"good": {"model": "m", "steps": 1, "cfg": 1.0, "fid": 10.0, "is": 30.0},
            "flat": {"model": "m", "steps": 2, "cfg": 1.0, "fid": 20.0, "is": 20.0}}
    other = {"good": {**this["good"], "fid": 12.0, "is": 28.0}, "flat": dict(this["flat"])}
    a, b = make_run(tmp_path / "this", this, run="this"), make_run(tmp_path / "other", other, run="other")
    rng = np.random.default_rng(0)
    reps = {}
    for name, run, cells in (("this", a, this), ("other", b, other)):
        for metric in ("fid", "is"):
            reps[f"{name}-{metric}"] = cells["good"][metric] + rng.normal(0, sd, 400)
            write_replicates(run, "good", metric, reps[f"{name}-{metric}"])
    return a, b, reps


def test_mmhm_delta_matches_hand_computation_and_its_paired_ci(tmp_path: Path) -> None:
    a, b, reps = _pair(tmp_path, sd=0.3)
    diff, notes = mmhm_differences(load_runs([a]), load_runs([b]), ["fid", "is"])
    good = diff.set_index("steps").loc[1]
    assert good.mmhm == pytest.approx(_hand_mmhm(10.0, 30.0)) == pytest.approx(1.001)
    assert good.mmhm_other == pytest.approx(_hand_mmhm(12.0, 28.0)) == pytest.approx(0.801)
    assert good.delta == pytest.approx(0.2)
    def centred(key: str, value: float) -> np.ndarray:  # replicates reflected about their median onto the value
        return value - (reps[key] - np.median(reps[key]))

    paired = (_hand_mmhm(centred("this-fid", 10.0), centred("this-is", 30.0))
              - _hand_mmhm(centred("other-fid", 12.0), centred("other-is", 28.0)))
    paired += good.delta - np.median(paired)  # the draws' median moved onto Δ
    assert (good.ci_low, good.ci_high) == pytest.approx(tuple(np.percentile(paired, [2.5, 97.5])))
    assert good.ci_low > 0 and good.verdict == "better"
    flat = diff.set_index("steps").loc[2]
    assert flat.delta == 0 and flat.verdict == "identical"  # no replicates, but no change either
    assert notes == ["ds: MMHM over fid, is with bounds over the 4 cells of both runs: fid [10, 20], is [20, 30]"]


def test_wide_replicates_put_the_same_change_inside_the_noise(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path, sd=8.0)
    good = mmhm_differences(load_runs([a]), load_runs([b]), ["fid", "is"])[0].set_index("steps").loc[1]
    assert good.delta == pytest.approx(0.2) and good.ci_low < 0 < good.ci_high
    assert good.verdict == "inside the noise"


def test_frozen_bounds_are_used_for_both_runs(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path, sd=0.3)
    frozen = Bounds({"fid": (0.0, 40.0), "is": (0.0, 40.0)}, {"fid": False, "is": True}, frozen_from="b.json")
    diff, notes = mmhm_differences(load_runs([a]), load_runs([b]), ["fid", "is"], frozen)
    good = diff.set_index("steps").loc[1]
    wide = {"fid_range": (0.0, 40.0), "is_range": (0.0, 40.0)}
    assert good.delta == pytest.approx(_hand_mmhm(10.0, 30.0, **wide) - _hand_mmhm(12.0, 28.0, **wide))
    assert "frozen bounds from b.json" in notes[0]


def test_unpaired_settings_and_missing_replicates(tmp_path: Path) -> None:
    cells = sweep_cells()
    base = make_run(tmp_path / "base", cells, run="base")  # no replicates
    fewer = {c: {**s, "fid": s["fid"] - 1.0} for c, s in cells.items() if c != "multi-16-3"}
    new = make_run(tmp_path / "new", fewer, replicates=50, run="new")
    diff = mmhm_differences(load_runs([new]), load_runs([base]), ["fid", "is"])[0]
    verdicts = diff.set_index(["model", "steps", "cfg"]).verdict
    assert verdicts[("multi", 16, 3.0)] == "only in the other run"
    assert set(verdicts.drop(("multi", 16, 3.0))) <= {"no CI", "identical"}  # this side only: no paired CI
    assert (verdicts == "no CI").sum() >= 1 and diff.ci_low.isna().all()


def test_identical_runs_share_cell_ids_and_give_zero_deltas(tmp_path: Path) -> None:
    cells = sweep_cells()
    a = make_run(tmp_path / "a", cells, replicates=30, run="a")
    b = make_run(tmp_path / "b", cells, replicates=30, run="b", seed=5)  # same cell ids, other replicates
    diff = mmhm_differences(load_runs([a]), load_runs([b]))[0]
    assert len(diff) == len(cells) and (diff.delta == 0).all() and (diff.verdict == "identical").all()


def test_cli_compare_writes_the_mmhm_section_and_csv(tmp_path: Path, capsys) -> None:
    a, b, _ = _pair(tmp_path, sd=0.3)
    out = tmp_path / "out"
    assert main(["report", str(a), "--compare", str(b), "--out", str(out), "--mmhm-metrics", "fid,is"]) == 0
    md = (out / "comparison.md").read_text()
    assert "## MMHM per setting" in md and "bounds over the 4 cells of both runs" in md
    table = pd.read_csv(out / "comparison_mmhm.csv")
    assert list(table.verdict) == ["better", "identical"] and table.delta.iloc[0] == pytest.approx(0.2)
    assert "| ds        | m       |       1 |     1 |  1.001 |   0.801 | 0.2 |" in md
