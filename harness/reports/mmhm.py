"""MMHM (MinMax Harmonic Mean), setting selection and bootstrap CIs — exactly as docs/metrics.md.

MMHM over a declared row set R (one dataset's rows by default) and metrics M:
  lo_m = min over R, hi_m = max over R (or frozen bounds);
  u_m = (hi − v)/(hi − lo) for lower-is-better metrics, (v − lo)/(hi − lo) otherwise; u = 1 when hi == lo;
  MMHM = |M| / Σ_m 1/(ε + u_m), ε = 1e-3.
With the paper's four metrics a row worst on any one of them scores ≤ 4/1000 (the veto). Bounds depend on
R, so every table records which cells defined them; frozen bounds clip u to [0, 1] and warn.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.metrics.bootstrap import centred_replicates, shifted_interval  # noqa: F401 - re-exported for compare
from harness.store import atomic_write_json

PAPER_METRICS = ("fid", "is", "clip_score", "pickscore")
EPS = 1e-3
# FID-like metrics are not the only lower-is-better ones: direction always comes from the rows.
OPTIMA_SHOWN = ("fid", "clip_score", "pickscore")


@dataclass(frozen=True)
class Bounds:
    """Per-metric [lo, hi] and where they came from (cell ids of the rows, or the frozen file)."""

    lo_hi: dict[str, tuple[float, float]]
    higher_is_better: dict[str, bool]
    defined_by: tuple[str, ...] = ()
    frozen_from: str = ""  # the bounds file these were loaded from; "" when computed from the rows

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.lo_hi)

    def save(self, path: Path) -> None:
        """{metric: {min, max, higher_is_better}} plus the cell ids that defined them."""
        atomic_write_json(path, {
            "bounds": {m: {"min": lo, "max": hi, "higher_is_better": self.higher_is_better[m]}
                       for m, (lo, hi) in self.lo_hi.items()},
            "defined_by": list(self.defined_by)})


def load_bounds(path: Path) -> Bounds:
    """Read a frozen bounds file written by :meth:`Bounds.save` (or a bare {metric: {min, max}} mapping)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: cannot read the bounds file ({e})") from e
    table = raw.get("bounds", raw) if isinstance(raw, dict) else None
    if not isinstance(table, dict) or not table:
        raise HarnessError(f"{path}: expected a mapping {{metric: {{min, max}}}}, got {type(raw).__name__}")
    lo_hi, hib = {}, {}
    for metric, entry in table.items():
        if not isinstance(entry, dict) or not {"min", "max"} <= set(entry):
            raise HarnessError(f"{path}: bounds of {metric!r} must have keys min and max, got {entry!r}")
        lo, hi = float(entry["min"]), float(entry["max"])
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            raise HarnessError(f"{path}: bounds of {metric!r} must be finite with min <= max, got [{lo}, {hi}]")
        lo_hi[metric] = (lo, hi)
        if "higher_is_better" in entry:
            hib[metric] = bool(entry["higher_is_better"])
    return Bounds(lo_hi, hib, tuple(raw.get("defined_by", ())), frozen_from=str(path))


def default_metrics(present: Iterable[str]) -> tuple[str, ...]:
    """The paper's {fid, is, clip_score, pickscore} ∩ the metrics present (in the paper's order)."""
    present = set(present)
    return tuple(m for m in PAPER_METRICS if m in present)


def wide_values(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per cell (index cell_id) with a column per metric value; cells missing a metric are dropped."""
    missing = [m for m in metrics if m not in set(frame.metric)]
    if missing:
        raise HarnessError(f"MMHM metrics {missing} are not in the results (present: {sorted(set(frame.metric))})")
    part = frame[frame.metric.isin(metrics)]
    dupes = part[part.duplicated(["cell_id", "metric"], keep=False)]
    if not dupes.empty:
        first = dupes.iloc[0]
        raise HarnessError(f"cell {first.cell_id} has {len(dupes[dupes.cell_id == first.cell_id])} rows of metric "
                           f"{first.metric!r} (runs {sorted(set(dupes.run))}); deduplicate before MMHM")
    wide = part.pivot(index="cell_id", columns="metric", values="value")
    return wide.dropna()[list(metrics)]


def directions(frame: pd.DataFrame, metrics: Sequence[str]) -> dict[str, bool]:
    """higher_is_better per metric, taken from the rows; conflicting rows are an error."""
    out = {}
    for m in metrics:
        flags = set(frame.loc[frame.metric == m, "higher_is_better"].astype(bool))
        if len(flags) != 1:
            raise HarnessError(f"metric {m!r}: rows disagree on higher_is_better ({sorted(flags)})")
        out[m] = flags.pop()
    return out


def bounds_from_rows(frame: pd.DataFrame, metrics: Sequence[str]) -> Bounds:
    """lo/hi per metric over exactly the cells that have every metric (the declared row set)."""
    wide = wide_values(frame, metrics)
    if wide.empty:
        raise HarnessError(f"no cell has all of the MMHM metrics {list(metrics)}")
    lo_hi = {m: (float(wide[m].min()), float(wide[m].max())) for m in metrics}
    return Bounds(lo_hi, directions(frame, metrics), tuple(sorted(wide.index)))


def floor_bounds(rows: pd.DataFrame, floor: pd.DataFrame, metrics: Sequence[str]) -> Bounds:
    """Bounds whose best side is the real-data floor's value (``floor``: one row, a column per metric) and whose
    worst side is the worst of ``rows``. A metric on which no row is worse than the floor gets lo == hi (u = 1
    for every row: the metric no longer separates them); rows better than the floor are clipped to u = 1."""
    hib = directions(rows, metrics)
    wide = wide_values(rows, metrics)
    if wide.empty:
        raise HarnessError(f"no cell has all of the MMHM metrics {list(metrics)}")
    lo_hi = {}
    for m in metrics:
        if m not in floor or pd.isna(floor[m].iloc[0]):
            raise HarnessError(f"--mmhm-best real: the real-data floor has no {m!r} value")
        best = float(floor[m].iloc[0])
        worst = float(wide[m].min() if hib[m] else wide[m].max())
        if (worst >= best) if hib[m] else (worst <= best):
            worst = best
        lo_hi[m] = (min(best, worst), max(best, worst))
    name = ", ".join(str(x) for x in floor.get("model", pd.Series(["?"])).unique())
    return Bounds(lo_hi, hib, tuple(sorted(wide.index)), frozen_from=f"the real-data floor ({name}) as the best bound")


def utilities(values: pd.DataFrame, bounds: Bounds, clip: bool) -> pd.DataFrame:
    """u per metric column of ``values``; u = 1 where hi == lo; clipped to [0, 1] when ``clip``."""
    out = {}
    for m in values.columns:
        lo, hi = bounds.lo_hi[m]
        v = values[m].to_numpy(dtype=np.float64)
        if hi == lo:
            u = np.ones_like(v)
        elif bounds.higher_is_better[m]:
            u = (v - lo) / (hi - lo)
        else:
            u = (hi - v) / (hi - lo)
        out[m] = np.clip(u, 0.0, 1.0) if clip else u
    return pd.DataFrame(out, index=values.index)


def harmonic(u: pd.DataFrame | np.ndarray, eps: float = EPS) -> np.ndarray:
    """k / Σ_m 1/(ε + u_m) along the last axis."""
    arr = np.asarray(u, dtype=np.float64)
    return arr.shape[-1] / np.sum(1.0 / (eps + arr), axis=-1)


@dataclass
class MMHMTable:
    """Per-cell utilities and MMHM for one row set, with the bounds and the metrics used."""

    table: pd.DataFrame  # index cell_id; columns u_<metric>, mmhm (and mmhm_ci_low/high once bootstrapped)
    bounds: Bounds
    metrics: tuple[str, ...]
    dropped: tuple[str, ...] = field(default=())  # cells lacking one of the metrics
    values: pd.DataFrame | None = None  # index cell_id, a column per metric: the values MMHM was computed from


def mmhm(frame: pd.DataFrame, metrics: Sequence[str] | None = None, bounds: Bounds | None = None,
         eps: float = EPS) -> MMHMTable:
    """MMHM of every cell of ``frame`` (one row set; callers split by dataset).

    ``metrics`` defaults to :func:`default_metrics`. With ``bounds`` given (frozen), u is clipped to [0, 1]
    and a warning says how many values fell outside; without, bounds come from these rows."""
    metrics = tuple(metrics) if metrics else default_metrics(frame.metric)
    if not metrics:
        raise HarnessError(f"none of the paper's MMHM metrics {PAPER_METRICS} is in the results "
                           f"(present: {sorted(set(frame.metric))}); name the metrics to combine")
    values = wide_values(frame, metrics)
    dropped = tuple(sorted(set(frame.cell_id) - set(values.index)))
    if bounds is None:
        bounds = bounds_from_rows(frame, metrics)
        u = utilities(values, bounds, clip=False)
    else:
        absent = [m for m in metrics if m not in bounds.lo_hi]
        if absent:
            raise HarnessError(f"{bounds.frozen_from or 'bounds'}: no bounds for metrics {absent}")
        rows_say = directions(frame, metrics)
        clash = [m for m in metrics if bounds.higher_is_better.get(m, rows_say[m]) != rows_say[m]]
        if clash:
            raise HarnessError(f"{bounds.frozen_from or 'bounds'}: higher_is_better of {clash} disagrees with the "
                               "results rows; these bounds were made for a different metric definition")
        bounds = Bounds({m: bounds.lo_hi[m] for m in metrics}, rows_say, bounds.defined_by, bounds.frozen_from)
        raw = utilities(values, bounds, clip=False)
        outside = int(((raw < 0) | (raw > 1)).to_numpy().sum())
        if outside:
            warnings.warn(f"MMHM under reused bounds ({bounds.frozen_from or 'frozen'}): {outside} metric "
                          f"value(s) fall outside [min, max]; their u was clipped to [0, 1]", stacklevel=2)
        u = raw.clip(0.0, 1.0)
    table = u.add_prefix("u_")
    table["mmhm"] = harmonic(u, eps)
    return MMHMTable(table, bounds, metrics, dropped, values)


def select(frame: pd.DataFrame, scores: MMHMTable) -> pd.DataFrame:
    """Per model: the MMHM-argmax setting beside the FID-, CLIP- and Pick-optimal ones (those present).

    One row per (model, criterion): criterion, steps, cfg, cell_id, mmhm and each MMHM metric's value.
    Ties go to the fewest steps, then the lowest cfg (deterministic)."""
    cells = frame.drop_duplicates("cell_id").set_index("cell_id")[["model", "steps", "cfg"]]
    wide = frame.pivot_table(index="cell_id", columns="metric", values="value", aggfunc="first")
    info = cells.join(scores.table[["mmhm"]], how="inner").join(wide)
    info = info.assign(_cfg=info.cfg.fillna(-np.inf)).sort_values(["model", "steps", "_cfg"])
    hib = directions(frame, [m for m in OPTIMA_SHOWN if m in wide.columns])
    rows = []
    for model, part in info.groupby("model", sort=True):
        criteria = [("MMHM", part.mmhm.idxmax())]
        for m, higher in hib.items():
            col = part[m].dropna()
            if not col.empty:
                criteria.append((f"{m}-optimal", col.idxmax() if higher else col.idxmin()))
        for criterion, cell_id in criteria:
            r = part.loc[cell_id]
            rows.append({"model": model, "criterion": criterion, "steps": int(r.steps), "cfg": r.cfg,
                         "cell_id": cell_id, "mmhm": r.mmhm, **{m: r[m] for m in scores.metrics}})
    return pd.DataFrame(rows)


# ---- bootstrap replicates (contract: <run_dir>/bootstrap/<cell_id>/<metric>.npy, float64, shape (B,)) ----

def replicate_path(run_dir: Path, cell_id: str, metric: str) -> Path:
    return Path(run_dir) / "bootstrap" / cell_id / f"{metric}.npy"


def load_replicates(run_dir: Path, cell_id: str, metric: str) -> np.ndarray | None:
    """The B bootstrap replicates of one cell's metric, or None when the metric engine saved none."""
    path = replicate_path(run_dir, cell_id, metric)
    if not path.exists():
        return None
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 1 or arr.size < 2 or not np.isfinite(arr).all():
        raise HarnessError(f"{path}: expected a finite float vector of B >= 2 bootstrap replicates, "
                           f"got shape {arr.shape} with {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr.astype(np.float64, copy=False)


def cell_mmhm_replicates(values: dict[str, float], reps: dict[str, np.ndarray], bounds: Bounds,
                         metrics: Sequence[str], eps: float = EPS) -> np.ndarray:
    """MMHM draws of one cell: replicate b of every metric, each first centred on its own value
    (``centred_replicates``: the resampling bias of FID-type metrics removed), under the fixed point bounds.

    Draws fall outside [lo, hi] by construction, so their u is clipped to [0, 1] (no warning)."""
    centred = {m: centred_replicates(values[m], reps[m]) for m in metrics}
    return harmonic(utilities(pd.DataFrame(centred), bounds, clip=True)[list(metrics)], eps)


def mmhm_replicates(scores: MMHMTable, run_dir_of: dict[str, Path], eps: float = EPS) -> dict[str, np.ndarray]:
    """MMHM draws of each cell (:func:`cell_mmhm_replicates`) from its metrics' saved replicates.

    Cells lacking replicates of any MMHM metric are left out; unequal B within a cell is an error."""
    if scores.values is None:
        raise HarnessError("mmhm_replicates: the MMHM table carries no metric values (build it with mmhm())")
    out = {}
    for cell_id in scores.table.index:
        reps = {m: load_replicates(run_dir_of[cell_id], cell_id, m) for m in scores.metrics}
        if any(r is None for r in reps.values()):
            continue
        sizes = {m: r.size for m, r in reps.items()}
        if len(set(sizes.values())) != 1:
            raise HarnessError(f"{Path(run_dir_of[cell_id]) / 'bootstrap' / cell_id}: replicate counts differ "
                               f"between metrics {sizes}; replicate b must share one resample across metrics")
        values = scores.values.loc[cell_id]
        out[cell_id] = cell_mmhm_replicates({m: float(values[m]) for m in scores.metrics}, reps, scores.bounds,
                                            scores.metrics, eps)
    return out


def mmhm_interval(value: float, draws: np.ndarray, k: int, what: str = "MMHM", eps: float = EPS) -> tuple[float, float]:
    """``shifted_interval`` of MMHM draws, cut to the values MMHM can take with u in [0, 1]:
    [k / Σ 1/ε, 1 / (1/(1 + ε))] = [ε, 1 + ε] (the shift can carry a bound past them; the value stays inside)."""
    low, high = shifted_interval(value, draws, what)
    return max(low, float(harmonic(np.zeros(k), eps))), min(high, float(harmonic(np.ones(k), eps)))


def add_mmhm_ci(scores: MMHMTable, run_dir_of: dict[str, Path]) -> MMHMTable:
    """Adds mmhm_ci_low / mmhm_ci_high: the MMHM draws' 2.5/97.5 percentiles moved so their median sits on
    the cell's MMHM (``shifted_interval``, so the interval contains it); NaN where a cell has no replicates."""
    reps = mmhm_replicates(scores, run_dir_of)
    table = scores.table.copy()
    cis = {c: mmhm_interval(table.at[c, "mmhm"], r, len(scores.metrics), f"MMHM of cell {c}") for c, r in reps.items()}
    table["mmhm_ci_low"] = [cis.get(c, (np.nan, np.nan))[0] for c in table.index]
    table["mmhm_ci_high"] = [cis.get(c, (np.nan, np.nan))[1] for c in table.index]
    return MMHMTable(table, scores.bounds, scores.metrics, scores.dropped, scores.values)


def noise_flags(value: Sequence[float], ci_low: Sequence[float], ci_high: Sequence[float],
                higher_is_better: bool = True) -> list[bool]:
    """Rank by value; flag[i] is True when the entry at rank i and the one at rank i+1 have overlapping CIs.

    Returned in the input order (the flag sits on the better of each pair). Missing CIs never flag."""
    v = np.asarray(value, dtype=np.float64)
    lo, hi = np.asarray(ci_low, dtype=np.float64), np.asarray(ci_high, dtype=np.float64)
    order = np.argsort(-v if higher_is_better else v, kind="stable")
    flags = [False] * len(v)
    for a, b in zip(order[:-1], order[1:]):
        if np.isfinite([lo[a], hi[a], lo[b], hi[b]]).all():
            flags[a] = bool(lo[a] <= hi[b] and lo[b] <= hi[a])
    return flags
