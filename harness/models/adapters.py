"""The adapter contract, the registry, and plan-time refusal of knobs a model cannot honour.

A family is one module under ``model_zoo/`` with one class decorated by ``@register("name")``.
``harness`` never imports a family by name: ``discover()`` imports every module of ``model_zoo``
(and of any ``onestep_bench.adapters`` entry point), which runs the decorators.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from harness.errors import GenerationError, ProtocolError
from harness.models.cards import card_from_dict
from harness.plugins import load_plugins
from harness.suggest import did_you_mean
from harness.types import ModelCard, SampleOutput, SampleRequest, SamplerSettings

A = TypeVar("A", bound="Adapter")
Guidance = Literal["cfg", "embedded", "interval", "none"]
Conditioning = Literal["class", "text", "none"]


@dataclass(frozen=True)
class Capabilities:
    """What a model can honour. The plan refuses anything outside it."""

    conditioning: Conditioning
    guidance: Guidance  # "cfg": true classifier-free guidance (batch doubled when cfg != 1)
    min_steps: int
    max_steps: int
    resolution: int  # native square resolution of the output image
    samplers: tuple[str, ...] = ("euler",)
    num_classes: int | None = None
    one_step: bool = False  # a native one-step model (vs. a multi-step model run at few steps)
    natural_cfg: float | None = None  # the guidance value the model was released with ("natural" in protocols)
    knobs: tuple[str, ...] = ()  # family-specific settings it honours (SamplerSettings.knobs); others refused
    guidance_note: str = ""  # what the cfg number means for this model, shown by `harness plan`


class Adapter(ABC):
    """Base class of every generator family. Subclasses set ``family`` via ``@register``."""

    family: ClassVar[str] = ""

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @classmethod
    @abstractmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        """Capabilities from the card alone (no weights loaded): used at plan time."""

    @property
    def capabilities(self) -> Capabilities:
        """``capabilities_for(self.card)``, computed once per card: ``sample`` reads it on every call, and some
        families check their card by building a throwaway network (milliseconds a batch-1 latency would count)."""
        cached = self.__dict__.get("_capabilities")
        if cached is None or cached[0] is not self.card:
            cached = (self.card, self.capabilities_for(self.card))
            self.__dict__["_capabilities"] = cached
        return cached[1]

    @abstractmethod
    def load(self, device: str = "cpu") -> None:
        """Load weights for ``self.card`` onto ``device``."""

    @abstractmethod
    def expected_nfe(self, settings: SamplerSettings) -> int | None:
        """The declared NFE of one sample (outputs must report exactly this), or None for an adaptive
        solver whose NFE is only known after sampling (outputs then report what was executed)."""

    @abstractmethod
    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        """Generate one image per request; all requests share one SamplerSettings."""

    def sample(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        """Validate the requests against the capabilities, then generate."""
        if not requests:
            return []
        settings = requests[0].settings
        if any(r.settings != settings for r in requests):
            raise ValueError("all requests of one sample() call must share SamplerSettings")
        caps = self.capabilities
        check_settings(self.card, caps, settings)
        for r in requests:
            if caps.conditioning == "class" and (r.label is None or not 0 <= r.label < (caps.num_classes or 0)):
                raise ProtocolError(f"model {self.card.name!r}: sample {r.index} has label {r.label!r}; "
                                    f"expected an int in [0, {caps.num_classes})")
        return self._sample_batch(requests)

    @classmethod
    @abstractmethod
    def tiny(cls) -> Adapter:
        """A loaded instance of the same architecture with tiny random weights, built offline."""


_REGISTRY: dict[str, type[Adapter]] = {}
_DISCOVERED = False


def register(family: str):
    """Class decorator: make ``cls`` the adapter of ``family``."""

    def wrap(cls: type[Adapter]) -> type[Adapter]:
        if family in _REGISTRY and _REGISTRY[family] is not cls:
            raise RuntimeError(f"adapter family {family!r} registered twice "
                               f"({_REGISTRY[family].__module__} and {cls.__module__})")
        cls.family = family
        _REGISTRY[family] = cls
        return cls

    return wrap


def discover() -> dict[str, type[Adapter]]:
    """Import every module of ``model_zoo`` and every ``onestep_bench.adapters`` entry point."""
    global _DISCOVERED
    if not _DISCOVERED:
        import model_zoo

        for info in pkgutil.walk_packages(model_zoo.__path__, prefix="model_zoo."):
            importlib.import_module(info.name)
        for ep in importlib.metadata.entry_points(group="onestep_bench.adapters"):
            ep.load()
        load_plugins()  # $HARNESS_PLUGINS modules may register families too
        _DISCOVERED = True
    return dict(_REGISTRY)


def get_adapter_class(family: str, where: str = "") -> type[Adapter]:
    registry = discover()
    if family not in registry:
        raise ProtocolError(f"{where}unknown adapter family {family!r}{did_you_mean(family, registry)}; "
                            f"registered: {', '.join(sorted(registry)) or 'none'}")
    return registry[family]


def check_settings(card: ModelCard, caps: Capabilities, settings: SamplerSettings) -> None:
    """Refuse (never ignore) a knob the model cannot honour."""
    who = f"model {card.name!r} ({card.family})"
    if not caps.min_steps <= settings.steps <= caps.max_steps:
        raise ProtocolError(f"{who}: steps={settings.steps} is outside its range "
                            f"[{caps.min_steps}, {caps.max_steps}]")
    if settings.sampler not in caps.samplers:
        raise ProtocolError(f"{who}: sampler={settings.sampler!r} is not supported; "
                            f"allowed: {', '.join(caps.samplers)}")
    if caps.guidance == "none" and settings.cfg is not None:
        raise ProtocolError(f"{who}: cfg={settings.cfg} asked of a model without guidance; "
                            f"give this model `cfg: [null]` in the protocol")
    if caps.guidance != "none" and settings.cfg is None:
        raise ProtocolError(f"{who}: cfg=null but the model has {caps.guidance} guidance; "
                            f"give a number (natural value: {caps.natural_cfg})")
    if settings.cfg is not None and not (np.isfinite(settings.cfg) and settings.cfg >= 0):
        raise ProtocolError(f"{who}: cfg={settings.cfg} must be a finite number >= 0")
    for name, _ in settings.knobs:
        if name not in caps.knobs:
            raise ProtocolError(f"{who}: knob {name!r} is not honoured by this family; "
                                f"allowed knobs: {', '.join(caps.knobs) or 'none'}")


def to_uint8_images(x: np.ndarray, indices: list[int], value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Float NHWC (or NCHW with C in {1,3}) images in ``value_range`` → uint8 NHWC RGB.

    Rounding rule (recorded in every manifest via SAMPLING_VERSION): clip to the range, scale to
    [0, 255], round half to even (numpy rint). Non-finite values are refused with the sample index.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise GenerationError(f"generator returned an array of shape {x.shape}; expected N x H x W x C")
    if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise GenerationError(f"generator produced NaN/Inf pixels for sample index "
                              f"{[indices[i] for i in np.flatnonzero(bad)]}; nothing was written")
    lo, hi = value_range
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0) * 255.0
    out = np.rint(x).astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def build_tiny(cls: type[A], params: dict[str, Any], name: str | None = None) -> A:
    """A family's ``tiny()``: an in-memory card (no weights) with ``params``, loaded on CPU."""
    family = cls.family
    card = card_from_dict({"name": name or f"{family}-tiny-test", "family": family, "weights": None,
                           "params": params}, source=f"<{cls.__name__}.tiny>")
    adapter = cls(card)
    adapter.load("cpu")
    return adapter
