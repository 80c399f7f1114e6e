"""The RAE pixel decoder (bytetriper/RAE ``stage1/decoders/decoder.py`` ``GeneralDecoder``) and the latent
normalisation the release undoes before decoding, with the official state-dict key names, so the released
``model.pt`` (``decoder.state_dict()``) loads with ``load_state_dict(strict=True)``.

Decoding a generated latent z (B, C, h, w), as ``stage1.RAE.decode`` does:

1. de-normalise: ``z * sqrt(var + 1e-5) + mean`` with the released ``stat.pt`` (``{"mean", "var"}``,
   estimated over ImageNet DINOv2 features; any shape that broadcasts to (C, h, w));
2. tokens (B, h*w, C) -> ``decoder_embed`` -> prepend ``trainable_cls_token`` -> + ``decoder_pos_embed``
   (fixed 2-D sin/cos with a zero cls row) -> ``depth`` ViT-MAE layers (pre-LayerNorm, eps 1e-12, exact
   GELU) -> ``decoder_norm`` -> ``decoder_pred`` (p*p*3 pixels per token) -> drop the cls token;
3. unpatchify to (B, 3, h*p, w*p) and undo the encoder's input normalisation (DINOv2's processor:
   ImageNet mean/std), giving images in about [0, 1].

Keys per layer ``decoder_layers.N.``: ``attention.attention.{query,key,value}``, ``attention.output.dense``,
``intermediate.dense``, ``output.dense``, ``layernorm_before``, ``layernorm_after`` (HF ViT-MAE names).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model_zoo.nets.latent_dit import sincos_pos_embed

LAYER_NORM_EPS = 1e-12  # configs/decoder/ViT*/config.json
STATS_EPS = 1e-5  # stage1.RAE(eps=1e-5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # facebook/dinov2-with-registers-base preprocessor
IMAGENET_STD = (0.229, 0.224, 0.225)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (proj(x).reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)


class Dense(nn.Module):
    """A Linear under the attribute name ``dense`` (the HF ViT sub-module naming)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim_in, dim_out)


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = SelfAttention(dim, heads)
        self.output = Dense(dim, dim)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, intermediate: int) -> None:
        super().__init__()
        self.attention = AttentionBlock(dim, heads)
        self.intermediate = Dense(dim, intermediate)
        self.output = Dense(intermediate, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.layernorm_after = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention.output.dense(self.attention.attention(self.layernorm_before(x)))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class RAEDecoder(nn.Module):
    """Latent tokens -> pixels. ``latent_channels`` is the encoder width (768 for DINOv2-B), ``side`` the latent
    grid side (16), ``patch`` the pixels per token side (16: 256x256 images)."""

    def __init__(self, latent_channels: int, side: int, hidden: int, depth: int, heads: int, intermediate: int,
                 patch: int, pixel_mean: Sequence[float] = IMAGENET_MEAN,
                 pixel_std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"decoder width {hidden} is not divisible by {heads} heads")
        self.side, self.patch = side, patch
        self.decoder_embed = nn.Linear(latent_channels, hidden)
        grid = sincos_pos_embed(hidden, side)
        pos = torch.cat([torch.zeros(1, 1, hidden, device=grid.device), grid], dim=1)  # + the cls token's zero row
        self.register_buffer("decoder_pos_embed", pos)  # a frozen Parameter upstream: same key
        self.decoder_layers = nn.ModuleList(DecoderLayer(hidden, heads, intermediate) for _ in range(depth))
        self.decoder_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.decoder_pred = nn.Linear(hidden, patch * patch * 3)
        self.trainable_cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """De-normalised latents (B, C, side, side) -> images (B, 3, side*patch, side*patch) in about [0, 1]."""
        b, c, h, w = z.shape
        if (h, w) != (self.side, self.side):
            raise ValueError(f"latent grid {h}x{w}; this decoder was built for {self.side}x{self.side}")
        x = self.decoder_embed(z.reshape(b, c, h * w).transpose(1, 2))
        x = torch.cat([self.trainable_cls_token.expand(b, -1, -1), x], dim=1) + self.decoder_pos_embed
        for layer in self.decoder_layers:
            x = layer(x)
        pixels = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        p = self.patch
        img = torch.einsum("nhwpqc->nchpwq", pixels.reshape(b, h, w, p, p, 3)).reshape(b, 3, h * p, w * p)
        return img * self.pixel_std + self.pixel_mean


class LatentStats(nn.Module):
    """The release's latent normalisation statistics; ``denormalize`` maps the diffusion model's latents back
    to DINOv2 feature space."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, eps: float = STATS_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", mean.float())
        self.register_buffer("var", var.float())

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.sqrt(self.var + self.eps) + self.mean


def check_stats(stats: object, shape: tuple[int, int, int], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``stat.pt`` contents -> (mean, var) broadcastable to (1, C, h, w); anything else is a ValueError naming
    ``where`` (the file) and the key."""
    if not isinstance(stats, dict) or not {"mean", "var"} <= set(stats):
        keys = sorted(stats) if isinstance(stats, dict) else type(stats).__name__
        raise ValueError(f"{where}: expected a dict with tensors 'mean' and 'var', got {keys}")
    out = []
    for key in ("mean", "var"):
        value = stats[key]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where}: key {key!r} is a {type(value).__name__}, not a tensor")
        try:
            fits = torch.broadcast_shapes(value.shape, (1, *shape)) == (1, *shape)
        except RuntimeError:
            fits = False
        if not fits or not torch.isfinite(value).all():
            raise ValueError(f"{where}: key {key!r} has shape {tuple(value.shape)}; expected finite values "
                             f"broadcastable to the latent shape (1, {', '.join(map(str, shape))})")
        out.append(value)
    if (out[1] < 0).any():
        raise ValueError(f"{where}: key 'var' has negative entries")
    return out[0], out[1]
