"""Conformance of every registered family, plus flow-matching specifics (checkpoints, guidance, RNG)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import HarnessError, ProtocolError
from harness.models.adapters import Adapter, check_settings, discover
from harness.models.cards import card_from_dict, load_card
from harness.types import SampleRequest, SamplerSettings
from model_zoo.flow_matching import TINY_PARAMS, FlowMatchingAdapter
from tests.support.conformance import AdapterConformance, images, requests_for

REPO = Path(__file__).resolve().parents[2]
FAMILIES = sorted(discover())


@pytest.fixture(scope="class", params=FAMILIES)
def adapter(request: pytest.FixtureRequest) -> Adapter:
    return discover()[request.param].tiny()


class TestConformance(AdapterConformance):
    """Runs the shared suite for every family ``discover()`` finds: a new family is tested automatically."""


# ---------------------------------------------------------------- flow matching specifics


@pytest.fixture(scope="module")
def fm() -> FlowMatchingAdapter:
    return FlowMatchingAdapter.tiny()


def _ckpt_card(path: Path, sha: str, **params) -> dict:
    return {"name": "fm-ckpt", "family": "flow_matching", "weights": str(path), "weights_sha256": sha,
            "params": {**TINY_PARAMS, **params}}


def test_discover_imports_family_without_harness_naming_it() -> None:
    code = ("import sys; import harness.models.adapters as a; "
            "assert 'model_zoo.flow_matching' not in sys.modules; "
            "r = a.discover(); assert r['flow_matching'].__module__ == 'model_zoo.flow_matching'; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    for src in (REPO / "harness").rglob("*.py"):
        text = src.read_text()
        assert "model_zoo.flow_matching" not in text and "flow_matching import" not in text, src


def test_shipped_cards_capabilities() -> None:
    guided, plain = load_card("fm-tiny"), load_card("fm-tiny-noguide")
    cg, cp = FlowMatchingAdapter.capabilities_for(guided), FlowMatchingAdapter.capabilities_for(plain)
    assert (cg.guidance, cg.natural_cfg, cg.conditioning) == ("cfg", 1.0, "class")
    assert (cg.resolution, cg.num_classes) == (28, 10)
    assert (cp.guidance, cp.natural_cfg) == ("none", None)
    assert cg.min_steps == 1 and cg.max_steps == 1000 and not cg.one_step and cg.samplers == ("euler", "heun")
    assert guided.weights is None and guided.weights_digest.startswith("random-init:")
    assert guided.weights_digest != plain.weights_digest  # different models, different cells


def test_noguide_refuses_cfg_at_plan_time_and_in_sample() -> None:
    a = FlowMatchingAdapter.tiny(label_dropout=0)
    caps = a.capabilities
    assert caps.guidance == "none" and caps.natural_cfg is None
    for cfg in (1.0, 3.0):
        with pytest.raises(ProtocolError, match="without guidance"):
            check_settings(a.card, caps, SamplerSettings(steps=2, cfg=cfg))
        with pytest.raises(ProtocolError, match="without guidance"):
            a.sample(requests_for(a, [1], SamplerSettings(steps=2, cfg=cfg)))
    outs = a.sample(requests_for(a, [1, 2], SamplerSettings(steps=2, cfg=None)))
    assert [o.nfe for o in outs] == [2, 2]


def test_labels_and_guidance_change_the_image(fm: FlowMatchingAdapter) -> None:
    s = SamplerSettings(steps=4, cfg=1.0)
    by_label = images(fm.sample([SampleRequest(i, 9, s, label=lab) for i, lab in enumerate((0, 1))]))
    assert by_label[0] != by_label[1]  # same noise, different class
    by_cfg = [images(fm.sample([SampleRequest(0, 9, SamplerSettings(4, c), label=2)]))[0] for c in (1.0, 3.0)]
    assert by_cfg[0] != by_cfg[1]


def test_initial_noise_is_per_sample_seeded(fm: FlowMatchingAdapter) -> None:
    reqs = requests_for(fm, [123, 456], SamplerSettings(2, 1.0))
    noise = fm.initial_noise(reqs)
    want = torch.randn((1, 16, 16), generator=torch.Generator("cpu").manual_seed(456))
    assert torch.equal(noise[1], want)


def test_global_rng_untouched_by_load_and_sample() -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = FlowMatchingAdapter.tiny()
    a.sample(requests_for(a, [1, 2, 3], SamplerSettings(3, 2.0)))
    assert torch.equal(torch.get_rng_state(), before)


def test_seeded_init_is_deterministic_and_seed_dependent() -> None:
    sd = [FlowMatchingAdapter.tiny(init_seed=s).net.state_dict() for s in (0, 0, 1)]
    assert all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
    assert not torch.equal(sd[0]["patch_in.weight"], sd[2]["patch_in.weight"])


def test_checkpoint_roundtrip_reproduces_images(fm: FlowMatchingAdapter, tmp_path: Path) -> None:
    trained = FlowMatchingAdapter.tiny()
    with torch.no_grad():  # stand-in for training: weights that no seeded init would produce
        for p in trained.net.parameters():
            p.mul_(0.9).add_(0.01)
    sha = trained.save_checkpoint(tmp_path / "fm.pt")
    assert len(sha) == 64 and not (tmp_path / "fm.pt.tmp").exists()
    card = card_from_dict(_ckpt_card(tmp_path / "fm.pt", sha, init_seed=7))  # init_seed must not matter
    assert card.weights_digest == sha
    loaded = FlowMatchingAdapter(card)
    loaded.load("cpu")
    reqs = requests_for(fm, [4, 5, 6], SamplerSettings(3, 2.0))
    assert images(loaded.sample(reqs)) == images(trained.sample(reqs))
    assert images(loaded.sample(reqs)) != images(fm.sample(reqs))


def test_checkpoint_wrong_sha_is_refused(fm: FlowMatchingAdapter, tmp_path: Path) -> None:
    sha = fm.save_checkpoint(tmp_path / "fm.pt")
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    a = FlowMatchingAdapter(card_from_dict(_ckpt_card(tmp_path / "fm.pt", wrong)))
    with pytest.raises(HarnessError, match="sha256 mismatch") as e:
        a.load("cpu")
    assert str(tmp_path / "fm.pt") in str(e.value) and wrong in str(e.value) and sha in str(e.value)


def test_checkpoint_arch_mismatch_and_missing_file(fm: FlowMatchingAdapter, tmp_path: Path) -> None:
    sha = fm.save_checkpoint(tmp_path / "fm.pt")
    with pytest.raises(HarnessError, match="architecture"):
        FlowMatchingAdapter(card_from_dict(_ckpt_card(tmp_path / "fm.pt", sha, hidden=64))).load("cpu")
    with pytest.raises(ProtocolError, match="nope.pt' not found"):  # refused when the card is read (plan time)
        card_from_dict(_ckpt_card(tmp_path / "nope.pt", sha))
    card = card_from_dict(_ckpt_card(tmp_path / "fm.pt", sha))
    (tmp_path / "fm.pt").unlink()  # vanished between planning and loading
    with pytest.raises(HarnessError, match="cannot read"):
        FlowMatchingAdapter(card).load("cpu")


@pytest.mark.parametrize("params, match", [
    ({"hiddn": 32}, "unknown key"),
    ({"channels": 2}, "channels"),
    ({"resolution": 18}, "divisible"),
    ({"resolution": 8, "patch": 4}, "tokens"),
    ({"label_dropout": 1.0}, "label_dropout"),
    ({"depth": 0}, "depth"),
])
def test_bad_card_params_refused(params: dict, match: str) -> None:
    card = card_from_dict({"name": "bad", "family": "flow_matching", "weights": None, "params": params})
    with pytest.raises(ProtocolError, match=match):
        FlowMatchingAdapter.capabilities_for(card)


def test_rgb_variant(fm: FlowMatchingAdapter) -> None:
    a = FlowMatchingAdapter.tiny(channels=3)
    img = a.sample(requests_for(a, [1], SamplerSettings(2, 2.0)))[0].image
    assert img.shape == (16, 16, 3)
    assert not np.array_equal(img[..., 0], img[..., 1])  # real colour, not replicated gray
    gray = fm.sample(requests_for(fm, [1], SamplerSettings(2, 2.0)))[0].image
    assert np.array_equal(gray[..., 0], gray[..., 2])


def test_sample_reads_the_capabilities_once_per_card(monkeypatch):
    """``sample`` checks every call against the capabilities; they come from the card alone, so they are computed
    once per card (the U-Net families built a throwaway network for them, 2-3 times per call: 21-29 ms of a
    7 ms batch-1 call, which the cost stage then reported as the model's latency)."""
    from harness.models.adapters import get_adapter_class

    card = load_card("meanflow-mnist")
    cls = get_adapter_class(card.family)
    adapter = cls.tiny()
    calls = []
    real = cls.capabilities_for.__func__
    monkeypatch.setattr(cls, "capabilities_for", classmethod(lambda c, k: calls.append(k) or real(c, k)))
    request = SampleRequest(index=0, seed=1, settings=SamplerSettings(1, None, "euler"), label=3)
    adapter.sample([request])
    adapter.sample([request])
    assert len(calls) == 1
    adapter.card = card  # another card: computed again, for it
    assert adapter.capabilities.resolution == 28 and len(calls) == 2 and calls[-1] is card
