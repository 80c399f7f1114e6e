"""The paper's 2x2 over the six class-conditional cards: what `harness plan` prints per cell, and refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.errors import ProtocolError
from harness.plan.protocol import make_plan, protocol_from_dict

REPO = Path(__file__).resolve().parents[2]
MINE = ("meanflow-xl2", "imf-xl2", "soflow-xl2", "sit-xl2", "rae-dit-dh-xl", "scale-rae")


@pytest.fixture()
def protocol_file(tmp_path: Path, fake_imagenet: str) -> Path:
    raw = yaml.safe_load((REPO / "protocols" / "paper_fair.yaml").read_text())
    raw["models"] = [m for m in raw["models"] if (m if isinstance(m, str) else m["card"]) in MINE]
    assert len(raw["models"]) == len(MINE)
    raw["datasets"] = [fake_imagenet]
    path = tmp_path / "paper_fair_cc.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_plan_prints_guidance_and_nfe_per_cell(protocol_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(protocol_file)]) == 0
    out = capsys.readouterr().out
    print(out)  # the table, for the record
    cells = {}
    for line in out.splitlines():
        m = re.search(r"(\S+-\S+)\s+test-imagenet\s+steps=(\d+)\s+cfg=(\S+)\s+guidance=(\S+)\s+sampler=(\S+)"
                      r".*nfe/sample=(\S+)", line)
        if m:
            name, steps, cfg, guidance, sampler, nfe = m.groups()
            cells[(name, int(steps), cfg)] = (guidance, sampler, nfe)
    assert cells == {
        ("meanflow-xl2", 1, "none"): ("none", "euler", "1"),
        ("meanflow-xl2", 25, "none"): ("none", "euler", "25"),
        ("imf-xl2", 1, "7"): ("interval", "euler", "1"), ("imf-xl2", 1, "8"): ("interval", "euler", "1"),
        ("imf-xl2", 25, "7"): ("interval", "euler", "25"), ("imf-xl2", 25, "8"): ("interval", "euler", "25"),
        ("soflow-xl2", 1, "none"): ("none", "renoise", "1"),
        ("soflow-xl2", 25, "none"): ("none", "renoise", "25"),
        ("sit-xl2", 1, "7"): ("cfg", "euler", "2"), ("sit-xl2", 1, "1.5"): ("cfg", "euler", "2"),
        ("sit-xl2", 25, "7"): ("cfg", "euler", "50"), ("sit-xl2", 25, "1.5"): ("cfg", "euler", "50"),
        ("rae-dit-dh-xl", 1, "7"): ("cfg", "euler", "2"), ("rae-dit-dh-xl", 1, "1.42"): ("cfg", "euler", "2"),
        ("rae-dit-dh-xl", 25, "7"): ("cfg", "euler", "50"), ("rae-dit-dh-xl", 25, "1.42"): ("cfg", "euler", "50"),
        ("scale-rae", 1, "7"): ("cfg", "euler", "adaptive"), ("scale-rae", 1, "1.42"): ("cfg", "euler", "adaptive"),
        ("scale-rae", 25, "7"): ("cfg", "euler", "adaptive"), ("scale-rae", 25, "1.42"): ("cfg", "euler", "adaptive"),
    }
    # 10,000 samples x 312 evaluations (the fixed per-cell NFE above: 26 + 52 + 26 + 104 + 104)
    assert "20 cells" in out and "3120000 total NFE (+ 4 adaptive-solver cells" in out


@pytest.mark.parametrize("card, entry", [
    ("soflow-xl2", {"card": "soflow-xl2", "sampler": "renoise"}),  # the paper's cfg 7.0 on SoFlow
    ("meanflow-xl2", {"card": "meanflow-xl2"}),
])
def test_cfg_on_an_unguided_model_is_refused_at_plan_time(protocol_file: Path, card: str, entry: dict) -> None:
    raw = yaml.safe_load(protocol_file.read_text())
    raw["models"] = [entry]
    with pytest.raises(ProtocolError, match=f"{card}.*cfg=7.0 asked of a model without guidance"):
        make_plan(protocol_from_dict(raw, source="p.yaml"))


def test_official_recipes_plan(protocol_file: Path) -> None:
    raw = yaml.safe_load(protocol_file.read_text())
    raw["models"] = [{"card": name, "recipe": "official"} for name in MINE]
    plan = make_plan(protocol_from_dict(raw, source="p.yaml"))
    got = {c.model.name: (c.settings.steps, c.settings.cfg, c.settings.sampler) for c in plan.cells}
    assert got == {"meanflow-xl2": (1, None, "euler"), "imf-xl2": (1, 8.0, "euler"),
                   "soflow-xl2": (1, None, "renoise"), "sit-xl2": (250, 1.5, "dopri5"),
                   "rae-dit-dh-xl": (49, 1.42, "euler"), "scale-rae": (50, 1.0, "euler")}
