"""The cost stage (harness/run/cost_stage.py): warm-up excluded from the timed set, valid quantile intervals,
FLOPs equal to a count by hand from the MNIST U-Net's layer shapes (scaling exactly with NFE and CFG), the
cache, and tidy rows. No timing assertions: a fake clock stands in for time where times are compared."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binom

from harness import SAMPLING_VERSION
from harness.errors import HarnessError
from harness.metrics.bootstrap import covers
from harness.models.adapters import get_adapter_class
from harness.models.cards import load_card
from harness.reports.cost_columns import COST_METRICS, device_of
from harness.reports.results import COLUMNS, rows_to_frame
from harness.run.cost_stage import cost_rows, count_flops, measure_cell, probe_requests
from harness.run.cost_timing import min_calls, quantile_interval
from harness.types import Cell, DatasetRef, SamplerSettings

REPO_SMOKE = str(Path(__file__).resolve().parents[2] / "protocols" / "smoke.yaml")


def _cell(card: str = "fm-mnist", steps: int = 2, cfg: float | None = 1.5, sampler: str = "euler") -> Cell:
    return Cell(load_card(card), SamplerSettings(steps, cfg, sampler), DatasetRef("cost-probe", "probe", 10),
                seed=0, n=4, sampling_version=SAMPLING_VERSION)


@pytest.fixture(scope="module")
def mnist_adapter():
    card = load_card("fm-mnist")
    adapter = get_adapter_class(card.family)(card)
    adapter.load("cpu")
    return adapter


class FakeClock:
    """Time that moves only when the instrumented adapter samples: call i lasts 1000 + i seconds."""

    def __init__(self) -> None:
        self.now, self.calls = 0.0, 0

    def __call__(self) -> float:
        return self.now

    def instrument(self, adapter):
        real = adapter.sample

        def sample(requests):
            out = real(requests)
            self.now += 1000.0 + self.calls
            self.calls += 1
            return out

        adapter.sample = sample
        return adapter


def test_warmup_calls_are_not_in_the_timed_set():
    adapter = get_adapter_class("flow_matching").tiny()
    clock = FakeClock()
    clock.instrument(adapter)
    cell = Cell(adapter.card, SamplerSettings(1, 1.0), DatasetRef("cost-probe", "probe", 10), 0, 4, SAMPLING_VERSION)
    record = measure_cell(cell, None, batch=2, warmup=3, k=5, throughput_calls=6, adapter=adapter, clock=clock)
    # call 0 counts FLOPs, calls 1-3 warm up, 4-8 are timed, 9 warms up the batch, 10-15 are timed at batch 2,
    # 16 watches the peak memory (untimed)
    assert clock.calls == 1 + 3 + 5 + 1 + 6 + 1
    assert record.latency_ms == tuple((1000.0 + i) * 1e3 for i in range(4, 9))
    assert record.k == 5 and record.warmup == 3
    median_call = sorted(1000.0 + i for i in range(10, 16))[2]  # ⌈0.5 · 6⌉ = 3rd order statistic
    assert record.throughput["value"] == pytest.approx(2 / median_call)


def test_quantile_interval_is_exact_order_statistics_and_contains_its_value():
    xs = list(np.random.default_rng(0).exponential(size=101))
    for q in (0.5, 0.95):
        est = quantile_interval(xs, q)
        assert est.value == sorted(xs)[math.ceil(q * 101) - 1]
        assert est.low <= est.value <= est.high
        lo, hi = est.ranks  # exact binomial coverage of [x_(lo), x_(hi)]
        assert est.coverage == pytest.approx(binom.cdf(hi - 1, 101, q) - binom.cdf(lo - 1, 101, q))
        assert est.coverage >= 0.95
    assert min_calls(0.5) == 6 and min_calls(0.95) == 59
    short = quantile_interval(xs[:20], 0.95)  # too few calls: no interval, never a shorter invalid one
    assert short.low is None and short.high is None and short.coverage < 0.95


def test_quantile_interval_covers_at_least_95_percent_whatever_the_distribution():
    rng = np.random.default_rng(1)
    truth = {0.5: math.log(2), 0.95: -math.log(0.05)}  # exponential(1) quantiles
    for q, k in ((0.5, 15), (0.95, 80)):
        hits = 0
        for _ in range(2000):
            est = quantile_interval(list(rng.exponential(size=k)), q)
            hits += est.low <= truth[q] <= est.high
        assert hits / 2000 >= 0.93  # nominal ≥ 0.95; 2000 draws leave ±0.01 of Monte-Carlo noise


def _linear_conv_flops(net: torch.nn.Module, run) -> tuple[int, int]:
    """(conv FLOPs, linear FLOPs) of ``run()``, by hand from each layer's shapes seen by forward hooks:
    a conv is 2·(Cin/groups)·Cout·kh·kw·Hout·Wout per image, a linear 2·in·out per row (no biases, norms or
    elementwise ops: FlopCounterMode's convention)."""
    totals = {"conv": 0, "linear": 0}

    def conv_hook(m, args, out):
        b, c_out, h, w = out.shape
        totals["conv"] += 2 * (m.in_channels // m.groups) * c_out * m.kernel_size[0] * m.kernel_size[1] * h * w * b

    def linear_hook(m, args, out):
        rows = math.prod(args[0].shape[:-1])
        totals["linear"] += 2 * m.in_features * m.out_features * rows

    handles = [m.register_forward_hook(conv_hook if isinstance(m, torch.nn.Conv2d) else linear_hook)
               for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return totals["conv"], totals["linear"]


def _one_forward(net, batch: int) -> tuple[int, int]:
    x = torch.zeros(batch, 1, 28, 28)
    y = torch.zeros(batch, dtype=torch.long)
    with torch.inference_mode():
        return _linear_conv_flops(net, lambda: net(x, torch.tensor(0.5), y))


@pytest.mark.parametrize("steps, cfg, sampler", [(1, 1.0, "euler"), (4, 1.0, "euler"), (4, 1.5, "euler"),
                                                 (2, 3.0, "heun")])
def test_flops_of_the_mnist_flow_model_equal_a_count_by_hand(mnist_adapter, steps, cfg, sampler):
    cell = _cell(steps=steps, cfg=cfg, sampler=sampler)
    total, parts, nfe = count_flops(mnist_adapter, probe_requests(cell, 1, mnist_adapter.capabilities))
    evals = steps * (2 if sampler == "heun" else 1)  # network calls; CFG doubles their batch, not their number
    conv, linear = _one_forward(mnist_adapter.net, 2 if cfg != 1.0 else 1)
    assert total == evals * (conv + linear)
    assert parts == {"denoiser": total}
    assert nfe == evals * (2 if cfg != 1.0 else 1)


def test_flops_scale_exactly_with_nfe_and_cfg_doubling(mnist_adapter):
    def flops(steps, cfg, sampler="euler"):
        cell = _cell(steps=steps, cfg=cfg, sampler=sampler)
        return count_flops(mnist_adapter, probe_requests(cell, 1, mnist_adapter.capabilities))[0]

    one = flops(1, 1.0)
    assert [flops(s, 1.0) for s in (2, 4, 8)] == [2 * one, 4 * one, 8 * one]
    assert flops(3, 1.0, "heun") == 6 * one
    conv1, linear1 = _one_forward(mnist_adapter.net, 1)
    conv2, linear2 = _one_forward(mnist_adapter.net, 2)
    # CFG doubles the denoiser batch: every image-path conv doubles exactly; the label-table conditioning
    # (model_zoo/nets/unet.py: a fixed-shape table over all 11 labels per call) does not depend on the batch.
    assert conv2 == 2 * conv1 and linear2 == linear1
    assert flops(4, 1.5) == 4 * (conv2 + linear2) == flops(4, 1.0) + 4 * conv1
    assert flops(4, 1.5) == flops(4, 3.0)  # the guidance weight changes no FLOP


def test_measure_cell_is_cached_and_rows_are_tidy(tmp_path):
    adapter = get_adapter_class("flow_matching").tiny()
    cell = Cell(adapter.card, SamplerSettings(2, 1.5), DatasetRef("cost-probe", "probe", 10), 0, 4, SAMPLING_VERSION)
    record = measure_cell(cell, tmp_path, batch=2, warmup=1, k=6, throughput_calls=6, adapter=adapter)
    assert len(record.latency_ms) == 6 and record.batch == 2 and record.nfe == 4
    assert record.env["threads"] == torch.get_num_threads() and record.env["device"] == "cpu"
    assert record.peak_mem_kind in ("weights+cpu_rss_rise", "weights+cpu_maxrss_rise")
    weights = sum(t.numel() * t.element_size() for t in [*adapter.net.parameters(), *adapter.net.buffers()])
    assert record.peak_mem_mb >= weights / 2**20 > 0.1  # never the one page the RSS rise alone read

    def refuse(requests):
        raise AssertionError("a cached cost record must not sample again")

    adapter.sample = refuse
    again = measure_cell(cell, tmp_path, batch=2, warmup=1, k=6, throughput_calls=6, adapter=adapter)
    assert again == record
    assert len(list((tmp_path / "cost").glob("*.json"))) == 1

    rows = cost_rows(record, cell, "r", "cfg")
    frame = rows_to_frame(rows)
    assert list(frame.columns) == COLUMNS and set(frame.metric) == set(COST_METRICS)
    for r in rows:
        assert device_of(r.variant) == "cpu"
        assert r.higher_is_better == COST_METRICS[r.metric]
        if r.ci_low is not None:
            assert covers(r.value, r.ci_low, r.ci_high)
    by = {r.metric: r for r in rows}
    assert by["gflops_per_image"].ci_low == by["gflops_per_image"].ci_high == by["gflops_per_image"].value
    assert by["latency_ms_b1_p95"].ci_low is None  # k = 6 < 59: no valid p95 interval exists
    assert "k=6" in by["latency_ms_b1"].variant and "batch=2" in by["throughput_img_s"].variant


@pytest.mark.parametrize("bad", [{"k": 0}, {"warmup": -1}, {"batch": 0}, {"throughput_calls": 1.5}])
def test_bad_timing_plans_are_refused_by_name(bad):
    name = next(iter(bad))
    with pytest.raises(HarnessError, match=f"{name}="):
        measure_cell(_cell(card="fm-tiny"), None, **{"batch": 2, "k": 2, **bad})


class _Vae(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.decoder = torch.nn.Linear(8, 32)

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # like diffusers' AutoencoderKL.decode: not forward()
        return self.decoder(z)


class _TwoPartAdapter:
    """Duck-typed adapter exposing components: a text encoder, a denoiser and a VAE reached through decode()."""

    def __init__(self) -> None:
        self.text, self.denoiser, self.vae = torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), _Vae()

    def cost_components(self):
        return {"text_encoder": self.text, "denoiser": self.denoiser, "vae": self.vae}

    def sample(self, requests):
        z = self.text(torch.zeros(1, 4))
        for _ in range(3):
            z = self.denoiser(z)
        extra = torch.zeros(1, 5) @ torch.zeros(5, 7)  # outside every component
        self.vae.decode(z + extra.sum())
        from types import SimpleNamespace

        return [SimpleNamespace(nfe=3)]


def test_flops_are_split_per_component_including_a_vae_decode():
    total, parts, nfe = count_flops(_TwoPartAdapter(), [])
    assert parts == {"text_encoder": 2 * 4 * 8, "denoiser": 3 * 2 * 8 * 8, "vae": 2 * 8 * 32, "other": 2 * 5 * 7}
    assert total == sum(parts.values()) and nfe == 3


def test_cost_task_measures_a_planned_cell_and_its_rows_report(tmp_path):
    import pickle

    from harness.plan.protocol import load_protocol, make_plan
    from harness.reports import results_from_frame, write_results_report
    from harness.run.cost_stage import CostTask, cost_task
    from harness.store import write_cell

    plan = make_plan(load_protocol(REPO_SMOKE, ["models=[fm-tiny]", "steps=[1]", "cfg=[1, 2]"]))
    tasks = [CostTask(str(write_cell(tmp_path / "run", c)), str(tmp_path / "cache"), "run", batch=2, warmup=0, k=6,
                      throughput_calls=6) for c in plan.cells]
    tasks = pickle.loads(pickle.dumps(tasks))  # what an executor ships to a worker
    rows = [r for t in tasks for r in cost_task(t)]
    assert len(rows) == len(plan.cells) * len(COST_METRICS)
    by_cell = {r.cell_id: r for r in rows if r.metric == "gflops_per_image"}
    one, two = (by_cell[c.cell_id].value for c in sorted(plan.cells, key=lambda c: c.settings.cfg))
    assert two > one  # cfg 2 doubles the denoiser batch
    written = write_results_report(results_from_frame(tmp_path / "run", rows_to_frame(rows)), tmp_path / "out")
    assert tmp_path / "out" / "equal_budget.md" in written


def test_flops_per_component_of_a_tiny_diffusers_pipeline():
    adapter = get_adapter_class("sd").tiny()  # diffusers StableDiffusionPipeline with tiny random components

    def parts_at(steps: int) -> tuple[int, dict[str, int]]:
        cell = Cell(adapter.card, SamplerSettings(steps, 7.5), DatasetRef("cost-probe", "probe", None), 0, 1,
                    SAMPLING_VERSION)
        total, parts, _ = count_flops(adapter, probe_requests(cell, 1, adapter.capabilities))
        return total, parts

    total1, one = parts_at(1)
    total2, two = parts_at(2)
    assert set(one) == {"text_encoder", "unet", "vae"} and sum(one.values()) == total1 and total2 == sum(two.values())
    assert min(one.values()) > 0  # the VAE decode (not its forward) is counted under "vae"
    assert two["unet"] == 2 * one["unet"]  # one more denoiser step
    assert two["text_encoder"] == one["text_encoder"] and two["vae"] == one["vae"]  # once per image


def test_cells_measured_together_take_their_timed_calls_in_turn():
    """Round-robin: drift during the measurement falls on every cell alike (bench/cost_repeatability.py)."""
    from harness.plan.cost import model_key
    from harness.run.cost_stage import measure_cells

    adapter = get_adapter_class("flow_matching").tiny()
    clock = FakeClock()
    clock.instrument(adapter)
    a, b = (Cell(adapter.card, SamplerSettings(1, cfg), DatasetRef("cost-probe", "probe", 10), 0, 4, SAMPLING_VERSION)
            for cfg in (1.0, 2.0))
    first, second = measure_cells([a, b], None, batch=2, warmup=1, k=3, throughput_calls=6,
                                  adapters={model_key(adapter.card): adapter}, clock=clock)
    # calls 0-1 count FLOPs, 2-3 warm up, 4-9 alternate a, b (timed), 10-11 warm up the batch, 12-23 alternate at
    # batch 2, 24-25 watch each cell's peak memory
    assert clock.calls == 2 + 2 + 6 + 2 + 12 + 2
    assert first.latency_ms == tuple((1000.0 + i) * 1e3 for i in (4, 6, 8))
    assert second.latency_ms == tuple((1000.0 + i) * 1e3 for i in (5, 7, 9))
    assert first.interleaved == second.interleaved == 2
    assert (first.cell_id, second.cell_id) == (a.cell_id, b.cell_id)
