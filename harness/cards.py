"""Model cards: ``model_zoo/cards/NAME.yaml`` (or any path) → ModelCard.

Card file keys: name, family, weights (path or null for seeded random init), weights_sha256
(required with weights), dtype, params (family options). The weights digest enters every cell id,
so two cards naming the same file share cells, and a changed checkpoint never reuses old images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ProtocolError
from .hashing import digest
from .suggest import did_you_mean
from .types import ModelCard

CARDS_DIR = Path(__file__).resolve().parent.parent / "model_zoo" / "cards"
CARD_KEYS = {"name", "family", "weights", "weights_sha256", "dtype", "params", "description"}


def available_cards(cards_dir: Path = CARDS_DIR) -> dict[str, Path]:
    return {p.stem: p for p in sorted(cards_dir.glob("*.yaml"))}


def load_card(name_or_path: str, cards_dir: Path = CARDS_DIR, where: str = "") -> ModelCard:
    """Resolve a card by name (``model_zoo/cards/NAME.yaml``) or by path and validate it."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        cards = available_cards(cards_dir)
        if name_or_path not in cards:
            raise ProtocolError(f"{where}unknown model card {name_or_path!r}{did_you_mean(name_or_path, cards)}; "
                                f"available: {', '.join(cards) or 'none'} (in {cards_dir})")
        path = cards[name_or_path]
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProtocolError(f"{path}: malformed YAML: {str(e).splitlines()[0]}") from None
    return card_from_dict(raw, source=str(path))


def card_from_dict(raw: Any, source: str = "<dict>") -> ModelCard:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{source}: a model card must be a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in CARD_KEYS:
            raise ProtocolError(f"{source}: unknown key {key!r}{did_you_mean(key, CARD_KEYS)}; "
                                f"allowed: {', '.join(sorted(CARD_KEYS))}")
    for key in ("name", "family"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ProtocolError(f"{source}: key {key!r} must be a non-empty string, got {raw.get(key)!r}")
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise ProtocolError(f"{source}: key 'params' must be a mapping, got {params!r}")
    weights = raw.get("weights")
    if weights is None:
        weights_digest = "random-init:" + digest({"family": raw["family"], "params": params})
    else:
        sha = raw.get("weights_sha256")
        if isinstance(sha, int):
            raise ProtocolError(f"{source}: key 'weights_sha256' was read as a number ({sha}); quote it in the "
                                f"YAML so it stays the 64-hex string of {weights!r}")
        if not isinstance(sha, str) or len(sha) != 64:
            raise ProtocolError(f"{source}: key 'weights_sha256' must be the 64-hex sha256 of {weights!r}, "
                                f"got {sha!r}")
        wpath = Path(weights)
        if not wpath.is_absolute():
            wpath = (Path(source).parent / wpath).resolve()
        if not wpath.is_file():
            raise ProtocolError(f"{source}: weights file {str(wpath)!r} not found (key 'weights'); "
                                f"put the checkpoint there or fix the card")
        weights, weights_digest = str(wpath), sha
    return ModelCard(name=raw["name"], family=raw["family"], weights=weights, weights_digest=weights_digest,
                     params=params, dtype=str(raw.get("dtype", "float32")), source=source)
