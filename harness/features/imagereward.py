"""ImageReward v1.0 (Xu et al. 2023) through transformers' BLIP modules: one reward per (image, prompt) pair.

The published checkpoint (THUDM/ImageReward: ``ImageReward.pt`` + ``med_config.json``) is a state dict in the BLIP
repository's layout: ``blip.visual_encoder.*`` (a timm-style ViT-L/16 at 224, LayerNorm eps 1e-6),
``blip.text_encoder.*`` (BERT-base with a cross-attention block per layer to the image tokens, configured by
med_config.json), ``blip.vision_proj/text_proj.*`` (contrastive projections the score never reads) and
``mlp.layers.*`` (the head 768 -> 1024 -> 128 -> 64 -> 16 -> 1: linears with dropouts between, no activations).
``published_to_ours`` renames those keys onto ``BlipVisionModel`` + ``BlipTextModel``; the load is strict: a key
neither mapped nor in ``IGNORED``, or a parameter the file does not fill, is refused by name.

One pair's score: the prompt tokenised by bert-base-uncased's WordPiece plus the '[DEC]' bos and '[ENC]' special
tokens BLIP adds (so the vocabulary is med_config's 30524), padded to and truncated at 35 tokens, input ids used as
they are; the image by ImageReward's ``_transform`` (PIL bicubic resize of the short side to 224, centre crop 224,
CLIP mean/std); the text tower's CLS state, cross-attending to the 197 image tokens, through the head; then
(r - mean) / std with the published constants. Image and prompt meet inside the network, so nothing prompt-free is
worth caching (197 x 1024 floats per image): the extractor declares ``needs_prompts`` and its output is the reward
itself; the feature cache key covers the prompts (harness/run/extract.py).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.features import check_images
from harness.features.base import Extractor, ExtractorSpec, no_weight_init
from harness.features.weights import folder_digests, folders_and_digests
from harness.hashing import digest

MODEL_WEIGHTS = "imagereward-v1.0"
TOKENIZER_WEIGHTS = "bert-base-uncased-tokenizer"
CHECKPOINT, MED_CONFIG = "ImageReward.pt", "med_config.json"
CONTEXT_LENGTH = 35  # ImageReward's max_length: longer prompts are cut (counted by the metric)
IMAGE_SIZE = 224
REWARD_MEAN, REWARD_STD = 0.16717362830052426, 1.0333394966054072
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HEAD_WIDTHS = (1024, 128, 64, 16, 1)
# The weights cannot tell a ViT's head count: BLIP's ViTs use 64-wide heads (ViT-L 1024/16, ViT-B 768/12).
VISION_HEAD_DIM = 64

# (published name under blip.visual_encoder., BlipVisionModel name); {i}: block index, {p}: weight or bias
_VISION = (
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed.proj.{p}", "embeddings.patch_embedding.{p}"),
    ("blocks.{i}.norm1.{p}", "encoder.layers.{i}.layer_norm1.{p}"),
    ("blocks.{i}.attn.qkv.{p}", "encoder.layers.{i}.self_attn.qkv.{p}"),
    ("blocks.{i}.attn.proj.{p}", "encoder.layers.{i}.self_attn.projection.{p}"),
    ("blocks.{i}.norm2.{p}", "encoder.layers.{i}.layer_norm2.{p}"),
    ("blocks.{i}.mlp.fc1.{p}", "encoder.layers.{i}.mlp.fc1.{p}"),
    ("blocks.{i}.mlp.fc2.{p}", "encoder.layers.{i}.mlp.fc2.{p}"),
    ("norm.{p}", "post_layernorm.{p}"),
)
_SAME = (("{rest}", "{rest}"),)  # med.py's BERT names are transformers' BlipTextModel names; the head keeps its own
# (published prefix, our prefix, rules)
_PREFIXES = (("blip.visual_encoder.", "vision.", _VISION), ("blip.text_encoder.", "text.", _SAME),
             ("mlp.layers.", "head.", _SAME))
IGNORED = {
    "blip.text_encoder.embeddings.position_ids": "BERT's arange position buffer (checked, rebuilt by transformers)",
    "blip.vision_proj.weight": "BLIP's contrastive image projection: not in the reward",
    "blip.vision_proj.bias": "BLIP's contrastive image projection: not in the reward",
    "blip.text_proj.weight": "BLIP's contrastive text projection: not in the reward",
    "blip.text_proj.bias": "BLIP's contrastive text projection: not in the reward",
}
_GROUPS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "rest": r"(?P<rest>.+)"}


@functools.lru_cache(maxsize=64)
def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("".join(_GROUPS[part[1:-1]] if part.startswith("{") else re.escape(part)
                              for part in re.split(r"(\{\w+\})", template) if part))


def _translate(key: str, published_to_ours: bool) -> str | None:
    """One key in the other layout, or None when no rule covers it."""
    for published, ours, rules in _PREFIXES:
        source, target = (published, ours) if published_to_ours else (ours, published)
        if not key.startswith(source):
            continue
        for rule in rules:
            pattern, template = (rule if published_to_ours else rule[::-1])
            match = _pattern(pattern).fullmatch(key[len(source):])
            if match:
                return target + template.format(**match.groupdict())
    return None


def published_to_ours(state: dict[str, torch.Tensor], who: str) -> dict[str, torch.Tensor]:
    """The checkpoint under our module names; a key no rule maps and ``IGNORED`` does not list is refused."""
    unknown = [key for key in state if key not in IGNORED and _translate(key, True) is None]
    if unknown:
        raise HarnessError(f"{who}: {len(unknown)} checkpoint key(s) neither used nor ignored, e.g. "
                           f"{', '.join(unknown[:3])}; not the published ImageReward layout")
    return {_translate(key, True): value for key, value in state.items() if key not in IGNORED}


def _head(width: int) -> torch.nn.Sequential:
    """The published head at its published indices (mlp.layers.0/2/4/6/7); its dropouts are identities here."""
    layers: list[torch.nn.Module] = []
    for k, (a, b) in enumerate(zip((width, *HEAD_WIDTHS[:-1]), HEAD_WIDTHS, strict=True)):
        layers += [torch.nn.Linear(a, b)] + ([torch.nn.Identity()] if k < 3 else [])
    return torch.nn.Sequential(*layers)


class ImageRewardNet(torch.nn.Module):
    """BLIP's ViT (image tokens) -> BLIP's text encoder cross-attending to them -> CLS -> head -> normalised reward."""

    def __init__(self, vision_config: Any, text_config: Any) -> None:
        from transformers import BlipTextModel, BlipVisionModel

        super().__init__()
        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        self.head = _head(text_config.hidden_size)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_tokens = self.vision(pixel_values=pixels).last_hidden_state
        # every image token is attended to (ImageReward's all-ones image mask); bidirectional text self-attention
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_tokens,
                         is_decoder=False).last_hidden_state
        return (self.head(text[:, 0]).squeeze(-1) - REWARD_MEAN) / REWARD_STD


def _configs(state: dict[str, torch.Tensor], med: dict[str, Any], who: str) -> tuple[Any, Any]:
    """BlipVisionConfig from the checkpoint's shapes (the file names no architecture) and BlipTextConfig from
    med_config.json, with the encoder width the vision tower's."""
    from transformers import BlipTextConfig, BlipVisionConfig

    try:
        width = state["blip.visual_encoder.cls_token"].shape[-1]
        patch = state["blip.visual_encoder.patch_embed.proj.weight"].shape[-1]
        positions = state["blip.visual_encoder.pos_embed"].shape[1]
        mlp = state["blip.visual_encoder.blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise HarnessError(f"{who}: checkpoint lacks {err.args[0]}; not the published ImageReward layout") from None
    depth = len({m.group(1) for key in state if (m := re.match(r"blip\.visual_encoder\.blocks\.(\d+)\.", key))})
    if positions != (IMAGE_SIZE // patch) ** 2 + 1 or width % VISION_HEAD_DIM:
        raise HarnessError(f"{who}: vision tower of width {width}, patch {patch}, {positions} positions: expected a "
                           f"{IMAGE_SIZE}px ViT with {VISION_HEAD_DIM}-wide heads")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                           "max_position_embeddings", "layer_norm_eps", "hidden_act") if k not in med]
    if missing or not med.get("add_cross_attention") or med.get("position_embedding_type", "absolute") != "absolute":
        raise HarnessError(f"{who}: {MED_CONFIG} lacks {', '.join(missing) or 'add_cross_attention: true'} or is not "
                           f"absolute-position BERT; expected ImageReward's BLIP text config")
    vision = BlipVisionConfig(hidden_size=width, intermediate_size=mlp, num_hidden_layers=depth,
                              num_attention_heads=width // VISION_HEAD_DIM, image_size=IMAGE_SIZE, patch_size=patch,
                              hidden_act="gelu", layer_norm_eps=1e-6, attention_dropout=0.0)
    text = BlipTextConfig(vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], encoder_hidden_size=width,
                          intermediate_size=med["intermediate_size"], num_hidden_layers=med["num_hidden_layers"],
                          num_attention_heads=med["num_attention_heads"],
                          max_position_embeddings=med["max_position_embeddings"], hidden_act=med["hidden_act"],
                          layer_norm_eps=med["layer_norm_eps"], pad_token_id=med.get("pad_token_id", 0),
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, is_decoder=True,
                          bos_token_id=None, eos_token_id=None, sep_token_id=None)
    return vision, text


def fitted_state(net: ImageRewardNet, state: dict[str, torch.Tensor], who: str) -> dict[str, torch.Tensor]:
    """The checkpoint under our names, refused by name unless it fills exactly ``net``'s keys at their shapes."""
    ours, expected = published_to_ours(state, who), net.state_dict()
    absent, extra = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
    if absent or extra:
        raise HarnessError(f"{who}: the checkpoint does not fit the architecture: "
                           + "; ".join(f"{what} {', '.join(_translate(k, False) or k for k in keys[:3])}"
                                       + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
                                       for what, keys in (("missing", absent), ("unexpected", extra)) if keys))
    bad_shapes = [k for k in ours if ours[k].shape != expected[k].shape]
    if bad_shapes:
        k = bad_shapes[0]
        raise HarnessError(f"{who}: {_translate(k, False)} has shape {tuple(ours[k].shape)}, the architecture "
                           f"{tuple(expected[k].shape)} ({len(bad_shapes)} mismatched)")
    return ours


def build_network(checkpoint: Path, med_config: Path, who: str) -> ImageRewardNet:
    """The network with every parameter from the checkpoint (strict), on the CPU in float32."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        med = json.loads(med_config.read_text())
    except (OSError, RuntimeError, ValueError) as err:
        raise HarnessError(f"{who}: cannot read {checkpoint} / {med_config}: {err}") from err
    if not isinstance(state, dict) or not isinstance(med, dict):
        raise HarnessError(f"{who}: {checkpoint} / {med_config} hold a {type(state).__name__} / "
                           f"{type(med).__name__}, expected a state dict and a JSON object")
    with no_weight_init():  # every parameter is overwritten by the strict load below
        net = ImageRewardNet(*_configs(state, med, who))
    ours = fitted_state(net, state, who)
    positions = state.get("blip.text_encoder.embeddings.position_ids")
    if positions is not None and not torch.equal(positions.flatten(), torch.arange(positions.numel())):
        raise HarnessError(f"{who}: blip.text_encoder.embeddings.position_ids is not 0..{positions.numel() - 1}")
    net.load_state_dict({k: v.float() for k, v in ours.items()}, strict=True)
    return net


@functools.lru_cache(maxsize=4)
def load_tokenizer(folder: str, files_digest: str) -> Any:
    """bert-base-uncased's WordPiece tokenizer with the special tokens BLIP adds, built from the two verified files
    alone (a hub snapshot's tokenizer.json, which no digest covers, is never read); ``files_digest``: a changed file
    loads anew."""
    from transformers import BertTokenizer

    lines = (Path(folder) / "vocab.txt").read_text(encoding="utf-8").split("\n")
    vocab = {token: index for index, token in enumerate(lines[:-1] if lines[-1] == "" else lines)}
    config = json.loads((Path(folder) / "tokenizer_config.json").read_text())
    options = {k: config[k] for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars") if k in config}
    tokenizer = BertTokenizer(vocab=vocab, **options)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def check_prompts(prompts: Any, n: int, who: str) -> list[str]:
    """One non-empty prompt per image, else a refusal naming the extractor."""
    if prompts is None:
        raise HarnessError(f"extractor {who!r} scores (image, prompt) pairs: extract() needs prompts=[...], one per "
                           f"image; none were given")
    if isinstance(prompts, str) or not hasattr(prompts, "__len__"):
        raise HarnessError(f"extractor {who!r}: prompts must be a list of strings, one per image; got "
                           f"{type(prompts).__name__}")
    prompts = list(prompts)
    if len(prompts) != n:
        raise HarnessError(f"extractor {who!r}: {len(prompts)} prompts for {n} images; expected one prompt per image")
    empty = [k for k, p in enumerate(prompts) if not isinstance(p, str) or not p]
    if empty:
        raise HarnessError(f"extractor {who!r}: sample {empty[0]} has no prompt ({prompts[empty[0]]!r}; {len(empty)} "
                           f"without); the dataset must give every sample a prompt")
    return prompts


class ImageRewardV1(Extractor):
    name = "imagereward-v1.0"
    outputs = ("reward",)
    needs_prompts = True

    def __init__(self, batch_size: int = 16, model_dir: str | Path | None = None,
                 tokenizer_dir: str | Path | None = None) -> None:
        super().__init__(batch_size)
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else None
        self._tokenizer: Any = None

    def _folders_and_digests(self) -> tuple[Path, Path, dict[str, str]]:
        (model, tokenizer), digests = folders_and_digests(
            f"extractor {self.name!r}", (MODEL_WEIGHTS, self._model_dir), (TOKENIZER_WEIGHTS, self._tokenizer_dir))
        return model, tokenizer, digests

    @property
    def spec(self) -> ExtractorSpec:
        return ExtractorSpec(
            name=self.name, weights_sha256=digest(self._folders_and_digests()[2], length=64),
            layer=f"reward: (MLP(BLIP text CLS x image cross-attention) - {REWARD_MEAN}) / {REWARD_STD}; prompt "
                  f"bert-base-uncased+[DEC]/[ENC], max_length={CONTEXT_LENGTH} truncated, padded to max_length",
            resize=f"torchvision Resize({IMAGE_SIZE}, bicubic) on PIL (ImageReward _transform)",
            crop=f"torchvision CenterCrop({IMAGE_SIZE})", normalisation=f"CLIP mean {CLIP_MEAN} std {CLIP_STD}",
            input_rounding="uint8 RGB", dtype="float32",
            numerics="tf32=off;transformers BlipVisionModel(eps=1e-6)+BlipTextModel, eager attention")

    def tokenizer(self) -> Any:
        """The tokenizer alone (the metric counts truncated prompts with it; no network is loaded)."""
        if self._tokenizer is None:
            folder, digests = folder_digests(TOKENIZER_WEIGHTS, self._tokenizer_dir, f"extractor {self.name!r}")
            self._tokenizer = load_tokenizer(str(folder), digest(digests))
        return self._tokenizer

    def load(self, device: str = "cpu") -> None:
        model_dir, _, _ = self._folders_and_digests()  # verifies the files before they are used
        who = f"extractor {self.name!r}"
        net = build_network(model_dir / CHECKPOINT, model_dir / MED_CONFIG, who)
        if len(self.tokenizer()) != net.text.config.vocab_size:
            raise HarnessError(f"{who}: the tokenizer has {len(self.tokenizer())} tokens with BLIP's [DEC]/[ENC], "
                               f"{MED_CONFIG} {net.text.config.vocab_size}; not bert-base-uncased for this model")
        self._install(net, device)

    def _pixels(self, batch: np.ndarray) -> torch.Tensor:
        from torchvision import transforms as T

        preprocess = T.Compose([T.Resize(IMAGE_SIZE, interpolation=T.InterpolationMode.BICUBIC),
                                T.CenterCrop(IMAGE_SIZE), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
        return torch.stack([preprocess(Image.fromarray(np.ascontiguousarray(im))) for im in batch])

    def truncated(self, prompts: list[str]) -> list[bool]:
        """Whether each prompt is longer than the 35 tokens the model reads ([CLS] and [SEP] included)."""
        lengths = self.tokenizer()(list(prompts), truncation=False)["input_ids"]
        return [len(ids) > CONTEXT_LENGTH for ids in lengths]

    @torch.inference_mode()
    def extract(self, images: np.ndarray, prompts: list[str] | None = None) -> dict[str, np.ndarray]:
        self._require_loaded()
        images = check_images(images, self.name)
        prompts = check_prompts(prompts, len(images), self.name)
        rewards = [np.zeros((0,), np.float32)]
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            tokens = self.tokenizer()(prompts[start:stop], padding="max_length", truncation=True,
                                      max_length=CONTEXT_LENGTH, return_tensors="pt")
            reward = self._net(self._pixels(images[start:stop]).to(self._device),
                               tokens["input_ids"].to(self._device), tokens["attention_mask"].to(self._device))
            rewards.append(reward.float().cpu().numpy())
        return {"reward": np.concatenate(rewards).astype(np.float32)}
