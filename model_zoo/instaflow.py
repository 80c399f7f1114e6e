"""InstaFlow / 2-Rectified Flow: rectified-flow fine-tunes of Stable Diffusion 1.5, sampled by Euler steps.

The released checkpoints (``XCLiu/instaflow_0_9B_from_sd_1_5``, ``XCLiu/2_rectified_flow_from_sd_1_5``)
are diffusers folders of standard SD 1.5 components (CLIP text encoder, UNet, VAE) whose
``model_index.json`` names the authors' custom ``RectifiedFlowPipeline``; diffusers has no such
pipeline, so this file loads the components into a StableDiffusionPipeline (for its prompt encoding,
noise and VAE post-processing) and runs the sampler itself, as the authors' ``code/pipeline_rf.py`` does:

* the UNet predicts a velocity; N Euler steps of size 1/N from the noise latent, the UNet seeing time
  t_i = 1000 * (1 - i/N) at step i (t = 1000 is noise);
* noise is the SD pipeline's ``prepare_latents`` (a unit Gaussian from the image's own generator; the
  checkpoint's scheduler must have ``init_noise_sigma == 1`` or the folder is refused);
* guidance is true classifier-free guidance on velocities, v = v(empty prompt) + cfg * (v(prompt) -
  v(empty prompt)), on only when cfg > 1 (one UNet call on a doubled batch: NFE = 2 * steps). The
  one-step InstaFlow-0.9B was distilled from a teacher run at CFG 1.5 and is released for cfg 0 (no
  guidance) and a single step; 2-Rectified Flow is released for 1-8+ steps at cfg 1.0-2.0;
* latents are decoded by the VAE (latents / scaling_factor) and post-processed like the SD pipeline.

The safety checker is not loaded (upstream: it blacks out images and inflates FID).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.errors import HarnessError
from harness.models.adapters import register
from harness.types import SamplerSettings
from model_zoo import ode_solvers
from model_zoo.diffusers_common import TrueCFGTextToImage
from model_zoo.sd import StableDiffusionAdapter, tiny_sd_unet
from model_zoo.tiny_t2i_components import clip_tokenizer, tiny_clip_text, tiny_vae

RF_TIME_SCALE = 1000.0  # the UNet's time input at the noise end, as in the SD training timesteps


def rf_times(steps: int) -> list[float]:
    """The UNet time input of each Euler step: 1000 at the noise, down in equal steps of 1000/steps."""
    return [RF_TIME_SCALE * (1.0 - i / steps) for i in range(steps)]


@register("instaflow")
class InstaFlowAdapter(TrueCFGTextToImage):
    pipeline_class_name = "StableDiffusionPipeline"
    also_accept = ("RectifiedFlowPipeline",)  # the authors' class name in the released model_index.json
    load_overrides = StableDiffusionAdapter.load_overrides  # no safety checker (no black frames)
    tiny_params = {"resolution": 64, "natural_cfg": 0.0, "max_steps": 50}
    guidance_note = ("true CFG on velocities against the empty prompt, v_u + cfg * (v_c - v_u), two UNet passes per "
                     "step (one doubled-batch call) when cfg > 1; cfg <= 1 runs the conditional pass only")

    def prepare(self, pipe: Any, who: str) -> None:
        sigma = float(pipe.scheduler.init_noise_sigma)
        if sigma != 1.0:
            raise HarnessError(f"{who}: the checkpoint's scheduler scales initial noise by {sigma}; rectified flow "
                               f"starts from a unit Gaussian, so this is not an InstaFlow checkpoint")

    def generate(self, prompt: str, generator: torch.Generator, settings: SamplerSettings) -> Any:
        pipe, steps, size = self.pipe, settings.steps, self.params["resolution"]
        guided = settings.cfg > 1
        device = pipe.unet.device
        cond, uncond = pipe.encode_prompt(prompt, device, 1, guided)
        text = torch.cat([uncond, cond]) if guided else cond
        latents = pipe.prepare_latents(1, pipe.unet.config.in_channels, size, size, text.dtype, device, generator)
        times = rf_times(steps)

        def field(x: torch.Tensor, tau: float) -> torch.Tensor:  # dx/dτ in the step counter τ = i
            model_input = torch.cat([x] * 2) if guided else x
            time = torch.full((model_input.shape[0],), times[int(tau)], device=device)
            velocity = pipe.unet(model_input, time, encoder_hidden_states=text).sample
            if guided:
                v_uncond, v_cond = velocity.chunk(2)
                velocity = v_uncond + settings.cfg * (v_cond - v_uncond)
            return velocity / steps

        # Euler over τ = 0, 1, ..., steps: unit steps, so x + 1.0 * (v / steps) is upstream's x + v / steps bit for bit
        latents = ode_solvers.sample_euler(field, latents, [float(i) for i in range(steps + 1)])
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="np")

    @classmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        from diffusers import PNDMScheduler, StableDiffusionPipeline

        # The sampler never steps a scheduler; only its init_noise_sigma (1 for SD 1.5's PNDM) is used.
        scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  skip_prk_steps=True, steps_offset=1)
        return StableDiffusionPipeline(vae=tiny_vae(4), unet=tiny_sd_unet(params), scheduler=scheduler,
                                       text_encoder=tiny_clip_text(False), tokenizer=clip_tokenizer(),
                                       **cls.load_overrides)
