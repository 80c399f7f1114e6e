"""Reference statistics: an artefact {mu, sigma, n, extractor key, source digest, spec}, saved as .npz.

Its identity (``reference_id``) is a digest of content keys only: the extractor key (weights +
preprocessing), the dataset's content digest and n — never of names, so nothing stale is reused.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets import Dataset
from harness.errors import HarnessError, ProtocolError
from harness.features import get_extractor
from harness.features.base import Extractor, ExtractorSpec
from harness.hashing import canonical_json, digest
from harness.progress import progress_bar
from harness.references.stats import StreamingStats
from harness.store import atomic_write

FORMAT_VERSION = 1
_KEYS = ("format_version", "mu", "sigma", "n", "extractor_key", "source_digest", "spec_json")


def _atomic_savez(path: Path, **arrays: Any) -> Path:
    """Write an .npz atomically (``store.atomic_write``: a temp file in the same directory, then a rename)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    mu: np.ndarray  # (d,) float64
    sigma: np.ndarray  # (d, d) float64, covariance ÷ (n-1)
    n: int
    extractor_key: str
    source_digest: str
    spec: dict[str, Any]  # {"extractor": ExtractorSpec fields, "output": ..., "dataset": ...}

    @property
    def reference_id(self) -> str:
        # The output (layer) is part of the identity: one extractor can expose several.
        return digest({"extractor": self.extractor_key, "output": self.spec.get("output"),
                       "source": self.source_digest, "n": self.n})

    def __eq__(self, other: object) -> bool:  # arrays compare by value (dataclass eq would be ambiguous)
        if not isinstance(other, ReferenceStats):
            return NotImplemented
        return (self.n == other.n and self.extractor_key == other.extractor_key
                and self.source_digest == other.source_digest and self.spec == other.spec
                and np.array_equal(self.mu, other.mu) and np.array_equal(self.sigma, other.sigma))

    __hash__ = None  # mutable-array payload: not hashable

    def save(self, path: str | Path) -> Path:
        return _atomic_savez(Path(path), format_version=np.int64(FORMAT_VERSION),
                             mu=np.asarray(self.mu, np.float64), sigma=np.asarray(self.sigma, np.float64),
                             n=np.int64(self.n), extractor_key=np.str_(self.extractor_key),
                             source_digest=np.str_(self.source_digest), spec_json=np.str_(canonical_json(self.spec)))

    @classmethod
    def load(cls, path: str | Path) -> ReferenceStats:
        path = Path(path)
        if not path.is_file():
            raise HarnessError(f"{path}: reference statistics file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in _KEYS if k not in data.files]
                if missing:
                    raise HarnessError(f"{path}: not an onestep-bench reference statistics file "
                                       f"(missing {', '.join(missing)})")
                version = int(data["format_version"])
                if version != FORMAT_VERSION:
                    raise HarnessError(f"{path}: reference statistics format {version}, expected {FORMAT_VERSION}")
                mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
                stats = cls(mu=mu, sigma=sigma, n=int(data["n"]), extractor_key=str(data["extractor_key"]),
                            source_digest=str(data["source_digest"]), spec=json.loads(str(data["spec_json"])))
        except HarnessError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise HarnessError(f"{path}: corrupt reference statistics file ({type(err).__name__}: {err}); "
                               f"delete it and recompute") from err
        d = stats.mu.shape[0] if stats.mu.ndim == 1 else -1
        if d < 1 or stats.sigma.shape != (d, d) or stats.n < 2:
            raise HarnessError(f"{path}: inconsistent reference statistics (mu {stats.mu.shape}, "
                               f"sigma {stats.sigma.shape}, n={stats.n}); expected (d,), (d, d), n >= 2")
        return stats


def compute_reference_stats(dataset: Dataset, n: int, extractor: Extractor, output: str = "pool3",
                            progress: bool = True) -> ReferenceStats:
    """Stream the first ``n`` reference images through a *loaded* extractor into float64 statistics."""
    if output not in extractor.outputs:
        raise ProtocolError(f"extractor {extractor.name!r} has no output {output!r}; "
                            f"available: {', '.join(extractor.outputs)}")
    if n < 2:
        raise ProtocolError(f"dataset {dataset.id!r}: reference statistics need n >= 2, got {n}")
    spec = extractor.spec
    stats = StreamingStats()
    desc = f"reference stats {dataset.id} n={n} ({extractor.name}/{output})"
    with progress_bar(n, desc, shown=progress) as bar:
        for batch in dataset.reference_images(n):
            stats.update(extractor.extract(batch)[output].reshape(len(batch), -1))
            bar.update(len(batch))
    return reference_from_stats(dataset, n, spec, output, stats)


def reference_from_stats(dataset: Dataset, n: int, spec: ExtractorSpec, output: str,
                         stats: StreamingStats) -> ReferenceStats:
    """The artefact for accumulated statistics (also merged from parallel chunks by the runner)."""
    if stats.n != n:
        raise HarnessError(f"dataset {dataset.id!r}: yielded {stats.n} reference images, expected {n}")
    return ReferenceStats(mu=stats.mean, sigma=stats.cov, n=n, extractor_key=spec.key,
                          source_digest=dataset.digest,
                          spec={"extractor": asdict(spec), "output": output, "dataset": dataset.id})


@dataclass(frozen=True, eq=False)
class ReferenceFeatures:
    """Reference feature rows (KID, precision/recall need them; FID needs only ReferenceStats)."""

    features: np.ndarray  # (n, d) float32
    extractor_key: str
    source_digest: str
    spec: dict[str, Any]

    @property
    def n(self) -> int:
        return len(self.features)

    @property
    def reference_id(self) -> str:
        return digest({"extractor": self.extractor_key, "output": self.spec.get("output"),
                       "source": self.source_digest, "n": self.n, "kind": "features"})

    def save(self, path: str | Path) -> Path:
        return _atomic_savez(Path(path), format_version=np.int64(FORMAT_VERSION),
                             features=np.asarray(self.features, np.float32), extractor_key=np.str_(self.extractor_key),
                             source_digest=np.str_(self.source_digest), spec_json=np.str_(canonical_json(self.spec)))

    @classmethod
    def load(cls, path: str | Path) -> ReferenceFeatures:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format_version"]) != FORMAT_VERSION:
                    raise HarnessError(f"{path}: reference features format {int(data['format_version'])}, "
                                       f"expected {FORMAT_VERSION}")
                return cls(features=data["features"], extractor_key=str(data["extractor_key"]),
                           source_digest=str(data["source_digest"]), spec=json.loads(str(data["spec_json"])))
        except HarnessError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise HarnessError(f"{path}: unreadable reference features file ({type(err).__name__}: {err}); "
                               f"delete it and recompute") from err


def check_reference(metric: Any, reference: Any, kind: type, unrecorded_output_ok: bool = False) -> Any:
    """The metric's reference, refused unless it is a ``kind`` (ReferenceStats or ReferenceFeatures) computed with
    the metric's extractor spec, holding the metric's extractor output (``unrecorded_output_ok``: statistics
    without a recorded output are taken at their extractor key)."""
    if not isinstance(reference, kind):
        raise HarnessError(f"{metric.name}: needs {kind.__name__} as reference, got {type(reference).__name__}")
    expected = get_extractor(metric.extractor).spec.key
    if reference.extractor_key != expected:
        raise HarnessError(f"{metric.name}: reference {reference.reference_id} was computed with extractor key "
                           f"{reference.extractor_key}, expected {expected} ({metric.extractor}); recompute it")
    output = reference.spec.get("output", metric.output if unrecorded_output_ok else None)
    if output != metric.output:
        raise HarnessError(f"{metric.name}: reference {reference.reference_id} holds {output!r} features, "
                           f"expected {metric.output!r}")
    return reference


def check_reference_features(metric: Any, reference: Any) -> ReferenceFeatures:
    return check_reference(metric, reference, ReferenceFeatures)
