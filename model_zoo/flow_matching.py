"""Class-conditional flow matching with a compact DiT (``model_zoo/nets/tiny_dit.py``).

Time convention (rectified flow): x_t = (1 - t) * noise + t * data, so the network predicts the velocity
v = data - noise, and sampling integrates dx/dt = v(x, t, y) with Euler from t = 0 (pure noise) to
t = 1 (data) over ``steps`` uniform steps t_i = i / steps. Pixels live in [-1, 1].

Classifier-free guidance: the class embedding has one extra "null" label (index ``num_classes``), which
a model trained with label dropout (``label_dropout > 0``) learned as the unconditional branch. Such a
model has guidance "cfg": v = v_u + cfg * (v_c - v_u), evaluated as one doubled batch when cfg != 1.
A model trained with ``label_dropout: 0`` never saw the null label, so it has no guidance and cfg must
be null.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import torch

from harness.adapters import Adapter, Capabilities, register, to_uint8_images
from harness.cards import card_from_dict
from harness.errors import HarnessError, ProtocolError
from harness.hashing import sha256_bytes, sha256_file
from harness.types import ModelCard, SampleOutput, SampleRequest, SamplerSettings
from model_zoo.nets.tiny_dit import MIN_TOKENS, TinyDiT

CHECKPOINT_FORMAT = "onestep-bench/flow_matching/v1"
ARCH_KEYS = ("resolution", "channels", "num_classes", "hidden", "depth", "heads", "patch")
DEFAULTS: dict[str, Any] = {"resolution": 28, "channels": 1, "num_classes": 10, "hidden": 96, "depth": 4,
                            "heads": 4, "patch": 4, "label_dropout": 0.1, "init_seed": 0, "max_steps": 1000}
TINY_PARAMS: dict[str, Any] = {"resolution": 16, "channels": 1, "num_classes": 10, "hidden": 32, "depth": 2,
                               "heads": 2, "patch": 4, "label_dropout": 0.1, "init_seed": 0, "max_steps": 1000}


def resolve_params(card: ModelCard) -> dict[str, Any]:
    """Card params merged over the defaults; unknown keys and impossible values are refused, not ignored."""
    where = f"{card.source or card.name}: params"
    unknown = sorted(set(card.params) - set(DEFAULTS))
    if unknown:
        raise ProtocolError(f"{where}: unknown key(s) {unknown} for family flow_matching; "
                            f"allowed: {', '.join(sorted(DEFAULTS))}")
    cfg = {**DEFAULTS, **card.params}
    for key in DEFAULTS:
        if key == "label_dropout":
            ok = isinstance(cfg[key], (int, float)) and not isinstance(cfg[key], bool) and 0 <= cfg[key] < 1
            expected = "a number in [0, 1)"
        else:
            lowest = 0 if key == "init_seed" else 1
            ok = isinstance(cfg[key], int) and not isinstance(cfg[key], bool) and cfg[key] >= lowest
            expected = f"an int >= {lowest}"
        if not ok:
            raise ProtocolError(f"{where}.{key}={cfg[key]!r}; expected {expected}")
    if cfg["channels"] not in (1, 3):
        raise ProtocolError(f"{where}.channels={cfg['channels']}; expected 1 or 3")
    if cfg["resolution"] % cfg["patch"] or cfg["hidden"] % cfg["heads"]:
        raise ProtocolError(f"{where}: resolution {cfg['resolution']} must be divisible by patch {cfg['patch']} "
                            f"and hidden {cfg['hidden']} by heads {cfg['heads']}")
    if (cfg["resolution"] // cfg["patch"]) ** 2 < MIN_TOKENS:
        raise ProtocolError(f"{where}: (resolution/patch)^2 = {(cfg['resolution'] // cfg['patch']) ** 2} tokens; "
                            f"need >= {MIN_TOKENS} so that batched and single samples match bit for bit")
    if card.dtype != "float32":
        raise ProtocolError(f"{card.source or card.name}: dtype={card.dtype!r}; flow_matching supports float32 only")
    return cfg


@register("flow_matching")
class FlowMatchingAdapter(Adapter):
    """Euler sampling of a class-conditional rectified-flow DiT, with optional true CFG."""

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.params = resolve_params(card)
        self.net: TinyDiT | None = None
        self.device = "cpu"

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_params(card)
        guided = p["label_dropout"] > 0  # the null label is only meaningful if it was trained
        return Capabilities(conditioning="class", guidance="cfg" if guided else "none", min_steps=1,
                            max_steps=p["max_steps"], resolution=p["resolution"], samplers=("euler",),
                            num_classes=p["num_classes"], one_step=False, natural_cfg=1.0 if guided else None)

    def _build(self) -> TinyDiT:
        # Module construction draws from the global RNG: fork it so callers' RNG state is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.params["init_seed"])
            return TinyDiT(**{k: self.params[k] for k in ARCH_KEYS})

    def load(self, device: str = "cpu") -> None:
        net = self._build()
        if self.card.weights is not None:
            net.load_state_dict(self._read_checkpoint(Path(self.card.weights)))
        self.net = net.to(device).eval().requires_grad_(False)
        self.device = device

    def _read_checkpoint(self, path: Path) -> dict[str, torch.Tensor]:
        try:
            data = path.read_bytes()  # hash exactly the bytes we load
        except OSError as e:
            raise HarnessError(f"{self.card.source or self.card.name}: cannot read weights {path}: "
                               f"{e.strerror}") from None
        found = sha256_bytes(data)
        if found != self.card.weights_digest:
            raise HarnessError(f"{path}: sha256 mismatch: card {self.card.source or self.card.name!r} expects "
                               f"{self.card.weights_digest}, file has {found}")
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # any unpickling failure is a corrupt or foreign file
            raise HarnessError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from None
        if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
            raise HarnessError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
        arch = {k: self.params[k] for k in ARCH_KEYS}
        if obj.get("arch") != arch:
            raise HarnessError(f"{path}: checkpoint architecture {obj.get('arch')} does not match "
                               f"card params {arch}")
        return obj["state_dict"]

    def save_checkpoint(self, path: str | Path) -> str:
        """Write the loaded weights in this family's format; returns the file's sha256 (for a card)."""
        if self.net is None:
            raise HarnessError(f"model {self.card.name!r}: load() before save_checkpoint()")
        path = Path(path)
        obj = {"format": CHECKPOINT_FORMAT, "arch": {k: self.params[k] for k in ARCH_KEYS},
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)  # never leave a half-written checkpoint under the final name
        return sha256_file(path)

    def _guided(self, settings: SamplerSettings) -> bool:
        return self.capabilities.guidance == "cfg" and settings.cfg is not None and settings.cfg != 1.0

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return settings.steps * (2 if self._guided(settings) else 1)

    def initial_noise(self, requests: list[SampleRequest]) -> torch.Tensor:
        """Per-sample noise from each request's own CPU generator: independent of batch and position."""
        shape = (self.params["channels"], self.params["resolution"], self.params["resolution"])
        return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(r.seed))
                            for r in requests])

    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        if self.net is None:
            raise HarnessError(f"model {self.card.name!r}: load() before sample()")
        start = time.perf_counter()
        settings = requests[0].settings
        guided = self._guided(settings)
        x = self.initial_noise(requests).to(self.device)
        y = torch.tensor([r.label for r in requests], dtype=torch.long, device=self.device)
        if guided:
            y = torch.cat([y, torch.full_like(y, self.params["num_classes"])])  # conditional rows, then null
        dt = 1.0 / settings.steps
        nfe = 0
        with torch.inference_mode():
            for i in range(settings.steps):
                t = torch.tensor(i * dt, dtype=torch.float32, device=self.device)  # one t for the whole batch
                if guided:
                    v_c, v_u = self.net(torch.cat([x, x]), t, y).chunk(2)
                    v = v_u + settings.cfg * (v_c - v_u)
                    nfe += 2
                else:
                    v = self.net(x, t, y)
                    nfe += 1
                x = x + dt * v
        images = to_uint8_images(x.cpu().numpy(), [r.index for r in requests], value_range=(-1.0, 1.0))
        seconds = (time.perf_counter() - start) / len(requests)
        return [SampleOutput(image=img, nfe=nfe, seconds=seconds) for img in images]

    @classmethod
    def tiny(cls, **overrides: Any) -> FlowMatchingAdapter:
        card = card_from_dict({"name": "fm-tiny-test", "family": "flow_matching", "weights": None,
                               "params": {**TINY_PARAMS, **overrides}}, source="<FlowMatchingAdapter.tiny>")
        adapter = cls(card)
        adapter.load("cpu")
        return adapter
