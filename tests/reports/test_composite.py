"""MMHM, selection and bootstrap CIs against hand-computed values (docs/metrics.md, MMHM section)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.reports.mmhm import (
    Bounds,
    add_mmhm_ci,
    default_metrics,
    load_bounds,
    mmhm,
    noise_flags,
    select,
)
from tests.support.report_rows import frame_of, write_replicates

EPS = 1e-3


def by_hand(*u: float) -> float:
    return len(u) / sum(1.0 / (EPS + x) for x in u)


THREE = {  # fid lower-is-better, is higher-is-better
    "a": {"steps": 1, "fid": 10.0, "is": 5.0},
    "b": {"steps": 2, "fid": 20.0, "is": 9.0},
    "c": {"steps": 4, "fid": 15.0, "is": 8.0},
}


def test_mmhm_matches_hand_computation_with_fid_lower_is_better():
    scores = mmhm(frame_of(THREE))
    assert scores.metrics == ("fid", "is")
    assert scores.bounds.lo_hi == {"fid": (10.0, 20.0), "is": (5.0, 9.0)}
    assert scores.bounds.defined_by == ("a", "b", "c")
    t = scores.table
    # a: best FID (u=1), worst IS (u=0); b: the reverse; c: u_fid = (20-15)/10, u_is = (8-5)/4
    assert t.loc["a", "u_fid"] == 1.0 and t.loc["a", "u_is"] == 0.0
    assert t.loc["c", "u_fid"] == pytest.approx(0.5) and t.loc["c", "u_is"] == pytest.approx(0.75)
    assert t.loc["a", "mmhm"] == pytest.approx(by_hand(1.0, 0.0), rel=1e-12)
    assert t.loc["b", "mmhm"] == pytest.approx(by_hand(0.0, 1.0), rel=1e-12)
    assert t.loc["c", "mmhm"] == pytest.approx(2 / (1 / 0.501 + 1 / 0.751), rel=1e-12)


def test_veto_worst_on_one_metric_scores_at_most_0_004():
    cells = {
        "best_but_one": {"fid": 1.0, "is": 300.0, "clip_score": 35.0, "pickscore": 10.0},  # worst Pick only
        "middle": {"fid": 5.0, "is": 200.0, "clip_score": 30.0, "pickscore": 21.0},
        "top_pick": {"fid": 9.0, "is": 100.0, "clip_score": 25.0, "pickscore": 23.0},
    }
    t = mmhm(frame_of(cells)).table
    assert t.loc["best_but_one", "mmhm"] == pytest.approx(4 / (1000 + 3 / 1.001), rel=1e-12)
    assert t.loc["best_but_one", "mmhm"] <= 0.004
    assert t.loc["middle", "mmhm"] > 0.3  # never worst on any metric: no veto


def test_equal_bounds_give_u_one_for_every_row():
    cells = {"a": {"fid": 3.0, "is": 5.0}, "b": {"fid": 3.0, "is": 7.0}}
    t = mmhm(frame_of(cells)).table
    assert list(t.u_fid) == [1.0, 1.0]
    assert t.loc["b", "mmhm"] == pytest.approx(by_hand(1.0, 1.0))


def test_default_metrics_are_the_papers_present_ones_and_can_be_overridden():
    assert default_metrics(["class_alignment", "fid", "pickscore"]) == ("fid", "pickscore")
    cells = {"a": {"fid": 10.0, "class_alignment": 0.2}, "b": {"fid": 12.0, "class_alignment": 0.9}}
    assert mmhm(frame_of(cells)).metrics == ("fid",)
    both = mmhm(frame_of(cells), metrics=["fid", "class_alignment"])
    assert both.table.loc["a", "mmhm"] == pytest.approx(by_hand(1.0, 0.0))
    with pytest.raises(HarnessError, match=r"\['is'\] are not in the results"):
        mmhm(frame_of(cells), metrics=["fid", "is"])
    with pytest.raises(HarnessError, match="none of the paper's MMHM metrics"):
        mmhm(frame_of({"a": {"class_alignment": 0.5}}))


def test_cells_missing_a_metric_are_dropped_and_named():
    cells = {**THREE, "d": {"steps": 8, "fid": 12.0}}
    scores = mmhm(frame_of(cells))
    assert scores.dropped == ("d",) and "d" not in scores.table.index
    assert scores.bounds.lo_hi["fid"] == (10.0, 20.0)  # d did not define the bounds


def test_frozen_bounds_round_trip_clip_and_warn(tmp_path):
    path = tmp_path / "bounds.json"
    mmhm(frame_of(THREE)).bounds.save(path)
    saved = json.loads(path.read_text())
    assert saved["bounds"]["fid"] == {"min": 10.0, "max": 20.0, "higher_is_better": False}
    assert saved["defined_by"] == ["a", "b", "c"]
    frozen = load_bounds(path)
    other = {"x": {"fid": 25.0, "is": 7.0}, "y": {"fid": 12.0, "is": 11.0}}  # fid above hi, is above hi
    with pytest.warns(UserWarning, match="2 metric value"):
        scores = mmhm(frame_of(other), bounds=frozen)
    assert scores.table.loc["x", "u_fid"] == 0.0 and scores.table.loc["y", "u_is"] == 1.0
    assert scores.table.loc["y", "u_fid"] == pytest.approx(0.8)
    assert scores.bounds.lo_hi["fid"] == (10.0, 20.0) and scores.bounds.frozen_from == str(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # values inside the frozen bounds: no warning
        mmhm(frame_of(THREE), bounds=frozen)


def test_bad_bounds_files_name_the_problem(tmp_path):
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"fid": {"min": 3.0}}))
    with pytest.raises(HarnessError, match=r"b.json: bounds of 'fid' must have keys min and max"):
        load_bounds(bad)
    bad.write_text(json.dumps({"fid": {"min": 3.0, "max": 1.0}}))
    with pytest.raises(HarnessError, match="min <= max"):
        load_bounds(bad)
    frozen = Bounds({"fid": (0.0, 1.0)}, {"fid": False}, frozen_from="f.json")
    with pytest.raises(HarnessError, match=r"f.json: no bounds for metrics \['is'\]"):
        mmhm(frame_of(THREE), bounds=frozen)
    flipped = Bounds({"fid": (0.0, 1.0), "is": (0.0, 9.0)}, {"fid": True, "is": True}, frozen_from="g.json")
    with pytest.raises(HarnessError, match=r"g.json: higher_is_better of \['fid'\] disagrees"):
        mmhm(frame_of(THREE), bounds=flipped)


def test_selection_per_model_shows_mmhm_argmax_beside_the_fid_optimum():
    cells = {
        "m1s1": {"model": "m1", "steps": 1, "cfg": 1.0, "fid": 30.0, "is": 50.0, "clip_score": 20.0},
        "m1s2": {"model": "m1", "steps": 2, "cfg": 3.0, "fid": 12.0, "is": 120.0, "clip_score": 28.0},
        "m1s3": {"model": "m1", "steps": 4, "cfg": 7.0, "fid": 10.0, "is": 60.0, "clip_score": 21.0},
        "m2s1": {"model": "m2", "steps": 1, "cfg": None, "fid": 20.0, "is": 100.0, "clip_score": 30.0},
    }
    frame = frame_of(cells)
    sel = select(frame, mmhm(frame)).set_index(["model", "criterion"])
    assert sel.loc[("m1", "MMHM"), "cell_id"] == "m1s2"
    assert sel.loc[("m1", "fid-optimal"), "cell_id"] == "m1s3"
    assert sel.loc[("m1", "clip_score-optimal"), "cell_id"] == "m1s2"
    assert "pickscore-optimal" not in set(sel.index.get_level_values(1))
    assert sel.loc[("m2", "MMHM"), "steps"] == 1 and math.isnan(sel.loc[("m2", "MMHM"), "cfg"])


def test_bootstrap_ci_uses_replicate_b_of_every_metric_under_point_bounds(tmp_path):
    frame = frame_of(THREE)
    scores = mmhm(frame)
    rng = np.random.default_rng(0)
    fid_reps, is_reps = 17 + rng.normal(0, 3, 200), 8 + rng.normal(0, 1, 200)  # fid's replicates biased up
    write_replicates(tmp_path, "c", "fid", fid_reps)
    write_replicates(tmp_path, "c", "is", is_reps)
    write_replicates(tmp_path, "a", "fid", fid_reps)  # a lacks IS replicates: no CI
    out = add_mmhm_ci(scores, {c: tmp_path for c in "abc"}).table
    expected = []  # plain-Python restatement: each metric's replicates reflected about their median onto its
    for f, i in zip(fid_reps, is_reps, strict=True):  # value (15, 8), clipped u, then MMHM
        f, i = 15 - (f - np.median(fid_reps)), 8 - (i - np.median(is_reps))
        uf, ui = min(max((20 - f) / 10, 0.0), 1.0), min(max((i - 5) / 4, 0.0), 1.0)
        expected.append(2 / (1 / (EPS + uf) + 1 / (EPS + ui)))
    shift = out.loc["c", "mmhm"] - np.median(expected)  # the draws' median is moved onto the cell's MMHM
    ordered = sorted(e + shift for e in expected)  # 2.5 / 97.5 of 200 lie within one order statistic
    assert ordered[4] <= out.loc["c", "mmhm_ci_low"] <= ordered[5]
    assert min(ordered[-6], 1.001) <= out.loc["c", "mmhm_ci_high"] <= min(ordered[-5], 1.001)  # MMHM <= 1 + ε
    assert out.loc["c", "mmhm_ci_low"] <= out.loc["c", "mmhm"] <= out.loc["c", "mmhm_ci_high"]
    assert math.isnan(out.loc["a", "mmhm_ci_low"]) and math.isnan(out.loc["b", "mmhm_ci_high"])


def test_mmhm_interval_contains_mmhm_when_every_replicate_is_biased_away(tmp_path):
    """Reused-run regression: FID replicates all above the value (resampling bias) made the percentile MMHM
    interval of the best cell exclude its MMHM (1.001 [0.001998, 0.8997]); the centred draws keep it inside."""
    scores = mmhm(frame_of({"x": {"steps": 1, "fid": 10.0, "is": 9.0}, "y": {"steps": 2, "fid": 20.0, "is": 5.0}}))
    write_replicates(tmp_path, "x", "fid", 12 + np.linspace(0, 6, 50))  # every replicate worse than 10
    write_replicates(tmp_path, "x", "is", 9 + np.linspace(-0.5, 0.5, 50))
    out = add_mmhm_ci(scores, {c: tmp_path for c in "xy"}).table
    assert out.loc["x", "mmhm"] == pytest.approx(1.001)
    assert out.loc["x", "mmhm_ci_low"] < out.loc["x", "mmhm"] <= out.loc["x", "mmhm_ci_high"]
    assert out.loc["x", "mmhm_ci_high"] == pytest.approx(1.001)  # never past what MMHM can reach (u <= 1)


def test_replicate_files_that_break_the_contract_are_refused(tmp_path):
    scores = mmhm(frame_of(THREE))
    write_replicates(tmp_path, "c", "fid", [1.0, 2.0, 3.0])
    write_replicates(tmp_path, "c", "is", [1.0, 2.0])
    with pytest.raises(HarnessError, match="replicate counts differ"):
        add_mmhm_ci(scores, {c: tmp_path for c in "abc"})
    write_replicates(tmp_path, "c", "is", [1.0, np.nan, 3.0])
    with pytest.raises(HarnessError, match=r"c/is.npy: expected a finite float vector"):
        add_mmhm_ci(scores, {c: tmp_path for c in "abc"})


def test_noise_flags_mark_adjacent_ranks_with_overlapping_cis():
    # ranks by value: x (0.9) > y (0.8) > z (0.3); x,y overlap, y,z do not
    flags = noise_flags([0.8, 0.3, 0.9], [0.7, 0.2, 0.75], [0.85, 0.4, 0.95])
    assert flags == [False, False, True]
    assert noise_flags([10.0, 12.0], [9.0, 11.5], [10.5, 12.5], higher_is_better=False) == [False, False]
    assert noise_flags([1.0, 2.0], [np.nan, 1.0], [np.nan, 3.0]) == [False, False]
