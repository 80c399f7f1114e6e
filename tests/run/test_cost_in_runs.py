"""The cost stage inside a run: the protocol's ``cost`` key adds measured rows for every model cell, through the
same stages under every executor, measured once (saved per run, cached by content) and reported."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.errors import ProtocolError
from harness.executors import make_executor
from harness.plan.protocol import load_protocol, make_plan
from harness.run.runner import run_plan

REPO = Path(__file__).resolve().parents[2]
COST = ["metrics=[class_alignment]", "steps=[1, 2]", "cost={k: 8, warmup: 1, throughput_calls: 2, batch: 2}"]
COST_METRICS = {"latency_ms_b1", "latency_ms_b1_p95", "throughput_img_s", "peak_mem_mb", "gflops_per_image"}


def plan(*overrides: str):
    return make_plan(load_protocol(REPO / "protocols" / "smoke.yaml", [*COST, *overrides]))


@pytest.fixture(scope="module")
def cost_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cost")
    run_plan(plan(), root / "run", root / "cache", make_executor("debug"))
    return root / "run", root / "cache"


def test_every_model_cell_gets_cost_rows_with_the_flops_scaling_by_nfe(cost_run):
    run, _ = cost_run
    frame = pd.read_parquet(run / "results.parquet")
    cost = frame[frame.metric.isin(COST_METRICS)]
    assert set(cost.metric) == COST_METRICS and cost.cell_id.nunique() == frame.cell_id.nunique() == 4
    flops = cost[cost.metric == "gflops_per_image"].set_index(["steps", "cfg"]).value
    assert flops[(2, 1.0)] == pytest.approx(2 * flops[(1, 1.0)], rel=1e-12)  # twice the NFE, twice the FLOPs
    assert (cost.variant.str.startswith("device=cpu")).all()
    assert (run / "equal_budget.md").exists() and "measured on" in (run / "equal_budget.md").read_text()


def test_a_second_run_measures_nothing_and_gives_the_same_rows(cost_run, capsys):
    run, cache = cost_run
    before = pd.read_parquet(run / "results.parquet")
    run_plan(plan(), run, cache, make_executor("debug"))
    assert "cost: nothing to do, all 4 cells measured" in capsys.readouterr().out
    after = pd.read_parquet(run / "results.parquet")
    pd.testing.assert_frame_equal(before, after)


def test_another_timing_plan_is_measured_again(cost_run, tmp_path, capsys):
    run, cache = cost_run
    other = tmp_path / "run"
    run_plan(plan("cost={k: 9, warmup: 1, throughput_calls: 2, batch: 2}"), other, cache, make_executor("debug"))
    assert "cost: 4 of 4 cells to measure on cpu" in capsys.readouterr().out
    frame = pd.read_parquet(other / "results.parquet")
    assert frame[frame.metric == "latency_ms_b1"].variant.str.contains("k=9").all()


@pytest.mark.parametrize("value, message", [
    ("{k: 0}", "key 'cost.k' has value 0"),
    ("{repeats: 3}", "key 'cost' has unknown option(s) 'repeats'"),
    ("fast", "key 'cost' has value 'fast'"),
    ("{interleave: all}", "key 'cost.interleave' has value 'all'; expected one of model, run"),
])
def test_bad_cost_options_are_refused_by_name(value, message):
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(f"cost={value}")


@pytest.mark.parametrize("interleave", ["model", "run"])
def test_cells_are_measured_in_groups_of_one_model_or_all_together(tmp_path, interleave):
    from harness.run.stages import cost_stage
    from harness.store import write_cell

    p = plan(f"cost={{k: 8, interleave: {interleave}}}", "models=[fm-tiny, fm-mnist]", "cfg=[1.0]")
    cell_dirs = {c.cell_id: str(write_cell(tmp_path / "run", c)) for c in p.cells}
    stage = cost_stage(p, cell_dirs, tmp_path / "cache", "cpu", tmp_path / "run")
    model_of = {cell_dirs[c.cell_id]: c.model.name for c in p.cells}
    members = [t.cell_dir for g in stage.tasks for t in g.tasks]
    assert sorted(members) == sorted(cell_dirs.values()) and stage.serial  # every cell once, one group at a time
    models = [{model_of[t.cell_dir] for t in g.tasks} for g in stage.tasks]
    if interleave == "model":
        assert all(len(m) == 1 for m in models) and len(stage.tasks) == len(set(model_of.values()))
    else:
        assert len(stage.tasks) == 1 and models[0] == set(model_of.values())
