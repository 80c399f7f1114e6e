"""The protocol key ``reference_stats``: FID against an imported mu/sigma file (e.g. ADM's ImageNet-256 batch)
instead of statistics computed from the dataset's own images.

    reference_stats: {file: adm/VIRTUAL_imagenet256_labeled.npz, format: adm}

``file`` is absolute or relative to ``$HARNESS_DATA``; ``format`` is one of the import formats of
``harness score --reference-format`` (harness/references/foreign.py), which also fixes the extractor
that reproduces the file's preprocessing: only metrics on that extractor may use it (the others are refused
at plan time). The dataset still gives the conditions (labels / prompts). Like a dataset, an absent file still
plans (the header says so) and is refused by ``harness run``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ProtocolError

KEYS = ("file", "format", "n")


@dataclass(frozen=True)
class ReferenceStatsSpec:
    file: str
    format: str
    n: int | None = None  # images behind the statistics, when the file does not store it

    @property
    def extractor(self) -> str | None:
        from harness.references.foreign import FORMATS

        return FORMATS[self.format][0]

    def path(self) -> Path | None:
        path = Path(os.path.expanduser(self.file))
        if path.is_absolute():
            return path
        return Path(os.environ["HARNESS_DATA"]) / path if os.environ.get("HARNESS_DATA") else None

    def missing(self) -> str:
        """Why the file is not usable here ("" when it is present)."""
        path = self.path()
        if path is None:
            return (f"reference_stats file {self.file!r} is relative and HARNESS_DATA is not set; set "
                    f"HARNESS_DATA=/data (looked up as $HARNESS_DATA/{self.file}) or give an absolute path")
        return "" if path.is_file() else f"reference_stats file {path} does not exist"

    def load(self) -> Any:
        """The imported ReferenceStats (``import_reference`` validates the file and records its sha256)."""
        from harness.references.foreign import import_reference

        path = self.path()
        if path is None or self.missing():
            raise ProtocolError(self.missing())
        return import_reference(path, self.format, self.n)


def parse_reference_stats(src: str, value: Any) -> ReferenceStatsSpec | None:
    if value is None:
        return None
    from harness.references.foreign import FORMATS

    if not isinstance(value, dict) or set(value) - set(KEYS) or "file" not in value or "format" not in value:
        raise ProtocolError(f"{src}: key 'reference_stats' has value {value!r}; expected a mapping with file "
                            f"(absolute or under $HARNESS_DATA), format ({', '.join(FORMATS)}) and optional n")
    if not isinstance(value["file"], str) or not value["file"]:
        raise ProtocolError(f"{src}: key 'reference_stats.file' has value {value['file']!r}; expected a path")
    if value["format"] not in FORMATS:
        raise ProtocolError(f"{src}: key 'reference_stats.format' has value {value['format']!r}; expected one of "
                            f"{', '.join(FORMATS)}")
    n = value.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        raise ProtocolError(f"{src}: key 'reference_stats.n' has value {n!r}; expected an integer >= 2")
    return ReferenceStatsSpec(file=value["file"], format=value["format"], n=n)


def check_reference_metrics(src: str, spec: ReferenceStatsSpec, metrics: list[Any]) -> None:
    """Every reference metric must be a mu/sigma metric on the extractor the file's format reproduces."""
    for metric in metrics:
        if not metric.needs_reference:
            continue
        if metric.reference_kind != "stats" or metric.extractor != spec.extractor:
            uses = "reference feature rows" if metric.reference_kind != "stats" else f"extractor {metric.extractor}"
            raise ProtocolError(f"{src}: key 'metrics': {metric.name} uses {uses}, but reference_stats "
                                f"({spec.format}) holds mu/sigma of {spec.extractor or 'no extractor of ours'}; "
                                f"drop {metric.name} or reference_stats")
