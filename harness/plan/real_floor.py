"""The real-data floor: real images the models never saw as references, scored exactly like a model's samples.

A protocol's ``real: [mnist-train]`` adds, for each of its datasets, one cell whose "model" returns images of
the named source dataset (a split other than the reference, e.g. MNIST's training digits against the test
digits). Sample i asks for the class the dataset gives it (as for every model) and gets a seeded uniform
draw, with replacement, among the source's images of that class — what a generator that reproduces its
training data perfectly would return. The cell is generated, extracted and scored like any other (same n,
seeds, metrics and intervals) at NFE 0; reports show it as a marked row that is never ranked, as a
horizontal line in the plots, and, with ``harness report --mmhm-best real``, as MMHM's best bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.datasets import plan_dataset
from harness.errors import ProtocolError
from harness.types import PROVISIONAL_DIGEST, DatasetRef, ModelCard, SamplerSettings

REAL_FAMILY = "real_images"  # the adapter family (model_zoo/real_images.py); reports recognise floor rows by it
REAL_SETTINGS = SamplerSettings(steps=0, cfg=None, sampler="none")  # no network, no steps, no guidance


def real_card(source: str, target: DatasetRef, where: str = "") -> tuple[ModelCard, str]:
    """The card of the floor drawn from dataset ``source`` for cells on ``target``, and why the source's files
    are absent ("" when present: the card's digest is then the source's content digest, else provisional).

    Refused here: a source that is the reference itself, one without images, a labelled target whose source
    has other classes (or a class with no image), and text-conditioned targets (a floor for prompts needs
    image-caption pairs, which no source here provides)."""
    dataset, ref = plan_dataset(source, where=where)
    if source == target.id or (not ref.provisional and ref.digest == target.digest):
        raise ProtocolError(f"{where}real source {source!r} is the reference dataset {target.id!r} itself; the "
                            f"floor must be other real images (e.g. another split)")
    if "images" not in ref.provides:
        raise ProtocolError(f"{where}real source {source!r} provides {', '.join(ref.provides) or 'nothing'}; "
                            f"a floor needs images")
    classes = target.num_classes if "labels" in target.provides else None
    if classes is None and "prompts" in target.provides:
        raise ProtocolError(f"{where}dataset {target.id!r} conditions on prompts; a real floor for a text "
                            f"benchmark needs image-caption pairs, which real source {source!r} does not give")
    if classes is not None and ("labels" not in ref.provides or ref.num_classes != classes):
        raise ProtocolError(f"{where}real source {source!r} has {ref.num_classes or 'no'} classes but dataset "
                            f"{target.id!r} asks for {classes}; draws must be of the class each sample asks for")
    resolution = None
    if dataset is not None:
        if classes is not None:
            counts = np.bincount(dataset.image_labels(), minlength=classes)
            empty = np.flatnonzero(counts == 0)
            if empty.size:
                raise ProtocolError(f"{where}real source {source!r} has no image of class(es) "
                                    f"{empty[:10].tolist()}{' …' if empty.size > 10 else ''}")
        resolution = int(dataset.load_reference([0]).shape[1])
    params: dict[str, Any] = {"source": source, "classes": classes, "resolution": resolution}
    card = ModelCard(name=f"real-{source}", family=REAL_FAMILY, weights=None,
                     weights_digest=PROVISIONAL_DIGEST if ref.provisional else ref.digest, params=params,
                     source=f"{where}real: {source}")
    return card, ref.missing


def floor_mask(frame: pd.DataFrame) -> pd.Series:
    """True on the rows of real-data floor cells (by family; older results without the column: none)."""
    if "family" not in frame:
        return pd.Series(False, index=frame.index)
    return frame.family == REAL_FAMILY
