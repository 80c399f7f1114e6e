"""DiT^DH ("DiT with a DDT head", bytetriper/RAE ``DiTwDDTHead``): a DiT encoder over RAE latent tokens plus a
wide, shallow decoder head, with the official state-dict key names so a released ``stage2_model.pt`` loads
with ``load_state_dict(strict=True)``.

Architecture (the released configuration; the flags upstream exposes are fixed to the released values:
SwiGLU MLPs, RMSNorm, 2-D RoPE, no QK-norm, shifted adaLN, fixed sin/cos position embedding, patch 1):

* condition ``c = silu(t_emb + y_emb)``; ``t_emb`` is a Gaussian-Fourier embedding (``t_embedder.W``,
  256 random frequencies, sin then cos of ``2π·t·W``) followed by an MLP; ``y_emb`` has a null row (label
  ``num_classes``) for guidance;
* encoder: ``s = s_embedder(x) + pos_embed``, ``depth[0]`` blocks of width ``hidden[0]`` modulated by ``c``,
  then ``s = silu(t_emb + s)`` and ``s_projector`` (a Linear when the widths differ);
* head: ``x_embedder(x)`` (no position embedding), ``depth[1]`` blocks of width ``hidden[1]`` modulated
  per token by ``s``, and a final RMSNorm + adaLN + Linear back to the latent channels.

Each block: ``x += g1 · attn(mod(rms1(x)))``, ``x += g2 · swiglu(mod(rms2(x)))`` with (shift, scale, gate)
× 2 from ``adaLN_modulation = [SiLU, Linear]``. RoPE (EVA "fast" form) rotates adjacent channel pairs; the
first half of each head's channels carries the row index, the second half the column index.

Batch invariance on CPU (a batch of N equals N singles bit for bit; see ``latent_dit.py``): the
conditioning GEMMs, whose row count is the batch size, run on rows padded to a multiple of ``ROW_BLOCK``;
token layers run on B x T >= 16 rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model_zoo.nets.latent_dit import MIN_TOKENS, RMSNorm, pad_rows, sincos_pos_embed

FOURIER_FEATURES = 256


def rope_tables(head_dim: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (side*side, head_dim) of the 2-D rotary embedding, rows in row-major token order."""
    half = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    pos = torch.arange(side) / side * side  # upstream's expression (integers, same float rounding)
    angles = torch.repeat_interleave(pos[:, None] * freqs[None, :], 2, dim=-1)  # (side, half): pairs share
    rows = angles[:, None, :].expand(side, side, half)
    cols = angles[None, :, :].expand(side, side, half)
    table = torch.cat([rows, cols], dim=-1).reshape(side * side, head_dim)
    return table.cos(), table.sin()


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).reshape(x.shape)


class Rope(nn.Module):
    def __init__(self, head_dim: int, side: int) -> None:
        super().__init__()
        cos, sin = rope_tables(head_dim, side)
        self.register_buffer("freqs_cos", cos)  # persistent: the released checkpoints carry both tables
        self.register_buffer("freqs_sin", sin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.freqs_cos + rotate_pairs(x) * self.freqs_sin


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(rope(q), rope(k), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * inner)
        self.w3 = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


def swiglu_width(dim: int, mlp_ratio: float) -> int:
    return int(2 / 3 * int(dim * mlp_ratio))  # upstream: int(2/3 * mlp_hidden_dim)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DDTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim, upcast=True)
        self.attn = Attention(dim, heads)
        self.norm2 = RMSNorm(dim, upcast=True)
        self.mlp = SwiGLU(dim, swiglu_width(dim, mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, mod: torch.Tensor, rope: Rope) -> torch.Tensor:
        """``mod``: this block's adaLN output, (B, 1, 6D) for one condition per image or (B, T, 6D) per token."""
        sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=-1)
        x = x + g1 * self.attn(_modulate(self.norm1(x), sh1, sc1), rope)
        return x + g2 * self.mlp(_modulate(self.norm2(x), sh2, sc2))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = RMSNorm(dim, upcast=True)
        self.linear = nn.Linear(dim, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(s).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class GaussianFourierEmbedder(nn.Module):
    def __init__(self, dim: int, features: int = FOURIER_FEATURES) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(features), requires_grad=False)  # released checkpoints store it
        self.mlp = nn.Sequential(nn.Linear(2 * features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t[:, None] * self.W[None, :] * 2 * math.pi
        return self.mlp(torch.cat([torch.sin(args), torch.cos(args)], dim=-1))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)  # the last row is the null label

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class PatchEmbed(nn.Module):
    """timm's PatchEmbed at patch 1 (a 1x1 conv, kept for the key names), run as a Linear on tokens."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C), row-major
        return F.linear(tokens, self.proj.weight.flatten(1), self.proj.bias)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name}={value!r}: expected two ints >= 1 (encoder, head)")
    return pair


class DiTDH(nn.Module):
    """v = net(x, t, y): x (B, C, H, W) normalised RAE latents, t (B,) in [0, 1] (1 = noise), y (B,) labels."""

    def __init__(self, input_size: int, in_channels: int, hidden: Sequence[int], depth: Sequence[int],
                 heads: int | Sequence[int], num_classes: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        (enc, dec), (n_enc, n_dec), (h_enc, h_dec) = (_pair(hidden, "hidden"), _pair(depth, "depth"),
                                                      _pair(heads, "heads"))
        for dim, h in ((enc, h_enc), (dec, h_dec)):
            if dim % h or (dim // h) % 4:
                raise ValueError(f"width {dim} with {h} heads: the head size must be a multiple of 4 (2-D RoPE)")
        if input_size * input_size < MIN_TOKENS:
            raise ValueError(f"{input_size}x{input_size} tokens < {MIN_TOKENS}: batch invariance on CPU needs more")
        self.in_channels, self.input_size, self.num_encoder_blocks = in_channels, input_size, n_enc
        self.s_embedder = PatchEmbed(in_channels, enc)
        self.x_embedder = PatchEmbed(in_channels, dec)
        self.s_projector = nn.Linear(enc, dec) if enc != dec else nn.Identity()
        self.t_embedder = GaussianFourierEmbedder(enc)
        self.y_embedder = LabelEmbedder(num_classes, enc)
        self.register_buffer("pos_embed", sincos_pos_embed(enc, input_size))  # a (frozen) Parameter upstream
        self.enc_feat_rope = Rope(enc // h_enc, input_size)
        self.dec_feat_rope = Rope(dec // h_dec, input_size)
        self.blocks = nn.ModuleList([DDTBlock(enc, h_enc, mlp_ratio) for _ in range(n_enc)]
                                    + [DDTBlock(dec, h_dec, mlp_ratio) for _ in range(n_dec)])
        self.final_layer = FinalLayer(dec, in_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t_emb = self.t_embedder(pad_rows(t.float()))
        cond = F.silu(t_emb + self.y_embedder(pad_rows(y)))
        s = self.s_embedder(x) + self.pos_embed
        for block in self.blocks[: self.num_encoder_blocks]:
            s = block(s, block.adaLN_modulation(cond)[:b, None], self.enc_feat_rope)
        s = self.s_projector(F.silu(t_emb[:b, None] + s))
        out = self.x_embedder(x)
        for block in self.blocks[self.num_encoder_blocks:]:
            out = block(out, block.adaLN_modulation(s), self.dec_feat_rope)
        out = self.final_layer(out, s)
        return out.transpose(1, 2).reshape(b, c, h, w)
