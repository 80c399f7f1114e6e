"""Tiny random components of the real text-to-image architectures, built offline (diffusers' dummy-component
pattern): the real CLIP BPE tokenizer from open_clip's vocab, a tiny T5 tokenizer, tiny CLIP/T5 text encoders
and an 8x-downsampling AutoencoderKL. Families use them in ``build_tiny_pipeline``; no weights are downloaded.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from typing import Any

import torch


@lru_cache(maxsize=1)
def clip_tokenizer() -> Any:
    """The real CLIP BPE tokenizer (49408 tokens), rebuilt offline from the vocab open_clip ships."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    # transformers 5 silently ignores vocab_file=/merges_file= keywords; pass the data itself.
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m.split()) for m in merges],
                         pad_token="<|endoftext|>", model_max_length=77)


@lru_cache(maxsize=1)
def t5_tokenizer() -> Any:
    """A tiny Unigram T5 tokenizer (lower-case letters, digits, punctuation) built from an in-code vocab."""
    from transformers import T5Tokenizer

    chars = "abcdefghijklmnopqrstuvwxyz"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [("\u2581" + c, -2.0) for c in chars] + [(c, -3.0) for c in chars + "0123456789.,!?'-"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def tiny_clip_text(with_projection: bool) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(clip_tokenizer()), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def tiny_t5() -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer()), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                                   is_encoder_decoder=False, use_cache=False, pad_token_id=0, eos_token_id=1))


def tiny_vae(latent_channels: int) -> torch.nn.Module:
    """A 4-level AutoencoderKL: downsamples by 8 like the real SD/SD3/FLUX VAEs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         latent_channels=latent_channels, norm_num_groups=4, sample_size=64,
                         use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
