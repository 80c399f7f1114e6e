"""What generating a cell costs: seconds per image = NFE per image × seconds per NFE.

Seconds per NFE come from the model card's optional ``cost`` block (measured on a named GPU), else from a
calibration: the per-sample ``seconds`` and ``nfe`` recorded in completed shard manifests of the same cell
(mean seconds per image) or of other cells of the same model (seconds per NFE). Without either the cost is
"unknown" and callers fall back to what they did before (one shard per Slurm array task).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import ProtocolError
from harness.hashing import digest
from harness.models.adapters import get_adapter_class
from harness.types import Cell, ModelCard


@dataclass(frozen=True)
class CostEstimate:
    """Estimated generation time of one cell; ``seconds_per_image`` is None when unknown."""

    n: int
    seconds_per_image: float | None
    nfe_per_image: float | None
    source: str  # where the figure comes from, or why it is unknown

    @property
    def known(self) -> bool:
        return self.seconds_per_image is not None

    @property
    def seconds(self) -> float | None:
        return None if self.seconds_per_image is None else self.seconds_per_image * self.n

    def samples_seconds(self, count: int) -> float | None:
        """Estimated seconds for ``count`` samples of this cell (a shard)."""
        return None if self.seconds_per_image is None else self.seconds_per_image * count


@dataclass(frozen=True)
class _Measured:
    samples: int
    seconds: float
    nfe: int


def model_key(model: ModelCard | dict) -> str:
    """The model's identity digest, from a card or from a cell.json's ``model`` mapping."""
    identity = model.identity() if isinstance(model, ModelCard) else {
        k: model.get(k) for k in ("family", "weights_digest", "params", "dtype")}
    return digest(identity)


@lru_cache(maxsize=4096)
def _read_measured(manifest: Path, mtime_ns: int) -> _Measured | None:  # mtime in the key: rewritten files re-read
    try:
        samples = json.loads(manifest.read_text())["samples"]
        return _Measured(len(samples), float(sum(s["seconds"] for s in samples)), int(sum(s["nfe"] for s in samples)))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # damaged or being rewritten: not evidence either way


def calibration(run_dirs: Iterable[Path]) -> tuple[dict[str, _Measured], dict[str, _Measured]]:
    """Totals over completed manifests under ``run_dirs``: by cell id, and by model identity."""
    by_cell: dict[str, _Measured] = {}
    by_model: dict[str, _Measured] = {}
    for run_dir in run_dirs:
        for spec in sorted(Path(run_dir).glob("cells/*/cell.json")):
            try:
                cell = json.loads(spec.read_text())
                cell_id, model = cell["cell_id"], model_key(cell["model"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            for manifest in sorted(spec.parent.glob("shards/*.json")):
                try:
                    m = _read_measured(manifest, manifest.stat().st_mtime_ns)
                except OSError:  # replaced or removed since the listing
                    continue
                if m is None or m.samples == 0:
                    continue
                for table, key in ((by_cell, cell_id), (by_model, model)):
                    old = table.get(key, _Measured(0, 0.0, 0))
                    table[key] = _Measured(old.samples + m.samples, old.seconds + m.seconds, old.nfe + m.nfe)
    return by_cell, by_model


def expected_nfe(cell: Cell) -> int | None:
    """NFE of one sample as the model's adapter declares it (None for adaptive solvers)."""
    return get_adapter_class(cell.model.family)(cell.model).expected_nfe(cell.settings)


ASK_ADAPTER = object()  # estimate_cell_seconds without a planned NFE: ask the cell's adapter


def estimate_cell_seconds(cell: Cell, calibration_dirs: Iterable[Path] = (),
                          measured: tuple[dict, dict] | None = None, nfe: Any = ASK_ADAPTER) -> CostEstimate:
    """Estimated seconds to generate ``cell`` (all ``cell.n`` samples) on the card's GPU.

    ``calibration_dirs``: run directories whose completed manifests may calibrate cards without a ``cost``
    block (``measured``: their :func:`calibration`, when the caller already read it). ``nfe``: the NFE the plan
    computed (``Plan.facts_of(cell).nfe``); asked of the adapter only when not given."""
    if nfe is ASK_ADAPTER:
        nfe = expected_nfe(cell)
    if nfe == 0:  # real images (the floor): nothing to run
        return CostEstimate(cell.n, 0.0, 0, "no network evaluations (real images)")
    card = cell.model.cost
    if card is not None and nfe is not None:
        where = ", ".join(str(card[k]) + (" px" if k == "resolution" else "")
                          for k in ("gpu", "resolution") if k in card)
        source = f"card {cell.model.name}: {card['seconds_per_nfe']:g} s/NFE" + (f" ({where})" if where else "")
        return CostEstimate(cell.n, nfe * card["seconds_per_nfe"], nfe, source)
    by_cell, by_model = measured if measured is not None else calibration(calibration_dirs)
    own = by_cell.get(cell.cell_id)
    if own is not None:
        return CostEstimate(cell.n, own.seconds / own.samples, own.nfe / own.samples,
                            f"calibration: {own.samples} samples of this cell")
    same_model = by_model.get(model_key(cell.model))
    if same_model is not None and nfe is not None and same_model.nfe > 0:
        per_nfe = same_model.seconds / same_model.nfe
        return CostEstimate(cell.n, nfe * per_nfe, nfe,
                            f"calibration: {per_nfe:.3g} s/NFE over {same_model.samples} samples of {cell.model.name}")
    why = "adaptive solver, NFE known only after sampling" if nfe is None else "no card cost, no completed shards"
    return CostEstimate(cell.n, None, nfe, f"unknown ({why})")


@dataclass(frozen=True)
class PlanCost:
    gpu_hours: float  # over the cells whose cost is known
    known_cells: int
    unknown_cells: tuple[str, ...]  # "model steps=S cfg=C" of each cell without an estimate
    assumes: tuple[str, ...] = ()  # "<device> (model, ...)": the device each known estimate was measured on

    @property
    def assumption(self) -> str:
        """The line `harness plan` prints under the estimate: which device(s) it assumes."""
        return "; ".join(self.assumes)

    def __str__(self) -> str:
        text = f"~{self.gpu_hours:.3g} GPU-hours"
        if self.unknown_cells:
            text += (f" for {self.known_cells} cells; {len(self.unknown_cells)} cells of unknown cost (give their "
                     f"cards a `cost: {{seconds_per_nfe: ...}}` or run a shard first)")
        return text


def estimate_plan_gpu_hours(plan: Any, calibration_dirs: Iterable[Path] = ()) -> PlanCost:
    """Estimated GPU-hours of generating every cell of ``plan`` (a harness.plan.protocol.Plan)."""
    measured = calibration(calibration_dirs)
    seconds, known, unknown = 0.0, 0, []
    devices: dict[str, set[str]] = {}
    for cell in plan.cells:
        estimate = estimate_cell_seconds(cell, measured=measured, nfe=plan.facts_of(cell).nfe)
        if estimate.known:
            seconds += estimate.seconds
            known += 1
            if estimate.nfe_per_image:  # the floor's real images run on no device
                devices.setdefault(assumed_device(cell, estimate), set()).add(cell.model.name)
        else:
            unknown.append(f"{cell.model.name} steps={cell.settings.steps} cfg={cell.settings.cfg}")
    assumes = tuple(f"{device} ({', '.join(sorted(models))})" for device, models in sorted(devices.items()))
    return PlanCost(seconds / 3600, known, tuple(unknown), assumes)


def assumed_device(cell: Cell, estimate: CostEstimate) -> str:
    """The device an estimate holds for: the card cost block's ``device``/``gpu``, or the machine that wrote the
    calibrating shards."""
    card = cell.model.cost
    if estimate.source.startswith("card") and card is not None:
        where = card.get("device") or card.get("gpu")
        batch = f", batch {card['batch']}" if "batch" in card else ""
        return (f"{where}{batch}, card cost block" if where else "an unnamed device (card cost block without "
                "`device:` or `gpu:`)")
    return "the machine that generated the calibrating shards"


# Size guards for a whole sweep (docs in README "Sweep size limits"). `harness plan` warns above the WARN_*
# figures; `harness run` refuses above the LIMIT_* ones unless given --allow-large, because a run first lists
# every shard in memory and writes a directory per cell: a typo such as n: 100000000 must not start that.
WARN_SAMPLES = 2_000_000  # 40 FID-50K cells
LIMIT_SAMPLES = 20_000_000
WARN_SHARDS = 50_000
LIMIT_SHARDS = 500_000
WARN_GPU_HOURS = 1_000.0


def _free_bytes(directory: Path) -> int | None:
    """Free space of the filesystem that would hold ``directory`` (its nearest existing parent)."""
    import shutil

    for parent in (directory.resolve(), *directory.resolve().parents):
        if parent.exists():
            try:
                return shutil.disk_usage(parent).free
            except OSError:
                return None
    return None


def image_bytes_bound(plan: Any) -> int:
    """Upper bound of the PNG bytes a plan writes: raw 8-bit RGB at each cell's saved size (PNG only shrinks it)."""
    total = 0
    for cell in plan.cells:
        side = cell.resize[0] if cell.resize else plan.facts_of(cell).resolution
        total += cell.n * side * side * 3
    return total


def plan_size_warnings(plan: Any, run_dir: Path, gpu_hours: float | None = None) -> list[str]:
    """What is absurd about a sweep's size on this machine: samples, shards, GPU-hours, disk (empty: nothing)."""
    samples = sum(c.n for c in plan.cells)
    shards = sum(plan.shard_count(c) for c in plan.cells)
    out = []
    if samples > WARN_SAMPLES:
        out.append(f"{samples:,} samples in {len(plan.cells)} cells (n = {plan.protocol.n:,} per cell) is more "
                   f"than {WARN_SAMPLES:,}; check the protocol's n")
    if shards > WARN_SHARDS:
        out.append(f"{shards:,} shards (shard_size {plan.protocol.shard_size}) is more than {WARN_SHARDS:,}; "
                   "raise shard_size")
    if gpu_hours is not None and gpu_hours > WARN_GPU_HOURS:
        out.append(f"estimated {gpu_hours:,.0f} GPU-hours is more than {WARN_GPU_HOURS:,.0f}")
    need, free = image_bytes_bound(plan), _free_bytes(run_dir)
    if free is not None and need > free:
        out.append(f"the images may take up to {need / 1e9:,.1f} GB; {run_dir} has {free / 1e9:,.1f} GB free")
    if samples > LIMIT_SAMPLES or shards > LIMIT_SHARDS:
        out.append(f"`harness run` refuses more than {LIMIT_SAMPLES:,} samples or {LIMIT_SHARDS:,} shards "
                   "without --allow-large")
    return out


def check_plan_size(plan: Any, allow_large: bool) -> None:
    """Refuse, before anything is written, a run above the hard limits unless ``--allow-large`` was given."""
    samples = sum(c.n for c in plan.cells)
    shards = sum(plan.shard_count(c) for c in plan.cells)
    if allow_large or (samples <= LIMIT_SAMPLES and shards <= LIMIT_SHARDS):
        return
    raise ProtocolError(f"{plan.protocol.source}: {samples:,} samples in {shards:,} shards is above the limit of "
                        f"{LIMIT_SAMPLES:,} samples and {LIMIT_SHARDS:,} shards per run (n = {plan.protocol.n:,}, "
                        f"shard_size = {plan.protocol.shard_size}); lower n or raise shard_size, or pass "
                        "--allow-large if the sweep is meant to be this big")
