"""Cost rows in the tidy results: which metric names are cost (not quality), and the device they name.

Cost rows (written by harness/run/cost_stage.py) share the schema of quality rows. Their ``variant`` reads
``device=<device>; dtype=<dtype>; ...`` so every view can say where a cost was measured and never put two
devices in one column silently. They are never part of MMHM unless asked for by name (--mmhm-metrics).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

# metric -> higher_is_better
COST_METRICS: dict[str, bool] = {
    "latency_ms_b1": False,  # p50 of k timed batch-1 calls, order-statistic 95% CI
    "latency_ms_b1_p95": False,  # p95 of the same calls, order-statistic 95% CI (needs k >= 59)
    "throughput_img_s": True,  # images/s at a stated batch, from the median call time
    "peak_mem_mb": False,  # CUDA max_memory_allocated, or the CPU's peak RSS rise (see the variant)
    "gflops_per_image": False,  # FlopCounterMode on one batch-1 sample: exact, interval = value
}
COST_AXES = {"nfe_mean": "NFE", "latency_ms_b1": "latency p50 (ms, batch 1)", "gflops_per_image": "GFLOPs / image"}


DEVICE_SEP = " @ "  # "latency_ms_b1 @ cpu": a cost column of one device when a table holds several


def base_metric(metric: str) -> str:
    return str(metric).split(DEVICE_SEP)[0]


def is_cost_metric(metric: str) -> bool:
    return base_metric(metric) in COST_METRICS


def cost_order(metrics: Iterable[str]) -> list[str]:
    """Cost metrics in COST_METRICS order (latency first), then by device."""
    names = list(COST_METRICS)
    return sorted(metrics, key=lambda m: (names.index(base_metric(m)), m))


def quality_metrics(metrics: Iterable[str]) -> list[str]:
    return [m for m in metrics if not is_cost_metric(m)]


def cost_variant(device: str, **details: object) -> str:
    """``device=cpu; dtype=float32; k=64``: the device first, then what else the number depends on."""
    return "; ".join([f"device={device}", *(f"{k}={v}" for k, v in details.items())])


def device_of(variant: str) -> str:
    """The device a cost row's variant names ('' for a variant without one)."""
    head = str(variant).split(";")[0].strip()
    return head.removeprefix("device=") if head.startswith("device=") else ""


def cost_devices(rows: pd.DataFrame) -> list[str]:
    """The devices the cost rows of ``rows`` were measured on, sorted."""
    cost = rows[rows.metric.map(is_cost_metric)]
    return sorted({device_of(v) for v in cost.variant})


def split_cost_devices(rows: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Rows whose cost metrics come from one device, unchanged; from several, each cost metric renamed
    ``<metric> @ <device>`` (one column per device, never one column mixing them) and a note saying so."""
    devices = cost_devices(rows)
    if len(devices) <= 1:
        return rows
    cost = rows.metric.map(is_cost_metric)
    renamed = [f"{m}{DEVICE_SEP}{device_of(v)}" if c else m
               for m, v, c in zip(rows.metric, rows.variant, cost, strict=True)]
    notes.append(f"Cost rows come from {len(devices)} devices ({', '.join(devices)}): each device has its own "
                 f"columns (`metric @ device`); costs measured on different devices are not comparable.")
    return rows.assign(metric=renamed)


def cost_device_note(rows: pd.DataFrame) -> str:
    """What every view with cost columns says: where they were measured and how their intervals are made."""
    cost = rows[rows.metric.map(is_cost_metric)]
    latency = cost[cost.metric.map(base_metric) == "latency_ms_b1"]
    how = f" ({latency.variant.iloc[0].split(';', 1)[1].strip()})" if not latency.empty else ""
    return (f"Cost columns measured on {', '.join(cost_devices(rows)) or 'an unnamed device'}{how}: latency p50/p95 "
            f"of k batch-1 calls after warm-up with distribution-free order-statistic 95% intervals, throughput at "
            f"the stated batch, peak memory, FLOPs per image exact (FlopCounterMode); docs/metrics.md. They are not "
            f"part of MMHM unless named with --mmhm-metrics.")
