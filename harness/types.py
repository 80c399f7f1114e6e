"""Frozen value types that flow between the stages. Only ids, numbers and paths: all picklable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.hashing import digest

HUB_SCHEME = "hf://"


@dataclass(frozen=True)
class ModelCard:
    """A named checkpoint of one family. ``weights_digest`` identifies the exact weights."""

    name: str
    family: str
    weights: str | None  # local checkpoint path, "hf://repo@revision", or None for seeded random init
    weights_digest: str  # sha256 of the checkpoint, or a digest of (arch params, init seed)
    params: dict[str, Any] = field(default_factory=dict)  # architecture / family options
    dtype: str = "float32"
    source: str = ""  # the card file it came from (for error messages only, not hashed)
    # Named setting sets (e.g. "official", "matched"): {name: {steps, cfg, sampler, knobs, citation}}.
    # Conveniences for protocols, not part of the model's identity.
    recipes: dict[str, Any] = field(default_factory=dict)
    # Measured generation speed {seconds_per_nfe, gpu, resolution} (harness.plan.cost sizes Slurm tasks with it).
    # Not part of the model's identity: a faster GPU does not change the images.
    cost: dict[str, Any] | None = None

    @property
    def hub(self) -> tuple[str, str] | None:
        """(repo id, revision) for a hub checkpoint (``weights: hf://repo@revision``), else None."""
        if self.weights is None or not self.weights.startswith(HUB_SCHEME):
            return None
        repo, _, revision = self.weights[len(HUB_SCHEME):].partition("@")
        return repo, revision

    def identity(self) -> dict[str, Any]:
        """What makes two cards the same model: never the file it was read from."""
        return {"family": self.family, "weights_digest": self.weights_digest,
                "params": self.params, "dtype": self.dtype}


@dataclass(frozen=True)
class SamplerSettings:
    """The knobs of one cell. ``cfg=None`` means "no guidance knob" (models without guidance).

    ``knobs`` holds family-specific settings a family declares in its capabilities (e.g. a guidance
    interval, FLUX's separate ``true_cfg_scale``), as sorted (name, value) pairs so cells hash stably.
    """

    steps: int
    cfg: float | None
    sampler: str = "euler"
    knobs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        # Accept a mapping or JSON's list of pairs; store sorted tuples (hashable, order-free).
        items = self.knobs.items() if isinstance(self.knobs, dict) else self.knobs
        pairs = tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in items))
        object.__setattr__(self, "knobs", pairs)

    def knob(self, name: str, default: Any = None) -> Any:
        return dict(self.knobs).get(name, default)


@dataclass(frozen=True)
class SampleRequest:
    """One image to make: which sample of which cell, conditioned on what, from which seed."""

    index: int
    seed: int
    settings: SamplerSettings
    label: int | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class SampleOutput:
    image: Any  # numpy uint8 array, H x W x 3
    nfe: int  # network evaluations actually executed for this sample (CFG doubling counted)
    seconds: float  # wall time attributed to this sample (batch time / batch size)


PROVISIONAL_DIGEST = "provisional"  # the digest of a dataset whose files are not present (plan only, never run)


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as the plan sees it: what conditions it provides, and the digest of its content.

    ``provides`` names what it has for a cell: "labels", "prompts" (conditions) and "images" (references).
    A non-empty ``missing`` (why its files are not here and how to point at them) makes it provisional:
    its digest, and so the id of every cell on it, is a placeholder; a plan with one can be printed, not run.
    """

    id: str
    digest: str
    num_classes: int | None
    provides: tuple[str, ...] = ()
    missing: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "provides", tuple(self.provides))  # a list when read back from cell.json

    @property
    def provisional(self) -> bool:
        return bool(self.missing)


@dataclass(frozen=True)
class Cell:
    """One (model, settings, dataset, seed policy, n) combination. Its id is a content hash."""

    model: ModelCard
    settings: SamplerSettings
    dataset: DatasetRef
    seed: int
    n: int
    sampling_version: int
    resize: tuple[int, str] | None = None  # (size, PIL filter) applied before saving; see harness/plan/resize.py

    @property
    def provisional(self) -> bool:
        """True when its dataset's (or its real-image source's) files are absent: the id is a placeholder
        (shown with a ``~``)."""
        return self.dataset.provisional or self.model.weights_digest == PROVISIONAL_DIGEST

    @property
    def cell_id(self) -> str:
        spec = {
            "model": self.model.identity(),
            "settings": self.settings,
            "dataset": {"id": self.dataset.id, "digest": self.dataset.digest},
            "seed_policy": {"kind": "sha256(seed,dataset,index)", "seed": self.seed},
            "n": self.n,
            "sampling_version": self.sampling_version,
        }
        if self.resize is not None:  # only then: cells at native size keep the ids they always had
            spec["resize"] = {"size": self.resize[0], "filter": self.resize[1]}
        return digest(spec)


@dataclass(frozen=True)
class ShardTask:
    """Tiny picklable descriptor of one unit of generation work: a slice of one cell's samples."""

    cell_dir: str  # holds cell.json written at plan time; images and manifests go here
    start: int
    stop: int
    batch_size: int
    device: str = "cpu"

    @property
    def name(self) -> str:
        return f"{self.start:07d}-{self.stop:07d}"

    @property
    def label(self) -> str:
        """The work item's name in logs, jobs.jsonl and messages: <cell id>/<start>-<stop>."""
        return f"{Path(self.cell_dir).name}/{self.name}"


@dataclass(frozen=True)
class SampleRecord:
    """One line of a shard manifest."""

    index: int
    seed: int
    label: int | None
    prompt: str | None
    file: str
    sha256: str
    nfe: int
    seconds: float


@dataclass(frozen=True)
class ShardManifest:
    cell_id: str
    start: int
    stop: int
    samples: tuple[SampleRecord, ...]
    harness_version: str

    @property
    def content_digest(self) -> str:
        """Digest of the pixels (via PNG sha256s): the key of every feature computed from the shard."""
        return digest([s.sha256 for s in self.samples], length=24)


@dataclass(frozen=True)
class MetricRow:
    """One tidy result row: one (cell, metric) with its interval and provenance (docs/metrics.md)."""

    run: str
    cell_id: str
    model: str
    family: str
    steps: int
    cfg: float | None
    guidance: str
    dataset: str
    n: int
    seed_policy: str
    metric: str
    variant: str
    value: float
    ci_low: float | None
    ci_high: float | None
    higher_is_better: bool
    nfe_mean: float
    sec_per_image: float
    extractor_id: str
    reference_id: str
    harness_version: str
    created_at: str
