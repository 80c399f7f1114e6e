"""What each (model, dataset) pair of a protocol is checked against at plan time, before any compute: the
conditioning a model needs against what the dataset provides, and what each metric declares it needs."""

from __future__ import annotations

from typing import Any

from harness.datasets import Dataset
from harness.errors import ProtocolError
from harness.metrics import get_metric
from harness.types import DatasetRef, ModelCard


def check_dataset(where: str, card: ModelCard, caps: Any, ref: DatasetRef) -> None:
    """Refuse a model on a dataset that cannot condition it: what the model needs vs what the dataset provides."""
    provides = ", ".join(ref.provides) or "nothing"
    if caps.conditioning == "class":
        if "labels" not in ref.provides:
            raise ProtocolError(f"{where}model {card.name!r} is class-conditional (needs labels) but dataset "
                                f"{ref.id!r} provides {provides}")
        if ref.num_classes != caps.num_classes:
            raise ProtocolError(f"{where}model {card.name!r} is conditioned on {caps.num_classes} classes but "
                                f"dataset {ref.id!r} has {ref.num_classes}")
    if caps.conditioning == "text" and "prompts" not in ref.provides:
        raise ProtocolError(f"{where}model {card.name!r} is text-conditioned (needs prompts) but dataset "
                            f"{ref.id!r} provides {provides}")


def unmet_need(need: str, card: ModelCard, caps: Any, ref: DatasetRef) -> str:
    """What is missing for one of a metric's declared ``requires`` ("" when met)."""
    provides = ", ".join(ref.provides) or "nothing"
    if need == "class_model":
        return "" if caps.conditioning == "class" else \
            f"a class-conditional model; {card.name!r} is conditioned on {caps.conditioning}"
    if need in ("labels", "prompts"):
        return "" if need in ref.provides else f"{need} for every sample; dataset {ref.id!r} provides {provides}"
    raise ProtocolError(f"a metric declares an unknown requirement {need!r}; known: class_model, labels, prompts")


def check_metrics(src: str, where: str, protocol: Any, metrics: list[Any], card: ModelCard, caps: Any,
                   dataset: Dataset | None, ref: DatasetRef) -> None:
    # composites first, so that the refusal names the metric the user asked for and its component that cannot be
    # computed (the components were added to the list by harness.metrics.with_components)
    for metric in sorted(metrics, key=lambda m: not m.components):
        for component in metric.components or (metric.name,):
            for need in sorted(get_metric(component).requires):
                unmet = unmet_need(need, card, caps, ref)
                if unmet:
                    of = f": its component {component!r}" if metric.components else ""
                    raise ProtocolError(f"{where}metric {metric.name!r}{of} needs {unmet}")
    if not any(m.needs_reference for m in metrics) or protocol.reference_stats is not None:
        return  # imported statistics replace the dataset's images (checked once, in make_plan)
    if "images" not in ref.provides:
        needing = ", ".join(m.name for m in metrics if m.needs_reference)
        raise ProtocolError(f"{src}: key 'metrics': {needing} need reference images but dataset {ref.id!r} "
                            f"provides {', '.join(ref.provides) or 'nothing'}")
    if dataset is not None and protocol.reference_n > dataset.size:  # size is unknown without the files
        raise ProtocolError(f"{src}: key 'reference_n' has value {protocol.reference_n}; dataset "
                            f"{ref.id!r} has only {dataset.size} reference images")
