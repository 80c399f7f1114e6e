"""Protocol files for tests: the repo's smoke protocol with its models swapped."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def smoke_with_model(tmp_path: Path, card: str) -> Path:
    """``protocols/smoke.yaml`` with ``models: [card]``, written to ``tmp_path/p.yaml``."""
    raw = yaml.safe_load((REPO / "protocols" / "smoke.yaml").read_text())
    raw["models"] = [card]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
