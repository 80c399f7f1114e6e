"""iMF's "MiT" transformer (improved MeanFlow, Lyy-iiis/imeanflow), written in PyTorch for inference.

Conditioning is in-context: the class, the guidance scale ω (embedded as 1 - 1/ω), the guidance interval
(t_min, t_max) and the step size h = t - r each go through their own sinusoidal embedder, are added to a few
learned tokens, and are prepended to the patch tokens. Blocks: RMSNorm, multi-head attention with
QK-RMSNorm and rotary position embedding over the whole sequence (adjacent channel pairs rotated), a
SwiGLU MLP, and residual branches scaled by learned per-channel vectors. After ``depth - head_depth``
shared blocks the u-head (average velocity) runs ``head_depth`` blocks; the v-head of training is omitted.
Parameter names follow the release's module names so ``flax_convert.flax_to_torch`` maps its params 1:1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model_zoo.nets.latent_dit import MIN_TOKENS, LabelEmbedder, PatchEmbed, RMSNorm, TimestepEmbedder, pad_rows

TOKEN_GROUPS = (("class_tokens", "num_class_tokens"), ("omega_tokens", "num_cfg_tokens"),
                ("t_min_tokens", "num_interval_tokens"), ("t_max_tokens", "num_interval_tokens"),
                ("time_tokens", "num_time_tokens"))  # sequence order of the prefix


def rope_tables(head_dim: int, seq_len: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, T, H, D); channel pairs (2i, 2i+1) are (real, imag) rotated by position * freq_i."""
    re, im = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack([re * c - im * s, re * s + im * c], dim=-1).flatten(-2)


class RoPEAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(hidden, hidden, bias=False) for _ in range(4))
        self.q_norm, self.k_norm = RMSNorm(self.head_dim), RMSNorm(self.head_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (proj(x).reshape(b, n, self.heads, self.head_dim) for proj in (self.q_proj, self.k_proj, self.v_proj))
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.w1, self.w3 = nn.Linear(hidden, inner, bias=False), nn.Linear(hidden, inner, bias=False)
        self.w2 = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(hidden), RMSNorm(hidden)
        self.attn = RoPEAttention(hidden, heads)
        self.mlp = SwiGLU(hidden, int(hidden * mlp_ratio))
        # Upstream zero-inits these gates for training; a random-init stand-in needs live branches so that
        # the conditioning tokens reach the output. Released weights overwrite them.
        self.attn_scale = nn.Parameter(torch.full((hidden,), 0.5))
        self.mlp_scale = nn.Parameter(torch.full((hidden,), 0.5))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin) * self.attn_scale
        return x + self.mlp(self.norm2(x)) * self.mlp_scale


class MiTFinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, channels: int) -> None:
        super().__init__()
        self.norm = RMSNorm(hidden)
        self.linear = nn.Linear(hidden, patch * patch * channels)


class MiT(nn.Module):
    """u = net(x, h, omega, t_min, t_max, y): the average velocity over [t - h, t] (x: (B, C, H, W))."""

    def __init__(self, input_size: int, patch: int, in_channels: int, hidden: int, depth: int, heads: int,
                 num_classes: int, head_depth: int = 8, mlp_ratio: float = 8 / 3, num_class_tokens: int = 8,
                 num_time_tokens: int = 4, num_cfg_tokens: int = 4, num_interval_tokens: int = 2) -> None:
        super().__init__()
        side = input_size // patch
        if input_size % patch or hidden % heads or (hidden // heads) % 2 or side * side < MIN_TOKENS:
            raise ValueError(f"MiT: input_size {input_size} / patch {patch} must give >= {MIN_TOKENS} tokens and "
                             f"hidden {hidden} / heads {heads} an even head size")
        if not 0 <= head_depth <= depth:
            raise ValueError(f"MiT: head_depth {head_depth} must be in [0, depth={depth}]")
        counts = {"num_class_tokens": num_class_tokens, "num_time_tokens": num_time_tokens,
                  "num_cfg_tokens": num_cfg_tokens, "num_interval_tokens": num_interval_tokens}
        self.in_channels, self.patch = in_channels, patch
        self.x_embedder = PatchEmbed(in_channels, hidden, patch)
        for name in ("h", "omega", "cfg_t_start", "cfg_t_end"):
            self.add_module(f"{name}_embedder", TimestepEmbedder(hidden))
        self.y_embedder = LabelEmbedder(num_classes, hidden)
        for name, count in TOKEN_GROUPS:
            self.register_parameter(name, nn.Parameter(torch.randn(counts[count], hidden) / hidden ** 0.5))
        self.prefix = sum(counts[c] for _, c in TOKEN_GROUPS)
        cos, sin = rope_tables(hidden // heads, self.prefix + side * side)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.shared_blocks = nn.ModuleList(MiTBlock(hidden, heads, mlp_ratio) for _ in range(depth - head_depth))
        self.u_heads = nn.ModuleList(MiTBlock(hidden, heads, mlp_ratio) for _ in range(head_depth))
        self.u_final_layer = MiTFinalLayer(hidden, patch, in_channels)

    def forward(self, x: torch.Tensor, h: torch.Tensor, omega: torch.Tensor, t_min: torch.Tensor,
                t_max: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b = len(x)

        def embed(module: nn.Module, v: torch.Tensor) -> torch.Tensor:
            return module(pad_rows(v))[:b, None, :]  # padded rows: one GEMM kernel whatever the batch size

        conds = {"class_tokens": self.y_embedder(y)[:, None, :],
                 "omega_tokens": embed(self.omega_embedder, 1 - 1 / omega),
                 "t_min_tokens": embed(self.cfg_t_start_embedder, t_min),
                 "t_max_tokens": embed(self.cfg_t_end_embedder, t_max), "time_tokens": embed(self.h_embedder, h)}
        seq = torch.cat([getattr(self, name) + conds[name] for name, _ in TOKEN_GROUPS] + [self.x_embedder(x)], dim=1)
        for block in (*self.shared_blocks, *self.u_heads):
            seq = block(seq, self.rope_cos, self.rope_sin)
        fl = self.u_final_layer
        out = fl.linear(fl.norm(seq[:, self.prefix:]))
        c, p = self.in_channels, self.patch
        side = int(round(out.shape[1] ** 0.5))
        out = out.reshape(b, side, side, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", out).reshape(b, c, side * p, side * p)
