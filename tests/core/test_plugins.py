"""Adding a dataset, an extractor, a metric or an executor takes one file each and no edit elsewhere: the four
one-file plugins of tests/support/plugins/ register themselves by decorator, are named in $HARNESS_PLUGINS,
and run a protocol end to end through the CLI (plan, run, report)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = ",".join(f"tests.support.plugins.{m}" for m in ("dummy_dataset", "dummy_extractor", "dummy_metric",
                                                           "dummy_executor"))
PROTOCOL = """name: plugins
seed: 0
models: [fm-tiny]
datasets: [plugin-noise]
steps: [1, 2]
cfg: [1.0]
n: 6
shard_size: 4
batch_size: 4
metrics: [plugin_moment_gap, class_alignment]
reference_n: 32
"""


def harness(*args: str, tmp_path: Path, plugins: str = PLUGINS) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_PLUGINS": plugins, "HARNESS_CACHE": str(tmp_path / "cache"),
           "HARNESS_PROGRESS": "0", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def results(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "results.parquet").drop(columns=["created_at", "sec_per_image"])
    return frame.sort_values(["cell_id", "metric"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("plugins")
    protocol = tmp / "plugins.yaml"
    protocol.write_text(PROTOCOL)
    by_plugin = harness("run", str(protocol), "--executor", "plugin-reverse", "--results", str(tmp / "plugin"),
                        tmp_path=tmp)
    assert by_plugin.returncode == 0, by_plugin.stderr[-3000:]
    by_debug = harness("run", str(protocol), "--executor", "debug", "--results", str(tmp / "debug"), tmp_path=tmp)
    assert by_debug.returncode == 0, by_debug.stderr[-3000:]
    return tmp / "plugin", tmp / "debug", by_plugin


def test_one_file_plugins_run_a_protocol_end_to_end(runs):
    plugin, _, out = runs
    frame = results(plugin)
    assert set(frame.metric) == {"plugin_moment_gap", "class_alignment"} and set(frame.dataset) == {"plugin-noise"}
    gap = frame[frame.metric == "plugin_moment_gap"]
    assert len(gap) == 2 and (gap.value > 0).all() and (gap.ci_low <= gap.value).all() \
        and (gap.value <= gap.ci_high).all()
    assert (gap.variant == "plugin-moments/l2-to-reference-mean").all()
    assert "generate: 4 of 4 shards to do" in out.stdout and (plugin / "leaderboard.md").exists()


def test_a_plugin_executor_gives_the_debug_executors_results(runs):
    plugin, debug, _ = runs
    pd.testing.assert_frame_equal(results(plugin).drop(columns=["run"]), results(debug).drop(columns=["run"]))


def test_without_the_plugin_the_names_are_refused_by_name(tmp_path):
    protocol = tmp_path / "plugins.yaml"
    protocol.write_text(PROTOCOL)
    out = harness("validate", str(protocol), tmp_path=tmp_path, plugins="")
    assert out.returncode == 2 and "unknown metric 'plugin_moment_gap'" in out.stderr
    out = harness("run", str(protocol), "--executor", "plugin-reverse", tmp_path=tmp_path,
                  plugins="tests.support.plugins.dummy_dataset,tests.support.plugins.dummy_extractor,"
                          "tests.support.plugins.dummy_metric")
    assert out.returncode == 2 and "unknown executor 'plugin-reverse'" in out.stderr
    out = harness("validate", str(protocol), tmp_path=tmp_path, plugins="tests.support.plugins.no_such_module")
    assert out.returncode == 2 and "HARNESS_PLUGINS: cannot import plugin module" in out.stderr
