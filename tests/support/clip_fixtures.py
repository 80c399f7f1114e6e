"""Tiny, randomly initialised CLIPs of the real architectures, saved in the official file formats.

- ``tiny_openclip``: an open_clip ``CLIP`` (ViT, QuickGELU, real 49,408-token vocabulary, 77-token context,
  224 input unless asked otherwise) whose state dict uses OpenAI's key layout, saved with ``torch.save`` like an
  OpenAI checkpoint;
- ``to_hf``: the same weights converted to a transformers ``CLIPModel`` (an independent implementation);
- ``write_clip_tokenizer``: vocab.json/merges.txt/tokenizer.json built from open_clip's packaged BPE file,
  plus the CLIP-H/14 processor config, i.e. the files of a laion/OpenAI processor folder.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import torch

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
WIDTH, LAYERS, EMBED = 64, 2, 32


def tiny_openclip(seed: int = 0, image_size: int = 224, patch_size: int = 32):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(embed_dim=EMBED, quick_gelu=True,
                 vision_cfg=CLIPVisionCfg(layers=LAYERS, width=WIDTH, patch_size=patch_size, image_size=image_size),
                 text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=WIDTH, heads=1, layers=LAYERS))
    with torch.no_grad():  # random projections / scale so scores spread over both signs
        model.text_projection.normal_(0, WIDTH ** -0.5)
        model.visual.proj.normal_(0, WIDTH ** -0.5)
        model.logit_scale.fill_(torch.log(torch.tensor(100.0)))
        for p in model.parameters():  # OpenAI checkpoints are float16 and open_clip rounds to it on load
            p.copy_(p.half().float())
    return model.eval()


def _blocks(src: dict, prefix: str, dst: str, layers: int) -> dict:
    out = {}
    for i in range(layers):
        s, d = f"{prefix}.resblocks.{i}", f"{dst}.encoder.layers.{i}"
        q, k, v = src[f"{s}.attn.in_proj_weight"].chunk(3)
        qb, kb, vb = src[f"{s}.attn.in_proj_bias"].chunk(3)
        out.update({f"{d}.self_attn.q_proj.weight": q, f"{d}.self_attn.k_proj.weight": k,
                    f"{d}.self_attn.v_proj.weight": v, f"{d}.self_attn.q_proj.bias": qb,
                    f"{d}.self_attn.k_proj.bias": kb, f"{d}.self_attn.v_proj.bias": vb})
        for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                     ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            out[f"{d}.{b}.weight"], out[f"{d}.{b}.bias"] = src[f"{s}.{a}.weight"], src[f"{s}.{a}.bias"]
    return out


def to_hf(model):
    """The open_clip model's weights in a transformers CLIPModel (QuickGELU, same shapes)."""
    from transformers import CLIPConfig, CLIPModel

    sd = model.state_dict()
    common = dict(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_attention_heads=1, num_hidden_layers=LAYERS,
                  hidden_act="quick_gelu", layer_norm_eps=1e-5)
    config = CLIPConfig(projection_dim=EMBED,
                        text_config=dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                                         eos_token_id=49407, pad_token_id=49407, **common),
                        vision_config=dict(image_size=model.visual.image_size[0],
                                           patch_size=model.visual.patch_size[0], **common))
    hf = CLIPModel(config)
    new = {"text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
           "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
           "text_model.final_layer_norm.weight": sd["ln_final.weight"],
           "text_model.final_layer_norm.bias": sd["ln_final.bias"],
           "text_projection.weight": sd["text_projection"].T,
           "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
           "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
           "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
           "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
           "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
           "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
           "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
           "visual_projection.weight": sd["visual.proj"].T, "logit_scale": sd["logit_scale"],
           **_blocks(sd, "transformer", "text_model", LAYERS),
           **_blocks(sd, "visual.transformer", "vision_model", LAYERS)}
    missing, unexpected = hf.load_state_dict({k: v.clone().contiguous() for k, v in new.items()}, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return hf.eval()


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP reversible byte -> printable unicode table (the published BPE convention)
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=True))


def write_clip_tokenizer(folder: Path) -> Path:
    """vocab.json, merges.txt, tokenizer.json, configs and preprocessor_config.json of a CLIP processor folder."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Path(importlib.util.find_spec("open_clip").submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")[1:49152 - 256 - 2 + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77,
                                                             "tokenizer_class": "CLIPTokenizer"}))
    CLIPTokenizer.from_pretrained(folder).save_pretrained(folder)  # adds tokenizer.json
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>"}))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
         "feature_extractor_type": "CLIPFeatureExtractor", "image_processor_type": "CLIPImageProcessor",
         "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD, "resample": 3, "size": 224}))
    return folder
