"""Protocol files: load + validate YAML, apply ``--set`` overrides, expand into cells and shards.

Every error names the file, the key, the bad value and what is allowed, and is raised before any
compute is spent. Knobs a model cannot honour are refused here (plan time), never ignored later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from harness import SAMPLING_VERSION
from harness.datasets import plan_dataset
from harness.datasets.hf_spec import dataset_entries
from harness.errors import HarnessError, ProtocolError
from harness.metrics import get_metric, with_components
from harness.models.adapters import check_settings, get_adapter_class
from harness.models.cards import load_card
from harness.models.knobs import check_knob_values
from harness.plan.checks import check_dataset, check_metrics
from harness.plan.real_floor import REAL_SETTINGS, real_card
from harness.plan.reference_spec import ReferenceStatsSpec, check_reference_metrics, parse_reference_stats
from harness.plan.resize import ImageSize, parse_image_size, resize_for
from harness.plan.schema import (
    MAX_SAMPLES_PER_CELL,
    MODEL_KEYS,
    NATURAL,
    REQUIRED,
    TOP_KEYS,
    UNSUPPORTED,
    CfgValue,
    cfg_list,
    cost_options,
    int_list,
    int_value,
    seed_list,
    str_list,
)
from harness.suggest import did_you_mean
from harness.types import Cell, ModelCard, SamplerSettings, ShardTask


@dataclass(frozen=True)
class ModelEntry:
    card: str
    steps: tuple[int, ...] | None  # per-model override of the protocol's steps
    cfg: tuple[CfgValue, ...] | None
    sampler: str | None = None
    knobs: tuple[tuple[str, Any], ...] = ()
    recipe: str | None = None  # a named setting set of the card (steps, cfg, sampler, knobs)
    unsupported: str = "refuse"  # see UNSUPPORTED


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    seed: int
    models: tuple[ModelEntry, ...]
    datasets: tuple[str, ...]
    steps: tuple[int, ...]
    cfg: tuple[CfgValue, ...]
    sampler: str
    n: int
    shard_size: int
    batch_size: int
    metrics: tuple[str, ...]
    reference_n: int
    source: str = "<dict>"
    bootstrap: int = 200
    reference_stats: ReferenceStatsSpec | None = None
    image_size: ImageSize | None = None
    real: tuple[str, ...] = ()  # datasets whose real images are scored as the floor (harness/plan/real_floor.py)
    seeds: tuple[int, ...] = ()  # seed replicates (``seeds:``): every cell once per seed; () = (seed,)
    cost: tuple[tuple[str, int | str], ...] | None = None  # the cost stage's options (None: no cost stage)

    @property
    def replicate_seeds(self) -> tuple[int, ...]:
        """The seeds every cell is generated with: the ``seeds:`` replicates, else the one ``seed``."""
        return self.seeds or (self.seed,)


@dataclass(frozen=True)
class Refusal:
    """A setting a model cannot honour, listed (never run) because its entry says ``unsupported: list``."""

    model: str
    settings: SamplerSettings
    reason: str


@dataclass(frozen=True)
class CellFacts:
    """What planning computed for a cell, carried so no later layer asks the adapter again."""

    nfe: int | None  # the adapter's declared NFE per sample (None: adaptive solver, known after sampling)
    guidance: str  # the family's guidance mechanism (Capabilities.guidance), recorded in every result row
    resolution: int  # the model's native square output size (before the cell's resize, if any)


def cell_facts(cell: Cell) -> CellFacts:
    """The facts of a cell from its adapter (no weights loaded): what make_plan records in ``Plan.facts``."""
    adapter = get_adapter_class(cell.model.family)(cell.model)
    caps = adapter.capabilities
    return CellFacts(adapter.expected_nfe(cell.settings), caps.guidance, caps.resolution)


@dataclass(frozen=True)
class Plan:
    protocol: Protocol
    cells: tuple[Cell, ...]
    refused: tuple[Refusal, ...] = ()
    missing_real: tuple[tuple[str, str], ...] = ()  # (real source id, why its files are absent)
    facts: dict[str, CellFacts] = field(default_factory=dict, compare=False)  # cell id → CellFacts

    def facts_of(self, cell: Cell) -> CellFacts:
        """The cell's planned facts (computed from its adapter for a Plan built without them)."""
        known = self.facts.get(cell.cell_id)
        return known if known is not None else cell_facts(cell)

    @property
    def missing_data(self) -> dict[str, str]:
        """Dataset id → why its files are absent and which variable to set (empty when every dataset is here)."""
        out = {c.dataset.id: c.dataset.missing for c in self.cells if c.dataset.provisional}
        return {**out, **dict(self.missing_real)}

    @property
    def missing_reference(self) -> str:
        """Why the protocol's reference_stats file is not here ("" when present or not used)."""
        spec = self.protocol.reference_stats
        return spec.missing() if spec else ""

    def require_data(self) -> None:
        """Refuse to run a plan whose cell ids are provisional (a dataset's files are absent) or whose
        reference statistics file is absent."""
        why = list(self.missing_data.values())
        if why:
            why[0] = f"cell ids are provisional because {why[0]}"
        if self.missing_reference:
            why.append(self.missing_reference)
        if why:
            raise HarnessError(f"{self.protocol.source}: cannot run: " + "; ".join(why))

    def shards(self, cell_dirs: dict[str, str], device: str = "cpu") -> list[ShardTask]:
        p = self.protocol
        return [ShardTask(cell_dir=cell_dirs[c.cell_id], start=s, stop=min(s + p.shard_size, c.n),
                          batch_size=p.batch_size, device=device)
                for c in self.cells for s in range(0, c.n, p.shard_size)]

    def shard_count(self, cell: Cell) -> int:
        return -(-cell.n // self.protocol.shard_size)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["steps=[1,2]", "n=8"]`` → ``{"steps": [1, 2], "n": 8}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ProtocolError(f"--set {pair!r}: expected key=value, e.g. --set n=64 or --set steps=[1,2,4]")
        key, value = pair.split("=", 1)
        key = key.strip()
        if key not in TOP_KEYS:
            raise ProtocolError(f"--set {pair!r}: unknown key {key!r}{did_you_mean(key, TOP_KEYS)}; "
                                f"allowed: {', '.join(TOP_KEYS)}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ProtocolError(f"--set {pair!r}: value {value!r} is not valid YAML") from None
    return out


def load_protocol(path: str | Path, overrides: list[str] | None = None) -> Protocol:
    path = Path(path)
    if not path.exists():
        raise ProtocolError(f"{path}: protocol file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ProtocolError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"{path}: a protocol must be a YAML mapping of keys, got {type(raw).__name__}")
    changes = parse_overrides(overrides or [])
    for one, other in (("seed", "seeds"), ("seeds", "seed")):  # `--set seeds=[0,1]` replaces the file's seed
        if one in changes and other not in changes:
            raw.pop(other, None)
    raw.update(changes)
    return protocol_from_dict(raw, source=str(path))


def _model_entry(src: str, i: int, value: Any) -> ModelEntry:
    where = f"models[{i}]"
    if isinstance(value, str) and value:
        return ModelEntry(card=value, steps=None, cfg=None)
    if not isinstance(value, dict):
        raise ProtocolError(f"{src}: key {where!r} has value {value!r}; expected a card name or "
                            f"a mapping with keys {sorted(MODEL_KEYS)}")
    for k in value:
        if k not in MODEL_KEYS:
            raise ProtocolError(f"{src}: unknown key '{where}.{k}'{did_you_mean(str(k), MODEL_KEYS)}; "
                                f"allowed: {', '.join(sorted(MODEL_KEYS))}")
    if not isinstance(value.get("card"), str) or not value["card"]:
        raise ProtocolError(f"{src}: key '{where}.card' has value {value.get('card')!r}; expected a card name")
    unsupported = value.get("unsupported", "refuse")
    if unsupported not in UNSUPPORTED:
        raise ProtocolError(f"{src}: key '{where}.unsupported' has value {unsupported!r}; expected one of "
                            f"{', '.join(UNSUPPORTED)}")
    recipe = value.get("recipe")
    if recipe is not None:
        clash = sorted(set(value) - {"card", "recipe", "unsupported"})
        if clash:
            raise ProtocolError(f"{src}: key '{where}' names recipe {recipe!r} and also {clash}; a recipe fixes "
                                f"steps, cfg, sampler and knobs — list the model twice to add other settings")
        if not isinstance(recipe, str):
            raise ProtocolError(f"{src}: key '{where}.recipe' has value {recipe!r}; expected a recipe name")
        return ModelEntry(card=value["card"], steps=None, cfg=None, recipe=recipe, unsupported=unsupported)
    return replace(_settings_entry(src, where, value["card"], value), unsupported=unsupported)


def _settings_entry(src: str, where: str, card: str, value: dict[str, Any], recipe: str | None = None) -> ModelEntry:
    steps = value.get("steps")
    steps = int_list(src, f"{where}.steps", steps if isinstance(steps, list) else [steps]) \
        if "steps" in value else None
    cfg = cfg_list(src, f"{where}.cfg", value["cfg"]) if "cfg" in value else None
    sampler = value.get("sampler")
    if sampler is not None and not isinstance(sampler, str):
        raise ProtocolError(f"{src}: key '{where}.sampler' has value {sampler!r}; expected a sampler name")
    knobs = value.get("knobs") or {}
    if not isinstance(knobs, dict):
        raise ProtocolError(f"{src}: key '{where}.knobs' has value {knobs!r}; expected a mapping knob -> value")
    return ModelEntry(card=card, steps=steps, cfg=cfg, sampler=sampler,
                      knobs=tuple(sorted(knobs.items())), recipe=recipe)


def _resolve_recipe(src: str, i: int, entry: ModelEntry, card: ModelCard) -> ModelEntry:
    """Replace ``{card, recipe}`` by the recipe's settings from the card."""
    if entry.recipe is None:
        return entry
    if entry.recipe not in card.recipes:
        raise ProtocolError(f"{src}: key 'models[{i}].recipe': card {card.name!r} has no recipe {entry.recipe!r}"
                            f"{did_you_mean(entry.recipe, card.recipes)}; it has: {', '.join(card.recipes) or 'none'}")
    recipe = {k: v for k, v in card.recipes[entry.recipe].items() if k in ("steps", "cfg", "sampler", "knobs")}
    resolved = _settings_entry(f"{src}: models[{i}] recipe {entry.recipe!r} of {card.source}", "recipe", card.name,
                               recipe, recipe=entry.recipe)
    return replace(resolved, unsupported=entry.unsupported)


def _resolve_cfg(where: str, card: ModelCard, caps: Any, values: tuple[CfgValue, ...]) -> list[float | None]:
    """'natural' → the model's released guidance value; duplicates that this creates are dropped."""
    out: list[float | None] = []
    for v in values:
        if v == NATURAL:
            if caps.guidance == "none":
                v = None
            elif caps.natural_cfg is None:
                raise ProtocolError(f"{where}cfg 'natural' asked of {card.name!r}, whose family declares no natural "
                                    f"guidance value; give a number")
            else:
                v = caps.natural_cfg
            if v in out:
                continue
        out.append(v)
    return out


def protocol_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Protocol:
    src = source
    for key in raw:
        if key not in TOP_KEYS:
            raise ProtocolError(f"{src}: unknown key {key!r}{did_you_mean(str(key), TOP_KEYS)}; "
                                f"allowed: {', '.join(TOP_KEYS)}")
    for key, (allowed, default) in TOP_KEYS.items():
        if default is REQUIRED and key not in raw:
            raise ProtocolError(f"{src}: missing required key {key!r} ({allowed})")
    get = {k: raw.get(k, d) for k, (_, d) in TOP_KEYS.items()}
    name = get["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ProtocolError(f"{src}: key 'name' has value {name!r}; expected {TOP_KEYS['name'][0]}")
    models = get["models"]
    if not isinstance(models, list) or not models:
        raise ProtocolError(f"{src}: key 'models' has value {models!r}; expected {TOP_KEYS['models'][0]}")
    if not isinstance(get["sampler"], str):
        raise ProtocolError(f"{src}: key 'sampler' has value {get['sampler']!r}; expected a sampler name")
    seeds = seed_list(src, raw)
    return Protocol(
        name=name, description=str(get["description"] or ""), seed=seeds[0], seeds=seeds if len(seeds) > 1 else (),
        models=tuple(_model_entry(src, i, m) for i, m in enumerate(models)),
        datasets=str_list(src, "datasets", dataset_entries(get["datasets"], f"{src}: datasets")),
        steps=int_list(src, "steps", get["steps"]), cfg=cfg_list(src, "cfg", get["cfg"]),
        sampler=get["sampler"], n=int_value(src, "n", get["n"], 1, MAX_SAMPLES_PER_CELL),
        shard_size=int_value(src, "shard_size", get["shard_size"], 1),
        batch_size=int_value(src, "batch_size", get["batch_size"], 1),
        # a composite's components are scored with it (harness/metrics/scaled.py)
        metrics=with_components(str_list(src, "metrics", get["metrics"], allow_empty=True)),
        reference_n=int_value(src, "reference_n", get["reference_n"], 2, MAX_SAMPLES_PER_CELL),
        source=src,
        bootstrap=int_value(src, "bootstrap", get["bootstrap"], 0),
        reference_stats=parse_reference_stats(src, get["reference_stats"]),
        image_size=parse_image_size(src, get["image_size"]),
        real=str_list(src, "real", dataset_entries(get["real"], f"{src}: real"), allow_empty=True),
        cost=cost_options(src, get["cost"]))


def make_plan(protocol: Protocol) -> Plan:
    """Expand to cells (models × datasets × steps × cfg), refusing anything a model cannot honour.

    A dataset whose files are absent still plans (provisional cell ids, ``Plan.missing_data``); what it
    knows without them (class count, labels / prompts / images) still drives the refusals."""
    src = protocol.source
    metrics = []
    for i, name in enumerate(protocol.metrics):
        try:
            metrics.append(get_metric(name))
        except ProtocolError as e:
            raise ProtocolError(f"{src}: key 'metrics[{i}]': {e}") from None
    if protocol.reference_stats is not None:
        check_reference_metrics(src, protocol.reference_stats, metrics)
    datasets = [plan_dataset(name, where=f"{src}: datasets: ") for name in protocol.datasets]
    cells: list[Cell] = []
    facts: dict[str, CellFacts] = {}
    refused: dict[tuple[str, SamplerSettings], Refusal] = {}
    for i, entry in enumerate(protocol.models):
        where = f"{src}: models[{i}]: "
        card = load_card(entry.card, where=where)
        entry = _resolve_recipe(src, i, entry, card)
        adapter_cls = get_adapter_class(card.family, where=where)
        caps = adapter_cls.capabilities_for(card)
        adapter = adapter_cls(card)  # no weights loaded: asked only for each cell's NFE (families check values)
        knobs_key = (f"{src}: models[{i}] recipe {entry.recipe!r} of {card.source}: key 'knobs" if entry.recipe
                     else f"{src}: key 'models[{i}].knobs")
        check_knob_values(entry.knobs, caps.knobs, knobs_key, f"model {card.name!r} ({card.family})")
        for dataset, ref in datasets:
            check_dataset(where, card, caps, ref)
            check_metrics(src, where, protocol, metrics, card, caps, dataset, ref)
            for steps in entry.steps or protocol.steps:
                for cfg in _resolve_cfg(where, card, caps, entry.cfg or protocol.cfg):
                    settings = SamplerSettings(steps=steps, cfg=cfg, sampler=entry.sampler or protocol.sampler,
                                               knobs=entry.knobs)
                    try:
                        check_settings(card, caps, settings)
                        nfe = adapter.expected_nfe(settings)
                    except ProtocolError as e:
                        if entry.unsupported == "refuse":
                            raise ProtocolError(f"{src}: {e}") from None
                        refused.setdefault((card.name, settings), Refusal(card.name, settings, str(e)))
                        continue
                    for seed in protocol.replicate_seeds:
                        cells.append(Cell(model=card, settings=settings, dataset=ref, seed=seed,
                                          n=protocol.n, sampling_version=SAMPLING_VERSION,
                                          resize=resize_for(caps.resolution, protocol.image_size)))
                        facts[cells[-1].cell_id] = CellFacts(nfe, caps.guidance, caps.resolution)
    missing_real: dict[str, str] = {}
    for i, source in enumerate(protocol.real):
        where = f"{src}: key 'real[{i}]': "
        for dataset, ref in datasets:
            card, missing = real_card(source, ref, where=where)
            if missing:
                missing_real[source] = missing
            caps = get_adapter_class(card.family).capabilities_for(card)
            check_metrics(src, where, protocol, metrics, card, caps, dataset, ref)
            for seed in protocol.replicate_seeds:
                cells.append(Cell(model=card, settings=REAL_SETTINGS, dataset=ref, seed=seed, n=protocol.n,
                                  sampling_version=SAMPLING_VERSION,
                                  resize=resize_for(caps.resolution, protocol.image_size) if caps.resolution
                                  else None))
                facts[cells[-1].cell_id] = CellFacts(0, caps.guidance, caps.resolution)
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise ProtocolError(f"{src}: the protocol lists the same cell twice (a model, steps or cfg repeated)")
    if not cells:
        why = f"; every setting was refused, e.g. {next(iter(refused.values())).reason}" if refused else ""
        raise HarnessError(f"{src}: the protocol expands to no cells{why}")
    return Plan(protocol=protocol, cells=tuple(cells), refused=tuple(refused.values()),
                missing_real=tuple(missing_real.items()), facts=facts)
