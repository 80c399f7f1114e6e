"""The conformance suite every adapter family passes through its ``tiny()`` (ARCHITECTURE §2, §4).

Use it by subclassing ``AdapterConformance`` in a test module that supplies an ``adapter`` fixture (a
loaded adapter). Everything here is derived from the adapter's capabilities: labels for class
conditioning, short prompts for text conditioning, neither for unconditional models; cfg values from
its guidance mechanism; steps clamped into its step range.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from harness.errors import ProtocolError
from harness.models.adapters import Adapter
from harness.plan.real_floor import REAL_FAMILY
from harness.types import SampleOutput, SampleRequest, SamplerSettings

PROMPTS = ("a red square", "a cat on a mat", "two blue circles", "a small boat at sea", "an empty room")


def guided(adapter: Adapter) -> bool:
    return adapter.capabilities.guidance != "none"


def cfg_values(adapter: Adapter) -> list[float | None]:
    """Guidance values to exercise: None for unguided models; off (1.0), on (≠1) and natural otherwise."""
    caps = adapter.capabilities
    if caps.guidance == "none":
        return [None]
    values = [1.0, 2.5]
    if caps.natural_cfg is not None and caps.natural_cfg not in values:
        values.append(caps.natural_cfg)
    return values


def step_values(adapter: Adapter) -> list[int]:
    caps = adapter.capabilities
    return sorted({min(max(s, caps.min_steps), caps.max_steps) for s in (1, 3)})


def settings_for(adapter: Adapter, steps: int | None = None, cfg: float | None | str = "default") -> SamplerSettings:
    caps = adapter.capabilities
    if cfg == "default":
        cfg = None if caps.guidance == "none" else (2.5 if caps.guidance == "cfg" else caps.natural_cfg or 1.0)
    return SamplerSettings(steps=step_values(adapter)[-1] if steps is None else steps, cfg=cfg,
                           sampler=caps.samplers[0])


def requests_for(adapter: Adapter, seeds: list[int], settings: SamplerSettings,
                 first_index: int = 0) -> list[SampleRequest]:
    """One request per seed, with conditions cycling through labels/prompts (so a batch mixes them)."""
    caps = adapter.capabilities
    out = []
    for i, seed in enumerate(seeds):
        label = (3 * i + 1) % caps.num_classes if caps.conditioning == "class" else None
        prompt = PROMPTS[i % len(PROMPTS)] if caps.conditioning == "text" else None
        out.append(SampleRequest(index=first_index + i, seed=seed, settings=settings, label=label, prompt=prompt))
    return out


def images(outputs: list[SampleOutput]) -> list[bytes]:
    return [np.ascontiguousarray(o.image).tobytes() for o in outputs]


class AdapterConformance:
    """Mixin of pytest tests; the subclass provides the ``adapter`` fixture."""

    def test_output_is_uint8_rgb_at_native_resolution(self, adapter: Adapter) -> None:
        res = adapter.capabilities.resolution
        outs = adapter.sample(requests_for(adapter, [11, 12], settings_for(adapter)))
        assert len(outs) == 2
        for o in outs:
            assert isinstance(o.image, np.ndarray) and o.image.dtype == np.uint8
            assert o.image.shape == (res, res, 3)
            assert o.image.min() != o.image.max(), "constant frame"
            assert isinstance(o.nfe, int) and o.nfe >= (0 if adapter.family == REAL_FAMILY else 1)  # the floor: 0
            assert isinstance(o.seconds, float) and o.seconds >= 0.0

    def test_same_seed_same_image(self, adapter: Adapter) -> None:
        s = settings_for(adapter)
        a = adapter.sample(requests_for(adapter, [5, 6], s))
        b = adapter.sample(requests_for(adapter, [5, 6], s))
        assert images(a) == images(b)

    @pytest.mark.parametrize("which_cfg", ["off", "on"])
    def test_batch_equals_singles_bit_exact(self, adapter: Adapter, which_cfg: str) -> None:
        values = cfg_values(adapter)
        if which_cfg == "on" and len(values) == 1:
            pytest.skip("model has no guidance")
        s = settings_for(adapter, cfg=values[0] if which_cfg == "off" else values[1])
        reqs = requests_for(adapter, [101, 7, 2**40 + 3, 55], s, first_index=20)
        if adapter.capabilities.conditioning == "class":
            assert len({r.label for r in reqs}) > 1  # mixed labels in one batch
        batch = adapter.sample(reqs)
        singles = [adapter.sample([r])[0] for r in reqs]
        for r, b, one in zip(reqs, batch, singles):
            assert b.image.tobytes() == one.image.tobytes(), f"sample {r.index}: batch != single"
            assert b.nfe == one.nfe
        # Order inside the batch does not matter either (no dependence on batch position).
        rev = adapter.sample(reqs[::-1])[::-1]
        assert images(rev) == images(batch)

    def test_different_seeds_different_images(self, adapter: Adapter) -> None:
        s = settings_for(adapter)
        reqs = requests_for(adapter, [1, 2], s)
        reqs[1] = replace(reqs[1], label=reqs[0].label, prompt=reqs[0].prompt)  # only the seed differs
        a, b = adapter.sample(reqs)
        assert a.image.tobytes() != b.image.tobytes()

    def test_nfe_reported_equals_expected(self, adapter: Adapter) -> None:
        seen = {}
        for steps in step_values(adapter):
            for cfg in cfg_values(adapter):
                s = settings_for(adapter, steps=steps, cfg=cfg)
                expected = adapter.expected_nfe(s)
                assert isinstance(expected, int) and expected >= (0 if adapter.family == REAL_FAMILY else 1)
                outs = adapter.sample(requests_for(adapter, [3, 4, 5], s))
                assert [o.nfe for o in outs] == [expected] * 3, f"steps={steps} cfg={cfg}"
                seen[(steps, cfg)] = expected
        if adapter.capabilities.guidance == "cfg":  # true CFG doubles the batch exactly when cfg != 1
            for steps in step_values(adapter):
                assert seen[(steps, 2.5)] == 2 * seen[(steps, 1.0)]

    def test_refuses_steps_out_of_range(self, adapter: Adapter) -> None:
        caps = adapter.capabilities
        for steps in (caps.max_steps + 1, caps.min_steps - 1):
            with pytest.raises(ProtocolError, match="steps"):
                adapter.sample(requests_for(adapter, [1], settings_for(adapter, steps=steps)))

    def test_refuses_unknown_sampler(self, adapter: Adapter) -> None:
        s = replace(settings_for(adapter), sampler="no-such-sampler")
        with pytest.raises(ProtocolError, match="sampler"):
            adapter.sample(requests_for(adapter, [1], s))

    def test_refuses_wrong_guidance_knob(self, adapter: Adapter) -> None:
        wrong = None if guided(adapter) else 2.0  # cfg=None on a guided model, a number on an unguided one
        with pytest.raises(ProtocolError, match="cfg"):
            adapter.sample(requests_for(adapter, [1], settings_for(adapter, cfg=wrong)))

    def test_refuses_label_out_of_range(self, adapter: Adapter) -> None:
        caps = adapter.capabilities
        if caps.conditioning != "class":
            pytest.skip("not class-conditional")
        base = requests_for(adapter, [1], settings_for(adapter))[0]
        for label in (caps.num_classes, -1, None):
            with pytest.raises(ProtocolError, match="label"):
                adapter.sample([replace(base, label=label)])

    def test_mixed_settings_in_one_call_is_an_error(self, adapter: Adapter) -> None:
        steps = step_values(adapter)
        a = requests_for(adapter, [1], settings_for(adapter, steps=steps[0]))[0]
        other = settings_for(adapter, steps=steps[-1]) if len(steps) > 1 else \
            replace(a.settings, steps=min(a.settings.steps + 1, adapter.capabilities.max_steps))
        if other == a.settings:
            pytest.skip("model accepts a single setting only")
        b = replace(a, index=1, seed=2, settings=other)
        with pytest.raises(ValueError, match="share"):
            adapter.sample([a, b])

    def test_empty_request_list(self, adapter: Adapter) -> None:
        assert adapter.sample([]) == []
