"""A compact class-conditional DiT (patchify → adaLN transformer blocks → unpatchify).

Batch invariance on CPU (batch of N == N singles, bit for bit) is a design goal, and shapes matter for
it: MKL/oneDNN sgemm picks a different kernel for a matrix with few rows (on the AVX2 CPU we measured,
every M < 12 that is not a multiple of 4 rounded differently from the same rows inside a larger M).
So no layer may run a GEMM whose row count is the batch size:

* token layers run on B*T rows with T >= ``MIN_TOKENS`` tokens per image (checked in ``__init__``);
* conditioning (time + class → adaLN shift/scale/gate) is computed, when all samples share one time t
  (always the case when sampling), as a fixed-shape table over every class incl. the null class and then
  gathered by label, so its shape never depends on the batch. A per-sample t (training) takes the
  direct path, which is equal up to float rounding.

Two-time conditioning (``time_inputs=2``, for MeanFlow's u(z, r, t)): a second time embedding of the
interval h = t - r is added to the condition. Forward-mode AD (``torch.func.jvp``, MeanFlow training) is
not implemented for CPU flash attention, so ``math_attention = True`` switches every block to an
explicit softmax(QKᵀ/√d)V, equal up to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MIN_TOKENS = 16


def _sincos_2d(side: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin/cos position embedding, (side*side, dim); deterministic, so not stored in checkpoints."""
    quarter = dim // 4
    freqs = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    pos = torch.arange(side, dtype=torch.float64)
    gy, gx = torch.meshgrid(pos, pos, indexing="ij")
    parts = []
    for g in (gy.reshape(-1), gx.reshape(-1)):
        ang = g[:, None] * freqs[None, :]
        parts += [ang.sin(), ang.cos()]
    emb = torch.cat(parts, dim=1)
    return F.pad(emb, (0, dim - emb.shape[1])).float()  # pad when dim is not a multiple of 4


class TimeEmbed(nn.Module):
    """t in [0, 1] → sinusoidal features → MLP."""

    def __init__(self, hidden: int, freq_dim: int = 64) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        dtype = self.mlp[0].weight.dtype  # float32 in use; float64 lets tests check derivatives tightly
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=dtype, device=t.device) / half)
        ang = (t.to(dtype) * 1000.0)[:, None] * freqs[None, :]  # scale so t in [0,1] spans many periods
        return self.mlp(torch.cat([ang.cos(), ang.sin()], dim=1))


def conditioning(net: nn.Module, t: torch.Tensor, y: torch.Tensor,
                 interval: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The time (+ interval) + class embedding of a net with ``t_embed``, ``y_embed`` and ``h_embed`` (None for
    one time input): ``(cond, rows)``. A 0-dim ``t`` gives a fixed-shape table over every label and ``rows = y``
    to gather it with after each projection, so no GEMM depends on the batch size; else per-row ``cond``."""
    if (interval is None) != (net.h_embed is None):
        raise ValueError(f"this net takes {1 if net.h_embed is None else 2} time input(s)")
    if t.dim() == 0:
        cond = net.t_embed(t.reshape(1)) + net.y_embed.weight
        if interval is not None:
            cond = cond + net.h_embed(interval.reshape(1))
        return cond, y
    cond = net.t_embed(t) + net.y_embed(y)
    if interval is not None:
        cond = cond + net.h_embed(interval)
    return cond, None


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class Block(nn.Module):
    """Pre-norm transformer block whose LayerNorms are modulated (shift, scale, gate) by the condition."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp_ratio * hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * hidden, hidden))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))
        self.math_attention = False

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=1)
        h = _modulate(self.norm1(x), sh1, sc1)
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.math_attention:
            att = torch.softmax(q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5), dim=-1)
            h = att @ v
        else:
            h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(1, 2).reshape(b, n, d)
        x = x + g1[:, None, :] * self.proj(h)
        return x + g2[:, None, :] * self.mlp(_modulate(self.norm2(x), sh2, sc2))


class TinyDiT(nn.Module):
    """Predicts a velocity field v(x, t, y) with the input's shape. Label ``num_classes`` is the null class."""

    def __init__(self, resolution: int = 28, channels: int = 1, num_classes: int = 10, hidden: int = 96,
                 depth: int = 4, heads: int = 4, patch: int = 4, time_inputs: int = 1) -> None:
        super().__init__()
        if resolution % patch or hidden % heads:
            raise ValueError(f"resolution {resolution} must be divisible by patch {patch}, "
                             f"hidden {hidden} by heads {heads}")
        side = resolution // patch
        if side * side < MIN_TOKENS:
            raise ValueError(f"{side}x{side} patches per image < {MIN_TOKENS}: batched and single samples "
                             f"would no longer match bit for bit on CPU (see module docstring)")
        self.resolution, self.channels, self.patch, self.num_classes = resolution, channels, patch, num_classes
        self.patch_in = nn.Linear(channels * patch * patch, hidden)  # a Linear on reshaped patches, not a conv
        self.register_buffer("pos", _sincos_2d(side, hidden), persistent=False)
        self.t_embed = TimeEmbed(hidden)
        if time_inputs not in (1, 2):
            raise ValueError(f"time_inputs={time_inputs}; expected 1 (t) or 2 (t and the interval t - r)")
        self.h_embed = TimeEmbed(hidden) if time_inputs == 2 else None
        self.y_embed = nn.Embedding(num_classes + 1, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.patch_out = nn.Linear(hidden, channels * patch * patch)

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        b, p, c, side = x.shape[0], self.patch, self.channels, self.resolution // self.patch
        x = x.reshape(b, side, side, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, side * p, side * p)

    def set_math_attention(self, on: bool) -> None:
        for blk in self.blocks:
            blk.math_attention = on

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                interval: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W); t (and ``interval`` with time_inputs=2): 0-dim (one for the batch) or (B,);
        y: (B,) long in [0, num_classes]."""
        cond, rows = conditioning(self, t, y, interval)

        def mod(layer: nn.Module) -> torch.Tensor:
            m = layer(cond)
            return m if rows is None else m[rows]

        h = self.patch_in(self._patchify(x)) + self.pos
        for blk in self.blocks:
            h = blk(h, mod(blk.ada))
        shift, scale = mod(self.ada_out).chunk(2, dim=1)
        return self._unpatchify(self.patch_out(_modulate(self.norm_out(h), shift, scale)))
