"""Features do not depend on the executor or worker count: every extraction runs at the thread count its spec
records (oneDNN splits float32 reductions by thread count: 1 and 2 threads differ by ~3e-6 on Inception)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness import parallel
from harness.errors import HarnessError
from harness.features import get_extractor
from harness.features.base import Extractor, ExtractorSpec

REPO = Path(__file__).resolve().parents[2]


class Probe(Extractor):
    """Records the torch and CPU-pool thread counts an extraction runs under."""

    name, outputs = "probe", ("x",)
    seen: list[tuple[int, int]] = []

    @property
    def spec(self) -> ExtractorSpec:
        return ExtractorSpec("probe", "0" * 64, "x", "none", "none", "none", "uint8", "float32", "tf32=off")

    def load(self, device: str = "cpu") -> None:
        self._net = object()

    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.seen.append((torch.get_num_threads(), parallel.cpu_threads()))
        if len(images) == 0:
            raise ValueError("empty")
        return {"x": images.reshape(len(images), -1).astype(np.float32)}


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.delenv("HARNESS_EXTRACT_THREADS", raising=False)
    monkeypatch.delenv("HARNESS_CPU_THREADS", raising=False)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def test_every_extraction_runs_at_the_spec_thread_count_and_restores_the_callers(two_threads):
    probe, Probe.seen[:] = Probe(4), []
    probe.extract(np.zeros((2, 2, 2, 3), np.uint8))
    assert probe.spec.cpu_threads == 1
    assert Probe.seen == [(1, 2)]  # torch pinned to the spec; the PIL thread pool keeps the caller's size
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError):
        probe.extract(np.zeros((0, 2, 2, 3), np.uint8))
    assert torch.get_num_threads() == 2  # restored on error too


def test_the_thread_count_is_part_of_every_cache_key(two_threads, monkeypatch):
    default = get_extractor("mnist-cnn").spec
    monkeypatch.setenv("HARNESS_EXTRACT_THREADS", "2")
    probe, Probe.seen[:] = Probe(4), []
    probe.extract(np.zeros((1, 2, 2, 3), np.uint8))
    assert Probe.seen == [(2, 2)]
    assert get_extractor("mnist-cnn").spec.cpu_threads == 2 and get_extractor("mnist-cnn").spec.key != default.key
    monkeypatch.setenv("HARNESS_EXTRACT_THREADS", "0")
    with pytest.raises(HarnessError, match="HARNESS_EXTRACT_THREADS='0': expected a whole number >= 1"):
        get_extractor("mnist-cnn").spec  # noqa: B018


TINY = ["--set", "metrics=[fid, class_alignment]", "--set", "steps=[1]", "--set", "cfg=[1.0]", "--set", "n=4",
        "--set", "reference_n=16"]


def run_argv(run: Path, executor: str, workers: int | None) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", "smoke", *TINY, "--executor", executor,
            *(["--workers", str(workers)] if workers else []), "--results", str(run)]


def environment(cache: Path) -> dict[str, str]:
    env = {**os.environ, "HARNESS_CACHE": str(cache), "HARNESS_PROGRESS": "0"}
    for name in ("HARNESS_EXTRACT_THREADS", "HARNESS_CPU_THREADS", "OMP_NUM_THREADS", "HARNESS_FAULT"):
        env.pop(name, None)
    return env


def values(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "results.parquet").drop(columns=["created_at", "run", "sec_per_image"])
    return frame.sort_values(["cell_id", "metric"]).reset_index(drop=True)


@pytest.mark.slow
def test_debug_local_worker_counts_and_concurrent_runs_on_one_cache_give_identical_values(tmp_path):
    # torch.get_num_threads() differs between these: debug keeps the process's count, local gives each of
    # N workers cores // N; the extraction must not care.
    layouts = [("debug", None), ("local", 1), ("local", 2)]
    alone = {}
    for executor, workers in [("debug", None), ("local", 2)]:  # 2 threads vs 1 thread per worker here
        run = tmp_path / f"alone-{executor}-{workers}"
        done = subprocess.run(run_argv(run, executor, workers), cwd=REPO, env=environment(run / "cache"),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        alone[executor] = values(run)
    reference = alone["debug"]
    pd.testing.assert_frame_equal(alone["local"], reference, check_exact=True)
    # three at once on one fresh cache: whichever writes a feature file first, every run scores the same
    shared = tmp_path / "shared-cache"
    procs = [subprocess.Popen(run_argv(tmp_path / f"together-{e}-{w}", e, w), cwd=REPO, env=environment(shared),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for e, w in layouts]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    for e, w in layouts:
        pd.testing.assert_frame_equal(values(tmp_path / f"together-{e}-{w}"), reference, check_exact=True)
