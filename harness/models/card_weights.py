"""``harness weights fetch|verify CARD``: the hub weights a model card names.

A card names weights as ``hub: {repo, revision}`` and, for releases that are a file on top of a base repo,
as params ``{repo, revision, file}`` (DMD2's UNet, Hyper-SD's LoRA) or ``{repo, revision}`` (a VAE).
``fetch`` downloads exactly those (on a machine with internet) into the standard Hugging Face cache and
prints the commit each revision resolved to, which is what a card must pin before ``harness run``
accepts it. ``verify`` says, offline, whether each reference is in the local cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.models.cards import available_cards, load_card
from harness.types import ModelCard


@dataclass(frozen=True)
class HubReference:
    key: str  # where the card names it: "hub" or "params.<name>"
    repo: str
    revision: str
    file: str | None = None  # None: the whole snapshot


def hub_references(card: ModelCard) -> list[HubReference]:
    refs = [HubReference("hub", *card.hub)] if card.hub else []
    for key, value in sorted(card.params.items()):
        if isinstance(value, dict) and "repo" in value and "revision" in value:
            refs.append(HubReference(f"params.{key}", str(value["repo"]), str(value["revision"]), value.get("file")))
    return refs


def is_card(name: str) -> bool:
    return name in available_cards() or name.endswith((".yaml", ".yml"))


def _download(ref: HubReference) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    if ref.file:
        return Path(hf_hub_download(ref.repo, ref.file, revision=ref.revision))
    return Path(snapshot_download(ref.repo, revision=ref.revision))


def _commit_of(path: Path) -> str:
    """The snapshot folder name is the commit: ``.../models--org--name/snapshots/<commit>/[file]``."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else "?"


def fetch_card(name: str) -> list[str]:
    """Download every hub reference of a card; refuse with the reason (offline, unknown repo) per reference."""
    card = load_card(name)
    refs = hub_references(card)
    if not refs:
        return [f"{card.name}: names no hub weights (local file or random init); nothing to fetch"]
    lines = []
    for ref in refs:
        what = f"{ref.repo}@{ref.revision}" + (f" file {ref.file}" if ref.file else "")
        try:
            path = _download(ref)
        except Exception as e:  # hub errors have many types (offline, 404, auth); all end here with the reason
            offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
            raise HarnessError(f"harness weights fetch {card.name}: {ref.key} {what} could not be fetched"
                               f"{offline}: {type(e).__name__}: {e}") from None
        commit = _commit_of(path)
        pin = "" if commit == ref.revision else f"  -> pin {ref.key}.revision: {commit}"
        lines.append(f"{card.name}: {ref.key} {what}: {path}{pin}")
    return lines


def verify_card(name: str) -> list[str]:
    """Offline: is each reference of the card in the local HF cache, and at which commit."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    card = load_card(name)
    lines = []
    for ref in hub_references(card):
        what = f"{ref.repo}@{ref.revision}" + (f" file {ref.file}" if ref.file else "")
        if ref.file:
            found = try_to_load_from_cache(ref.repo, ref.file, revision=ref.revision)
            path = Path(found) if isinstance(found, str) else None
        else:
            from huggingface_hub import snapshot_download

            try:
                path = Path(snapshot_download(ref.repo, revision=ref.revision, local_files_only=True))
            except LocalEntryNotFoundError:
                path = None
        state = f"ok at commit {_commit_of(path)} ({path})" if path else \
            f"MISSING (run `harness weights fetch {card.name}` on a machine with internet)"
        lines.append(f"{card.name}: {ref.key} {what}: {state}")
    return lines or [f"{card.name}: names no hub weights"]
