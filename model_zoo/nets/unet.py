"""A small class-conditional U-Net for 28×28 digits (conv, GroupNorm, time + class embedding).

Layout (``mults`` = channel multipliers per resolution, e.g. (1, 2, 2) at 28, 14, 7 pixels): a 3×3 conv in,
``blocks`` residual blocks per resolution on the way down (stride-2 conv between resolutions), two residual
blocks in the middle, ``blocks + 1`` residual blocks per resolution on the way up, each fed the matching
down-path activation (channel concat; nearest ×2 + conv between resolutions), GroupNorm + SiLU + a zero-init
3×3 conv out. No attention: at 7×7 the convolutions already see the whole digit, and convs keep the
forward-mode AD of MeanFlow's training simple.

Conditioning: sinusoidal time features → MLP, plus a learned class embedding with one extra "null" label
(index ``num_classes``, the unconditional branch of CFG); with ``time_inputs=2`` (MeanFlow's u(z, r, t)) an
embedding of the interval t - r is added. Each residual block turns the condition into a per-channel
scale and shift after its second GroupNorm (FiLM).

Batch invariance on CPU (batch of N == N singles, bit for bit): convolutions and GroupNorm compute every
sample on its own, but a Linear on the (B, emb) condition is a GEMM whose row count is the batch size, and
MKL/oneDNN round a GEMM with few rows differently (see ``tiny_dit``'s docstring). So when all samples share
one time t (always, when sampling), the condition and every block's scale/shift are computed as a
fixed-shape table over all labels incl. the null label and gathered by label; a per-sample t (training)
takes the direct path, equal up to float rounding.

Elementwise kernels with transcendentals (SiLU's exp) are batch invariant only if each sample's slice starts
on the kernel's step: PyTorch's CPU loops take 2 vectors (32 floats with AVX-512) per iteration and finish the
remainder with scalar code that rounds differently, so a sample whose element count is not a multiple of 32
gets some elements through the other path when it sits inside a batch. ``__init__`` refuses such shapes
(e.g. base 8: 16 channels at 7×7 = 784 floats per sample).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model_zoo.nets.tiny_dit import TimeEmbed, conditioning

VECTOR_STEP = 32  # floats per iteration of PyTorch's vectorised CPU elementwise loops (2 AVX-512 vectors)


class Conv(nn.Conv2d):
    """``nn.Conv2d`` that, when sampling on CPU, always runs oneDNN's convolution.

    PyTorch picks a CPU backend per call from the shapes: batch 1 (3×3) and batch < 16 (1×1, one thread)
    go to its im2col + GEMM "slow2d" path, larger batches to oneDNN, and the two round differently, so a
    single sample would not equal its row of a batch. ``torch.mkldnn_convolution`` is the same oneDNN
    call at every batch size (equal to ``F.conv2d`` where that picks oneDNN). It has no forward-mode AD,
    so training (grad enabled; batches >= 16, where ``F.conv2d`` picks oneDNN anyway) keeps ``F.conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and torch.is_inference_mode_enabled()
                and torch.backends.mkldnn.is_available()):
            return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                            self.groups)
        return super().forward(x)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """GN → SiLU → conv → GN·(1 + scale) + shift → SiLU → conv, plus a (1×1 when channels change) skip."""

    def __init__(self, c_in: int, c_out: int, emb: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in, groups), Conv(c_in, c_out, 3, padding=1)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * c_out))
        self.norm2, self.conv2 = _norm(c_out, groups), Conv(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = Conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = film[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class UNet(nn.Module):
    """Predicts a velocity field v(x, t, y) with the input's shape. Label ``num_classes`` is the null class."""

    def __init__(self, resolution: int = 28, channels: int = 1, num_classes: int = 10, base: int = 32,
                 mults: tuple[int, ...] = (1, 2, 2), blocks: int = 1, groups: int = 8,
                 time_inputs: int = 1) -> None:
        super().__init__()
        if time_inputs not in (1, 2):
            raise ValueError(f"time_inputs={time_inputs}; expected 1 (t) or 2 (t and the interval t - r)")
        if resolution % (2 ** (len(mults) - 1)):
            raise ValueError(f"resolution {resolution} cannot be halved {len(mults) - 1} times")
        self.resolution, self.channels, self.num_classes = resolution, channels, num_classes
        emb = 4 * base
        self.t_embed = TimeEmbed(emb)
        self.h_embed = TimeEmbed(emb) if time_inputs == 2 else None
        self.y_embed = nn.Embedding(num_classes + 1, emb)
        widths = [base * m for m in mults]
        shapes: set[tuple[int, int]] = set()  # (channels, side) of every activation an elementwise op sees
        self.conv_in = Conv(channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        skip_widths, c = [base], base
        for level, w in enumerate(widths):
            side = resolution >> level
            for _ in range(blocks):
                self.down.append(ResBlock(c, w, emb, groups))
                shapes |= {(c, side), (w, side)}
                c = w
                skip_widths.append(c)
            if level < len(widths) - 1:
                self.down.append(Conv(c, c, 3, stride=2, padding=1))
                shapes.add((c, side // 2))
                skip_widths.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb, groups), ResBlock(c, c, emb, groups)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for _ in range(blocks + 1):
                c_in = c + skip_widths.pop()
                self.up.append(ResBlock(c_in, widths[level], emb, groups))
                shapes |= {(c_in, resolution >> level), (widths[level], resolution >> level)}
                c = widths[level]
            if level > 0:
                self.up.append(Conv(c, c, 3, padding=1))  # after a nearest ×2 upsample
        odd = sorted((ch, side) for ch, side in shapes if ch * side * side % VECTOR_STEP)
        if odd:
            raise ValueError(f"activations of {odd[0][0]} channels at {odd[0][1]}x{odd[0][1]} hold "
                             f"{odd[0][0] * odd[0][1] ** 2} floats per sample, not a multiple of {VECTOR_STEP}: "
                             f"batched and single samples would not match bit for bit (see module docstring)")
        self.norm_out = _norm(c, groups)
        self.conv_out = Conv(c, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def set_math_attention(self, on: bool) -> None:
        """No attention here; kept so training code can treat every net alike."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                interval: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W); t (and ``interval`` with time_inputs=2): 0-dim (one for the batch) or (B,);
        y: (B,) long in [0, num_classes]."""
        cond, rows = conditioning(self, t, y, interval)

        def film(block: ResBlock) -> torch.Tensor:
            m = block.film(cond)
            return m if rows is None else m[rows]

        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, film(layer)) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, film(layer))
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), film(layer))
            else:
                h = layer(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
