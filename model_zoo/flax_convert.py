"""Flax/JAX params (the MeanFlow and iMF releases) -> torch state dicts for our PyTorch modules.

Input: the params tree flattened to ``{"net/blocks/layers_0/attn/qkv/_flax_linear/kernel": array}``; export a
restored Flax checkpoint once with ``np.savez(out, **flax.traverse_util.flatten_dict(params, sep="/"))``
(``ema_params`` for the released EMA weights). The generic rules follow how those repos wrap Flax:
- wrapper levels ``_flax_linear`` / ``_flax_embedding`` / ``_flax_layernorm`` disappear;
- ``layers_N`` (Flax ``nn.Sequential``) becomes ``N``; ``name_N`` (a Python list of submodules) ``name.N``;
- ``kernel`` becomes ``weight``: Dense kernels (in, out) are transposed, Conv kernels (kh, kw, in, out)
  become (out, in, kh, kw), 1-D kernels (RMSNorm scales) stay; ``embedding`` and ``scale`` become ``weight``.
A family passes ``renames`` for modules it names differently and refuses leftovers via strict loading.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from harness.errors import HarnessError

WRAPPERS = {"_flax_linear", "_flax_embedding", "_flax_layernorm"}
ROOTS = {"params", "ema_params", "net"}


def torch_name(path: str, renames: dict[str, str]) -> str:
    parts = path.split("/")
    while parts and parts[0] in ROOTS:
        parts = parts[1:]
    out = []
    for part in parts:
        if part in WRAPPERS:
            continue
        part = renames.get(part, part)
        if m := re.fullmatch(r"layers_(\d+)", part):
            out.append(m.group(1))
        elif m := re.fullmatch(r"(.+)_(\d+)", part):
            out.append(f"{m.group(1)}.{m.group(2)}")
        elif part in ("kernel", "embedding", "scale"):
            out.append("weight")
        else:
            out.append(part)
    return ".".join(out)


def torch_tensor(path: str, value: np.ndarray) -> torch.Tensor:
    if path.endswith("/kernel"):
        if value.ndim == 2:
            value = value.T
        elif value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def flax_to_torch(flat: dict[str, np.ndarray], renames: dict[str, str] | None = None,
                  skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """``skip``: path fragments of parameters the inference network does not have (e.g. iMF's v-heads)."""
    out: dict[str, torch.Tensor] = {}
    for path, value in flat.items():
        if any(s in path for s in skip):
            continue
        name = torch_name(path, renames or {})
        if name in out:
            raise HarnessError(f"Flax params: two paths map to the torch key {name!r} (one is {path!r})")
        out[name] = torch_tensor(path, np.asarray(value))
    return out

