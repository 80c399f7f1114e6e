"""Generator calls are the cell's aligned batches: no padded rows, the same calls under any shard layout or
resume, and each kept sample records the seconds its call really cost."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.plan.protocol import load_protocol, make_plan
from harness.run import generate as sampling
from harness.run.generate import batch_spans, generate_shard, wasted_rows
from harness.store import manifest_path, read_manifest, write_cell
from harness.types import ShardTask

CALL_SECONDS = 1.0  # a fake clock: every generator call costs one second, whatever its row count (a GPU)


@pytest.fixture
def calls(monkeypatch, tmp_path):
    """A smoke cell of n samples in a fresh run dir, and the index lists of every generator call made."""

    def setup(n: int) -> tuple[str, list[list[int]]]:
        cell = make_plan(load_protocol("protocols/smoke.yaml", ["metrics=[]", f"n={n}"])).cells[0]
        adapter = sampling.loaded_adapter(cell, "cpu")
        seen: list[list[int]] = []
        clock = SimpleNamespace(now=0.0)
        real = adapter.sample

        def sample(requests):
            seen.append([r.index for r in requests])
            clock.now += CALL_SECONDS
            return real(requests)

        monkeypatch.setattr(adapter, "sample", sample)
        monkeypatch.setattr(sampling, "time", SimpleNamespace(perf_counter=lambda: clock.now))
        return str(write_cell(tmp_path / f"n{n}", cell)), seen

    return setup


def seconds(cell_dir: str, start: int, stop: int) -> list[float]:
    return [s.seconds for s in read_manifest(manifest_path(Path(cell_dir), start, stop)).samples]


def test_a_cell_smaller_than_a_batch_is_generated_in_one_call_of_its_own_size(calls):
    # The quickstart overhead case in miniature: n = 6 at batch_size 250 ran the generator on 250 rows.
    cell_dir, seen = calls(6)
    generate_shard(ShardTask(cell_dir, 0, 6, batch_size=250))
    assert seen == [[0, 1, 2, 3, 4, 5]]
    assert seconds(cell_dir, 0, 6) == pytest.approx([CALL_SECONDS / 6] * 6, abs=1e-6)  # rounded to µs


def test_the_last_batch_is_not_padded_and_its_samples_record_what_they_cost(calls):
    cell_dir, seen = calls(6)
    generate_shard(ShardTask(cell_dir, 0, 6, batch_size=4))
    assert seen == [[0, 1, 2, 3], [4, 5]]
    # one second bought 4 samples, then one second bought 2: seconds per kept sample, not per padded row
    assert seconds(cell_dir, 0, 6) == pytest.approx([0.25] * 4 + [0.5] * 2)


def test_calls_are_the_same_aligned_batches_under_any_shard_layout(calls):
    cell_dir, seen = calls(6)
    for start, stop in [(0, 3), (3, 6)]:  # shard_size 3 cuts batch [0, 4): it is generated whole, twice
        generate_shard(ShardTask(cell_dir, start, stop, batch_size=4))
    assert seen == [[0, 1, 2, 3], [0, 1, 2, 3], [4, 5]]
    assert seconds(cell_dir, 3, 6) == pytest.approx([1.0, 0.5, 0.5])  # sample 3 cost a whole call
    assert wasted_rows(0, 3, 6, 4) == 1 and wasted_rows(3, 6, 6, 4) == 3 and wasted_rows(0, 4, 6, 4) == 0


def test_a_resumed_batch_is_regenerated_whole_and_only_missing_samples_are_written(calls):
    cell_dir, seen = calls(6)
    task = ShardTask(cell_dir, 0, 6, batch_size=4)
    generate_shard(task)
    mpath = manifest_path(Path(cell_dir), 0, 6)
    manifest = json.loads(mpath.read_text())
    images = {s["index"]: (Path(cell_dir) / s["file"]).read_bytes() for s in manifest["samples"]}
    # as if killed after sample 1's journal line: samples 0 and 1 are journalled, the rest never written
    mpath.unlink()
    mpath.with_suffix(".journal").write_text("".join(json.dumps(s) + "\n" for s in manifest["samples"][:2]))
    for s in manifest["samples"][2:]:
        (Path(cell_dir) / s["file"]).unlink()
    seen.clear()
    result = generate_shard(task)
    assert (result.generated, result.reused) == (4, 2)
    assert seen == [[0, 1, 2, 3], [4, 5]]  # sample 2 and 3 in their own batch, not in a call of two rows
    again = json.loads(mpath.read_text())
    assert {s["index"]: (Path(cell_dir) / s["file"]).read_bytes() for s in again["samples"]} == images


@pytest.mark.parametrize(("start", "stop", "n", "b", "spans"), [
    (0, 6, 6, 4, [(0, 4), (4, 6)]), (3, 6, 6, 4, [(0, 4), (4, 6)]), (4, 5, 6, 4, [(4, 6)]),
    (0, 100, 100, 250, [(0, 100)]), (500, 1000, 1000, 250, [(500, 750), (750, 1000)])])
def test_batch_spans(start, stop, n, b, spans):
    assert batch_spans(start, stop, n, b) == spans
