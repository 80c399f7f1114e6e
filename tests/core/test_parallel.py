"""The shared thread pool for per-image CPU work: order kept, errors raised in input order, serial where asked or
nested, early stops drop queued work, and decoding / preprocessing give the same bytes with 1 or 4 threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from harness import parallel
from harness.errors import HarnessError
from harness.parallel import cpu_threads, prefetched_map, thread_map


@pytest.fixture
def four_threads(monkeypatch):
    monkeypatch.setenv("HARNESS_CPU_THREADS", "4")


def test_thread_map_keeps_order_and_uses_several_threads(four_threads):
    seen: set[str] = set()

    def slow_square(x: int) -> int:
        seen.add(threading.current_thread().name)
        time.sleep(0.01 * (7 - x % 7))  # later items finish first
        return x * x

    assert thread_map(slow_square, range(20)) == [x * x for x in range(20)]
    assert len(seen) > 1 and all(name.startswith("harness-cpu") for name in seen)


def test_first_error_in_input_order_is_raised(four_threads):
    def fail_on(x: int) -> int:
        if x in (3, 8):
            time.sleep(0.05 if x == 3 else 0)  # 8 fails first in time, 3 first in order
            raise ValueError(f"item {x}")
        return x

    with pytest.raises(ValueError, match="item 3"):
        thread_map(fail_on, range(10))


def test_one_thread_is_a_plain_loop_and_bad_settings_are_refused(monkeypatch):
    monkeypatch.setenv("HARNESS_CPU_THREADS", "1")
    assert cpu_threads() == 1
    assert thread_map(lambda x: threading.current_thread().name, range(3)) == [threading.current_thread().name] * 3
    for bad in ("0", "many"):
        monkeypatch.setenv("HARNESS_CPU_THREADS", bad)
        with pytest.raises(HarnessError, match=f"HARNESS_CPU_THREADS='{bad}': expected a whole number >= 1"):
            cpu_threads()


def test_nested_use_runs_serially_instead_of_waiting_on_a_full_pool(monkeypatch):
    monkeypatch.setenv("HARNESS_CPU_THREADS", "2")

    def inner_sum(x: int) -> int:
        return sum(thread_map(lambda y: x * y, range(50)))  # from a pool thread: serial, no deadlock

    assert thread_map(inner_sum, range(8)) == [x * sum(range(50)) for x in range(8)]


def test_prefetched_map_streams_in_order_and_cancels_on_early_stop(four_threads):
    started: list[int] = []

    def record(x: int) -> int:
        started.append(x)
        return -x

    stream = prefetched_map(record, range(1000), ahead=5)
    assert [next(stream) for _ in range(3)] == [0, -1, -2]
    stream.close()
    time.sleep(0.05)
    assert len(started) < 50  # never ran far ahead of the consumer, and queued work was dropped
    assert list(prefetched_map(lambda x: x + 1, range(30), ahead=4)) == list(range(1, 31))


def test_decoding_and_preprocessing_are_identical_with_one_or_four_threads(tmp_path, monkeypatch):
    from harness.cli.score import ImageSource
    from harness.features.dinov2 import dgm_eval_pixels
    from harness.features.inception_clean import InceptionClean

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 40, 56, 3), dtype=np.uint8)  # more than one decode batch
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i:03d}.png")
    results = {}
    for threads in ("1", "4"):
        monkeypatch.setenv("HARNESS_CPU_THREADS", threads)
        decoded = np.concatenate(list(ImageSource(tmp_path).batches()))
        clean = InceptionClean()
        clean._device = "cpu"
        results[threads] = (decoded, dgm_eval_pixels(images[:9]).numpy(), clean.preprocess(images[:9]).numpy())
    assert np.array_equal(results["1"][0], images)
    for serial, threaded in zip(results["1"], results["4"], strict=True):
        assert np.array_equal(serial, threaded)


def test_a_pool_from_another_process_is_not_reused(monkeypatch, four_threads):
    thread_map(abs, [-1, -2])
    pid, threads, pool = parallel._POOL
    monkeypatch.setattr(parallel, "_POOL", (pid + 1, threads, pool))  # as a forked child would see it
    assert thread_map(abs, [-3, -4]) == [3, 4] and parallel._POOL[0] == pid
