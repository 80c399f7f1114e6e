"""The samplers every family's step loop runs: one signature, ``sample_X(f, x, grid, *, callback=None, ...)``,
after k-diffusion's ``sample_X(model, x, sigmas, ...)``. ``f`` is the model as the family wraps it (guidance
included); ``grid`` lists the times the sampler steps through, first to last, in the family's own time
convention (0 -> 1 or 1 -> 0); ``callback(i, t, x)``, if given, sees the state after step i landed at time t.

- ODE samplers of a velocity field ``f(x, t)`` (dx/dt = f), looked up by the protocol's sampler name in
  ``SAMPLERS``: fixed-grid Euler (1 evaluation per step) and Heun's trapezoid (2), and adaptive Dormand-Prince
  5(4) ("dopri5", the solver SiT's ``sample_ode`` uses through torchdiffeq, which is not installed here; grid =
  (t0, t1)): same tableau, the same mixed RMS error norm ``rms(err / (atol + rtol * max(|x0|, |x1|)))``,
  Hairer's initial step selection and a 0.9-safety step controller. Its last step is shortened to end exactly
  at t1 (torchdiffeq instead steps past t1 and interpolates), so NFE is comparable but pixels are not
  bit-identical to upstream.
- ``sample_average_velocity``: MeanFlow-type jumps x + (t1 - t0) * u(x, t0, t1) of an average velocity.
- ``sample_renoise``: consistency-style multistep sampling of a solution operator g(x, t, s) (jump to the
  grid's end, re-noise to the next time).

Each update is written in one fixed operation order: families' images are pinned byte for byte by
``tests/test_ode_solvers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.errors import GenerationError, ProtocolError

Field = Callable[[torch.Tensor, float], torch.Tensor]  # f(x, t): the velocity dx/dt at time t
AverageField = Callable[[torch.Tensor, float, float], torch.Tensor]  # u(x, t0, t1): mean velocity over [t0, t1]
Solution = Callable[[torch.Tensor, float, float], torch.Tensor]  # g(x, t, s): the state at time s from x at t
Callback = Callable[[int, float, torch.Tensor], None]

# Dormand-Prince 5(4): nodes, stage coefficients, 5th-order weights, 4th-order (embedded) weights.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656))
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
MAX_EVALS = 100_000


def _steps(grid: Sequence[float]) -> list[tuple[int, float, float]]:
    if len(grid) < 2:
        raise ValueError(f"a sampler grid needs at least two times (start and end), got {list(grid)}")
    return [(i, grid[i], grid[i + 1]) for i in range(len(grid) - 1)]


def sample_euler(f: Field, x: torch.Tensor, grid: Sequence[float], *, callback: Callback | None = None) -> torch.Tensor:
    """Explicit Euler: x <- x + (t1 - t0) * f(x, t0); one evaluation per step."""
    for i, t0, t1 in _steps(grid):
        x = x + (t1 - t0) * f(x, t0)
        if callback is not None:
            callback(i, t1, x)
    return x


def sample_heun(f: Field, x: torch.Tensor, grid: Sequence[float], *, callback: Callback | None = None) -> torch.Tensor:
    """Explicit trapezoid (Heun's 2nd-order method): two evaluations on every step, the last included."""
    for i, t0, t1 in _steps(grid):
        h = t1 - t0
        k1 = f(x, t0)
        k2 = f(x + h * k1, t1)
        x = x + 0.5 * h * (k1 + k2)
        if callback is not None:
            callback(i, t1, x)
    return x


def sample_average_velocity(u: AverageField, x: torch.Tensor, grid: Sequence[float], *,
                            callback: Callback | None = None) -> torch.Tensor:
    """MeanFlow-type jumps x <- x + (t1 - t0) * u(x, t0, t1): exact for the true average velocity, so one step
    (grid = [t0, t1]) is a one-step generator; one evaluation per step."""
    for i, t0, t1 in _steps(grid):
        x = x + (t1 - t0) * u(x, t0, t1)
        if callback is not None:
            callback(i, t1, x)
    return x


def sample_renoise(g: Solution, x: torch.Tensor, grid: Sequence[float], *, noise: Callable[[], torch.Tensor],
                   callback: Callback | None = None) -> torch.Tensor:
    """Consistency-style multistep sampling on a grid from noise (t = 1) to data (t = grid[-1], usually 0): jump
    with the solution operator straight to the end, then, except after the last step, re-noise to the next
    time, x = (1 - t) * x_end + t * noise(), with fresh noise. One evaluation per step."""
    end = grid[-1]
    for i, t0, t1 in _steps(grid):
        x = g(x, t0, end)
        if i < len(grid) - 2:
            x = (1.0 - t1) * x + t1 * noise()
        if callback is not None:
            callback(i, t1, x)
    return x


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def sample_dopri5(f: Field, x: torch.Tensor, grid: Sequence[float], *, atol: float, rtol: float,
                  callback: Callback | None = None) -> torch.Tensor:
    """Adaptive integration of one trajectory over grid = (t0, t1), t1 > t0; ``callback`` sees every accepted
    step (i counts them)."""
    if len(grid) != 2 or not grid[1] > grid[0]:
        raise ValueError(f"dopri5 integrates over grid = (t0, t1) with t1 > t0, got {list(grid)}")
    t0, t1 = grid
    evals = accepted = 0

    def call(y: torch.Tensor, t: float) -> torch.Tensor:
        nonlocal evals
        evals += 1
        if evals > MAX_EVALS:
            raise GenerationError(f"dopri5 did not reach t={t1} within {MAX_EVALS} evaluations (at t={t:.6g})")
        return f(y, t)

    k1 = call(x, t0)
    scale = atol + rtol * x.abs()
    d0, d1 = _rms(x / scale), _rms(k1 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    d2 = _rms((call(x + h0 * k1, t0 + h0) - k1) / scale) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    h, t = min(100 * h0, h1), t0
    while t < t1:
        h = min(h, t1 - t)
        ks = [k1]
        for c, a in zip(_C[1:], _A[1:]):
            ks.append(call(x + h * sum(w * k for w, k in zip(a, ks)), t + c * h))
        x_new = x + h * sum(w * k for w, k in zip(_B, ks))
        k7 = call(x_new, t + h)
        err = h * sum((b - b4) * k for b, b4, k in zip(_B + (0.0,), _B4, ks + [k7]))
        ratio = _rms(err / (atol + rtol * torch.maximum(x.abs(), x_new.abs())))
        if ratio <= 1.0:  # accept; FSAL: the last stage is the next step's first
            t = t1 if t1 - (t + h) < 1e-12 else t + h
            x, k1 = x_new, k7
            if callback is not None:
                callback(accepted, t, x)
            accepted += 1
        factor = 10.0 if ratio == 0 else min(10.0, max(0.2, 0.9 * ratio ** (-1 / 5)))
        h = h * factor
    return x


@dataclass(frozen=True)
class Sampler:
    """A registered ODE sampler of a velocity field: ``run(f, x, grid, **options)``."""

    name: str
    run: Callable[..., torch.Tensor]
    evals_per_step: int | None  # None: adaptive, the NFE is whatever the solver executed


# Velocity-field samplers by the protocol's ``sampler`` name. Adding one: write ``sample_X(f, x, grid, *,
# callback=None, ...)`` above and list it here; a family offers it by naming it in its capabilities' samplers.
SAMPLERS: dict[str, Sampler] = {s.name: s for s in (
    Sampler("euler", sample_euler, 1), Sampler("heun", sample_heun, 2), Sampler("dopri5", sample_dopri5, None))}


def get_sampler(name: str, who: str = "sampler") -> Sampler:
    """The registered sampler ``name``; anything else is refused by name."""
    if name not in SAMPLERS:
        raise ProtocolError(f"{who}: sampler {name!r} is not one of the ODE samplers {sorted(SAMPLERS)}")
    return SAMPLERS[name]


# The names before the common signature, kept for callers outside model_zoo (tests/test_zoo_cc_sit.py).
euler, heun = sample_euler, sample_heun


def dopri5(f: Field, x: torch.Tensor, t0: float, t1: float, atol: float, rtol: float) -> torch.Tensor:
    return sample_dopri5(f, x, (t0, t1), atol=atol, rtol=rtol)
