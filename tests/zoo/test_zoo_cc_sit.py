"""SiT, the SD-VAE decode path and the ODE solvers (conformance runs in test_adapters.py for every family)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import GenerationError, HarnessError, ProtocolError
from harness.models.cards import WeightsMissingError, card_from_dict
from harness.types import SamplerSettings
from model_zoo import ode_solvers
from model_zoo.latent_common import TINY_ARCH
from model_zoo.nets.latent_dit import LatentDiT
from model_zoo.sd_vae import build_tiny_vae, decode_latents, sd_vae_to_uint8
from model_zoo.sit import SiTAdapter
from tests.support.conformance import images, requests_for


@pytest.fixture(scope="module")
def sit() -> SiTAdapter:
    return SiTAdapter.tiny()


def test_sit_xl2_has_the_official_keys_and_size() -> None:
    with torch.device("meta"):  # no memory: shapes only
        net = LatentDiT(input_size=32, patch=2, in_channels=4, hidden=1152, depth=28, heads=16, num_classes=1000)
    sd = net.state_dict()
    assert sum(v.numel() for k, v in sd.items() if k != "pos_embed") == pytest.approx(675e6, rel=0.01)  # SiT paper
    assert sd["x_embedder.proj.weight"].shape == (1152, 4, 2, 2)
    assert sd["y_embedder.embedding_table.weight"].shape == (1001, 1152)
    assert sd["pos_embed"].shape == (1, 256, 1152)
    assert sd["final_layer.linear.weight"].shape == (2 * 2 * 8, 1152)  # learn_sigma: 8 output channels
    block = {k.split(".", 2)[2] for k in sd if k.startswith("blocks.0.")}
    assert block == {f"{m}.{p}" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1")
                     for p in ("weight", "bias")}
    assert {k for k in sd if not k.startswith("blocks.")} == {
        "x_embedder.proj.weight", "x_embedder.proj.bias", "pos_embed", "y_embedder.embedding_table.weight",
        *(f"t_embedder.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")),
        *(f"final_layer.{m}.{p}" for m in ("linear", "adaLN_modulation.1") for p in ("weight", "bias"))}


def test_patch_embedding_equals_the_conv(sit: SiTAdapter) -> None:
    x = torch.randn(3, 4, 8, 8)
    conv = sit.net.x_embedder.proj
    want = conv(x).flatten(2).transpose(1, 2)  # timm PatchEmbed
    assert torch.allclose(sit.net.x_embedder(x), want, atol=1e-6)


def test_official_checkpoint_layout_loads_through_the_card_path(sit: SiTAdapter, tmp_path: Path) -> None:
    trained = {k: v + 0.01 * torch.randn_like(v) for k, v in sit.net.state_dict().items()}
    path = tmp_path / "SiT-tiny.pt"
    torch.save({"ema": trained, "opt": {}}, path)  # a train.py checkpoint: weights under "ema"
    import hashlib

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    card = card_from_dict({"name": "sit-ckpt", "family": "sit", "weights": str(path), "weights_sha256": sha,
                           "params": TINY_ARCH})
    loaded = SiTAdapter(card)
    loaded.load("cpu")
    assert all(torch.equal(loaded.net.state_dict()[k], v) for k, v in trained.items())
    reqs = requests_for(sit, [1, 2], SamplerSettings(2, 1.5))
    assert images(loaded.sample(reqs)) != images(sit.sample(reqs))
    torch.save({k: v for k, v in trained.items() if k != "pos_embed"}, path)
    with pytest.raises(HarnessError, match="does not fit"):
        SiTAdapter(card).load("cpu")


def test_params_checkpoint_missing_or_unpinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONESTEP_WEIGHTS_DIR", str(tmp_path))
    unpinned = SiTAdapter(card_from_dict({"name": "x", "family": "sit", "params": {**TINY_ARCH, "checkpoint": "a.pt"}}))
    assert unpinned.capabilities.resolution == 16  # plans fine
    with pytest.raises(ProtocolError, match="checkpoint_sha256 is not pinned"):
        unpinned.load("cpu")
    card = card_from_dict({"name": "sit-x", "family": "sit",
                           "params": {**TINY_ARCH, "checkpoint": "a.pt", "checkpoint_sha256": "0" * 64}})
    with pytest.raises(WeightsMissingError, match="sit-x.*a.pt"):
        SiTAdapter(card).load("cpu")
    torch.save(SiTAdapter.tiny().net.state_dict(), tmp_path / "a.pt")
    with pytest.raises(HarnessError, match="sha256 mismatch"):
        SiTAdapter(card).load("cpu")


def test_real_vae_unpinned_or_missing_names_the_card() -> None:
    def card(revision: str):
        vae = {"repo": "stabilityai/sd-vae-ft-ema", "revision": revision}
        return card_from_dict({"name": "sit-hubvae", "family": "sit", "params": {**TINY_ARCH, "vae": vae}})

    with pytest.raises(ProtocolError, match="sit-hubvae.*vae.revision 'main' is a branch"):
        SiTAdapter(card("main")).load("cpu")
    with pytest.raises(WeightsMissingError, match="sit-hubvae.*sd-vae-ft-ema@a{40}.*harness weights fetch sit-hubvae"):
        SiTAdapter(card("a" * 40)).load("cpu")


def test_nfe_per_sampler_and_cfg_doubling(sit: SiTAdapter) -> None:
    counted = []
    hook = sit.net.register_forward_pre_hook(lambda _m, args: counted.append(len(args[0])))
    try:
        for sampler, cfg, want in [("euler", 1.0, 3), ("euler", 4.0, 6), ("heun", 1.0, 6), ("heun", 4.0, 12)]:
            s = SamplerSettings(3, cfg, sampler)
            counted.clear()
            outs = sit.sample(requests_for(sit, [1, 2], s))
            assert [o.nfe for o in outs] == [want, want] == [sit.expected_nfe(s)] * 2
            assert sum(counted) == 2 * want  # rows the network really evaluated, for 2 samples
        s = SamplerSettings(25, 4.0, "dopri5", knobs={"atol": 1e-3, "rtol": 1e-2})
        assert sit.expected_nfe(s) is None
        counted.clear()
        outs = sit.sample(requests_for(sit, [1, 2], s))
        assert sum(counted) == sum(o.nfe for o in outs) and all(o.nfe % 2 == 0 and o.nfe >= 14 for o in outs)
    finally:
        hook.remove()


def test_cfg_channels_knob(sit: SiTAdapter) -> None:
    x, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    with torch.inference_mode():
        cond = sit.net(x, sit.times(0.3, 2), y)
        three = sit.velocity(x, 0.3, y, 4.0, 3)
        four = sit.velocity(x, 0.3, y, 4.0, 4)
    assert torch.equal(three[:, 3], cond[:, 3]) and not torch.equal(four[:, 3], cond[:, 3])
    assert torch.equal(three[:, :3], four[:, :3])
    with pytest.raises(ProtocolError, match="cfg_channels"):
        sit.sample(requests_for(sit, [1], SamplerSettings(1, 4.0, knobs={"cfg_channels": 2})))
    with pytest.raises(ProtocolError, match="dopri5"):
        sit.sample(requests_for(sit, [1], SamplerSettings(1, 4.0, "euler", knobs={"atol": 1e-3})))


def test_dopri5_against_scipy_and_the_exact_solution() -> None:
    from scipy.integrate import solve_ivp

    a = torch.tensor([[-1.0, 2.0], [-2.0, -0.5]], dtype=torch.float64)
    calls = []

    def f(x: torch.Tensor, t: float) -> torch.Tensor:
        calls.append(t)
        return (x @ a.T) * math.cos(t)

    x0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    ours = ode_solvers.dopri5(f, x0, 0.0, 3.0, 1e-9, 1e-7)
    exact = torch.linalg.matrix_exp(a * math.sin(3.0)) @ x0[0]  # A commutes with itself: x = exp(A sin t) x0
    ref = solve_ivp(lambda t, y: (a.numpy() @ y) * math.cos(t), (0, 3), x0[0].numpy(), method="DOP853",
                    rtol=1e-12, atol=1e-12).y[:, -1]
    assert torch.allclose(ours[0], exact, atol=1e-6) and np.allclose(ours[0].numpy(), ref, atol=1e-6)
    assert max(calls) == pytest.approx(3.0) and len(calls) > 20
    loose = ode_solvers.dopri5(f, x0, 0.0, 3.0, 1e-3, 1e-3)
    assert not torch.allclose(loose, ours, atol=1e-9)  # tolerances matter
    x = torch.randn(3, 2, dtype=torch.float64)
    grid = [0.0, 0.5, 1.0]
    assert torch.allclose(ode_solvers.euler(lambda y, t: 2 * y, x, grid), x * 4)
    assert torch.allclose(ode_solvers.heun(lambda y, t: 2 * y, x, grid), x * 2.5 ** 2)


def test_sd_vae_rounding_rule() -> None:
    x = np.array([-1.0, -1.2, 1.0, 1.3, 0.0, -0.0039215686, 0.5, np.nextafter(-1, 0)], dtype=np.float32)
    img = sd_vae_to_uint8(np.broadcast_to(x[None, None, None, :], (1, 3, 1, len(x))), [0])
    assert img.shape == (1, 1, len(x), 3)
    want = np.floor(np.clip(127.5 * x.astype(np.float64) + 128, 0, 255)).astype(np.uint8)
    assert img[0, 0, :, 0].tolist() == want.tolist() == [0, 0, 255, 255, 128, 127, 191, 0]
    for bad in (np.nan, np.inf):
        arr = np.zeros((2, 3, 2, 2), np.float32)
        arr[1, 0, 0, 0] = bad
        with pytest.raises(GenerationError, match=r"sample index \[8\]"):
            sd_vae_to_uint8(arr, [7, 8])


def test_decode_is_per_sample_and_matches_diffusers(tmp_path: Path) -> None:
    vae = build_tiny_vae(seed=3)
    z = torch.randn(3, 4, 8, 8)
    ours = decode_latents(vae, z)
    with torch.inference_mode():
        direct = vae.decode(z[1:2] / 0.18215).sample.numpy()
    assert np.array_equal(ours[1:2], direct)
    vae.save_pretrained(tmp_path / "vae")  # the diffusers folder a hub snapshot holds
    card = card_from_dict({"name": "sit-vae-folder", "family": "sit",
                           "params": {**TINY_ARCH, "vae": {"path": str(tmp_path / "vae")}}})
    a = SiTAdapter(card)
    a.load("cpu")
    assert np.allclose(decode_latents(a.vae, z), ours, atol=1e-5)
    with pytest.raises(HarnessError, match="no config.json"):
        SiTAdapter(card_from_dict({"name": "v", "family": "sit",
                                   "params": {**TINY_ARCH, "vae": {"path": str(tmp_path)}}})).load("cpu")
