"""`harness plan` prints the generation estimate: card cost blocks, else calibration, else 'unknown'."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.cli import main
from tests.support.protocols import smoke_with_model

REPO = Path(__file__).resolve().parents[2]


def test_plan_prints_gpu_hours_from_the_card_cost_block(tmp_path: Path, capsys) -> None:
    card = yaml.safe_load((REPO / "model_zoo" / "cards" / "fm-tiny.yaml").read_text())
    card["cost"] = {"seconds_per_nfe": 0.5, "gpu": "h100", "resolution": 28}
    (tmp_path / "costed.yaml").write_text(yaml.safe_dump(card))
    assert main(["plan", str(smoke_with_model(tmp_path, str(tmp_path / "costed.yaml")))]) == 0
    out = capsys.readouterr().out
    # smoke: steps {1, 2} x cfg {1, 2} x n=6; NFE/sample = steps, doubled when cfg != 1 -> (1+2+2+4) * 6 = 54
    assert "54 total NFE" in out
    assert f"generation estimate: ~{54 * 0.5 / 3600:.3g} GPU-hours\n" in out


def test_plan_without_cost_or_calibration_says_unknown_and_how_to_fix_it(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty-run" / "cells").mkdir(parents=True)  # a run directory without completed shards
    assert main(["plan", str(smoke_with_model(tmp_path, "fm-tiny")), "--calibrate", str(tmp_path / "empty-run")]) == 0
    out = capsys.readouterr().out
    assert "4 cells of unknown cost (give their cards a `cost: {seconds_per_nfe: ...}` or run a shard first)" in out
