"""Merge a LoRA state dict into a pipeline's weights in place: W += scale * (alpha / rank) * up @ down.

No peft dependency: released LoRA files are plain tensors, and fusing them is one matrix product per
adapted layer (what diffusers' ``load_lora_weights`` + ``fuse_lora`` computes). Two on-disk layouts:

* kohya-ss: ``lora_unet_<module path, dots as underscores>.{lora_down.weight, lora_up.weight, alpha}``,
  text encoders as ``lora_te_`` (SD 1.5) or ``lora_te1_`` / ``lora_te2_`` (SDXL);
* diffusers/peft: ``unet.<module path>.{lora_A.weight, lora_B.weight}`` (optional ``.alpha``), text
  encoders as ``text_encoder.`` / ``text_encoder_2.``.

Kohya names are matched against the model's own module names (dots replaced by underscores), which is
unambiguous even though names such as ``down_blocks`` contain underscores. A key that matches no layer,
a layer that is not Linear or Conv2d, or mismatched shapes are refused: a silently unmerged LoRA would
benchmark the base model under the LoRA's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.errors import HarnessError

KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                  "lora_te2_": "text_encoder_2"}
PEFT_PREFIXES = {"unet.": "unet", "text_encoder.": "text_encoder", "text_encoder_2.": "text_encoder_2"}
KOHYA_SUFFIXES = {".lora_down.weight": "down", ".lora_up.weight": "up", ".alpha": "alpha"}
PEFT_SUFFIXES = {".lora_A.weight": "down", ".lora_B.weight": "up", ".alpha": "alpha"}


@dataclass
class LoraPair:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None


def _split(key: str) -> tuple[str, str, str, bool]:
    """(component, module key, part, kohya?) of one LoRA tensor name, or raise naming the key."""
    for prefixes, suffixes, kohya in ((KOHYA_PREFIXES, KOHYA_SUFFIXES, True), (PEFT_PREFIXES, PEFT_SUFFIXES, False)):
        prefix = next((p for p in sorted(prefixes, key=len, reverse=True) if key.startswith(p)), None)
        suffix = next((s for s in suffixes if key.endswith(s)), None)
        if prefix and suffix:
            return prefixes[prefix], key[len(prefix):-len(suffix)], suffixes[suffix], kohya
    raise HarnessError(f"LoRA key {key!r} is in neither the kohya (lora_unet_..., .lora_down/.lora_up/.alpha) nor "
                       f"the diffusers/peft (unet...., .lora_A/.lora_B) layout")


def group_lora(state: dict[str, torch.Tensor]) -> dict[tuple[str, str, bool], LoraPair]:
    """LoRA tensors grouped per adapted layer: {(component, module key, kohya?): LoraPair}."""
    pairs: dict[tuple[str, str, bool], LoraPair] = {}
    for key, tensor in state.items():
        component, module, part, kohya = _split(key)
        pair = pairs.setdefault((component, module, kohya), LoraPair())
        if part == "alpha":
            pair.alpha = float(tensor)
        else:
            setattr(pair, part, tensor)
    for (component, module, _), pair in pairs.items():
        if pair.down is None or pair.up is None:
            raise HarnessError(f"LoRA layer {component}:{module} lacks its {'down' if pair.down is None else 'up'} "
                               f"matrix")
    return pairs


def lora_delta(pair: LoraPair, weight_shape: torch.Size) -> torch.Tensor:
    """(alpha / rank) * up @ down, shaped like the layer weight (Linear, or Conv2d with a 1x1 up)."""
    rank = pair.down.shape[0]
    product = pair.up.float().reshape(pair.up.shape[0], rank) @ pair.down.float().reshape(rank, -1)
    factor = 1.0 if pair.alpha is None else pair.alpha / rank
    return (factor * product).reshape(weight_shape)


def merge_lora(pipe: Any, state: dict[str, torch.Tensor], scale: float, who: str) -> int:
    """Add ``scale`` x every LoRA delta of ``state`` to the pipeline's weights; returns the layers merged."""
    pairs = group_lora(state)
    modules: dict[str, dict[str, torch.nn.Module]] = {}
    for component in {component for component, _, _ in pairs}:
        if component not in modules:
            model = getattr(pipe, component, None)
            if not isinstance(model, torch.nn.Module):
                raise HarnessError(f"{who}: the LoRA adapts {component!r}, which this pipeline does not have")
            named = dict(model.named_modules())
            modules[component] = named
            modules[component + "/kohya"] = {n.replace(".", "_"): m for n, m in named.items()}
    unmatched = []
    for (component, module_key, kohya), pair in pairs.items():
        layer = modules[component + ("/kohya" if kohya else "")].get(module_key)
        if layer is None:
            unmatched.append(f"{component}:{module_key}")
            continue
        if not isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            raise HarnessError(f"{who}: LoRA layer {component}:{module_key} is a {type(layer).__name__}; only Linear "
                               f"and Conv2d layers can be merged")
        weight = layer.weight
        if pair.up.shape[0] != weight.shape[0] or pair.down[0].numel() != weight[0].numel():
            raise HarnessError(f"{who}: LoRA layer {component}:{module_key} has up {tuple(pair.up.shape)} / down "
                               f"{tuple(pair.down.shape)}, which does not fit the weight {tuple(weight.shape)}")
        with torch.no_grad():
            weight.add_((scale * lora_delta(pair, weight.shape)).to(weight.dtype))
    if unmatched:
        raise HarnessError(f"{who}: {len(unmatched)} LoRA layer(s) match no module of the pipeline, e.g. "
                           f"{unmatched[:3]}; is this LoRA for another base model?")
    return len(pairs)
