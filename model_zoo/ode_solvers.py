"""ODE solvers for velocity fields dx/dt = f(x, t), written for one trajectory at a time or a batch sharing
one time grid. Fixed-step Euler and Heun, and adaptive Dormand-Prince 5(4) ("dopri5", the solver SiT's
``sample_ode`` uses through torchdiffeq, which is not installed here): same tableau, the same mixed RMS
error norm ``rms(err / (atol + rtol * max(|x0|, |x1|)))``, Hairer's initial step selection and a
0.9-safety step controller. The last step is shortened to end exactly at t1 (torchdiffeq instead steps
past t1 and interpolates), so NFE is comparable but pixels are not bit-identical to upstream.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.errors import GenerationError

Field = Callable[[torch.Tensor, float], torch.Tensor]

# Dormand-Prince 5(4): nodes, stage coefficients, 5th-order weights, 4th-order (embedded) weights.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656))
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
MAX_EVALS = 100_000


def euler(f: Field, x: torch.Tensor, grid: list[float]) -> torch.Tensor:
    for t0, t1 in zip(grid[:-1], grid[1:]):
        x = x + (t1 - t0) * f(x, t0)
    return x


def heun(f: Field, x: torch.Tensor, grid: list[float]) -> torch.Tensor:
    """Explicit trapezoid (Heun's 2nd-order method): two evaluations on every step, the last included."""
    for t0, t1 in zip(grid[:-1], grid[1:]):
        h = t1 - t0
        k1 = f(x, t0)
        k2 = f(x + h * k1, t1)
        x = x + 0.5 * h * (k1 + k2)
    return x


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def dopri5(f: Field, x: torch.Tensor, t0: float, t1: float, atol: float, rtol: float) -> torch.Tensor:
    """Adaptive integration of one trajectory from t0 to t1 (t1 > t0)."""
    evals = 0

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
        factor = 10.0 if ratio == 0 else min(10.0, max(0.2, 0.9 * ratio ** (-1 / 5)))
        h = h * factor
    return x
