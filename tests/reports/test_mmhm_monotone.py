"""A metric that is better only up to a target value (density: ~1 is real-like) never enters MMHM's default set:
MMHM rewards each metric's extreme, so it would crown the cell that crowds the reference's dense regions."""

from __future__ import annotations

from harness.reports import build_boards, results_from_frame
from tests.support.report_rows import frame_of

# "crowded" has the best density by far and the worst FID; "real-like" has density ~1 and the best FID.
CELLS = {"crowded": {"model": "a", "fid_mnist": 40.0, "class_alignment": 0.95, "density_mnist": 1.6},
         "real-like": {"model": "b", "fid_mnist": 20.0, "class_alignment": 0.94, "density_mnist": 1.0},
         "poor": {"model": "c", "fid_mnist": 80.0, "class_alignment": 0.60, "density_mnist": 0.4}}


def board(tmp_path, **kw):
    frame = frame_of(CELLS)
    frame.loc[frame.metric == "fid_mnist", "higher_is_better"] = False
    return build_boards(results_from_frame(tmp_path, frame), **kw)[0]


def test_a_target_valued_metric_stays_out_of_the_default_mmhm(tmp_path):
    b = board(tmp_path)
    assert b.scores.metrics == ("class_alignment", "fid_mnist")
    assert any("Left out of MMHM" in n and "density_mnist" in n for n in b.notes)
    assert b.scores.table.mmhm.idxmax() == "real-like"
    assert "density_mnist" in b.metrics  # still shown


def test_named_with_mmhm_metrics_it_is_used(tmp_path):
    b = board(tmp_path, mmhm_metrics=["fid_mnist", "class_alignment", "density_mnist"])
    assert b.scores.metrics == ("fid_mnist", "class_alignment", "density_mnist")
    assert not any("Left out of MMHM" in n for n in b.notes)
