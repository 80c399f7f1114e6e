"""The cost stage: one cell's latency, throughput, peak memory and FLOPs, measured under controlled conditions
(its own calls, not the generation batches), cached as JSON and turned into tidy metric rows.

Entry points (the runner and the executors call these): :func:`cost_task` (a picklable :class:`CostTask` naming
a planned cell directory → its rows; what an executor runs), :func:`measure_cell` (a cell + a device → a
:class:`CostRecord`, cached by cell id, device, dtype, batch, timing plan, threads and harness version) and
:func:`cost_rows` (a record → ``MetricRow``s). ``harness cost CARD`` measures a card on its own. Methods and
intervals: harness/run/cost_timing.py and docs/metrics.md ("Cost rows").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from harness import __version__
from harness.errors import HarnessError
from harness.hashing import digest
from harness.models.adapters import Adapter, get_adapter_class
from harness.plan.cost import model_key
from harness.plan.real_floor import REAL_FAMILY
from harness.reports.cost_columns import COST_METRICS, cost_variant
from harness.run.cost_timing import PeakRss, environment, interleaved_calls, quantile_interval
from harness.run.generate import sample_seed
from harness.store import atomic_write_json, read_cell
from harness.types import Cell, MetricRow, SampleRequest

DEFAULT_WARMUP = 3
DEFAULT_K = 64  # >= 59: the fewest calls that give p95 a 95% order-statistic interval
DEFAULT_THROUGHPUT_CALLS = 8  # >= 6: the fewest that give the median call a 95% interval
# How records are measured; part of the cache key, so records of an older method are measured again.
# v2: sample() stopped rebuilding a throwaway U-Net per call, which earlier records counted as latency.
MEASUREMENT = "v2: timed calls round-robin over the group; CPU peak = network bytes + RSS rise"
PROBE_PROMPT = "a photograph of a red bicycle leaning against a brick wall"


@dataclass(frozen=True)
class CostRecord:
    """One cell's measured cost on one device. Times in ms, memory in MiB (2^20 bytes), FLOPs in GFLOPs."""

    cell_id: str
    model: str
    device: str  # "cpu", or the GPU's name
    dtype: str
    nfe: int
    warmup: int
    k: int
    latency_ms: tuple[float, ...]  # the k timed batch-1 calls, in call order
    p50: dict[str, Any]  # {value, low, high, coverage}: harness.run.cost_timing.quantile_interval
    p95: dict[str, Any]
    batch: int
    throughput_calls: int
    throughput: dict[str, Any]  # images/s at ``batch``: {value, low, high, coverage} from the median call
    peak_mem_mb: float
    peak_mem_kind: str  # "cuda_max_allocated" | "weights+cpu_rss_rise" | "weights+cpu_maxrss_rise"
    gflops_per_image: float
    gflops_components: dict[str, float]  # per component the adapter exposes (+ "other"), per image
    env: dict[str, Any]
    interleaved: int = 1  # cells whose timed calls went round-robin with this one's (itself included)
    harness_version: str = __version__
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def summary(self) -> str:
        def ci(stat: dict[str, Any], spec: str) -> str:
            if stat["low"] is None:
                return f"{stat['value']:{spec}} (no 95% interval from this many calls)"
            return f"{stat['value']:{spec}} [{stat['low']:{spec}}, {stat['high']:{spec}}]"

        parts = ", ".join(f"{k} {v:.4g}" for k, v in self.gflops_components.items())
        env = ", ".join(f"{k}={v}" for k, v in self.env.items() if v != "")
        return "\n".join([
            f"{self.model} measured on {self.device} ({self.dtype}); NFE {self.nfe}",
            f"  latency (batch 1, {self.warmup} warm-up + k={self.k} timed calls): p50 {ci(self.p50, '.3f')} ms, "
            f"p95 {ci(self.p95, '.3f')} ms",
            f"  throughput (batch {self.batch}, {self.throughput_calls} calls): {ci(self.throughput, '.4g')} img/s",
            f"  peak memory: {self.peak_mem_mb:.1f} MiB ({self.peak_mem_kind})",
            f"  FLOPs per image: {self.gflops_per_image:.6g} GFLOPs" + (f" ({parts})" if parts else ""),
            f"  env: {env}"])


def _quantile(ms: list[float], q: float) -> dict[str, Any]:
    est = quantile_interval(ms, q)
    return {"value": est.value, "low": est.low, "high": est.high, "coverage": est.coverage, "ranks": list(est.ranks)}


def probe_requests(cell: Cell, count: int, capabilities: Any) -> list[SampleRequest]:
    """``count`` requests of the cell's settings with the cell's per-index seeds; cost does not depend on which
    class or prompt is asked, so labels cycle through the classes and text models get one fixed prompt."""
    classes = capabilities.num_classes or 1
    return [SampleRequest(index=i, seed=sample_seed(cell.seed, cell.dataset.id, i), settings=cell.settings,
                          label=i % classes if capabilities.conditioning == "class" else None,
                          prompt=PROBE_PROMPT if capabilities.conditioning == "text" else None)
            for i in range(count)]


def components_of(adapter: Adapter) -> dict[str, torch.nn.Module]:
    """The networks an adapter runs, by name: its ``cost_components()`` if it has one, else a diffusers
    pipeline's module components (text encoders, denoiser, VAE), else its ``net`` as the denoiser."""
    own = getattr(adapter, "cost_components", None)
    if callable(own):
        return dict(own())
    pipe = getattr(adapter, "pipe", None)
    if pipe is not None and isinstance(getattr(pipe, "components", None), dict):
        return {k: m for k, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    net = getattr(adapter, "net", None)
    return {"denoiser": net} if isinstance(net, torch.nn.Module) else {}


def _mkldnn_conv_flop(x_shape, w_shape, _bias, _padding, _stride, _dilation, _groups, *args, out_shape=None,
                      **kwargs) -> int:
    """aten.mkldnn_convolution (the CPU conv the MNIST U-Net calls directly) counted like aten.convolution:
    FlopCounterMode's registry does not list it."""
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(x_shape, w_shape, out_shape)


def count_flops(adapter: Adapter, requests: list[SampleRequest]) -> tuple[int, dict[str, int], int]:
    """(total FLOPs, FLOPs per component, NFE) of one ``adapter.sample(requests)`` call, from FlopCounterMode
    (2 per multiply-add of matmuls, convolutions and attention; elementwise ops, norms and biases uncounted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False,
                              custom_mapping={torch.ops.aten.mkldnn_convolution: _mkldnn_conv_flop})
    parts: dict[str, int] = {}
    depth: dict[str, int] = {}
    start: dict[str, int] = {}
    handles, seen = [], set()
    for name, component in components_of(adapter).items():
        def pre(_m, _a, name=name):  # only the outermost call of a component counts (no double counting)
            depth[name] = depth.get(name, 0) + 1
            if depth[name] == 1:
                start[name] = counter.get_total_flops()

        def post(_m, _a, _o, name=name):
            depth[name] -= 1
            if depth[name] == 0:
                parts[name] = parts.get(name, 0) + counter.get_total_flops() - start[name]

        # every submodule, not just the component: a VAE's decode() bypasses its own forward but calls its decoder
        for module in component.modules():
            if id(module) not in seen:  # a module shared by two components counts for the first only
                seen.add(id(module))
                handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with counter:
            outputs = adapter.sample(requests)
    finally:
        for h in handles:
            h.remove()
    total = counter.get_total_flops()
    if parts and total > sum(parts.values()):
        parts["other"] = total - sum(parts.values())
    return total, parts, int(outputs[0].nfe)


def _sync(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return lambda: torch.cuda.synchronize(torch.device(device))
    return lambda: None


def cost_key(cell: Cell, device: str, batch: int, warmup: int, k: int, throughput_calls: int) -> str:
    """The cache key: cell, device (+ GPU name), dtype, batch, timing plan, threads and harness version."""
    env = environment(device)
    return digest({"cell": cell.cell_id, "device": device, "gpu": env["gpu"], "dtype": cell.model.dtype,
                   "method": MEASUREMENT,
                   "batch": batch, "warmup": warmup, "k": k, "throughput_calls": throughput_calls,
                   "threads": env["threads"], "version": __version__}, length=24)


def cost_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "cost" / f"{key}.json"


def read_record(path: Path) -> CostRecord:
    try:
        raw = json.loads(Path(path).read_text())
        raw["latency_ms"] = tuple(raw["latency_ms"])
        return CostRecord(**raw)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise HarnessError(f"{path}: damaged cost record ({type(e).__name__}: {e}); delete it to re-measure") from None


def _check_plan(warmup: int, k: int, batch: int, throughput_calls: int) -> None:
    for name, value, lowest in (("warmup", warmup, 0), ("k", k, 1), ("batch", batch, 1),
                                ("throughput_calls", throughput_calls, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise HarnessError(f"cost stage: {name}={value!r}; expected an integer >= {lowest}")


def measure_cell(cell: Cell, cache_dir: Path | None, device: str = "cpu", batch: int = 16,
                 warmup: int = DEFAULT_WARMUP, k: int = DEFAULT_K, throughput_calls: int = DEFAULT_THROUGHPUT_CALLS,
                 adapter: Adapter | None = None, clock: Any = None) -> CostRecord:
    """One cell's record (:func:`measure_cells` of that cell alone). ``adapter``: an already loaded one (else
    loaded here); ``clock``: tests only."""
    adapters = {model_key(cell.model): adapter} if adapter is not None else None
    return measure_cells([cell], cache_dir, device, batch, warmup, k, throughput_calls, adapters, clock)[0]


def measure_cells(cells: list[Cell], cache_dir: Path | None, device: str = "cpu", batch: int = 16,
                  warmup: int = DEFAULT_WARMUP, k: int = DEFAULT_K, throughput_calls: int = DEFAULT_THROUGHPUT_CALLS,
                  adapters: dict[str, Adapter] | None = None, clock: Any = None) -> list[CostRecord]:
    """Measure ``cells`` on ``device`` together (cached records are read, not measured), records in cell order.

    Per cell: one batch-1 FLOP-counting call and ``warmup`` untimed calls; then the ``k`` timed batch-1 calls go
    round-robin over the cells (cell A's call 1, cell B's call 1, ..., cell A's call 2, ...), and so do the
    ``throughput_calls`` timed calls at ``batch`` (after one untimed each): load that drifts during the
    measurement then falls on every cell alike instead of showing as a difference between them
    (bench/cost_repeatability.py --interleaved). Last, per cell, one call at ``batch`` with the peak memory
    watched. ``adapters``: loaded adapters by model key (the others are loaded here, once per model)."""
    _check_plan(warmup, k, batch, throughput_calls)
    paths = [cost_path(cache_dir, cost_key(c, device, batch, warmup, k, throughput_calls))
             if cache_dir is not None else None for c in cells]
    records: list[CostRecord | None] = [read_record(p) if p is not None and p.exists() else None for p in paths]
    todo = [i for i, r in enumerate(records) if r is None]
    loaded = dict(adapters or {})
    for i in todo:
        key = model_key(cells[i].model)
        if key not in loaded:
            loaded[key] = get_adapter_class(cells[i].model.family)(cells[i].model)
            loaded[key].load(device)
    adapter_of = {i: loaded[model_key(cells[i].model)] for i in todo}
    one = {i: probe_requests(cells[i], 1, adapter_of[i].capabilities) for i in todo}
    many = {i: probe_requests(cells[i], batch, adapter_of[i].capabilities) for i in todo}
    sync = _sync(device)
    timing = {} if clock is None else {"clock": clock}
    counted = {i: count_flops(adapter_of[i], one[i]) for i in todo}
    ms = interleaved_calls({i: (lambda i=i: adapter_of[i].sample(one[i])) for i in todo}, warmup, k, sync, **timing)
    calls = interleaved_calls({i: (lambda i=i: adapter_of[i].sample(many[i])) for i in todo}, 1, throughput_calls,
                              sync, **timing)
    env = environment(device)
    for i in todo:
        peak, kind = _peak_memory(adapter_of[i], lambda i=i: adapter_of[i].sample(many[i]), device, sync)
        flops, parts, nfe = counted[i]
        latency = [s * 1e3 for s in ms[i]]
        median = _quantile(calls[i], 0.5)  # images/s is monotone in call time: the median's interval maps over
        throughput = {"value": batch / median["value"], "coverage": median["coverage"],
                      "low": None if median["high"] is None else batch / median["high"],
                      "high": None if median["low"] is None else batch / median["low"]}
        records[i] = CostRecord(
            cell_id=cells[i].cell_id, model=cells[i].model.name, device=env["gpu"] or "cpu",
            dtype=cells[i].model.dtype, nfe=nfe, warmup=warmup, k=k, latency_ms=tuple(latency),
            p50=_quantile(latency, 0.5), p95=_quantile(latency, 0.95), batch=batch,
            throughput_calls=throughput_calls, throughput=throughput, peak_mem_mb=peak, peak_mem_kind=kind,
            gflops_per_image=flops / 1e9, gflops_components={n: f / 1e9 for n, f in parts.items()}, env=env,
            interleaved=len(todo))
        if paths[i] is not None:
            atomic_write_json(paths[i], asdict(records[i]))
    return [r for r in records if r is not None]


def network_bytes(adapter: Adapter) -> int:
    """Bytes of the parameters and buffers of the networks an adapter runs (each tensor once)."""
    seen: set[int] = set()
    total = 0
    for component in components_of(adapter).values():
        for tensor in [*component.parameters(), *component.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def _peak_memory(adapter: Adapter, call: Callable[[], Any], device: str, sync: Callable[[], None]
                 ) -> tuple[float, str]:
    """(MiB, kind) of one call: CUDA's max allocated (weights included), else the networks' weights plus the
    process's resident-memory rise during the call, sampled by a thread that runs during this call only (never
    during the timed ones). The rise alone read one 4 KiB page for small models: activations fit in memory the
    allocator kept from earlier calls, so on CPU the activation part is a lower bound."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    with PeakRss() as rss:
        call()
        sync()
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20, "cuda_max_allocated"
    return (network_bytes(adapter) + max(rss.bytes, 0)) / 2**20, f"weights+{rss.kind}"


def cost_rows(record: CostRecord, cell: Cell, run: str, guidance: str, nfe_mean: float | None = None,
              sec_per_image: float | None = None) -> list[MetricRow]:
    """The record as tidy rows (metrics of harness.reports.cost_columns.COST_METRICS), ``variant`` naming the
    device first. ``nfe_mean``/``sec_per_image``: the cell's generation figures when the caller has them (so
    its rows agree), else the record's NFE and batch-1 p50."""
    threads = record.env.get("threads")
    timing = {"dtype": record.dtype, "batch": 1, "warmup": record.warmup, "k": record.k, "threads": threads,
              "ci": "order statistic"}
    batched = {"dtype": record.dtype, "batch": record.batch, "threads": threads}
    values = {
        "latency_ms_b1": (record.p50, cost_variant(record.device, **timing)),
        "latency_ms_b1_p95": (record.p95, cost_variant(record.device, **timing)),
        "throughput_img_s": (record.throughput, cost_variant(record.device, **batched, calls=record.throughput_calls,
                                                             ci="order statistic of the median call")),
        "peak_mem_mb": ({"value": record.peak_mem_mb, "low": None, "high": None},
                        cost_variant(record.device, **batched, kind=record.peak_mem_kind)),
        "gflops_per_image": ({"value": record.gflops_per_image, "low": record.gflops_per_image,
                              "high": record.gflops_per_image},
                             cost_variant(record.device, dtype=record.dtype, batch=1, counter="FlopCounterMode")),
    }
    return [MetricRow(
        run=run, cell_id=cell.cell_id, model=cell.model.name, family=cell.model.family, steps=cell.settings.steps,
        cfg=cell.settings.cfg, guidance=guidance, dataset=cell.dataset.id, n=cell.n,
        seed_policy=f"sha256(seed={cell.seed},dataset,index)", metric=metric, variant=variant,
        value=float(stat["value"]), ci_low=stat["low"], ci_high=stat["high"], higher_is_better=COST_METRICS[metric],
        nfe_mean=float(record.nfe if nfe_mean is None else nfe_mean),
        sec_per_image=float(record.p50["value"] / 1e3 if sec_per_image is None else sec_per_image),
        extractor_id="", reference_id="", harness_version=record.harness_version, created_at=record.created_at)
        for metric, (stat, variant) in values.items()]


@dataclass(frozen=True)
class CostTask:
    """Picklable descriptor of one cell's cost stage (:func:`cost_task`; the stage runs them in
    :class:`CostGroupTask`s). Run it on the device kind the cell generates on, one at a time per device:
    concurrent work skews the timings."""

    cell_dir: str  # a planned cell directory (cell.json); no images are needed
    cache_dir: str
    run: str
    device: str = "cpu"
    batch: int = 16  # the protocol's batch_size
    warmup: int = DEFAULT_WARMUP
    k: int = DEFAULT_K
    throughput_calls: int = DEFAULT_THROUGHPUT_CALLS
    interleave: str = "model"  # which cells are measured together (harness/plan/schema.py COST_INTERLEAVE)
    out: str = ""  # a run's cost/<cell id>.json: the rows for its collect step (written by run_cost_group)

    @property
    def label(self) -> str:
        return f"cost/{Path(self.cell_dir).name}"

    def plan(self) -> dict[str, Any]:
        """What the rows depend on besides the cell: a saved file with another plan is measured again."""
        return {"device": self.device, "batch": self.batch, "warmup": self.warmup, "k": self.k,
                "throughput_calls": self.throughput_calls, "interleave": self.interleave}


@dataclass(frozen=True)
class CostGroupTask:
    """Cells measured together in one process, their timed calls round-robin (:func:`measure_cells`): the cells
    of one model, or of the whole run (``interleave``)."""

    name: str  # the model, or "run"
    tasks: tuple[CostTask, ...]

    @property
    def label(self) -> str:
        return f"cost/{self.name}"


def _rows_of(tasks: tuple[CostTask, ...] | list[CostTask]) -> list[list[MetricRow]]:
    """Each task's cost rows, its cells measured together; [] for a real-data floor cell (it runs no network)."""
    cells = [read_cell(Path(t.cell_dir)) for t in tasks]
    models = [i for i, c in enumerate(cells) if c.model.family != REAL_FAMILY]
    out: list[list[MetricRow]] = [[] for _ in tasks]
    if not models:
        return out
    t = tasks[models[0]]
    records = measure_cells([cells[i] for i in models], Path(t.cache_dir), t.device, batch=t.batch,
                            warmup=t.warmup, k=t.k, throughput_calls=t.throughput_calls)
    for i, record in zip(models, records, strict=True):
        guidance = get_adapter_class(cells[i].model.family).capabilities_for(cells[i].model).guidance
        out[i] = cost_rows(record, cells[i], tasks[i].run, guidance)
    return out


def cost_task(task: CostTask) -> list[MetricRow]:
    """The cost rows of one planned cell (measured alone, or read from the cache)."""
    return _rows_of([task])[0]


def saved_cost_rows(task: CostTask) -> list[MetricRow] | None:
    """The rows a run's cost stage saved for this task's cell under the same timing plan, else None."""
    path = Path(task.out)
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        return [MetricRow(**r) for r in saved["rows"]] if saved["plan"] == task.plan() else None
    except (ValueError, TypeError, KeyError):
        return None  # damaged: measured (or read from the cache) again


def run_cost_group(group: CostGroupTask) -> list[str]:
    """The executors' entry point: the group's cost rows (measured together, or cached), each cell's saved where
    collect reads them."""
    for task, rows in zip(group.tasks, _rows_of(group.tasks), strict=True):
        atomic_write_json(Path(task.out), {"plan": task.plan(), "rows": [asdict(r) for r in rows]})
    return [t.out for t in group.tasks]
