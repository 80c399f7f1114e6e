"""DMD2 (improved distribution matching distillation) SDXL generators through StableDiffusionXLPipeline.

The official release is a UNet state-dict file (``tianweiy/DMD2``: ``dmd2_sdxl_1step_unet_fp16.bin``,
``dmd2_sdxl_4step_unet_fp16.bin``) loaded into the UNet of the SDXL base pipeline. The card's ``hub``
names the base repo and ``params.unet`` the file ({repo, revision, file}); both come from the local
Hugging Face cache only.

Sampling follows the upstream model card: LCMScheduler built from the base scheduler's config, the
distilled timesteps given explicitly (``params.timesteps``: [399] for the one-step generator, [999, 749,
499, 249] for the four-step one) and ``guidance_scale=0``. A generator is distilled for exactly its
timesteps, so ``steps`` must equal their count; any other step count is refused at plan time rather
than run on a schedule it never saw. There is no guidance of any kind: the teacher's CFG (scale 8 in
training) is baked into the weights, cfg must be null and NFE = steps (one UNet pass each).
"""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError, ProtocolError
from harness.models.adapters import Capabilities, register
from harness.types import ModelCard, SamplerSettings
from model_zoo.diffusers_common import (
    COMMON_PARAMS,
    DiffusersTextToImage,
    check_hub_file,
    read_state_dict,
    resolve_hub_file,
    resolve_params,
    use_scheduler,
)
from model_zoo.sdxl import StableDiffusionXLAdapter

GUIDANCE_NOTE = ("none: CFG distilled into the weights (upstream runs guidance_scale 0, one UNet pass per step); "
                 "cfg must be null")


def distilled_timesteps(card: ModelCard, value: Any) -> list[int]:
    """``params.timesteps``: the strictly decreasing training timesteps (0..999) the generator was distilled on."""
    ok = (isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
          and all(0 <= t <= 999 for t in value) and all(a > b for a, b in zip(value, value[1:])))
    if not ok:
        raise ProtocolError(f"{card.source or card.name}: params.timesteps={value!r}; expected a non-empty, strictly "
                            f"decreasing list of ints in [0, 999] (e.g. [399] or [999, 749, 499, 249])")
    return list(value)


@register("dmd2")
class DMD2Adapter(DiffusersTextToImage):
    pipeline_class_name = "StableDiffusionXLPipeline"
    defaults = {**COMMON_PARAMS, "unet": None, "timesteps": None}
    tiny_params = {"resolution": 64, "timesteps": [999, 749, 499, 249], "one_step": True}

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.timesteps = distilled_timesteps(card, self.params["timesteps"])
        self.unet_file = check_hub_file(card, "unet", self.params["unet"])
        if self.unet_file is not None and card.hub is None:
            raise ProtocolError(f"{card.source or card.name}: params.unet is a UNet for an SDXL base pipeline; name "
                                f"that base with 'hub: {{repo, revision}}'")

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_params(card, cls.defaults)
        if p["natural_cfg"] is not None:
            raise ProtocolError(f"{card.source or card.name}: params.natural_cfg={p['natural_cfg']!r}, but DMD2 runs "
                                f"without guidance; remove it")
        steps = len(distilled_timesteps(card, p["timesteps"]))
        return Capabilities(conditioning="text", guidance="none", min_steps=steps, max_steps=steps,
                            resolution=p["resolution"], samplers=("lcm",), one_step=p["one_step"],
                            guidance_note=GUIDANCE_NOTE)

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return settings.steps

    def call_kwargs(self, settings: SamplerSettings) -> dict[str, Any]:
        return {"guidance_scale": 0.0, "timesteps": self.timesteps}

    def prepare(self, pipe: Any, who: str) -> None:
        if self.unet_file is not None:
            path = resolve_hub_file(self.card, "unet", self.unet_file)
            state = read_state_dict(path, who)
            try:
                pipe.unet.load_state_dict(state, strict=True)
            except RuntimeError as e:  # missing/unexpected keys or shapes: not a UNet for this base
                raise HarnessError(f"{who}: {path} does not fit the UNet of {self.card.hub[0]}: "
                                   f"{str(e).splitlines()[0]} ...") from None
        if pipe.unet.config.time_cond_proj_dim is not None:
            raise HarnessError(f"{who}: the UNet has a guidance embedding (time_cond_proj_dim); DMD2 generators have "
                               f"none, so this is not a DMD2 checkpoint")
        use_scheduler(pipe, "lcm")

    @classmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        return StableDiffusionXLAdapter.build_tiny_pipeline(params)
