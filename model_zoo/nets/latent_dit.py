"""The SiT/DiT latent transformer, with the official SiT state-dict key names (willisma/SiT ``models.py``).

Keys: ``x_embedder.proj.{weight,bias}`` (a conv weight of shape (hidden, C, p, p)), ``pos_embed``
(1, T, hidden), ``t_embedder.mlp.{0,2}.*``, ``y_embedder.embedding_table.weight`` ((classes + 1) rows: the
last is the null label of classifier-free guidance), ``blocks.N.{attn.qkv, attn.proj, mlp.fc1, mlp.fc2,
adaLN_modulation.1}.*`` and ``final_layer.{linear, adaLN_modulation.1}.*``. So a real SiT-XL/2
checkpoint loads with ``load_state_dict(strict=True)``.

Few-step families (MeanFlow, SoFlow, iMF) condition on further scalars (the interval h = t - r, the target
time s, the guidance scale ω, ...). Each extra scalar gets its own sinusoidal embedder
``{name}_embedder.mlp.*`` whose output is summed into the adaLN condition, as in the MeanFlow DiT.

Batch invariance on CPU (a batch of N equals N singles, bit for bit; see ``tiny_dit.py``): oneDNN picks
a different GEMM kernel for small row counts, so the conditioning path (whose row count is the batch
size) runs on rows padded to a multiple of ``ROW_BLOCK``; token layers already run on B*T >= 16 rows.
The patch embedding is the conv written as a Linear on patches (same weights, same maths).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROW_BLOCK = 16  # conditioning GEMMs run on a multiple of 16 rows (>= 12 and a multiple of 4: one kernel)
MIN_TOKENS = 16


def pad_rows(x: torch.Tensor) -> torch.Tensor:
    extra = -len(x) % ROW_BLOCK or (ROW_BLOCK if len(x) == 0 else 0)
    return torch.cat([x, x[:1].expand(extra, *x.shape[1:])]) if extra else x


def sincos_pos_embed(hidden: int, side: int) -> torch.Tensor:
    """MAE-style fixed 2-D sin/cos position embedding, (1, side*side, hidden). Real checkpoints store theirs."""
    def one_axis(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    col, row = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64))
    # MAE's order: the first half encodes the column (its meshgrid is (w, h)), tokens row-major.
    emb = np.concatenate([one_axis(hidden // 2, col), one_axis(hidden // 2, row)], axis=1)
    return torch.from_numpy(emb).float().unsqueeze(0)


class RMSNorm(nn.Module):
    """RMS normalisation with a learned scale. ``upcast``: normalise in float32 and cast back (RAE's DDT does;
    iMF's MiT does not) — the same numbers in float32, different ones under bf16."""

    def __init__(self, dim: int, eps: float = 1e-6, upcast: bool = False) -> None:
        super().__init__()
        self.eps, self.upcast = eps, upcast
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float() if self.upcast else x
        return (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class TimestepEmbedder(nn.Module):
    """Scalar -> 256 sinusoidal frequencies -> MLP (SiT passes t in [0, 1] unscaled)."""

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)  # + the null label

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class PatchEmbed(nn.Module):
    def __init__(self, channels: int, hidden: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(channels, hidden, patch, stride=patch)  # kept for the official key names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        return F.linear(patches, self.proj.weight.reshape(len(self.proj.weight), -1), self.proj.bias)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, inner)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class SiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=1)
        x = x + g1.unsqueeze(1) * self.attn(_modulate(self.norm1(x), sh1, sc1))
        return x + g2.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), sh2, sc2))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))


class LatentDiT(nn.Module):
    """v = net(x, t, y, **scalars): x (B, C, H, W) latents, t and each scalar (B,) floats, y (B,) labels."""

    def __init__(self, input_size: int, patch: int, in_channels: int, hidden: int, depth: int, heads: int,
                 num_classes: int, mlp_ratio: float = 4.0, learn_sigma: bool = True,
                 cond_scalars: tuple[str, ...] = ()) -> None:
        super().__init__()
        if input_size % patch or hidden % heads or hidden % 4:
            raise ValueError(f"input_size {input_size} must be divisible by patch {patch}, hidden {hidden} by "
                             f"heads {heads} and by 4")
        side = input_size // patch
        if side * side < MIN_TOKENS:
            raise ValueError(f"{side}x{side} tokens < {MIN_TOKENS}: batch invariance on CPU needs more")
        self.in_channels, self.patch, self.learn_sigma = in_channels, patch, learn_sigma
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.cond_scalars = tuple(cond_scalars)
        self.x_embedder = PatchEmbed(in_channels, hidden, patch)
        self.t_embedder = TimestepEmbedder(hidden)
        for name in self.cond_scalars:
            self.add_module(f"{name}_embedder", TimestepEmbedder(hidden))
        self.y_embedder = LabelEmbedder(num_classes, hidden)
        self.register_buffer("pos_embed", sincos_pos_embed(hidden, side))  # persistent: official checkpoints hold it
        self.blocks = nn.ModuleList(SiTBlock(hidden, heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden, patch, self.out_channels)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        c, p = self.out_channels, self.patch
        side = int(round(x.shape[1] ** 0.5))
        x = x.reshape(len(x), side, side, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(len(x), c, side * p, side * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **scalars: torch.Tensor) -> torch.Tensor:
        if set(scalars) != set(self.cond_scalars):
            raise ValueError(f"network conditions on {self.cond_scalars}; got {sorted(scalars)}")
        b = len(x)
        c = self.t_embedder(pad_rows(t)) + self.y_embedder(pad_rows(y))
        for name in self.cond_scalars:
            c = c + getattr(self, f"{name}_embedder")(pad_rows(scalars[name]))
        h = self.x_embedder(x) + self.pos_embed
        for block in self.blocks:
            h = block(h, block.adaLN_modulation(c)[:b])
        fl = self.final_layer
        shift, scale = fl.adaLN_modulation(c)[:b].chunk(2, dim=1)
        out = self._unpatchify(fl.linear(_modulate(fl.norm_final(h), shift, scale)))
        return out[:, : self.in_channels] if self.learn_sigma else out  # SiT drops the learned-sigma half
