"""Conformance suites for the metric, extractor and dataset plugins, as ``tests/conformance.py`` is for adapters.

Each mixin is a set of pytest tests over one plugin that a test module parametrises over its whole registry
(``tests/{metrics,features,datasets}/test_conformance_*.py``), so a newly registered plugin is tested with no
edit here. A check that cannot apply to a plugin skips with the reason (e.g. its weights are absent offline).
Only public package APIs are used; the reference artefact types are imported in one place (``reference_types``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import pytest

from harness.errors import HarnessError, ProtocolError
from harness.features import get_extractor
from harness.metrics import Metric, ShardFeatures
from harness.metrics.bootstrap import bootstrap_indices, bootstrap_interval

PROMPTS = ("a red square", "a cat on a mat", "two blue circles", "a small boat at sea", "an empty room")
SHARD_SIZES = (7, 20, 13)  # one cell of 40 samples cut into uneven shards
N = sum(SHARD_SIZES)
CLASSES = 10  # labels cycle 0..9; logits-reading metrics get at least this many columns
# One shard vs k shards: only summation order changes (FID's streamed statistics merge by Chan's update).
# Measured: <= 2e-15 relative.
SHARD_RTOL = 1e-12
# A fast bootstrap path vs recomputing the metric on the resample: another float64 route to the same number
# (e.g. FID's Gram / sqrt-reference forms vs the statistics route; KID's and CMMD's count-weighted kernel sums).
# Measured: <= 3e-14 relative.
REPLICATE_RTOL, REPLICATE_ATOL = 1e-10, 1e-12
REPLICATES = 6


def skip_if_weights_absent(call: Callable[[], Any]) -> Any:
    """``call()``, turned into a skip (with the harness's own message) when the weights it needs are not here."""
    try:
        return call()
    except HarnessError as err:
        if any(cls.__name__ == "WeightsNotFound" for cls in type(err).__mro__):
            pytest.skip(f"weights absent offline: {err}")
        raise


def reference_types() -> tuple[type, type]:
    """(ReferenceStats, ReferenceFeatures): the reference artefacts metrics consume."""
    from harness.references.artefacts import ReferenceFeatures, ReferenceStats

    return ReferenceStats, ReferenceFeatures


# --------------------------------------------------------------------------------------------------- metrics
@dataclass
class MetricCase:
    """Synthetic extractor output for one cell of N samples, and a matching reference (or None)."""

    features: np.ndarray  # (N, d) float32, as extractors write them
    labels: tuple[int | None, ...]
    prompts: tuple[str | None, ...]
    reference: Any

    def shards(self, sizes: tuple[int, ...] = (N,)) -> list[ShardFeatures]:
        edges = np.cumsum((0, *sizes))
        return [ShardFeatures(self.features[a:b], self.labels[a:b], self.prompts[a:b])
                for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def resample(self, idx: np.ndarray) -> list[ShardFeatures]:
        return [ShardFeatures(self.features[idx], tuple(self.labels[i] for i in idx),
                              tuple(self.prompts[i] for i in idx))]


def make_reference(metric: Metric, rows: np.ndarray, output: str | None = None, kind: str | None = None) -> Any:
    """The metric's reference (statistics or rows) over ``rows``, keyed by its extractor's real spec."""
    stats_type, features_type = reference_types()
    spec = skip_if_weights_absent(lambda: get_extractor(metric.extractor).spec)
    meta = {"extractor_key": spec.key, "source_digest": "conformance-synthetic",
            "spec": {"extractor": asdict(spec), "output": output or metric.output, "dataset": "synthetic"}}
    if (kind or metric.reference_kind) == "features":
        return features_type(features=rows.astype(np.float32), **meta)
    x = rows.astype(np.float64)
    return stats_type(mu=x.mean(0), sigma=np.cov(x, rowvar=False), n=len(x), **meta)


def metric_case(metric: Metric, dim: int, embed_dim: int | None = None) -> MetricCase:
    """Seeded features (d = ``dim``, or the text tower's ``embed_dim`` for text-image metrics: unit rows) and a
    shifted reference of as many rows: with n == reference n <= 1000 KID's subsets are the whole sets, so its
    subset average equals the full-set estimator its fast replicates use."""
    rng = np.random.default_rng(dim)
    d = embed_dim or dim
    features = rng.normal(size=(N, d)).astype(np.float32)
    if embed_dim:
        features /= np.linalg.norm(features, axis=1, keepdims=True)
    labels = tuple(i % CLASSES for i in range(N))
    prompts = tuple(PROMPTS[i % len(PROMPTS)] for i in range(N))
    reference = make_reference(metric, rng.normal(0.3, 1.1, size=(N, d))) if metric.needs_reference else None
    return MetricCase(features, labels, prompts, reference)


def same_value(a: float, b: float, rtol: float, atol: float = 0.0) -> bool:
    return bool(np.isclose(a, b, rtol=rtol, atol=atol))


class MetricConformance:
    """Mixin; the module provides ``metric`` (a Metric) and ``case`` (a MetricCase for it)."""

    def test_declares_direction_and_range(self, metric: Metric) -> None:
        assert isinstance(metric.higher_is_better, bool)
        assert metric.name and metric.variant and metric.extractor and metric.output
        low, high = metric.value_range
        assert all(v is None or isinstance(v, float) for v in (low, high)), metric.value_range
        assert low is None or high is None or low < high
        assert "value_range" in {k for cls in type(metric).__mro__[:-1] if cls is not Metric for k in vars(cls)}, \
            f"{metric.name}: value_range is inherited from Metric; declare it ((None, None) if unbounded)"

    def test_one_shard_equals_k_shards(self, metric: Metric, case: MetricCase) -> None:
        one = metric.compute(case.shards(), case.reference)
        many = metric.compute(case.shards(SHARD_SIZES), case.reference)
        assert one.n == many.n == N
        assert same_value(one.value, many.value, SHARD_RTOL), f"1 shard {one.value!r} vs 3 shards {many.value!r}"
        for bound in ("ci_low", "ci_high"):
            a, b = getattr(one, bound), getattr(many, bound)
            assert (a is None) == (b is None) and (a is None or same_value(a, b, SHARD_RTOL))

    def test_fast_replicates_equal_recompute(self, metric: Metric, case: MetricCase, recompute_rule: str) -> None:
        indices = bootstrap_indices("conformance-cell", N, REPLICATES)
        fast = metric.shard_replicates(case.shards(SHARD_SIZES), case.reference, indices)
        assert fast.shape == (REPLICATES,) and np.isfinite(fast).all()
        for b, idx in enumerate(indices):
            idx = np.unique(idx) if recompute_rule == "distinct rows" else idx
            slow = metric.compute(case.resample(idx), case.reference).value
            assert same_value(fast[b], slow, REPLICATE_RTOL, REPLICATE_ATOL), \
                f"replicate {b}: fast {fast[b]!r} vs recomputed on the resample ({recompute_rule}) {slow!r}"

    def test_interval_contains_value_inside_range(self, metric: Metric, case: MetricCase) -> None:
        result = metric.compute(case.shards(SHARD_SIZES), case.reference)
        low_v, high_v = metric.value_range
        assert (low_v is None or result.value >= low_v) and (high_v is None or result.value <= high_v)
        reps = metric.shard_replicates(case.shards(SHARD_SIZES), case.reference,
                                       bootstrap_indices("conformance-cell", N, 40))
        low, high, _ = bootstrap_interval(metric.name, result.value, (result.ci_low, result.ci_high), reps,
                                          metric.value_range)
        assert low <= result.value <= high
        assert (low_v is None or low >= low_v) and (high_v is None or high <= high_v), (low, high)

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_non_finite_features_refused(self, metric: Metric, case: MetricCase, bad: float) -> None:
        case.features[3, 0] = bad  # a broken extractor output must never be scored as a number
        with pytest.raises(HarnessError, match=r"(?i)non-finite|nan|finite"):
            metric.compute(case.shards(SHARD_SIZES), case.reference)
        with pytest.raises(HarnessError, match=r"(?i)non-finite|nan|finite"):  # the bootstrap's own path too
            metric.shard_replicates(case.shards(SHARD_SIZES), case.reference, bootstrap_indices("c", N, 2))

    @pytest.mark.parametrize("n", [1, 2])
    def test_too_few_samples_refused_or_finite(self, metric: Metric, case: MetricCase, n: int) -> None:
        """A cell too small for the statistic is refused by name (a HarnessError), never a NaN or a crash."""
        small = MetricCase(case.features[:n], case.labels[:n], case.prompts[:n], case.reference)
        for what, call in (("compute", lambda: metric.compute(small.shards((n,)), small.reference).value),
                           ("replicates", lambda: metric.shard_replicates(small.shards((n,)), small.reference,
                                                                           bootstrap_indices("c", n, 3)))):
            try:
                values = np.atleast_1d(call())
            except HarnessError:
                continue
            assert np.isfinite(values).all(), f"{what} with n={n}: {values} instead of a refusal"

    def test_wrong_reference_refused_naming_both(self, metric: Metric, case: MetricCase) -> None:
        if not metric.needs_reference:
            pytest.skip(f"{metric.name} reads no reference")
        ref, other_kind = case.reference, "stats" if metric.reference_kind == "features" else "features"
        rows = np.random.default_rng(1).normal(size=(N, case.features.shape[1]))
        wrong = {  # label -> (reference, the two things the message must name)
            "extractor": (replace(ref, extractor_key="0" * 24), ("0" * 24, ref.extractor_key)),
            "output": (make_reference(metric, rows, output="another-output"), ("another-output", metric.output)),
            "kind": (make_reference(metric, rows, kind=other_kind), tuple(t.__name__ for t in reference_types())),
            "dimension": (make_reference(metric, np.hstack([rows, rows[:, :1]])),
                          (str(case.features.shape[1]), str(case.features.shape[1] + 1))),
            "none": (None, ("NoneType", type(ref).__name__)),
        }
        for what, (reference, named) in wrong.items():
            with pytest.raises(HarnessError) as err:
                metric.compute(case.shards(), reference)
            assert all(name in str(err.value) for name in named), f"wrong {what}: {err.value} names not {named}"

    def test_reference_identity_changes_with_extractor_output_n_source(self, metric: Metric,
                                                                        case: MetricCase) -> None:
        if not metric.needs_reference:
            pytest.skip(f"{metric.name} reads no reference")
        ref = case.reference
        variants = [replace(ref, extractor_key="0" * 24), replace(ref, source_digest="another-source"),
                    replace(ref, spec={**ref.spec, "output": "another-output"})]
        variants.append(replace(ref, n=ref.n + 1) if metric.reference_kind == "stats"
                        else replace(ref, features=ref.features[:-1]))
        ids = {v.reference_id for v in variants} | {ref.reference_id}
        assert len(ids) == len(variants) + 1


# ------------------------------------------------------------------------------------------------ extractors
def perturbed(value: Any) -> Any:
    """Another value of the same kind (a knob turned)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1 if value != -1 else value + 2
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, tuple):
        return tuple(perturbed(v) for v in value)
    raise TypeError(f"no perturbation for {value!r}")


def sample_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour images, uint8 (n, size, size, 3): structure for a network to respond to."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(n, 4, 4, 3))
    up = np.kron(coarse, np.ones((1, size // 4, size // 4, 1)))
    return np.clip(up + rng.normal(0, 20, size=up.shape), 0, 255).round().astype(np.uint8)


# Batch of 8 vs batches of 3, relative to max(1, max |feature|): CPU kernels may block work by batch size. Measured
# at 1 thread: 0 (Inception pool3, MobileNet pool) to 3e-6 absolute (MobileNet logits, |f| ~ 13), i.e. <= 3e-7 relative.
BATCH_ATOL = 1e-5


def run_extract(extractor: Any, images: Any) -> dict[str, np.ndarray]:
    """``extract`` as the pipeline feeds it: with a prompt per image for an extractor that scores pairs."""
    if getattr(extractor, "needs_prompts", False):
        return extractor.extract(images, prompts=[PROMPTS[k % len(PROMPTS)] for k in range(len(images))])
    return extractor.extract(images)


class ExtractorConformance:
    """Mixin; the module provides ``extractor_name`` and ``loaded`` (that extractor, loaded on the CPU)."""

    def test_spec_key_is_stable(self, extractor_name: str, spec_of: Callable[[str], Any]) -> None:
        assert spec_of(extractor_name).key == spec_of(extractor_name).key

    def test_spec_key_changes_with_every_field(self, extractor_name: str, spec_of: Callable[[str], Any]) -> None:
        spec = spec_of(extractor_name)
        for field in fields(spec):
            if field.name == "name":  # a label, not a knob
                continue
            other = replace(spec, **{field.name: perturbed(getattr(spec, field.name))})
            assert other.key != spec.key, f"{extractor_name}: changing {field.name} leaves the key"

    def test_spec_key_follows_thread_count(self, extractor_name: str, spec_of: Callable[[str], Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
        one = spec_of(extractor_name)
        monkeypatch.setenv("HARNESS_EXTRACT_THREADS", str(one.cpu_threads + 1))
        assert spec_of(extractor_name).cpu_threads == one.cpu_threads + 1
        assert spec_of(extractor_name).key != one.key

    def test_extract_before_load_refused(self, extractor_name: str) -> None:
        with pytest.raises(HarnessError, match=extractor_name):
            run_extract(get_extractor(extractor_name), sample_images(1, 16))

    def test_outputs_declared_shapes_and_dtypes(self, loaded: Any) -> None:
        small, large = run_extract(loaded, sample_images(2, 32)), run_extract(loaded, sample_images(3, 48, seed=1))
        assert tuple(small) == tuple(loaded.outputs) and tuple(large) == tuple(loaded.outputs)
        for name in loaded.outputs:
            a, b = small[name], large[name]
            assert a.dtype == b.dtype == np.float32, (name, a.dtype)
            assert len(a) == 2 and len(b) == 3 and a.shape[1:] == b.shape[1:], (name, a.shape, b.shape)
            assert np.isfinite(a).all() and np.isfinite(b).all()

    def test_empty_and_strided_input(self, loaded: Any) -> None:
        """An empty batch gives empty outputs of the declared row shape; a strided or read-only view gives the
        features of its contiguous copy (shards hand in slices)."""
        base = run_extract(loaded, sample_images(2, 32))
        empty = run_extract(loaded, np.zeros((0, 32, 32, 3), np.uint8))
        assert all(empty[k].shape == (0, *base[k].shape[1:]) for k in loaded.outputs)
        view = sample_images(2, 64, seed=3)[:, ::2, 1::2]
        read_only = np.broadcast_to(view[:1], view.shape)
        for images in (view, read_only):
            got, want = run_extract(loaded, images), run_extract(loaded, np.ascontiguousarray(images))
            assert all(np.array_equal(got[k], want[k]) for k in loaded.outputs)

    def test_batch_size_invariance(self, loaded: Any) -> None:
        images, saved = sample_images(8, 32, seed=2), loaded.batch_size
        try:
            loaded.batch_size = 8
            whole = run_extract(loaded, images)
            loaded.batch_size = 3
            split = run_extract(loaded, images)
        finally:
            loaded.batch_size = saved
        for name in loaded.outputs:
            scale = max(1.0, float(np.abs(whole[name]).max()))
            diff = float(np.abs(whole[name] - split[name]).max())
            assert diff <= BATCH_ATOL * scale, f"{name}: batch 8 vs 3 differ by {diff:.3g} (scale {scale:.3g})"

    def test_prompt_pairs_refuse_missing_prompts(self, loaded: Any) -> None:
        """An extractor that scores (image, prompt) pairs refuses, by name, images without one prompt each, and its
        output follows the prompt (else it need not read them)."""
        if not getattr(loaded, "needs_prompts", False):
            pytest.skip(f"{loaded.name} reads no prompts")
        images = sample_images(2, 32)
        for prompts in (None, [PROMPTS[0]], [PROMPTS[0], ""]):
            with pytest.raises(HarnessError, match=re.escape(loaded.name)):
                loaded.extract(images, prompts=prompts)
        one, other = (loaded.extract(images, prompts=[p, p]) for p in PROMPTS[:2])
        assert all(not np.array_equal(one[k], other[k]) for k in loaded.outputs)

    @pytest.mark.parametrize("bad", ["float32", "gray", "rgba", "single", "list"])
    def test_refuses_non_uint8_rgb_input(self, loaded: Any, bad: str) -> None:
        good = sample_images(2, 16)
        images = {"float32": good.astype(np.float32), "gray": good[..., 0], "rgba": np.concatenate(
            [good, good[..., :1]], axis=-1), "single": good[0], "list": list(good)}[bad]
        with pytest.raises(HarnessError, match=rf"{loaded.name}.*uint8"):
            run_extract(loaded, images)


# -------------------------------------------------------------------------------------------------- datasets
def manifest_of(dataset: Any) -> dict:
    """What ``harness dataset NAME`` prints: the dataset's manifest record, else its digest and size."""
    record = getattr(dataset, "manifest_record", None)
    manifest = record() if record else dataset.manifest() if callable(getattr(dataset, "manifest", None)) else None
    return manifest if isinstance(manifest, dict) else {"digest": dataset.digest, "size": dataset.size}


def class_histogram(labels: Any, num_classes: int) -> list[int]:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).tolist()


class DatasetConformance:
    """Mixin; the module provides ``make`` (a fresh instance per call) and ``changes`` ({what: a call that alters
    that part of its content on disk}; empty when the content is a pinned file)."""

    def test_digest_and_manifest_stable_across_instances(self, make: Callable[[], Any]) -> None:
        a, b = make(), make()
        assert isinstance(a.digest, str) and a.digest and a.digest == b.digest
        assert manifest_of(a) == manifest_of(b)
        assert a.ref() == b.ref() and not a.ref().provisional

    def test_digest_changes_with_content(self, make: Callable[[], Any],
                                         changes: dict[str, Callable[[], None]]) -> None:
        """Conditions and reference images alike: the digest keys cell ids and cached reference statistics."""
        if not changes:
            pytest.skip("content is a sha256-pinned packaged file: a changed file is refused, not re-digested")
        unchanged = []
        for what, change in changes.items():
            before = make().digest
            change()
            if make().digest == before:
                unchanged.append(what)
        assert not unchanged, f"digest unchanged after: {', '.join(unchanged)}"

    def test_labels_over_one_cycle(self, make: Callable[[], Any]) -> None:
        ds = make()
        cycle = [ds.label_for(i) for i in range(ds.size)]
        assert [ds.label_for(i + ds.size) for i in range(min(ds.size, 50))] == cycle[:50]  # periodic in size
        if ds.num_classes is None:
            assert set(cycle) == {None} and ds.image_labels() is None and "labels" not in ds.provided()
            return
        assert "labels" in ds.provided() and all(isinstance(x, int) and 0 <= x < ds.num_classes for x in cycle)
        histogram = class_histogram(cycle, ds.num_classes)
        truth = ds.image_labels()
        # Either the reference images' own labels, or class-balanced (sample i asks for class i mod K).
        balanced = max(histogram) - min(histogram) <= 1
        assert balanced or truth is not None and histogram == class_histogram(truth, ds.num_classes), histogram

    def test_image_labels_and_manifest_histogram(self, make: Callable[[], Any]) -> None:
        ds = make()
        labels = ds.image_labels()
        if labels is None:
            pytest.skip("its reference images carry no labels")
        assert labels.dtype == np.int64 and labels.shape == (ds.size,)
        assert labels.min() >= 0 and labels.max() < ds.num_classes
        recorded = manifest_of(ds).get("class_histogram")
        if recorded is None:
            pytest.skip("its manifest records no class histogram")
        counts = class_histogram(labels, ds.num_classes)
        recorded = recorded if isinstance(recorded, list) else [recorded.get(c, 0) for c in range(ds.num_classes)]
        assert recorded == counts

    def test_prompts_declared(self, make: Callable[[], Any]) -> None:
        ds = make()
        prompts = [ds.prompt_for(i) for i in range(min(ds.size, 20))]
        if "prompts" in ds.provided():
            assert all(isinstance(p, str) and p for p in prompts)
        else:
            assert set(prompts) == {None}

    def test_reference_images_are_uint8_rgb_batches(self, make: Callable[[], Any], small_n: int) -> None:
        ds = make()
        if "images" not in ds.provided():
            with pytest.raises(ProtocolError, match=re.escape(ds.id)):
                next(iter(ds.reference_images(1)))
            return
        batches = list(ds.reference_images(small_n, batch_size=3))
        assert [len(b) for b in batches] == [min(3, small_n - k) for k in range(0, small_n, 3)]
        assert len({b.shape[1:] for b in batches}) == 1
        for b in batches:
            assert isinstance(b, np.ndarray) and b.dtype == np.uint8 and b.ndim == 4 and b.shape[-1] == 3

    def test_load_reference_and_start_agree_with_stream(self, make: Callable[[], Any], small_n: int) -> None:
        ds = make()
        if "images" not in ds.provided():
            pytest.skip("no reference images")
        stream = np.concatenate(list(ds.reference_images(small_n, batch_size=2)))
        order = np.random.default_rng(0).permutation(small_n)[:4].tolist()
        assert np.array_equal(ds.load_reference(order), stream[order])
        tail = np.concatenate(list(ds.reference_images(small_n, batch_size=2, start=1)))
        assert np.array_equal(tail, stream[1:])

    def test_reference_n_beyond_size_refused_by_name(self, make: Callable[[], Any]) -> None:
        ds = make()
        if "images" not in ds.provided():
            pytest.skip("no reference images: any reference_n is refused (test_reference_images_...)")
        with pytest.raises(ProtocolError, match=rf"{re.escape(ds.id)}.*{ds.size + 1}"):
            next(iter(ds.reference_images(ds.size + 1)))
