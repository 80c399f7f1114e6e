"""`harness cost CARD`: prints the measured record, `--write` fills the card's cost: block (comments kept), and
`harness plan` then estimates from it and says which device it assumes. Bad input: one line, exit 2."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.errors import ProtocolError
from harness.models.cards import load_card, parse_card_cost
from tests.support.protocols import smoke_with_model

REPO = Path(__file__).resolve().parents[2]
FAST = ["--k", "2", "--warmup", "0", "--batch", "2", "--steps", "1"]


def _card_copy(tmp_path: Path) -> Path:
    path = tmp_path / "fm-tiny.yaml"
    shutil.copy(REPO / "model_zoo" / "cards" / "fm-tiny.yaml", path)
    return path


def test_cost_prints_the_measured_record(tmp_path, capsys):
    assert main(["cost", "fm-tiny", *FAST, "--cfg", "2", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fm-tiny measured on cpu (float32); NFE 2" in out  # cfg 2 doubles the one step's NFE
    assert "k=2 timed calls" in out and "throughput (batch 2" in out and "FLOPs per image" in out
    assert "threads=" in out and "torch=" in out
    assert len(list((tmp_path / "cost").glob("*.json"))) == 1


def test_write_fills_the_card_cost_block_and_plan_uses_it(tmp_path, capsys):
    card = _card_copy(tmp_path)
    before = card.read_text()
    for _ in range(2):  # a second --write replaces the block, never appends another
        assert main(["cost", str(card), *FAST, "--write", "--cache", str(tmp_path / "c")]) == 0
    text = card.read_text()
    assert text.count("\ncost:") == 1
    assert "# seeded random init" in text and text.startswith(before.rstrip("\n").split("\n")[0])
    cost = load_card(str(card)).cost
    assert cost["device"] == "cpu" and cost["batch"] == 2 and cost["resolution"] == 28
    assert cost["seconds_per_nfe"] > 0 and "harness cost fm-tiny" in cost["note"]
    capsys.readouterr()
    assert main(["plan", str(smoke_with_model(tmp_path, str(card)))]) == 0
    out = capsys.readouterr().out
    hours = float(re.search(r"generation estimate: ~([0-9.e+-]+) GPU-hours", out).group(1))
    assert hours == pytest.approx(54 * cost["seconds_per_nfe"] / 3600, rel=1e-2)  # smoke: 54 NFE in all
    assert "generation estimate assumes: cpu, batch 2, card cost block (fm-tiny)" in out


def test_plan_says_which_device_the_card_estimate_assumes(tmp_path, capsys):
    raw = yaml.safe_load((REPO / "model_zoo" / "cards" / "fm-tiny.yaml").read_text())
    raw["cost"] = {"seconds_per_nfe": 0.5, "gpu": "h100"}
    (tmp_path / "costed.yaml").write_text(yaml.safe_dump(raw))
    assert main(["plan", str(smoke_with_model(tmp_path, str(tmp_path / "costed.yaml")))]) == 0
    assert "generation estimate assumes: h100, card cost block (fm-tiny)" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["fm-tiny-noguide", "--cfg", "2"], "cfg=2.0 asked of a model without guidance"),
    (["fm-tiny", "--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    (["fm-tiny", "--warmup", "-1"], "--warmup -1: expected an integer >= 0"),
    (["fm-tiny", "--steps", "5000"], "steps=5000 is outside its range"),
    (["fm-tny"], "unknown model card 'fm-tny'"),
])
def test_bad_input_is_one_line_naming_it(args, message, capsys):
    if "--device" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is visible here")
    assert main(["cost", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_k_zero_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["cost", "fm-tiny", "--k", "0"])
    assert stop.value.code == 2 and "--k" in capsys.readouterr().err


@pytest.mark.parametrize("block, message", [
    ({"seconds_per_nfe": 0.1, "device": ""}, "cost.device: '' is not valid"),
    ({"seconds_per_nfe": 0.1, "batch": 0}, "cost.batch: 0 is not valid"),
])
def test_card_cost_device_and_batch_are_validated(block, message):
    with pytest.raises(ProtocolError, match=re.escape(message)):
        parse_card_cost(block, "card.yaml")
    assert parse_card_cost({"seconds_per_nfe": 0.1, "gpu": "h100"}, "old.yaml")["gpu"] == "h100"  # old cards valid


def test_write_card_cost_replaces_an_inline_block_and_keeps_the_keys_after_it(tmp_path):
    from harness.models.cards import write_card_cost

    card = _card_copy(tmp_path)
    text = card.read_text().replace("description:", "cost: {seconds_per_nfe: 1, gpu: h100}  # old\ndescription:")
    card.write_text(text)
    written = write_card_cost(card, {"seconds_per_nfe": 0.25, "device": "cpu", "batch": 4})
    assert written.cost == {"seconds_per_nfe": 0.25, "device": "cpu", "batch": 4}
    after = card.read_text()
    assert "h100" not in after and after.count("cost:") == 1 and "description: >-" in after
    assert load_card(str(card)).params == load_card(str(REPO / "model_zoo" / "cards" / "fm-tiny.yaml")).params
