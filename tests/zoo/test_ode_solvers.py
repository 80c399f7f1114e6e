"""The shared samplers of ``model_zoo/ode_solvers.py``: closed forms on a linear ODE, evaluation counts, the
registry's refusals, and the families that step through them producing the same image bytes as before."""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Iterator

import pytest
import torch

from harness.errors import ProtocolError
from harness.models.adapters import Adapter, discover
from harness.models.cards import load_card
from harness.types import SampleRequest, SamplerSettings
from model_zoo import ode_solvers as ode
from model_zoo.flow_matching import FlowMatchingAdapter
from model_zoo.sit import SiTAdapter

A = -1.3  # dx/dt = A x, x(t) = x0 exp(A t)


class Counted:
    """dx/dt = A x that counts its evaluations and the times it was asked about."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.times.append(t)
        return A * x


def _x0() -> torch.Tensor:
    return torch.tensor([[1.0, -0.5, 2.0]], dtype=torch.float64)


def _uniform(k: int, t0: float = 0.0, t1: float = 1.0) -> list[float]:
    return [t0 + (t1 - t0) * i / k for i in range(k + 1)]


# ---------------------------------------------------------------- closed forms and evaluation counts


@pytest.mark.parametrize("k", [1, 2, 5, 16])
@pytest.mark.parametrize(("name", "amplification", "per_step"), [
    ("euler", lambda ah: 1 + ah, 1), ("heun", lambda ah: 1 + ah + ah ** 2 / 2, 2)])
def test_fixed_step_samplers_match_their_closed_form(name, amplification, per_step, k) -> None:
    f = Counted()
    h = 1.0 / k
    x = ode.SAMPLERS[name].run(f, _x0(), _uniform(k))
    torch.testing.assert_close(x, _x0() * amplification(A * h) ** k, rtol=1e-13, atol=0)
    assert len(f.times) == k * per_step == k * ode.SAMPLERS[name].evals_per_step


def test_euler_on_a_non_uniform_descending_grid() -> None:
    grid = [1.0, 0.7, 0.25, 0.0]  # t from 1 down to 0: steps h_i = t_{i+1} - t_i < 0
    f = Counted()
    x = ode.sample_euler(f, _x0(), grid)
    torch.testing.assert_close(x, _x0() * math.prod(1 + A * (b - a) for a, b in zip(grid, grid[1:])),
                               rtol=1e-13, atol=0)
    assert f.times == grid[:-1]  # evaluated at each step's start


@pytest.mark.parametrize("rtol", [1e-4, 1e-7])
def test_dopri5_is_within_its_tolerance_of_the_exponential(rtol) -> None:
    f, steps = Counted(), []
    x = ode.sample_dopri5(f, _x0(), (0.0, 2.0), atol=rtol * 1e-3, rtol=rtol,
                          callback=lambda i, t, y: steps.append((i, t)))
    exact = _x0() * math.exp(2 * A)
    assert ((x - exact).abs() <= 10 * rtol * exact.abs()).all()  # global error: a small multiple of rtol
    assert steps[-1][1] == 2.0 and [i for i, _ in steps] == list(range(len(steps)))  # lands exactly on t1
    # NFE: 2 to pick the first step, then 6 per attempted step (the 7th stage is the next step's first)
    assert (len(f.times) - 2) % 6 == 0 and len(f.times) >= 2 + 6 * len(steps)
    assert ode.SAMPLERS["dopri5"].evals_per_step is None  # adaptive: the family counts what ran


def test_dopri5_tighter_tolerance_is_more_accurate_and_costs_more() -> None:
    exact = _x0() * math.exp(2 * A)
    loose, tight = Counted(), Counted()
    err_loose = (ode.sample_dopri5(loose, _x0(), (0.0, 2.0), atol=1e-6, rtol=1e-3) - exact).abs().max()
    err_tight = (ode.sample_dopri5(tight, _x0(), (0.0, 2.0), atol=1e-12, rtol=1e-9) - exact).abs().max()
    assert err_tight < err_loose and len(tight.times) > len(loose.times)


@pytest.mark.parametrize("k", [1, 3])
def test_average_velocity_jumps_are_exact_for_the_true_average(k) -> None:
    calls = []

    def u(x: torch.Tensor, t0: float, t1: float) -> torch.Tensor:  # (1/(t1-t0)) ∫ A x(τ) dτ for the linear ODE
        calls.append((t0, t1))
        return x * (math.exp(A * (t1 - t0)) - 1) / (t1 - t0)

    grid = _uniform(k, 1.0, 0.0)  # MeanFlow's direction: noise (1) to data (0)
    x = ode.sample_average_velocity(u, _x0(), grid)
    torch.testing.assert_close(x, _x0() * math.exp(-A), rtol=1e-13, atol=0)
    assert calls == list(zip(grid, grid[1:]))  # NFE = k


def test_renoise_jumps_to_the_end_and_renoises_between_steps() -> None:
    data, eps = torch.full((1, 3), 0.25, dtype=torch.float64), torch.full((1, 3), -2.0, dtype=torch.float64)
    seen, draws = [], []

    def g(x: torch.Tensor, t: float, s: float) -> torch.Tensor:  # a perfect solution operator to data at s = 0
        seen.append((t, s, x.clone()))
        return data.clone()

    def noise() -> torch.Tensor:
        draws.append(1)
        return eps

    grid = [1.0, 0.6, 0.2, 0.0]
    x = ode.sample_renoise(g, eps, grid, noise=noise)
    assert torch.equal(x, data) and len(seen) == 3 and len(draws) == 2  # NFE = steps, steps - 1 re-noisings
    assert [(t, s) for t, s, _ in seen] == [(1.0, 0.0), (0.6, 0.0), (0.2, 0.0)]
    for t, _, x_in in seen[1:]:
        torch.testing.assert_close(x_in, (1 - t) * data + t * eps)


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_callback_sees_every_step(name) -> None:
    seen = []
    out = ode.SAMPLERS[name].run(Counted(), _x0(), [0.0, 0.5, 1.0], callback=lambda i, t, x: seen.append((i, t, x)))
    assert [(i, t) for i, t, _ in seen] == [(0, 0.5), (1, 1.0)] and torch.equal(seen[-1][2], out)


# ---------------------------------------------------------------- refusals


def test_registry_refuses_an_unknown_sampler_by_name() -> None:
    with pytest.raises(ProtocolError, match=r"sampler 'rk4' is not one of .*'dopri5', 'euler', 'heun'"):
        ode.get_sampler("rk4", "model 'x'")


@pytest.mark.parametrize("family", [FlowMatchingAdapter, SiTAdapter])
def test_families_refuse_an_unknown_sampler_instead_of_running_euler(family) -> None:
    # On main, anything but "heun" counted and ran as Euler (sit: NFE = steps for "rk4").
    adapter = family.tiny()
    bad = SamplerSettings(steps=2, cfg=1.0, sampler="rk4")
    with pytest.raises(ProtocolError, match="'rk4'"):
        adapter.expected_nfe(bad)
    if family is FlowMatchingAdapter:
        with pytest.raises(ProtocolError, match="'rk4'"):
            adapter.integrate(torch.zeros(1, 1, 16, 16), torch.tensor([0]), bad)


def test_bad_grids_are_refused() -> None:
    with pytest.raises(ValueError, match="at least two times"):
        ode.sample_euler(Counted(), _x0(), [0.0])
    for grid in ([0.0, 0.5, 1.0], [1.0, 0.0]):
        with pytest.raises(ValueError, match="dopri5"):
            ode.sample_dopri5(Counted(), _x0(), grid, atol=1e-6, rtol=1e-3)


# ---------------------------------------------------------------- the families' images, byte for byte

# sha256 over (image bytes, NFE) of each sample, for 4 samples (seed 1000 + i, label i) of the committed MNIST
# cards and 2 of some tiny families. Recorded on main at 79988e7, BEFORE the step loops moved into ode_solvers,
# with ``_digest`` below at one CPU thread (conv kernels' bytes depend on the thread count): regenerate with
# ``PYTHONPATH=. .venv/bin/python tests/zoo/test_ode_solvers.py`` (prints this table) when the numerics change on
# purpose. Key: card or tiny-family / sampler / steps / cfg. The meanflow-mnist rows were re-recorded for its
# 2,000-step checkpoint (f7d7ed7) with the pre-refactor loops (main's code) and matched by the shared samplers.
PINNED = {
    "fm-mnist/euler/1/1.0": "c659d45afe21fe3004a3c517606574a42334669faa818eab19519fd016e434d6",
    "fm-mnist/euler/1/1.5": "dd9ad1065a45bfa1a8ab3fb7f75c24f4b77ce20d1f598d5f5930240c336011ce",
    "fm-mnist/heun/1/1.0": "b911fde823c8e0001ce70e49bba44f7027ea8f029f6c2afa36aa05f8c06b3204",
    "fm-mnist/heun/1/1.5": "bc7bc51bc41b77e78e5220adce2ecc6bd2dcc151c078c261e8872bc2613dc744",
    "fm-mnist/euler/2/1.0": "693949c1ea0cce69d70ed9d7247487ab71ca3dab3f46bb8b5218dea6a27a36e3",
    "fm-mnist/euler/2/1.5": "d67bf79ae5ae4ceb3bb92387a83673854f956aa24ea10d5c36c1ccd0eba5a091",
    "fm-mnist/heun/2/1.0": "2c84054e9669635982e2708129125889163c302d4c2b247db3ecfe72a52854ae",
    "fm-mnist/heun/2/1.5": "720ad133ffea1a74e1cb138650d69177a7188d30163ff154f42fac9f9c64c1d1",
    "fm-mnist/euler/3/1.0": "3040fd291caab69756ef5bec59d2200fa995cee2356aff9fcc3cdf6aaa62adc0",
    "fm-mnist/euler/3/1.5": "1c33032fde47067309bba98d1264c7fcf27c05ba058a4646cd542d66ce146d83",
    "fm-mnist/heun/3/1.0": "c8a411d7f0e2d57d18e0a13af40c8060ee85ecfcf968cc020ae870de2c19cd6e",
    "fm-mnist/heun/3/1.5": "70cae881d028fd327d3414b0b4b0a548528d7289f2e1fb00cbfd5e7d3227ab60",
    "fm-mnist/euler/4/1.0": "7af13aac32f866c6fd964723f7b9a4d86dc32d1fbd16dcfa76b8237ce4cbbacb",
    "fm-mnist/euler/4/1.5": "eab9e2f13356486ef1eaed6e2fbb88b7081bb000fa527f1bd28b38754a21c4d6",
    "fm-mnist/heun/4/1.0": "87356be7370c647279f930a06236582dfb64f63e14509a395c7cb6fecced1b16",
    "fm-mnist/heun/4/1.5": "b808dd09b2f457ad245ce9a05544eb46c1958462b263e25b167454a3ffbd81c6",
    "meanflow-mnist/euler/1/None": "ace83cf5ace7e3eec170a43fac4ee2c7f4d9a304985b6d862e08fdd69c3e61dd",
    "meanflow-mnist/euler/2/None": "5db397e8d02d586545dc25d1604f1e916f7d3721d41cf6368c0268936bdd364a",
    "meanflow-mnist/euler/3/None": "486c25357d836cd59f0c677a257e96c4fad2f11969761c3230c5cf8c3c75ce86",
    "meanflow-mnist/euler/4/None": "cacbd2d55717638020c4e40ac067284aa4f0f813c5ba35a292b0ece03fd6364f",
    "student-mnist/euler/1/None": "782233d831a1bd031b04b801bea771b13db3274557961f4a709f1b66163ae98d",
    "student-mnist/euler/2/None": "b98674ec23555a4a39073a6b60416884f6d346647006ae44c4d47235d94b2f29",
    "student-mnist/euler/3/None": "da3178b7ea51cffe129427385f9e29570711c89c90e1dc3ac3ee54e1eae9b147",
    "student-mnist/euler/4/None": "b6cca4ae7217f23473ec8f74f92f1b13387d58bd3c47c627fa7e57712c28b71c",
    "tiny-sit/euler/3/1.5": "882dcd2b660208bb7a178cb9870077f43a816d747ac56664ad3766224d37e1aa",
    "tiny-sit/heun/3/1.5": "f20768a9c0e2fe7aa988369a15f30fc60682a6f430304ada1a1f40378bab307d",
    "tiny-sit/dopri5/2/1.5": "05731accf53c1658fc4d588fc1174e656913dd5809d07be0d94e7517940e6187",
    "tiny-rae/euler/3/2.0": "0e37db69ab8a8d3ec8e5769bdba7a0b4f1bca0876be0b6ea9eb800b430ece3b6",
    "tiny-soflow/renoise/1/None": "3bc1efc36d062d245f371c7e368eeaf4a744d367766f54296fd0d3f57a262556",
    "tiny-soflow/renoise/3/None": "97da66f33dc75ffea65252b1fb12a6b7e6c620b7e3bd716f27924966bde31997",
    "tiny-meanflow_latent/euler/3/None": "1dfdd5ebc13490b926e99908f96e8528d61231d233ce36e156257a92a3621ec7",
    "tiny-imf/euler/3/4.0": "35fe54d510b2b039722f0f97d0c323d95b24c9384116deb02c85ef402de12248",
    "tiny-instaflow/euler/1/0.0": "d72a2d7fb60e9d4f1712dc62cef05e097d0be59cf798433b53eea85d83f814b4",
    "tiny-instaflow/euler/3/1.5": "43f7ec3b0c681fc5d57a5187acc5fcefeff322cba8ef63f53ba81b15f4085603",}
CARDS = ("fm-mnist", "meanflow-mnist", "student-mnist")


def _digest(adapter: Adapter, settings: SamplerSettings, n: int) -> str:
    caps = adapter.capabilities
    requests = [SampleRequest(index=i, seed=1000 + i, label=i % caps.num_classes if caps.num_classes else None,
                              prompt=None if caps.conditioning == "class" else "a cat", settings=settings)
                for i in range(n)]
    h = hashlib.sha256()
    for out in adapter.sample(requests):
        h.update(out.image.tobytes())
        h.update(str(out.nfe).encode())
    return h.hexdigest()


def _adapter(source: str) -> Adapter:
    if source.startswith("tiny-"):
        return discover()[source.removeprefix("tiny-")].tiny()
    card = load_card(source)
    adapter = discover()[card.family](card)
    adapter.load("cpu")
    return adapter


def _digests() -> dict[str, str]:
    adapters: dict[str, Adapter] = {}
    found = {}
    for key in PINNED:
        source, sampler, steps, cfg = key.split("/")
        if source not in adapters:
            adapters[source] = _adapter(source)
        adapter = adapters[source]
        settings = SamplerSettings(steps=int(steps), cfg=None if cfg == "None" else float(cfg), sampler=sampler)
        found[key] = _digest(adapter, settings, 4 if source in CARDS else 2)
    return found


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_family_images_are_byte_identical_to_before_the_shared_samplers(one_thread) -> None:
    found = _digests()
    changed = sorted(k for k in PINNED if found[k] != PINNED[k])
    assert not changed, f"image bytes changed for {changed}"


if __name__ == "__main__":
    torch.set_num_threads(1)
    for key, value in _digests().items():
        sys.stdout.write(f'    "{key}": "{value}",\n')
