"""`harness weights fetch|verify CARD`: hub references of a card, found in / fetched into the HF cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from huggingface_hub import constants

from harness.cli import main
from harness.errors import HarnessError
from harness.models.card_weights import fetch_card, hub_references, verify_card

COMMIT = "c" * 40


def fake_snapshot(repo: str, commit: str, files: dict[str, bytes]) -> Path:
    """The layout a real download leaves in the HF cache (refs/main -> commit, snapshots/<commit>/...)."""
    root = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an empty HF cache of its own (the download functions read it at call time)."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.fixture()
def card_file(tmp_path: Path) -> Path:
    raw = {"name": "dmd2-like", "family": "dmd2", "hub": {"repo": "test-org/base", "revision": "main"},
           "params": {"unet": {"repo": "test-org/unet", "revision": "main", "file": "unet/model.pt"}}}
    path = tmp_path / "dmd2-like.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_references_are_the_hub_repo_and_every_param_file(card_file: Path) -> None:
    from harness.models.cards import load_card

    refs = hub_references(load_card(str(card_file)))
    assert [(r.key, r.repo, r.revision, r.file) for r in refs] == [
        ("hub", "test-org/base", "main", None), ("params.unet", "test-org/unet", "main", "unet/model.pt")]


def test_verify_reports_missing_then_the_cached_commit(card_file: Path) -> None:
    lines = verify_card(str(card_file))
    assert all("MISSING" in line and "harness weights fetch dmd2-like" in line for line in lines), lines
    fake_snapshot("test-org/base", COMMIT, {"model_index.json": b"{}"})
    fake_snapshot("test-org/unet", "d" * 40, {"unet/model.pt": b"weights"})
    lines = verify_card(str(card_file))
    assert f"ok at commit {COMMIT}" in lines[0] and f"ok at commit {'d' * 40}" in lines[1], lines


def test_fetch_offline_is_a_clear_error_naming_the_reference(card_file: Path) -> None:
    # tests run with HF_HUB_OFFLINE=1 and an empty private cache: the real download path refuses
    with pytest.raises(HarnessError, match=r"harness weights fetch dmd2-like: hub test-org/base@main could not be "
                                           r"fetched \(HF_HUB_OFFLINE is set\)"):
        fetch_card(str(card_file))


def test_fetch_of_cached_weights_prints_the_commit_to_pin(card_file: Path, capsys) -> None:
    fake_snapshot("test-org/base", COMMIT, {"model_index.json": b"{}"})
    fake_snapshot("test-org/unet", "d" * 40, {"unet/model.pt": b"weights"})
    assert main(["weights", "fetch", str(card_file)]) == 0
    out = capsys.readouterr().out
    assert f"-> pin hub.revision: {COMMIT}" in out and f"-> pin params.unet.revision: {'d' * 40}" in out


def test_unknown_name_lists_weights_and_points_at_cards() -> None:
    assert main(["weights", "fetch", "no-such-thing"]) == 2
