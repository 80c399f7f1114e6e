"""Model cards: ``model_zoo/cards/NAME.yaml`` (or any path) → ModelCard.

Card file keys: name, family, dtype, params (family options), description, and one of
- ``weights: PATH`` + ``weights_sha256`` (a local checkpoint; must exist when the card is read),
- ``hub: {repo: ORG/NAME, revision: <40-hex commit>}`` (resolved from the local Hugging Face cache only
  when the model is loaded, so plans of hub models work on a machine without the weights),
- neither: seeded random init (tests, the offline demo before training).
The weights digest (file sha256, or repo@commit) enters every cell id, so a changed checkpoint never
reuses old images. ``recipes`` names setting sets (e.g. the upstream ``official`` recipe and the
paper's ``matched`` settings) that a protocol can select with ``{card: NAME, recipe: official}``.
Optional ``cost: {seconds_per_nfe: 0.05, gpu: h100, resolution: 256}`` (measured speed; not identity; also
``device`` and ``batch``, as ``harness cost CARD --write`` fills them) sizes Slurm array tasks and `harness plan`'s
GPU-hour estimate (harness.plan.cost); cards without it are calibrated from completed shards.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError, ProtocolError
from harness.hashing import digest
from harness.suggest import did_you_mean
from harness.types import HUB_SCHEME, ModelCard

CARDS_DIR = Path(__file__).resolve().parents[2] / "model_zoo" / "cards"
CARD_KEYS = {"name", "family", "weights", "weights_sha256", "hub", "dtype", "params", "description", "recipes",
             "cost"}
RECIPE_KEYS = {"steps", "cfg", "sampler", "knobs", "citation", "note"}


class WeightsMissingError(HarnessError):
    """A checkpoint a model card names is not on this machine."""


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
    if raw.get("hub") is not None:
        if raw.get("weights") is not None:
            raise ProtocolError(f"{source}: give either 'weights' (a local file) or 'hub' (repo + revision), not both")
        weights, weights_digest = _hub_weights(raw["hub"], source)
        return _card(raw, source, params, weights, weights_digest)
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
    return _card(raw, source, params, weights, weights_digest)


COST_KEYS = {"seconds_per_nfe", "gpu", "device", "batch", "resolution", "note"}


def _positive(value: Any, integer: bool = False) -> bool:
    kinds = int if integer else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and value > 0


def parse_card_cost(raw: Any, source: str) -> dict[str, Any]:
    """Validate a card's ``cost`` block; every error names the card file, the key and the value."""
    example = "e.g. cost: {seconds_per_nfe: 0.05, gpu: h100, resolution: 256}"
    if not isinstance(raw, dict):
        raise ProtocolError(f"{source}: key 'cost' must be a mapping ({example}), got {raw!r}")
    unknown = sorted(set(map(str, raw)) - COST_KEYS)
    if unknown:
        raise ProtocolError(f"{source}: cost: unknown key(s) {', '.join(unknown)}; allowed: "
                            f"{', '.join(sorted(COST_KEYS))}")
    if not _positive(raw.get("seconds_per_nfe")):
        raise ProtocolError(f"{source}: cost.seconds_per_nfe: {raw.get('seconds_per_nfe')!r} is not valid; "
                            f"expected a positive number of seconds per network evaluation per image ({example})")
    if "gpu" in raw and not (isinstance(raw["gpu"], str) and raw["gpu"].strip()):
        raise ProtocolError(f"{source}: cost.gpu: {raw['gpu']!r} is not valid; expected the GPU it was measured "
                            f"on, e.g. h100")
    if "device" in raw and not (isinstance(raw["device"], str) and raw["device"].strip()):
        raise ProtocolError(f"{source}: cost.device: {raw['device']!r} is not valid; expected the device it was "
                            f"measured on, e.g. cpu or NVIDIA H100 80GB HBM3")
    if "batch" in raw and not _positive(raw["batch"], integer=True):
        raise ProtocolError(f"{source}: cost.batch: {raw['batch']!r} is not valid; expected a positive integer "
                            f"(images per generator call when it was measured)")
    if "resolution" in raw and not _positive(raw["resolution"], integer=True):
        raise ProtocolError(f"{source}: cost.resolution: {raw['resolution']!r} is not valid; expected a positive "
                            f"integer (pixels per side)")
    return {k: (float(v) if k == "seconds_per_nfe" else v) for k, v in raw.items()}


def _card(raw: dict, source: str, params: dict, weights: str | None, weights_digest: str) -> ModelCard:
    return ModelCard(name=raw["name"], family=raw["family"], weights=weights, weights_digest=weights_digest,
                     params=params, dtype=str(raw.get("dtype", "float32")), source=source,
                     recipes=_recipes(raw.get("recipes"), source), cost=_cost(raw.get("cost"), source))


def _cost(raw: Any, source: str) -> dict[str, Any] | None:
    """Optional ``cost: {seconds_per_nfe: 0.05, gpu: h100, resolution: 256}``: measured speed, for sizing jobs."""
    if raw is None:
        return None
    return parse_card_cost(raw, source)


def _hub_weights(hub: Any, source: str) -> tuple[str, str]:
    if not isinstance(hub, dict) or set(hub) != {"repo", "revision"}:
        raise ProtocolError(f"{source}: key 'hub' must be a mapping with exactly 'repo' and 'revision', got {hub!r}")
    repo, revision = hub["repo"], hub["revision"]
    if not isinstance(repo, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ProtocolError(f"{source}: key 'hub.repo' must be 'org/name', got {repo!r}")
    if not isinstance(revision, str) or not revision:
        raise ProtocolError(f"{source}: key 'hub.revision' must be a commit id (or a branch name until the card is "
                            f"pinned), got {revision!r}")
    return f"{HUB_SCHEME}{repo}@{revision}", f"hf:{repo}@{revision}"


def _is_commit(revision: Any) -> bool:
    return isinstance(revision, str) and re.fullmatch(r"[0-9a-f]{40}", revision) is not None


def is_pinned(card: ModelCard) -> bool:
    """A hub card names exact weights only through a full commit id; a branch or tag can move."""
    return card.hub is None or _is_commit(card.hub[1])


def unpinned_references(card: ModelCard) -> list[tuple[str, str, str]]:
    """(key, repo, revision) of every hub reference that is not a commit: the card's ``hub`` and any param
    written as ``{repo, revision, ...}`` (a VAE, a UNet or LoRA file on top of a base repo, a guide model)."""
    refs = [] if is_pinned(card) else [("hub.revision", *card.hub)]
    for key, value in sorted(card.params.items()):
        if isinstance(value, dict) and "repo" in value and "revision" in value and not _is_commit(value["revision"]):
            refs.append((f"params.{key}.revision", str(value["repo"]), str(value["revision"])))
    return refs


def require_pinned(card: ModelCard) -> None:
    """Refuse to generate from an unpinned hub card: its cells would not be content-addressed.

    Plans of unpinned cards are allowed (so presets can be inspected anywhere); runs are not."""
    refs = unpinned_references(card)
    if refs:
        listed = "; ".join(f"{key} {revision!r} of {repo}" for key, repo, revision in refs)
        raise ProtocolError(f"model card {card.name!r} ({card.source}): {listed}: a branch or tag, not a commit, so "
                            f"its images could silently change; set each to the 40-hex commit you downloaded "
                            f"(`harness weights fetch {card.name}` prints it)")


def _recipes(raw: Any, source: str) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError(f"{source}: key 'recipes' must be a mapping of name -> settings, got {raw!r}")
    out = {}
    for name, recipe in raw.items():
        where = f"{source}: recipes.{name}"
        if not isinstance(recipe, dict):
            raise ProtocolError(f"{where}: expected a mapping with keys {sorted(RECIPE_KEYS)}, got {recipe!r}")
        for key in recipe:
            if key not in RECIPE_KEYS:
                raise ProtocolError(f"{where}: unknown key {key!r}{did_you_mean(str(key), RECIPE_KEYS)}; "
                                    f"allowed: {', '.join(sorted(RECIPE_KEYS))}")
        if "steps" not in recipe:
            raise ProtocolError(f"{where}: missing key 'steps'")
        if "knobs" in recipe and not isinstance(recipe["knobs"], dict):
            raise ProtocolError(f"{where}.knobs: expected a mapping of knob -> value, got {recipe['knobs']!r}")
        out[str(name)] = dict(recipe)
    return out


def resolve_hub_snapshot(card: ModelCard) -> Path:
    """The local folder of a hub card's exact revision, from the Hugging Face cache only (never downloads)."""
    if card.hub is None:
        raise HarnessError(f"model card {card.name!r} has no hub checkpoint (weights={card.weights!r})")
    repo, revision = card.hub
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as e:
        raise WeightsMissingError(
            f"model card {card.name!r} ({card.source}): checkpoint {repo}@{revision} is not in the local Hugging "
            f"Face cache ({type(e).__name__}); on a machine with internet run `harness weights fetch {card.name}` "
            f"(or `huggingface-cli download {repo} --revision {revision}`) and copy the cache here") from None


def params_where(card: ModelCard) -> str:
    """Where a card's params come from, for error messages: ``model_zoo/cards/x.yaml: params``."""
    return f"{card.source or card.name}: params"


def merge_params(card: ModelCard, defaults: dict[str, Any], int_keys: tuple[str, ...] = (),
                 nonneg_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Card params over a family's ``defaults``. Unknown keys are refused, not ignored (a typo would
    otherwise silently run the default); ``int_keys`` must be ints >= 1 and ``nonneg_keys`` ints >= 0."""
    where = params_where(card)
    unknown = sorted(set(card.params) - set(defaults))
    if unknown:
        raise ProtocolError(f"{where}: unknown key(s) {unknown} for family {card.family}; "
                            f"allowed: {', '.join(sorted(defaults))}")
    merged = {**defaults, **card.params}
    for key, lowest in [(k, 1) for k in int_keys] + [(k, 0) for k in nonneg_keys]:
        value = merged[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise ProtocolError(f"{where}.{key}={value!r}; expected an int >= {lowest}")
    return merged


def require_float32(card: ModelCard) -> None:
    if card.dtype != "float32":
        raise ProtocolError(f"{card.source or card.name}: dtype={card.dtype!r}; {card.family} supports float32 only")


def write_card_cost(path: Path, block: dict[str, Any]) -> ModelCard:
    """Replace (or add) the top-level ``cost:`` block of the card file at ``path``, keeping every other line and
    comment as it is; the result must load back with exactly ``block`` or nothing is written."""
    from harness.store import atomic_write_bytes

    path = Path(path)
    lines = path.read_text().splitlines()
    kept, skipping = [], False
    for line in lines:
        if re.match(r"cost\s*:", line):
            skipping = True
            continue
        if skipping and (not line.strip() or line[0] in " \t"):
            continue  # the old block's indented lines
        skipping = False
        kept.append(line)
    text = "\n".join(kept).rstrip("\n") + "\n" + yaml.safe_dump({"cost": block}, sort_keys=False, width=1000)
    card = card_from_dict(yaml.safe_load(text), source=str(path))
    if card.cost != parse_card_cost(block, str(path)):
        raise HarnessError(f"{path}: the rewritten card does not read back the measured cost block; not written")
    atomic_write_bytes(path, text.encode())
    return card
