"""RAE: the DiT^DH and decoder key layouts, loading a release-layout hub snapshot, Euler with the time shift,
guidance (CFG / AutoGuidance, interval), NFE accounting, the decode rule and card errors.
(The shared conformance suite runs on ``RAEAdapter.tiny()`` in test_adapters.py.)"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import GenerationError, HarnessError, ProtocolError
from harness.models.cards import WeightsMissingError, card_from_dict, load_card
from harness.types import SamplerSettings
from model_zoo.latent_common import NFECounter
from model_zoo.nets.ddt import DiTDH
from model_zoo.nets.rae_decoder import RAEDecoder
from model_zoo.rae import TINY_PARAMS, RAEAdapter, time_grid, time_shift, uint8_truncating
from tests.support.conformance import images, requests_for

REPO_ID = "nyu-visionx/RAE-collections"
COMMIT = "c" * 40
RELEASE_FILES = {  # paths inside the hub repo, as the release configs name them (minus the local "models/")
    "dit_checkpoint": "DiTs/Dinov2/wReg_base/ImageNet256/DiTDH-XL/stage2_model.pt",
    "guide_checkpoint": "DiTs/Dinov2/wReg_base/ImageNet256/DiTDH-S_ep14/stage2_model.pt",
    "decoder_checkpoint": "decoders/dinov2/wReg_base/ViTXL_n08/model.pt",
    "stats_file": "stats/dinov2/wReg_base/imagenet1k/stat.pt",
}


def settings(steps: int, cfg: float, **knobs) -> SamplerSettings:
    return SamplerSettings(steps, cfg, "euler", tuple(sorted(knobs.items())))


@pytest.fixture(scope="module")
def rae() -> RAEAdapter:
    return RAEAdapter.tiny()


# ---------------------------------------------------------------- architectures and key names


def test_dit_dh_xl_and_decoder_have_the_official_keys_and_size() -> None:
    with torch.device("meta"):  # shapes only (.to: the fixed sin/cos tables are built on the CPU)
        xl = DiTDH(16, 768, (1152, 2048), (28, 2), (16, 16), 1000).to("meta")
        small = DiTDH(16, 768, (384, 2048), (12, 2), (6, 16), 1000)
        dec = RAEDecoder(768, 16, 1152, 28, 16, 4096, 16).to("meta")
        velocity = xl(torch.randn(2, 768, 16, 16), torch.rand(2), torch.zeros(2, dtype=torch.long))
        assert velocity.shape == (2, 768, 16, 16) and dec(velocity).shape == (2, 3, 256, 256)
    sd = xl.state_dict()
    assert sum(p.numel() for p in xl.parameters()) / 1e6 == pytest.approx(839, abs=1)  # RAE paper: DiT^DH-XL 839M
    assert len(sd) == 382 and len(small.state_dict()) == 190
    shapes = {"s_embedder.proj.weight": (1152, 768, 1, 1), "x_embedder.proj.weight": (2048, 768, 1, 1),
              "s_projector.weight": (2048, 1152), "t_embedder.W": (256,), "t_embedder.mlp.0.weight": (1152, 512),
              "y_embedder.embedding_table.weight": (1001, 1152), "pos_embed": (1, 256, 1152),
              "enc_feat_rope.freqs_cos": (256, 72), "dec_feat_rope.freqs_sin": (256, 128),
              "blocks.0.mlp.w12.weight": (2 * 3072, 1152), "blocks.29.mlp.w3.weight": (2048, 5461),
              "blocks.29.adaLN_modulation.1.weight": (6 * 2048, 2048), "final_layer.norm_final.weight": (2048,),
              "final_layer.linear.weight": (768, 2048)}
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert {k.split(".", 2)[2] for k in sd if k.startswith("blocks.0.")} == {
        "norm1.weight", "norm2.weight", *(f"{m}.{p}" for m in ("attn.qkv", "attn.proj", "mlp.w12", "mlp.w3",
                                                               "adaLN_modulation.1") for p in ("weight", "bias"))}
    dsd = dec.state_dict()
    assert {k for k in dsd if not k.startswith("decoder_layers.")} == {
        "decoder_embed.weight", "decoder_embed.bias", "decoder_pos_embed", "decoder_norm.weight", "decoder_norm.bias",
        "decoder_pred.weight", "decoder_pred.bias", "trainable_cls_token"}
    assert tuple(dsd["decoder_pred.weight"].shape) == (16 * 16 * 3, 1152)
    assert tuple(dsd["decoder_pos_embed"].shape) == (1, 257, 1152)
    assert {k.split(".", 2)[2] for k in dsd if k.startswith("decoder_layers.27.")} == {
        f"{m}.{p}" for m in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                             "attention.output.dense", "intermediate.dense", "output.dense", "layernorm_before",
                             "layernorm_after") for p in ("weight", "bias")}


def test_rope_rotates_rows_then_columns(rae: RAEAdapter) -> None:
    rope = rae.net.enc_feat_rope  # head size 16: channels 0-7 carry the row index, 8-15 the column index
    side, half = 4, 8
    angle = torch.atan2(rope.freqs_sin, rope.freqs_cos).reshape(side, side, 2 * half)
    first_freq = angle[..., 0]
    assert torch.allclose(first_freq, torch.arange(side).float()[:, None].expand(side, side))  # row index
    assert torch.allclose(angle[..., half], torch.arange(side).float()[None, :].expand(side, side))  # column
    assert torch.equal(rope.freqs_cos[:, 0::2], rope.freqs_cos[:, 1::2])  # adjacent pairs share a frequency


# ---------------------------------------------------------------- loading a release-layout snapshot


def perturbed(adapter: RAEAdapter) -> RAEAdapter:
    """Give the tiny model's modules different weights (as a trained checkpoint would)."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in (adapter.net, adapter.guide, adapter.decoder):
            for p in module.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return adapter


def install_release(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: RAEAdapter,
                    skip: tuple[str, ...] = ()) -> Path:
    """Write ``source``'s weights in the release's on-disk format into a local HF cache (a real download's layout)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    root = cache / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    contents = {"dit_checkpoint": {"ema": source.net.state_dict()},  # a train.py checkpoint: weights under "ema"
                "guide_checkpoint": source.guide.state_dict(),  # a plain state dict
                "decoder_checkpoint": source.decoder.state_dict(),
                "stats_file": {"mean": source.stats.mean, "var": source.stats.var}}
    for key, obj in contents.items():
        if key in skip:
            continue
        path = snapshot / RELEASE_FILES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, path)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    return snapshot


def hub_card(revision: str = COMMIT, **params) -> dict:
    return {"name": "rae-hub-test", "family": "rae", "hub": {"repo": REPO_ID, "revision": revision},
            "params": {**TINY_PARAMS, **RELEASE_FILES, **params}}


def test_release_snapshot_loads_through_the_card_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = perturbed(RAEAdapter.tiny())
    install_release(monkeypatch, tmp_path, source)
    loaded = RAEAdapter(card_from_dict(hub_card(), source="cards/rae-hub-test.yaml"))
    loaded.load("cpu")
    for mine, theirs in ((loaded.net, source.net), (loaded.guide, source.guide), (loaded.decoder, source.decoder)):
        assert all(torch.equal(mine.state_dict()[k], v) for k, v in theirs.state_dict().items())
    for method in ("cfg", "autoguidance"):
        reqs = requests_for(source, [1, 2], settings(2, 1.42, guidance_method=method))
        assert images(loaded.sample(reqs)) == images(source.sample(reqs))
        assert images(loaded.sample(reqs)) != images(RAEAdapter.tiny().sample(reqs))  # the weights matter
    # The release's statistics are applied before decoding: decode == decoder(z * sqrt(var + 1e-5) + mean).
    z = torch.randn(2, 8, 4, 4)
    want = loaded.decoder(z * torch.sqrt(source.stats.var + 1e-5) + source.stats.mean)
    assert torch.allclose(loaded.decode(z), want, atol=1e-6)


@pytest.mark.parametrize("edit, match", [
    ("drop-key", r"params.decoder_checkpoint = '.*decoders/dinov2/wReg_base/ViTXL_n08/model.pt' does not fit.*"
                 r"decoder_pred.bias"),
    ("bad-stats-shape", r"stat.pt \(params.stats_file\): key 'var' has shape \(3,\)"),
    ("stats-without-mean", r"stat.pt \(params.stats_file\): expected a dict with tensors 'mean' and 'var'"),
])
def test_broken_release_files_name_the_file_and_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, edit: str,
                                                    match: str) -> None:
    source = RAEAdapter.tiny()
    snapshot = install_release(monkeypatch, tmp_path, source)
    if edit == "drop-key":
        state = source.decoder.state_dict()
        del state["decoder_pred.bias"]
        torch.save(state, snapshot / RELEASE_FILES["decoder_checkpoint"])
    else:
        stats = {"mean": source.stats.mean, "var": torch.ones(3)} if edit == "bad-stats-shape" else \
            {"var": source.stats.var}
        torch.save(stats, snapshot / RELEASE_FILES["stats_file"])
    with pytest.raises(HarnessError, match=match):
        RAEAdapter(card_from_dict(hub_card())).load("cpu")


def test_missing_release_files_are_weights_missing_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_release(monkeypatch, tmp_path, RAEAdapter.tiny(), skip=("stats_file",))
    with pytest.raises(WeightsMissingError, match="rae-hub-test.*imagenet1k/stat.pt.*not found"):
        RAEAdapter(card_from_dict(hub_card())).load("cpu")
    with pytest.raises(WeightsMissingError, match=r"rae-hub-test.*@d{40}.*harness weights fetch rae-hub-test"):
        RAEAdapter(card_from_dict(hub_card(revision="d" * 40))).load("cpu")


def test_no_guide_checkpoint_refuses_autoguidance_before_compute(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    install_release(monkeypatch, tmp_path, RAEAdapter.tiny(), skip=("guide_checkpoint",))
    a = RAEAdapter(card_from_dict(hub_card(guide_checkpoint=None), source="cards/x.yaml"))
    with pytest.raises(ProtocolError, match="autoguidance needs a guide model; set params.guide_checkpoint in "
                                            "cards/x.yaml"):
        a.expected_nfe(settings(3, 1.42, guidance_method="autoguidance"))  # what `harness plan` calls
    a.load("cpu")
    assert a.guide is None and a.expected_nfe(settings(3, 1.42)) == 6  # plain CFG still works
    assert [o.nfe for o in a.sample(requests_for(a, [1], settings(3, 1.42)))] == [6]


# ---------------------------------------------------------------- the sampler


class PointMass(torch.nn.Module):
    """The exact velocity of the Linear path towards one data point d(y): v = (x - d) / t."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def target(self, y: torch.Tensor) -> torch.Tensor:
        return self.scale * (y.float() + 1)[:, None, None, None]

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - self.target(y)) / t[:, None, None, None]


def with_fields(adapter: RAEAdapter) -> RAEAdapter:
    adapter.net, adapter.guide = PointMass(0.1), PointMass(-0.2)
    adapter.counters = [NFECounter(adapter.net), NFECounter(adapter.guide)]
    return adapter


def hand_loop(x: np.ndarray, y: np.ndarray, steps: int, shift: float, w: float, method: str,
              interval: tuple[float, float], null: int) -> np.ndarray:
    """Upstream's ODE written out in float64: t_i = 1 - 0.999 i / N, shifted, Euler, guidance inside the interval."""
    def field(x, t, labels, scale):
        return (x - scale * (labels + 1.0)[:, None, None, None]) / t

    ts = [1 - 0.999 * i / steps for i in range(steps + 1)]
    ts = [shift * t / (1 + (shift - 1) * t) for t in ts]
    for t0, t1 in zip(ts[:-1], ts[1:]):
        v = field(x, t0, y, 0.1)
        if w != 1 and interval[0] <= t0 <= interval[1]:
            weak = field(x, t0, np.full_like(y, null), 0.1) if method == "cfg" else field(x, t0, y, -0.2)
            v = weak + w * (v - weak)
        x = x + (t1 - t0) * v
    return x


@pytest.mark.parametrize("steps, cfg, method, interval", [
    (1, 1.0, "cfg", (0.0, 1.0)), (7, 1.0, "cfg", (0.0, 1.0)), (5, 3.0, "cfg", (0.0, 1.0)),
    (6, 2.0, "cfg", (0.3, 0.8)), (4, 1.42, "autoguidance", (0.0, 1.0)), (9, 2.5, "autoguidance", (0.05, 0.5)),
])
def test_euler_with_shift_equals_a_hand_written_loop(steps: int, cfg: float, method: str,
                                                     interval: tuple[float, float]) -> None:
    a = with_fields(RAEAdapter.tiny())
    s = settings(steps, cfg, guidance_method=method, t_min=interval[0], t_max=interval[1])
    reqs = requests_for(a, [3, 4, 5], s)
    latents, nfe = a.sample_latents(reqs)
    x0 = np.stack([torch.randn((8, 4, 4), generator=torch.Generator().manual_seed(r.seed)).numpy() for r in reqs])
    labels = np.array([r.label for r in reqs], dtype=np.float64)
    shift = math.sqrt(8 * 4 * 4 / 16)
    want = hand_loop(x0.astype(np.float64), labels, steps, shift, cfg, method, interval, null=10)
    np.testing.assert_allclose(latents.numpy(), want, rtol=1e-4, atol=1e-5)
    guided = sum(1 for t in time_grid(steps, shift)[:-1] if cfg != 1 and interval[0] <= t <= interval[1])
    assert nfe == [steps + guided] * 3 == [a.expected_nfe(s)] * 3
    if cfg == 1.0:  # Euler is exact on this field: x ends at (1 - t_end) d + t_end noise, t_end = shifted 1/1000
        t_end = shift * 0.001 / (1 + (shift - 1) * 0.001)
        d = 0.1 * (labels + 1)[:, None, None, None]
        np.testing.assert_allclose(latents.numpy(), (1 - t_end) * d + t_end * x0, rtol=1e-4, atol=1e-5)


def test_release_shift_and_grid() -> None:
    assert time_shift({"latent_channels": 768, "latent_size": 16, "shift_base": 4096}) == pytest.approx(math.sqrt(48))
    grid = time_grid(25, math.sqrt(48))
    assert len(grid) == 26 and grid[0] == 1.0 and grid[-1] == pytest.approx(6.928 * 0.001 / (1 + 5.928 * 0.001),
                                                                             rel=1e-4)
    assert all(a > b for a, b in zip(grid, grid[1:]))


def test_cfg_interval_outside_matches_unguided_and_counts_one_call(rae: RAEAdapter) -> None:
    grid = time_grid(3, time_shift(rae.params))  # [1.0, 0.850, 0.587, ...]: guidance starts at these times
    plain = rae.sample(requests_for(rae, [7, 8], settings(3, 1.0)))
    empty = rae.sample(requests_for(rae, [7, 8], settings(3, 4.0, t_min=0.6, t_max=0.8)))  # no step starts inside
    assert images(empty) == images(plain) and [o.nfe for o in empty] == [3, 3]
    one = rae.sample(requests_for(rae, [7, 8], settings(3, 4.0, t_min=0.8, t_max=0.9)))  # only t=0.850
    assert grid[1] == pytest.approx(0.85, abs=1e-3)
    assert images(one) != images(plain) and [o.nfe for o in one] == [4, 4]
    full = rae.sample(requests_for(rae, [7, 8], settings(3, 4.0)))
    assert images(full) != images(one) and [o.nfe for o in full] == [6, 6]


def test_nfe_counts_cfg_doubling_and_guide_calls() -> None:
    a = with_fields(RAEAdapter.tiny())
    reqs = requests_for(a, [1, 2, 3, 4], settings(5, 1.42, guidance_method="autoguidance"))
    main, guide = a.counters
    outs = a.sample_latents(reqs)[1]
    assert (main.rows, guide.rows) == (5 * 4, 5 * 4) and outs == [10] * 4  # 5 model + 5 guide calls per sample
    a.sample_latents(requests_for(a, [1, 2, 3, 4], settings(5, 1.42)))  # CFG: the model runs on 2x the rows
    assert (main.rows, guide.rows) == (20 + 5 * 8, 20)
    a.sample_latents(requests_for(a, [1, 2, 3, 4], settings(5, 1.0, guidance_method="autoguidance")))
    assert (main.rows, guide.rows) == (60 + 5 * 4, 20)  # cfg = 1: unguided, the guide never runs
    assert [a.expected_nfe(settings(5, c)) for c in (1.0, 1.42, 7.0)] == [5, 10, 10]


@pytest.mark.parametrize("s, match", [
    (settings(2, 0.5), "cfg=0.5 < 1"),
    (settings(2, 2.0, guidance_method="apg"), "guidance_method='apg'; expected one of cfg, autoguidance"),
    (settings(2, 2.0, t_min=0.7, t_max=0.2), "t_min=0.7 >= t_max=0.2"),
    (settings(2, 2.0, t_max=1.5), "t_max=1.5; expected a number in \\[0, 1\\]"),
])
def test_refused_guidance_settings(rae: RAEAdapter, s: SamplerSettings, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        rae.expected_nfe(s)
    with pytest.raises(ProtocolError, match=match):
        rae.sample(requests_for(rae, [1], s))


def test_truncating_uint8_rule() -> None:
    x = torch.tensor([0.0, 0.999, 1 / 255 - 1e-6, 0.5, 1.7, -0.3]).reshape(1, 3, 1, 2)
    out = uint8_truncating(x, [0])
    assert out.shape == (1, 1, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].T.ravel().tolist() == [0, 254, 0, 127, 255, 0]  # truncation: 254.7 -> 254, 127.5 -> 127
    bad = torch.zeros(2, 3, 2, 2)
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(GenerationError, match=r"sample index \[41\]"):
        uint8_truncating(bad, [40, 41])


# ---------------------------------------------------------------- cards


@pytest.mark.parametrize("raw, match", [
    ({"params": {"dit_widths": [1, 2]}}, r"params: unknown key\(s\) \['dit_widths'\]"),
    ({"params": {"dit_hidden": [1152]}}, r"params.dit_hidden=\[1152\]; expected \[encoder, head\]"),
    ({"params": {"shift_base": 10**9}}, "params.shift_base=1000000000: the time shift"),
    ({"params": {"dit_checkpoint": "a.pt"}}, r"\['dit_checkpoint'\] name files inside a hub snapshot, but the card "
                                             r"has no hub"),
    ({"hub": {"repo": REPO_ID, "revision": "main"}, "params": {"stats_file": "s.pt"}},
     r"must name \['dit_checkpoint', 'decoder_checkpoint'\]"),
    ({"dtype": "bfloat16"}, "dtype='bfloat16'; rae supports float32 only"),
])
def test_card_errors_name_the_key(raw: dict, match: str) -> None:
    card = card_from_dict({"name": "bad", "family": "rae", **raw,
                           "params": {**TINY_PARAMS, **raw.get("params", {})}}, source="cards/bad.yaml")
    with pytest.raises(ProtocolError, match=match):
        RAEAdapter(card).load("cpu")


def test_shipped_card() -> None:
    card = load_card("rae-dit-dh-xl")
    caps = RAEAdapter.capabilities_for(card)
    assert card.family == "rae" and card.hub == (REPO_ID, "main")
    assert (caps.resolution, caps.num_classes, caps.natural_cfg, caps.guidance) == (256, 1000, 1.42, "cfg")
    assert {k: card.params[k] for k in RELEASE_FILES} == RELEASE_FILES
    official = card.recipes["official"]
    assert (official["steps"], official["cfg"], official["knobs"]) == (
        49, 1.42, {"guidance_method": "autoguidance", "t_min": 0.0, "t_max": 1.0})
    a = RAEAdapter(card)
    assert a.expected_nfe(settings(49, 1.42, guidance_method="autoguidance")) == 98
    with pytest.raises(WeightsMissingError, match="rae-dit-dh-xl.*harness weights fetch rae-dit-dh-xl"):
        a.load("cpu")
    assert load_card("rae-dit-dh-xl-external").family == "external"


# ---------------------------------------------------------------- opt-in: against the upstream code itself


@pytest.mark.skipif(not os.environ.get("RAE_UPSTREAM_SRC"), reason="set RAE_UPSTREAM_SRC to a bytetriper/RAE src/ "
                    "checkout (needs timm, einops, torchdiffeq importable) to run the cross-check")
@pytest.mark.parametrize("steps, cfg, method, interval", [
    (49, 1.0, "cfg", (0.0, 1.0)), (25, 7.0, "cfg", (0.0, 1.0)), (49, 1.42, "autoguidance", (0.0, 1.0)),
    (10, 3.0, "cfg", (0.3, 0.8)), (1, 7.0, "cfg", (0.0, 1.0)),
])
def test_matches_upstream_sampler_and_decoder(monkeypatch: pytest.MonkeyPatch, steps: int, cfg: float, method: str,
                                              interval: tuple[float, float]) -> None:
    """Same weights and noise through upstream's DiTwDDTHead, transport (num_steps = steps + 1 time points,
    torchdiffeq Euler), forward_with_cfg / forward_with_autoguidance, GeneralDecoder and the sample_ddp.py
    uint8 rule: pixel-identical images."""
    monkeypatch.syspath_prepend(os.environ["RAE_UPSTREAM_SRC"])
    from stage1.decoders.decoder import GeneralDecoder
    from stage2.models.DDT import DiTwDDTHead
    from stage2.transport import Sampler, create_transport
    from transformers import ViTMAEConfig

    a = perturbed(RAEAdapter.tiny())
    p = a.params

    def upstream_ddt(prefix: str, mine: DiTDH) -> torch.nn.Module:
        net = DiTwDDTHead(input_size=4, patch_size=1, in_channels=8, hidden_size=p[f"{prefix}_hidden"],
                          depth=p[f"{prefix}_depth"], num_heads=p[f"{prefix}_heads"], num_classes=10)
        net.load_state_dict(mine.state_dict(), strict=True)
        return net.eval()

    net, guide = upstream_ddt("dit", a.net), upstream_ddt("guide", a.guide)
    conf = ViTMAEConfig(hidden_size=8, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                        decoder_num_attention_heads=2, decoder_intermediate_size=64, hidden_act="gelu",
                        layer_norm_eps=1e-12, qkv_bias=True, num_channels=3, patch_size=4, image_size=16)
    decoder = GeneralDecoder(conf, num_patches=16).eval()
    decoder.load_state_dict(a.decoder.state_dict(), strict=True)
    s = settings(steps, cfg, guidance_method=method, t_min=interval[0], t_max=interval[1])
    reqs = requests_for(a, [100, 101], s)
    z = torch.stack([torch.randn((8, 4, 4), generator=torch.Generator().manual_seed(r.seed)) for r in reqs])
    y = torch.tensor([r.label for r in reqs])
    sample_fn = Sampler(create_transport(time_dist_shift=time_shift(p))).sample_ode(sampling_method="euler",
                                                                                    num_steps=steps + 1)
    with torch.no_grad():
        if cfg > 1:
            kw = {"y": torch.cat([y, torch.full_like(y, 10)]), "cfg_scale": cfg, "cfg_interval": interval}
            if method == "autoguidance":
                kw["additional_model_forward"] = guide.forward
            fn = net.forward_with_autoguidance if method == "autoguidance" else net.forward_with_cfg
            ref = sample_fn(torch.cat([z, z]), fn, **kw)[-1].chunk(2)[0]
        else:
            ref = sample_fn(z, net.forward, y=y)[-1]
        tokens = a.stats.denormalize(ref).reshape(2, 8, 16).transpose(1, 2)
        pixels = decoder.unpatchify(decoder(tokens, drop_cls_token=False).logits) * a.decoder.pixel_std \
            + a.decoder.pixel_mean
        want = pixels.clamp(0, 1).mul(255).permute(0, 2, 3, 1).to(torch.uint8).numpy()
        mine, nfe = a.sample_latents(reqs)
    torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)
    assert nfe == [a.expected_nfe(s)] * 2
    assert [o.image.tobytes() for o in a.sample(reqs)] == [w.tobytes() for w in want]
