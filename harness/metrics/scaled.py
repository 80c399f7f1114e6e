"""CLIP- and PickScore-scaled FID and IS (csFID, psFID, csIS, psIS): PROVISIONAL composite metrics.

The v2 paper names them and says only that they "multiply the base metric by an alignment term derived from CLIP
or Pick Score to penalize semantically inconsistent generations"; its formula could not be read here
(docs/metrics.md, "Scaled FID and IS (provisional)"). So the formula is a named entry of ``FORMULAS``, every row's
variant says ``provisional`` and names it, and a formula other than the default is its own registered metric
(``csfid_shifted``, ...): protocol metrics are names and take no options.

A composite reads no features. The score stage (harness/run/score.py) computes it from the cell's own component
results, after them: value = formula(base value, a) and, with bootstrap replicates, replicate b =
formula(base replicate b, a replicate b) — the components' replicates are paired (same resampled indices), so this
is the composite recomputed on resample b. Its interval is the median-centred basic bootstrap of those replicates,
like FID's; without replicates it has none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.errors import HarnessError
from harness.metrics.base import Metric, MetricResult, ShardFeatures
from harness.metrics.bootstrap import bootstrap_interval
from harness.metrics.clip_score import ClipScore
from harness.metrics.fid import FID
from harness.metrics.inception_score import InceptionScore
from harness.metrics.pickscore import PickScore

PROVISIONAL = "provisional (paper v2 formula unpublished here)"


@dataclass(frozen=True)
class Formula:
    """The alignment term t of a formula, from the alignment a (a mean cosine, in [-1, 1]). Every formula divides a
    lower-is-better base by t (csFID = FID / t: misalignment inflates it) and multiplies a higher-is-better one
    (csIS = IS · t), so both are penalised by the same factor; t must be > 0."""

    name: str
    term: str  # t as written in the variant
    transform: Callable[[np.ndarray], np.ndarray]


FORMULAS: dict[str, Formula] = {
    # Default: t = a. Scale-free (halving the alignment doubles csFID and halves csIS); since a <= 1, csFID >= FID
    # and csIS <= IS. Undefined for a <= 0, which real CLIP / PickScore weights do not give (a ~ 0.2-0.35).
    "ratio": Formula("ratio", "a", lambda a: a),
    # t = (1 + a) / 2: the cosine mapped onto [0, 1], defined for every a > -1, much less sensitive (a from 0.25 to
    # 0.35 moves t by 8 % where "ratio" moves it by 40 %).
    "shifted": Formula("shifted", "(1 + a)/2", lambda a: (1.0 + a) / 2.0),
}
DEFAULT_FORMULA = "ratio"


def _clip_scale(result: MetricResult) -> float:
    return 100.0  # clip_score is 100 · cos (harness/metrics/clip_score.py)


def _pick_scale(result: MetricResult) -> float:
    scale = result.details.get("logit_scale_exp")
    if not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        raise HarnessError(f"pickscore: its result carries logit_scale_exp={scale!r}; the alignment "
                           f"pickscore/exp(logit_scale) needs the positive scale the row was computed with")
    return float(scale)


# alignment metric -> (a as written in the variant, the divisor that turns its value into a mean cosine)
ALIGNMENTS: dict[str, tuple[str, Callable[[MetricResult], float]]] = {
    "clip_score": ("clip_score/100", _clip_scale),
    "pickscore": ("pickscore/exp(logit_scale)", _pick_scale),
}


class ScaledMetric(Metric):
    """A provisional composite: ``base`` (fid or is) scaled by the alignment of ``align`` (clip_score or pickscore)."""

    base: ClassVar[str]
    align: ClassVar[str]
    formula: ClassVar[Formula]
    extractor = ""  # reads no features: harness.metrics.measured_metrics leaves it out of extraction
    output = ""
    needs_reference = False
    source = PROVISIONAL

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None = None) -> MetricResult:
        raise HarnessError(f"{self.name}: a composite of {' and '.join(self.components)}, computed by the score "
                           f"stage of `harness run` from their results; it reads no features")

    def _apply(self, base: np.ndarray, a: np.ndarray, what: str) -> np.ndarray:
        """formula(base, a): base / t for a lower-is-better base, base · t otherwise; refused where t <= 0."""
        t = np.asarray(self.formula.transform(np.asarray(a, dtype=np.float64)), dtype=np.float64)
        if (t <= 0).any():
            worst = float(np.asarray(a, dtype=np.float64)[np.argmin(t)])
            raise HarnessError(
                f"{self.name}: formula {self.formula.name!r} needs an alignment term t = {self.formula.term} > 0, "
                f"but {self.align} gives a = {worst!r} ({what}), i.e. images that do not match their prompts at all. "
                f"Not scored: drop {self.name}" + (f" or use {self.name}_shifted (defined for every a > -1)"
                                                   if self.formula.name == DEFAULT_FORMULA else ""))
        base = np.asarray(base, dtype=np.float64)
        return base * t if self.higher_is_better else base / t

    def combine(self, results: dict[str, MetricResult], replicates: dict[str, np.ndarray | None]
                ) -> tuple[MetricResult, np.ndarray | None]:
        """(result, replicates) from the cell's component results and their saved bootstrap replicates."""
        missing = [c for c in self.components if c not in results]
        if missing:
            raise HarnessError(f"{self.name}: needs its component {missing[0]!r} scored on the same cell first")
        base, align = results[self.base], results[self.align]
        if base.n != align.n:
            raise HarnessError(f"{self.name}: components scored on different samples ({self.base} n={base.n}, "
                               f"{self.align} n={align.n})")
        scale = ALIGNMENTS[self.align][1](align)
        a = align.value / scale
        value = float(self._apply(np.array([base.value]), np.array([a]), "value")[0])
        details: dict[str, Any] = {"provisional": PROVISIONAL, "formula": self.formula.name, "alignment": a,
                                   self.base: base.value, self.align: align.value}
        reps_base, reps_align = replicates.get(self.base), replicates.get(self.align)
        if reps_base is None or reps_align is None:
            absent = self.base if reps_base is None else self.align
            return MetricResult(value, None, None, base.n, {**details, "ci": f"none: {absent} has no bootstrap "
                                                                              f"replicates"}), None
        if reps_base.shape != reps_align.shape:
            raise HarnessError(f"{self.name}: {self.base} has {reps_base.shape} bootstrap replicates, {self.align} "
                               f"{reps_align.shape}; they must be the same paired resamples")
        reps = self._apply(reps_base, np.asarray(reps_align, dtype=np.float64) / scale, "a bootstrap replicate")
        low, high, how = bootstrap_interval(self.name, value, (None, None), reps, self.value_range)
        return MetricResult(value, low, high, base.n, {**details, "ci_method": how}), reps


def _scaled(cls_name: str, name: str, base: type[Metric], align: type[Metric], formula: str) -> type[ScaledMetric]:
    """The composite class ``cls_name`` (the module attribute it is bound to: classes stay importable by name)."""
    rule = FORMULAS[formula]
    expr = f"{base.name} · t" if base.higher_is_better else f"{base.name} / t"
    attrs = {
        "name": name, "base": base.name, "align": align.name, "formula": rule, "components": (base.name, align.name),
        # no "|" or ";": the variant is printed in markdown tables and in the leaderboard's "; "-separated line
        "variant": (f"{PROVISIONAL}, formula {rule.name}: {expr}, t = {rule.term}, a = {ALIGNMENTS[align.name][0]}, "
                    f"of {base.name}[{base.variant}] and {align.name}[{align.variant}]"),
        "higher_is_better": base.higher_is_better, "requires": base.requires | align.requires,
        "value_range": (0.0, None),  # FID >= 0, IS >= 1 and t > 0
        "__qualname__": cls_name, "__module__": __name__,
        "__doc__": f"{name}: {expr}, t = {rule.term}, a = {ALIGNMENTS[align.name][0]} ({PROVISIONAL}).",
    }
    if hasattr(base, "min_reliable_n"):  # FID-based: the leaderboard's small-n note applies to it too
        attrs["min_reliable_n"] = base.min_reliable_n
    return type(cls_name, (ScaledMetric,), attrs)


CsFID = _scaled("CsFID", "csfid", FID, ClipScore, DEFAULT_FORMULA)
PsFID = _scaled("PsFID", "psfid", FID, PickScore, DEFAULT_FORMULA)
CsIS = _scaled("CsIS", "csis", InceptionScore, ClipScore, DEFAULT_FORMULA)
PsIS = _scaled("PsIS", "psis", InceptionScore, PickScore, DEFAULT_FORMULA)
CsFIDShifted = _scaled("CsFIDShifted", "csfid_shifted", FID, ClipScore, "shifted")
PsFIDShifted = _scaled("PsFIDShifted", "psfid_shifted", FID, PickScore, "shifted")
CsISShifted = _scaled("CsISShifted", "csis_shifted", InceptionScore, ClipScore, "shifted")
PsISShifted = _scaled("PsISShifted", "psis_shifted", InceptionScore, PickScore, "shifted")
