"""The engine of ``harness score`` and ``harness.score``: metrics of a set of images against a reference,
without a protocol.

The torch-fidelity / clean-fid use case, on the same engine as ``harness run``: images are decoded once
and every extractor the chosen metrics need sees each batch; the reference is a folder or image .npz
(extracted the same way, once: cached under its content digest), images in memory, a dataset id (cached
reference statistics / features), our statistics file, or a foreign mu/sigma .npz imported with
``reference_format``. Rows are the usual tidy schema plus ``details`` (how the images were decoded,
small-sample warnings).

Every check a user's input can fail runs before any image is decoded or any reference is computed. Messages
name the command-line flags (``--reference-n``); the API's keyword arguments have the same names.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.api.images import ImageSource, image_source, warn
from harness.errors import HarnessError
from harness.features import get_extractor, loaded_extractor
from harness.hashing import digest
from harness.metrics import get_metric
from harness.metrics.base import Metric, MetricResult, ShardFeatures
from harness.metrics.bootstrap import bootstrap_indices, bootstrap_interval
from harness.progress import progress_bar
from harness.references.artefacts import ReferenceFeatures, ReferenceStats
from harness.run.score import metric_reference
from harness.types import MetricRow

DEFAULT_DATASET_N = 10_000


@dataclass(frozen=True)
class ScoreRow(MetricRow):
    """A tidy row plus what ``harness score`` knows about it: decoded modes, warnings (JSON in the parquet)."""

    details: dict[str, Any] = field(default_factory=dict)


def extract_all(source: ImageSource, extractors: list[str], device: str) -> dict[str, dict[str, np.ndarray]]:
    """One decoding pass feeding every extractor: {extractor: {output: (N, ...) rows}}."""
    loaded = {name: loaded_extractor(name, device) for name in extractors}
    parts: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in extractors}
    with progress_bar(len(source), f"decode + {', '.join(extractors)}: {source.name}") as bar:
        for batch in source.batches():
            for name, ext in loaded.items():
                for output, rows in ext.extract(batch).items():
                    parts[name].setdefault(output, []).append(rows.reshape(len(batch), -1))
            bar.update(len(batch))
    out = {name: {o: np.concatenate(r) for o, r in outs.items()} for name, outs in parts.items()}
    for name, outs in out.items():
        for output, rows in outs.items():
            if not np.isfinite(rows).all():
                raise HarnessError(f"{source.label}: {name}/{output} features contain NaN/Inf; nothing scored")
    return out


def _reference_from_rows(metric: Metric, rows: np.ndarray, source: ImageSource):
    spec = get_extractor(metric.extractor).spec
    meta = {"extractor": asdict(spec), "output": metric.output, "dataset": source.label}
    if metric.reference_kind == "features":
        return ReferenceFeatures(rows.astype(np.float32), spec.key, source.digest, meta)
    rows = rows.astype(np.float64)
    return ReferenceStats(mu=rows.mean(0), sigma=np.cov(rows, rowvar=False), n=len(rows), extractor_key=spec.key,
                          source_digest=source.digest, spec=meta)


def _reference_cache_path(metric: Metric, source: ImageSource, cache: Path) -> Path:
    key = digest({"source": source.digest, "extractor": get_extractor(metric.extractor).spec.key,
                  "output": metric.output, "kind": metric.reference_kind})
    return cache / "references" / f"{metric.reference_kind}-{key}.npz"


def _cached_folder_references(needing: list[Metric], source: ImageSource, cache: Path,
                              device: str) -> dict[str, object]:
    """References of a folder / image .npz, kept in the cache under a key of its content (every file's bytes),
    the extractor spec, the output and the kind: scoring many image sets against one folder extracts the
    folder once. An unreadable cache file is recomputed (with a warning), never trusted."""
    found: dict[str, object] = {}
    for m in needing:
        cached = _reference_cache_path(m, source, cache)
        if cached.is_file():
            try:
                found[m.name] = (ReferenceFeatures if m.reference_kind == "features" else ReferenceStats).load(cached)
            except HarnessError as err:
                warn(f"{err}; recomputing it")
    missing = [m for m in needing if m.name not in found]
    if missing:
        feats = extract_all(source, sorted({m.extractor for m in missing}), device)
        for m in missing:
            found[m.name] = _reference_from_rows(m, feats[m.extractor][m.output], source)
            found[m.name].save(_reference_cache_path(m, source, cache))
    return found


def _whole(reference_n: int | None, has: int, what: str) -> None:
    """A reference used whole: --reference-n may only restate its size (a subset would be a new reference)."""
    if reference_n is not None and reference_n != has:
        raise HarnessError(f"--reference-n {reference_n}: {what} is used whole ({has} images); leave --reference-n "
                           f"out, or give a dataset id to choose N")


def _dataset_n(dataset_id: str, reference_n: int | None) -> int:
    """How many reference images of a dataset, checked against what it has before anything is computed."""
    from harness.datasets import get_dataset

    available = get_dataset(dataset_id).size
    n = min(available, DEFAULT_DATASET_N) if reference_n is None else reference_n
    if n > available:
        raise HarnessError(f"--reference-n {n}: dataset {dataset_id!r} has {available} reference images; "
                           f"ask for at most {available}")
    if n < 2:
        raise HarnessError(f"--reference-n {n}: reference statistics need at least 2 images")
    return n


def resolve_references(metrics: list[Metric], reference: Any, reference_format: str | None,
                       reference_n: int | None, cache: Path, device: str) -> tuple[dict[str, object], str]:
    """{metric name: reference object} and a label for the rows' ``dataset`` column. Each kind of reference
    is validated (including --reference-n) before it is read or computed. ``reference``: a path or dataset id
    (str / Path), or images in memory (anything ``image_source`` takes)."""
    needing = [m for m in metrics if m.needs_reference]
    if not needing:
        return {}, reference or ""
    if reference is None:
        raise HarnessError(f"metrics {', '.join(m.name for m in needing)} need --reference "
                           f"(a folder, an image .npz, a dataset id or a statistics .npz)")
    if not isinstance(reference, (str, os.PathLike)):  # images in memory (the Python API)
        source = image_source(reference, "reference")
        _whole(reference_n, len(source), "the reference images")
        return _cached_folder_references(needing, source, cache, device), source.label
    path = Path(reference)
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
        if {"mu", "sigma"} <= keys:  # statistics (ADM files also carry their images as arr_0: not used)
            if "format_version" in keys:
                stats = ReferenceStats.load(path)
                _whole(reference_n, stats.n, f"the statistics file {path}")
            elif reference_format:
                from harness.references.foreign import import_reference

                stats = import_reference(path, reference_format, reference_n)
            else:
                from harness.references.foreign import FORMATS

                raise HarnessError(f"{path}: foreign statistics file (keys {', '.join(sorted(keys))}); say which "
                                   f"tool wrote it with --reference-format {'|'.join(FORMATS)}")
            wrong = [m.name for m in needing if m.reference_kind != "stats"]
            if wrong:
                raise HarnessError(f"{path}: mu/sigma statistics cannot serve {', '.join(wrong)} (they need "
                                   f"reference feature rows); give a folder, image .npz or dataset instead")
            return {m.name: stats for m in needing}, path.name
    if path.exists():
        source = ImageSource(path)
        _whole(reference_n, len(source), f"the reference {path}")
        source.check_files()
        return _cached_folder_references(needing, source, cache, device), path.name
    from harness.datasets import available_datasets

    reference = str(reference)
    if reference not in available_datasets():
        raise HarnessError(f"--reference {reference!r}: not a file, folder or dataset id "
                           f"(datasets: {', '.join(available_datasets())})")
    n = _dataset_n(reference, reference_n)
    return {m.name: metric_reference(m, cache, reference, n, device) for m in needing}, reference


def _check_request(metrics: list[Metric], source: ImageSource, reference_n: int | None, bootstrap: int) -> None:
    """The flags and the image count, refused by name before anything is decoded or computed."""
    if bootstrap < 0:
        raise HarnessError(f"--bootstrap {bootstrap}: must be 0 (no bootstrap CIs) or a positive number of "
                           f"replicates, e.g. 200")
    prompted = [m.name for m in metrics if "prompts" in m.requires]
    if prompted:  # images come without prompts here; an extractor that reads them (ImageReward) is refused too
        raise HarnessError(f"--metrics {','.join(prompted)}: need a prompt per image, which `harness score` does not "
                           f"take; score them in a protocol whose dataset gives prompts")
    if reference_n is not None and reference_n < 1:
        raise HarnessError(f"--reference-n {reference_n}: must be a positive number of reference images (leave it "
                           f"out for all of a folder or file, or the first {DEFAULT_DATASET_N:,} of a dataset)")
    source.check_files()
    if len(source) < 2:
        raise HarnessError(f"{source.label}: {len(source)} image; {', '.join(m.name for m in metrics)} need at "
                           f"least 2")


def _computed(metric: Metric, rows: np.ndarray, reference: Any,
              indices: np.ndarray | None) -> tuple[MetricResult, float | None, float | None]:
    """The metric's result and CI; an error raised deeper down is reported under the user's metric name."""
    labels = (None,) * len(rows)
    try:
        result = metric.compute([ShardFeatures(rows, labels)], reference)
        low, high = result.ci_low, result.ci_high
        if indices is not None:
            low, high, _ = bootstrap_interval(metric.name, result.value, (low, high),
                                              metric.replicates(rows, labels, reference, indices), metric.value_range)
    except HarnessError as err:
        if str(err).startswith(f"{metric.name}:"):
            raise
        raise HarnessError(f"{metric.name}: {err}") from err
    return result, low, high


def score_images(images: Path | ImageSource, metric_names: list[str], reference: Any, cache: Path,
                 reference_format: str | None = None, reference_n: int | None = None, bootstrap: int = 0,
                 device: str = "cpu") -> list[ScoreRow]:
    metrics = [get_metric(name) for name in metric_names]  # unknown names fail here, before any compute
    for metric in metrics:
        if metric.components:  # its alignment component needs each image's prompt, which a bare image set lacks
            raise HarnessError(f"--metrics {metric.name}: a composite of {' and '.join(metric.components)}, "
                               f"computed per cell by `harness run` (a protocol with prompts); `harness score` "
                               f"has no prompts for it")
    if not metrics:
        raise HarnessError("--metrics: give at least one metric")
    source = images if isinstance(images, ImageSource) else ImageSource(images)
    _check_request(metrics, source, reference_n, bootstrap)
    references, reference_label = resolve_references(metrics, reference, reference_format, reference_n, cache,
                                                     device)
    feats = extract_all(source, sorted({m.extractor for m in metrics}), device)
    decoded = dict(sorted(source.decoded.items()))
    cell_id = digest({"score": source.pixel_digest})  # bootstrap resamples keyed by pixels, not file names
    n = len(source)
    indices = bootstrap_indices(cell_id, n, bootstrap) if bootstrap else None
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    rows = []
    for metric in metrics:
        ref = references.get(metric.name)
        result, low, high = _computed(metric, feats[metric.extractor][metric.output], ref, indices)
        details: dict[str, Any] = {"decoded": decoded}
        if result.details.get("warning"):  # the metric's own small-sample rule (FID-type: n < feature dim)
            details["warning"] = result.details["warning"]
            warn(f"{metric.name}: {details['warning']}")
        rows.append(ScoreRow(
            run="score", cell_id=cell_id, model=source.label, family="", steps=0, cfg=None, guidance="",
            dataset=reference_label, n=n, seed_policy="", metric=metric.name, variant=metric.variant,
            value=float(result.value), ci_low=low, ci_high=high, higher_is_better=metric.higher_is_better,
            nfe_mean=math.nan, sec_per_image=math.nan, extractor_id=get_extractor(metric.extractor).spec.key,
            reference_id=getattr(ref, "reference_id", ""), harness_version=__version__, created_at=created_at,
            details=details))
    return rows


def score_frame(rows: list[ScoreRow]):
    """The tidy frame of ``harness score`` with a ``details`` column (JSON per row)."""
    from harness.reports import rows_to_frame

    frame = rows_to_frame(rows)
    frame["details"] = [json.dumps(r.details, sort_keys=True, ensure_ascii=False) for r in rows]
    return frame




def _metric_names(metrics: Any) -> list[str]:
    """``metrics``: a list of names, or one comma-separated string ("fid,kid")."""
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    if not isinstance(metrics, (list, tuple)) or not all(isinstance(m, str) for m in metrics):
        raise HarnessError(f"metrics={metrics!r}: expected a list of metric names, e.g. metrics=['fid', 'kid'] "
                           f"(see `harness ls metrics`)")
    names = [m.strip() for m in metrics if m.strip()]
    if not names:
        raise HarnessError("metrics: give at least one metric name, e.g. metrics=['fid'] (see `harness ls metrics`)")
    return names


def _count(value: Any, name: str, allow_none: bool) -> None:
    if (value is None and allow_none) or (isinstance(value, int) and not isinstance(value, bool)):
        return
    raise HarnessError(f"{name}={value!r}: expected an integer{' or None' if allow_none else ''}")


def score(images: Any, reference: Any = None, metrics: Any = None, *, reference_format: str | None = None,
          reference_n: int | None = None, bootstrap: int = 0, device: str = "cpu",
          cache: str | Path | None = None) -> Any:
    """Metrics of ``images`` against ``reference``, as the tidy DataFrame ``harness score --out`` writes (the
    results.parquet columns plus ``details``).

    ``images``: a folder or ADM-style .npz path, a uint8 / float-in-[0, 1] numpy array (N, H, W, 3) or
    (N, H, W), a torch tensor (N, C, H, W) or (N, H, W, C), or an iterable of PIL images, all of one size
    (conversion rules: harness/api/images.py). ``reference``: a dataset id (``"mnist"``), a folder, an image
    .npz, a statistics .npz (``reference_format`` for a foreign one) or images in memory as for ``images``;
    ``None`` for metrics without one (``is``). ``bootstrap``: replicates for CIs (0: the metric's own
    interval or none). ``cache``: the feature / reference cache (default ``$HARNESS_CACHE``)."""
    from harness.api.checks import check_device
    from harness.store import default_cache_dir

    names = _metric_names(metrics)
    for name in names:  # unknown names refused before the images are converted
        get_metric(name)
    _count(bootstrap, "bootstrap", allow_none=False)
    _count(reference_n, "reference_n", allow_none=True)
    check_device(device, flag="device")
    source = image_source(images)
    rows = score_images(source, names, reference, Path(cache) if cache is not None else default_cache_dir(),
                        reference_format, reference_n, bootstrap, device)
    return score_frame(rows)
