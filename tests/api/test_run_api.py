"""``harness.run`` / ``Run`` / ``harness.load_results``: the run the command makes, from Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import harness
from harness.errors import HarnessError
from harness.reports import rows_to_frame, write_parquet
from tests.support.report_rows import row

REPO = Path(__file__).resolve().parents[2]
FAST = {"metrics": ["class_alignment"], "n": 4, "steps": [1], "shard_size": 4, "batch_size": 4}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> harness.api.Run:
    import os

    cache = Path(os.environ["HARNESS_CACHE"])
    return harness.run("smoke", results=tmp_path_factory.mktemp("smoke") / "run", executor="debug", cache=cache,
                       overrides=FAST)


def test_run_returns_the_frame_it_wrote_and_reports(smoke_run):
    assert isinstance(smoke_run, harness.api.Run)
    frame = pd.read_parquet(smoke_run.dir / "results.parquet")
    pd.testing.assert_frame_equal(smoke_run.results, frame)
    assert len(frame) == 2 and set(frame.metric) == {"class_alignment"} and set(frame.cfg) == {1.0, 2.0}
    assert frame.value.between(0, 1).all() and set(frame.nfe_mean) == {1.0, 2.0}  # cfg 2 doubles the NFE
    (smoke_run.dir / "leaderboard.md").unlink()
    written = smoke_run.report()
    assert smoke_run.dir / "leaderboard.md" in written and all(p.is_file() for p in written)
    assert "| fm-tiny |" in (smoke_run.dir / "leaderboard.md").read_text()


def test_run_again_resumes_and_harness_run_is_the_api(smoke_run, shared_cache, capsys):
    assert harness.run is not harness.api.run and callable(harness.run)  # the package, made callable
    again = harness.api.run("smoke", results=smoke_run.dir, executor="debug", cache=shared_cache,
                            overrides=[f"{k}={v}" for k, v in FAST.items()])
    assert "generate: nothing to do" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again.results.drop(columns="created_at"),
                                  smoke_run.results.drop(columns="created_at"))


def test_load_results_reads_a_dir_or_its_parquet(smoke_run):
    by_dir = harness.load_results(smoke_run.dir)
    pd.testing.assert_frame_equal(by_dir, harness.load_results(smoke_run.dir / "results.parquet"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"executor": "slurm"}, r"^executor='slurm' needs profile=FILE"),
    ({"executor": "debug", "wait": True}, r"^profile and wait apply to executor='slurm' only"),
    ({"executor": "no-such"}, r"^unknown executor 'no-such'"),
    ({"executor": "debug", "workers": 2}, r"^workers=2 applies to executor='local' only"),
    ({"executor": "local", "workers": 0}, r"^workers=0: expected an integer >= 1"),
    ({"overrides": {"nn": 4}}, r"unknown key 'nn'"),
    ({"overrides": "n=4"}, r"^overrides='n=4': expected a mapping"),
    ({"device": "cuda:7"}, r"^device cuda:7: "),
])
def test_bad_run_arguments_are_refused_before_anything_is_written(kwargs, message, tmp_path, monkeypatch):
    import harness.api.runs as runs

    monkeypatch.setattr(runs, "run_plan", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(HarnessError, match=message):
        harness.run("smoke", results=tmp_path / "run", **{"executor": "debug", **kwargs})
    assert not (tmp_path / "run").exists()


def test_a_protocol_mapping_runs_like_its_file(tmp_path, monkeypatch):
    import harness.api.runs as runs

    seen = []
    monkeypatch.setattr(runs, "run_plan", lambda plan, run_dir, *a, **k: seen.append((plan, run_dir)))
    raw = {"name": "inline", "models": ["fm-tiny"], "datasets": ["mnist-5k"], "steps": [1], "cfg": [1.0], "n": 4,
           "metrics": ["class_alignment"]}
    done = harness.run(raw, results=tmp_path / "inline", executor="debug", overrides={"n": 2})
    (plan, run_dir), = seen
    assert done.dir == run_dir == tmp_path / "inline" and [c.n for c in plan.cells] == [2]
    with pytest.raises(HarnessError, match=r"^protocol=3: expected a protocol file"):
        harness.run(3, executor="debug")


def _table(path: Path, drop: str | None = None, **changes) -> Path:
    """A results.parquet of one synthetic row, with a column dropped or replaced."""
    frame = rows_to_frame([row("c1", "fid", 1.5)])
    frame = frame.drop(columns=[drop]) if drop else frame.assign(**changes)
    path.mkdir()
    write_parquet(frame, path / "results.parquet")
    return path


def test_load_results_refuses_a_foreign_or_damaged_table_naming_the_file(tmp_path):
    with pytest.raises(HarnessError, match=r"nothing.results\.parquet: no results yet"):
        harness.load_results(tmp_path / "nothing")
    bad = tmp_path / "damaged"
    bad.mkdir()
    (bad / "results.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(HarnessError, match=r"damaged.results\.parquet: cannot read the results table"):
        harness.load_results(bad)
    with pytest.raises(HarnessError, match=r"missing.results\.parquet: not a results table .*missing columns"):
        harness.load_results(_table(tmp_path / "missing", drop="value"))


def test_a_number_column_holding_text_is_refused_naming_file_and_column(tmp_path):
    """Before: read_results checked column names only, so a table whose values were strings loaded and failed
    later inside a report (or was compared as text)."""
    from harness.reports import read_results

    path = _table(tmp_path / "text", value=["0.5"])
    with pytest.raises(HarnessError, match=r"text.results\.parquet: not a results table .*columns value \(\w+\) must "
                                           r"hold numbers"):
        read_results(path)
    with pytest.raises(HarnessError, match=r"columns value \(\w+\) must hold numbers"):
        harness.load_results(path)


def test_import_harness_stays_cheap():
    """The API is re-exported lazily: ``import harness`` (and naming ``harness.run``) loads no numpy, torch or
    pandas; the first call imports them."""
    code = ("import sys, harness; assert callable(harness.run) and 'score' in harness.__all__; "
            "print(sorted(m for m in ('numpy', 'torch', 'pandas', 'harness.api.runs') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
