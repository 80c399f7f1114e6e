"""MeanFlow (latent) and iMF: Flax-release loading, sampler arithmetic, guidance semantics, NFE."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import ProtocolError
from harness.models.cards import card_from_dict
from harness.types import SamplerSettings
from model_zoo.imeanflow import IMeanFlowAdapter, MeanFlowLatentAdapter
from model_zoo.nets.mit import MiT, apply_rope, rope_tables
from tests.support.conformance import images, requests_for


@pytest.fixture(scope="module")
def mf() -> MeanFlowLatentAdapter:
    return MeanFlowLatentAdapter.tiny()


@pytest.fixture(scope="module")
def imf() -> IMeanFlowAdapter:
    return IMeanFlowAdapter.tiny()


def _perturbed(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {k: v + 0.02 * torch.randn(v.shape, generator=gen) for k, v in net.state_dict().items()}


def _flax_path(key: str, value: torch.Tensor, sequential: set[str]) -> tuple[str, np.ndarray]:
    """Write one torch parameter where the JAX release keeps it (Flax Dense/Embed/Conv wrappers)."""
    parts = key.split(".")
    out = []
    for i, part in enumerate(parts):
        if part.isdigit():
            if parts[i - 1] in sequential:
                out.append(f"layers_{part}")  # Flax nn.Sequential
            else:
                out[-1] = f"{out[-1]}_{part}"  # a Python list of submodules
        else:
            out.append(part)
    leaf = out.pop()
    arr = value.numpy()
    if not out:  # a bare parameter of the root module (iMF's conditioning tokens)
        return f"net/{leaf}", arr
    if out[-1] == "proj" and out[0] == "x_embedder":
        return "/".join(["net", *out, "kernel" if leaf == "weight" else leaf]), \
            (arr.transpose(2, 3, 1, 0) if leaf == "weight" else arr)
    if out[-1] == "embedding_table":
        return "/".join(["net", *out, "_flax_embedding", "embedding"]), arr
    if leaf == "weight" and arr.ndim == 1:  # RMSNorm scale
        return "/".join(["net", *out, "kernel"]), arr
    if arr.ndim == 2 and leaf in ("weight", "bias") and not out[-1].endswith("tokens"):
        return "/".join(["net", *out, "_flax_linear", "kernel" if leaf == "weight" else "bias"]), \
            (arr.T if leaf == "weight" else arr)
    if leaf == "bias":
        return "/".join(["net", *out, "_flax_linear", "bias"]), arr
    return "/".join(["net", *out, leaf]), arr


def _write_npz(path: Path, flat: dict[str, np.ndarray]) -> str:
    np.savez(path, **flat)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_meanflow_loads_the_flax_release_layout(mf: MeanFlowLatentAdapter, tmp_path: Path) -> None:
    trained = _perturbed(mf.net)
    flat = dict(_flax_path(k, v, {"blocks", "mlp", "adaLN_modulation"}) for k, v in trained.items()
                if k != "pos_embed")  # MeanFlow computes its position table, it is not a parameter
    assert "net/blocks/layers_1/attn/qkv/_flax_linear/kernel" in flat
    assert "net/h_embedder/mlp/layers_2/_flax_linear/bias" in flat
    assert flat["net/x_embedder/proj/kernel"].shape == (2, 2, 4, 32)  # (kh, kw, in, out)
    sha = _write_npz(tmp_path / "mf.npz", flat)
    card = card_from_dict({"name": "mf-flax", "family": "meanflow_latent", "weights": str(tmp_path / "mf.npz"),
                           "weights_sha256": sha, "params": dict(mf.card.params)})
    loaded = MeanFlowLatentAdapter(card)
    loaded.load("cpu")
    for k, v in trained.items():
        want = mf.net.state_dict()[k] if k == "pos_embed" else v
        assert torch.equal(loaded.net.state_dict()[k], want), k
    reqs = requests_for(mf, [3, 4], SamplerSettings(2, None))
    assert images(loaded.sample(reqs)) != images(mf.sample(reqs))


def test_imf_loads_the_flax_release_layout(imf: IMeanFlowAdapter, tmp_path: Path) -> None:
    trained = _perturbed(imf.net)
    flat = dict(_flax_path(k, v, {"mlp"}) for k, v in trained.items())
    flat = {re.sub(r"^net/omega_embedder/", "net/k_embedder/", k): v for k, v in flat.items()}  # an older export
    assert "net/shared_blocks_0/attn/q_norm/kernel" in flat and "net/u_heads_0/mlp/w3/_flax_linear/kernel" in flat
    flat["net/v_heads_0/attn_scale"] = np.zeros(32, np.float32)  # training-only head: skipped
    flat["net/v_final_layer/linear/_flax_linear/bias"] = np.zeros(16, np.float32)
    sha = _write_npz(tmp_path / "imf.npz", flat)
    card = card_from_dict({"name": "imf-flax", "family": "imf", "weights": str(tmp_path / "imf.npz"),
                           "weights_sha256": sha, "params": dict(imf.card.params)})
    loaded = IMeanFlowAdapter(card)
    loaded.load("cpu")
    assert all(torch.equal(loaded.net.state_dict()[k], v) for k, v in trained.items())


def test_meanflow_jumps_follow_the_linspace_grid(mf: MeanFlowLatentAdapter) -> None:
    reqs = requests_for(mf, [8, 9], SamplerSettings(2, None))
    with torch.inference_mode():
        got, nfe = mf.sample_latents(reqs)
        z, y = mf.initial_noise(reqs), mf.labels(reqs)
        for t, r in ((1.0, 0.5), (0.5, 0.0)):
            n = torch.full((2,), t)
            z = z - (t - r) * mf.net(z, n, y, h=torch.full((2,), t - r))
    assert torch.allclose(got, z, atol=1e-6) and nfe == [2, 2]


def test_meanflow_refuses_cfg(mf: MeanFlowLatentAdapter) -> None:
    for cfg in (1.0, 7.0):
        with pytest.raises(ProtocolError, match="without guidance"):
            mf.sample(requests_for(mf, [1], SamplerSettings(1, cfg)))
    assert mf.capabilities.one_step and mf.capabilities.natural_cfg is None


def test_imf_guidance_is_an_input_not_a_second_pass(imf: IMeanFlowAdapter) -> None:
    counted = []
    hook = imf.net.register_forward_pre_hook(lambda _m, args: counted.append(len(args[0])))
    try:
        by_omega = {}
        for omega in (1.0, 8.0):
            counted.clear()
            outs = imf.sample(requests_for(imf, [1, 2], SamplerSettings(2, omega)))
            assert [o.nfe for o in outs] == [2, 2] and counted == [2, 2]
            by_omega[omega] = images(outs)
    finally:
        hook.remove()
    assert by_omega[1.0] != by_omega[8.0]
    narrow = imf.sample(requests_for(imf, [1, 2], SamplerSettings(2, 8.0, knobs={"t_min": 0.1, "t_max": 0.2})))
    assert images(narrow) != by_omega[8.0]


@pytest.mark.parametrize("settings, match", [
    (SamplerSettings(1, 0.5), "ω"),
    (SamplerSettings(1, 4.0, knobs={"t_min": 0.7, "t_max": 0.2}), "interval"),
    (SamplerSettings(1, 4.0, knobs={"omega": 3}), "knob 'omega'"),
])
def test_imf_refuses_bad_guidance(imf: IMeanFlowAdapter, settings: SamplerSettings, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        imf.sample(requests_for(imf, [1], settings))


def test_rope_equals_complex_rotation() -> None:
    x = torch.randn(2, 5, 3, 8)
    cos, sin = rope_tables(8, 5)
    want = torch.view_as_real(torch.view_as_complex(x.reshape(2, 5, 3, 4, 2)) *
                              torch.polar(torch.ones_like(cos), torch.atan2(sin, cos))[None, :, None, :])
    assert torch.allclose(apply_rope(x, cos, sin), want.reshape(x.shape), atol=1e-6)


def test_imf_xl2_structure() -> None:
    with torch.device("meta"):
        net = MiT(input_size=32, patch=2, in_channels=4, hidden=1024, depth=48, heads=16, num_classes=1000)
    assert (len(net.shared_blocks), len(net.u_heads), net.prefix) == (40, 8, 20)
    assert net.state_dict()["shared_blocks.0.mlp.w1.weight"].shape == (2730, 1024)  # int(1024 * 8 / 3)
