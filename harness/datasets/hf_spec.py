"""Dataset specs naming a 🤗 dataset: the ``hf:`` string shorthand, the protocol's mapping form, the canonical id.

A spec names where the rows come from and which columns play which role::

    hf:vaishaal/ImageNetV2@<commit sha>?split=train&image=jpeg&label=cls      (string shorthand)
    {hf: vaishaal/ImageNetV2, revision: <commit sha>, split: train, image: jpeg, label: cls}   (mapping)

The source is a hub id (``owner/name``, needs a pinned revision: a 40-hex commit sha) or a local folder (a path
starting with ``/``, ``./``, ``../`` or ``~``): a dataset repository in the hub layout (data files + README card),
a ``save_to_disk`` output or an ``imagefolder``. Both forms reduce to one canonical id (the string form with the
options in a fixed order, defaults left out, local paths made absolute): cells and worker processes carry that
id and rebuild the dataset from it (``harness/datasets/hf_hub.py``). Once the rows are loaded, ``check_columns``
and ``label_map`` check the mapping against the library's features.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from harness.datasets.labels import imagenet_labels
from harness.datasets.preprocess import PREPROCESS
from harness.errors import HarnessError, ProtocolError
from harness.suggest import did_you_mean

PREFIX = "hf:"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
NONE_WORDS = ("none", "null", "")


@dataclass(frozen=True)
class HubSpec:
    """Where the rows come from and which column is the image, the label and the prompt (None: not used)."""

    source: str
    revision: str | None = None
    config: str | None = None
    split: str | None = None  # None: the source's only split (several are refused, listing them)
    image: str | None = "image"
    label: str | None = "label"
    prompt: str | None = None
    classes: int = 1000  # label ids 0..classes-1; 1000 = the ImageNet-1k ids of harness/data/imagenet_labels.tsv
    preprocess: str = "squash-bicubic-256"
    streaming: bool = False

    @property
    def local(self) -> bool:
        return is_local(self.source)

    @property
    def id(self) -> str:
        """The canonical id: equal specs give equal ids, whichever form they were written in."""
        options = [f"{f.name}={_text(getattr(self, f.name))}" for f in fields(self)[2:]
                   if getattr(self, f.name) != f.default]
        revision = f"@{self.revision}" if self.revision else ""
        return f"{PREFIX}{self.source}{revision}{'?' + '&'.join(options) if options else ''}"

    def provides(self) -> tuple[str, ...]:
        """Known from the spec alone (planning without the files): labels, prompts (a prompt column, or the
        ImageNet class prompt of a label), images."""
        imagenet_prompts = self.label is not None and self.classes == 1000
        return (*(("labels",) if self.label else ()), *(("prompts",) if self.prompt or imagenet_prompts else ()),
                *(("images",) if self.image else ()))


def _text(value: Any) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


OPTIONS = tuple(f.name for f in fields(HubSpec))
COLUMNS = ("image", "label", "prompt")


def is_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~"))


def is_hub_spec(entry: Any) -> bool:
    return isinstance(entry, str) and entry.startswith(PREFIX) or isinstance(entry, dict) and "hf" in entry


def _option(key: str, value: Any, where: str) -> Any:
    """One option's value, checked: what the key allows is named on refusal."""
    if key in COLUMNS:
        if value is None or isinstance(value, str) and value.lower() in NONE_WORDS:
            return None
        if not isinstance(value, str):
            raise ProtocolError(f"{where}{key!r} has value {value!r}; expected a column name or none")
        return value
    if key == "classes":
        if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
            raise ProtocolError(f"{where}'classes' has value {value!r}; expected a positive integer")
        return int(value)
    if key == "streaming":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ProtocolError(f"{where}'streaming' has value {value!r}; expected true or false")
    if key == "preprocess" and value not in PREPROCESS:
        raise ProtocolError(f"{where}'preprocess' has value {value!r}; allowed: {', '.join(sorted(PREPROCESS))}")
    if value is None and key in ("revision", "config", "split"):
        return None
    if not isinstance(value, str) or not value or any(c in value for c in "?&@="):
        quote = " (YAML read it as a number: quote it)" if isinstance(value, (int, float)) else ""
        raise ProtocolError(f"{where}{key!r} has value {value!r}; expected a non-empty name without ?&@={quote}")
    return value


def _checked(spec: HubSpec, where: str) -> HubSpec:
    if spec.local:
        spec = replace(spec, source=str(Path(spec.source).expanduser().absolute()))
    elif not HUB_ID.fullmatch(spec.source):
        raise ProtocolError(f"{where}source {spec.source!r} is neither a hub id (owner/name) nor a local folder "
                            f"(a path starting with /, ./, ../ or ~)")
    elif spec.revision is None or not COMMIT_SHA.fullmatch(spec.revision):
        got = f"revision {spec.revision!r} is not a commit sha" if spec.revision else "no revision"
        raise ProtocolError(
            f"{where}hub dataset {spec.source!r} has {got}; pin it to the 40-hex commit sha so its content cannot "
            f"move: hf:{spec.source}@<sha> or {{hf: {spec.source}, revision: <sha>}} (the sha: the dataset page's "
            f"'Files and versions' history, or huggingface_hub.HfApi().dataset_info({spec.source!r}).sha)")
    if not (spec.image or spec.label or spec.prompt):
        raise ProtocolError(f"{where}no column is used: map at least one of image, label, prompt")
    return spec


def parse_spec(entry: str | dict, where: str = "") -> HubSpec:
    """A spec from the string shorthand or the mapping form; unknown keys and bad values refused by name."""
    if isinstance(entry, dict):
        unknown = [k for k in entry if k not in ("hf", *OPTIONS[1:])]
        if unknown:
            key = str(unknown[0])
            raise ProtocolError(f"{where}unknown key {key!r}{did_you_mean(key, OPTIONS[1:])}; "
                                f"allowed: hf, {', '.join(OPTIONS[1:])}")
        source = entry["hf"]
        if not isinstance(source, str) or not source:
            raise ProtocolError(f"{where}'hf' has value {source!r}; expected a hub id (owner/name) or a local folder")
        options = {k: _option(k, v, where) for k, v in entry.items() if k != "hf"}
        return _checked(HubSpec(source=source, **options), where)
    if not isinstance(entry, str) or not entry.startswith(PREFIX):
        raise ProtocolError(f"{where}{entry!r} is not a hub dataset spec (hf:SOURCE[@REVISION][?key=value&...])")
    body, _, query = entry[len(PREFIX):].partition("?")
    head, _, last = body.rpartition("/")
    source, revision = body, None
    if "@" in last:
        name, _, revision = last.partition("@")
        source = f"{head}/{name}" if head else name
    options: dict[str, Any] = {"revision": revision or None}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in OPTIONS[2:]:
            raise ProtocolError(f"{where}{entry!r}: unknown option {key!r}{did_you_mean(key, OPTIONS[2:])}; "
                                f"allowed: {', '.join(OPTIONS[2:])}")
        options[key] = _option(key, value, where)
    return _checked(HubSpec(source=source, **options), where)


def dataset_entries(entries: Any, where: str) -> Any:
    """A protocol's ``datasets:`` / ``real:`` list with each hub spec (either form) replaced by its canonical id;
    anything else is passed on unchanged for the protocol's own checks."""
    if not isinstance(entries, list):
        return entries
    return [parse_spec(e, f"{where}[{i}]: ").id if is_hub_spec(e) else e for i, e in enumerate(entries)]


def check_columns(features: Any, spec: HubSpec, where: str) -> None:
    """Every mapped column exists and has a type its role can use; errors name it and the available columns."""
    import datasets

    available = list(features or {})
    for role, want, ok in (
            ("image", "an Image feature", lambda f: isinstance(f, datasets.Image)),
            ("label", "a ClassLabel or integer column",
             lambda f: isinstance(f, datasets.ClassLabel) or isinstance(f, datasets.Value) and "int" in f.dtype),
            ("prompt", "a string column",
             lambda f: isinstance(f, datasets.Value) and f.dtype in ("string", "large_string"))):
        column = getattr(spec, role)
        if column is None:
            continue
        if column not in available:
            raise HarnessError(f"{where}{role} column {column!r} not found; available columns: "
                               f"{', '.join(available) or 'none'} (set {role} to one of them, or to none)")
        if not ok(features[column]):
            raise HarnessError(f"{where}{role} column {column!r} is {features[column]}; expected {want}")


def label_map(feature: Any, spec: HubSpec, where: str) -> np.ndarray | None:
    """For a ClassLabel column: its id -> class id. Names resolved through the ImageNet label table when they all
    resolve (wnids or class names); otherwise ids are taken as they are when there are exactly ``classes``."""
    import datasets

    if not isinstance(feature, datasets.ClassLabel):
        return None
    names = list(feature.names)
    if spec.classes == 1000:
        table = imagenet_labels()
        try:
            return np.asarray([table.match_folder(name).index for name in names], dtype=np.int64)
        except HarnessError as err:
            if len(names) != 1000:
                raise HarnessError(f"{where}label column {spec.label!r} is a ClassLabel of {len(names)} names that "
                                   f"do not all name ImageNet classes ({err}); name them by wnid, or set "
                                   f"classes={len(names)} for a dataset of its own classes") from err
    elif len(names) != spec.classes:
        raise HarnessError(f"{where}label column {spec.label!r} has {len(names)} classes, the spec says "
                           f"classes={spec.classes}")
    return np.arange(len(names), dtype=np.int64)
