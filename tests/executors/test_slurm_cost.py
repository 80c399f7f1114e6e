"""Cost model (card ``cost`` block, calibration from manifests) and cost-sized array tasks, without a cluster."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.errors import HarnessError, ProtocolError
from harness.executors.base import DebugExecutor
from harness.executors.slurm import bundle_indices, pack_stage
from harness.executors.slurm_profile import load_profile, parse_profile, task_budget_s
from harness.models.cards import card_from_dict
from harness.plan.cost import estimate_cell_seconds, estimate_plan_gpu_hours, expected_nfe
from harness.plan.protocol import load_protocol, make_plan
from harness.run.runner import prepare_run, run_plan
from harness.run.stages import generate_stage

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "protocols" / "smoke.yaml"
FM_TINY = (REPO / "model_zoo" / "cards" / "fm-tiny.yaml").read_text()


def costed_card(tmp_path: Path, seconds_per_nfe: float | None, name: str = "fm-tiny") -> Path:
    """fm-tiny with a ``cost`` block: the same model identity, so the same cells and images."""
    path = tmp_path / f"{name}-{seconds_per_nfe}.yaml"
    extra = "" if seconds_per_nfe is None else f"cost: {{seconds_per_nfe: {seconds_per_nfe}, gpu: h100}}\n"
    path.write_text(FM_TINY.replace("name: fm-tiny", f"name: {name}") + extra)
    return path


def plan_for(card: Path, *overrides: str):
    return make_plan(load_protocol(SMOKE, [f"models=[{card}]", "metrics=[]", *overrides]))


# ---- bundling arithmetic ----------------------------------------------------------------------------

def check_bundles(costs, groups, budget):
    bundles = bundle_indices(costs, groups, budget)
    assert [i for b in bundles for i in b] == list(range(len(costs)))  # every item exactly once, in order
    for k, b in enumerate(bundles):
        assert len({groups[i] for i in b}) == 1  # never two models in one task
        if any(costs[i] is None for i in b):
            assert len(b) == 1  # unknown cost: a task of its own
            continue
        total = sum(costs[i] for i in b)
        assert total <= budget or len(b) == 1  # over the budget only as a lone, indivisible shard
        nxt = b[-1] + 1
        if k + 1 < len(bundles) and costs[nxt] is not None and groups[nxt] == groups[b[0]] and costs[b[0]] <= budget:
            assert total + costs[nxt] > budget  # filled up: the next shard would not have fit
    assert bundle_indices(costs, groups, budget) == bundles  # deterministic
    return bundles


def test_bundles_pack_consecutive_shards_up_to_the_budget():
    assert check_bundles([10.0] * 10, ["m"] * 10, 30) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert check_bundles([10, None, 10, 10], ["m"] * 4, 100) == [[0], [1], [2, 3]]
    assert check_bundles([10, 10, 10, 10], ["a", "a", "b", "b"], 100) == [[0, 1], [2, 3]]
    assert check_bundles([50, 200, 50], ["m"] * 3, 100) == [[0], [1], [2]]  # 200 alone: over, but indivisible
    assert check_bundles([], [], 10) == []


def test_bundles_hold_on_random_sweeps():
    rng = random.Random(6)
    for _ in range(300):
        n = rng.randint(1, 60)
        costs = [None if rng.random() < 0.1 else rng.choice([0.5, 3.0, 60.0, 599.0, 1800.0, 4000.0])
                 for _ in range(n)]
        groups = sorted(rng.choice("abc") for _ in range(n))
        check_bundles(costs, groups, rng.choice([1.0, 600.0, 1800.0, 3540.0]))


def test_bundling_refuses_a_budget_that_fits_nothing():
    with pytest.raises(HarnessError, match="task budget 0"):
        bundle_indices([1.0], ["m"], 0)


def test_task_budget_is_the_target_capped_below_the_checkpoint_signal(tmp_path):
    ci = load_profile("ci")  # time_min 10, signal_delay_s 60, target 30 (default)
    assert ci.task_target_min == 30 and task_budget_s(ci) == 10 * 60 - 60
    small = parse_profile({"time_min": 120, "task_target_min": 20}, tmp_path / "p.yaml")
    assert task_budget_s(small) == 20 * 60
    with pytest.raises(HarnessError, match="task_target_min: 0 is not valid"):
        parse_profile({"task_target_min": 0}, tmp_path / "p.yaml")


# ---- card cost block -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cost, message", [
    ({"seconds_per_nfe": -1}, "cost.seconds_per_nfe: -1 is not valid; expected a positive number"),
    ({"seconds_per_nfe": "fast"}, "cost.seconds_per_nfe: 'fast' is not valid"),
    ({"gpu": "h100"}, "cost.seconds_per_nfe: None is not valid"),
    ({"seconds_per_nfe": 0.1, "gpus": "h100"}, "cost: unknown key(s) gpus"),
    ({"seconds_per_nfe": 0.1, "resolution": 25.5}, "cost.resolution: 25.5 is not valid"),
    ({"seconds_per_nfe": 0.1, "gpu": ""}, "cost.gpu: '' is not valid"),
    ([0.1], "key 'cost' must be a mapping"),
])
def test_bad_card_cost_is_refused_naming_the_card_key_and_value(cost, message):
    with pytest.raises(ProtocolError) as err:
        card_from_dict({"name": "x", "family": "flow_matching", "cost": cost}, source="cards/x.yaml")
    assert "cards/x.yaml" in str(err.value) and message in str(err.value)


def test_card_cost_gives_nfe_times_seconds_per_nfe(tmp_path):
    plan = plan_for(costed_card(tmp_path, 0.5))
    assert plan.cells[0].model.cost == {"seconds_per_nfe": 0.5, "gpu": "h100"}
    plain = plan_for(REPO / "model_zoo" / "cards" / "fm-tiny.yaml")
    assert [c.cell_id for c in plan.cells] == [c.cell_id for c in plain.cells]  # cost is not identity
    for cell in plan.cells:
        est = estimate_cell_seconds(cell)
        guided = cell.settings.cfg != 1.0  # fm-tiny: true CFG doubles the batch
        assert est.nfe_per_image == cell.settings.steps * (2 if guided else 1)
        assert est.seconds == pytest.approx(cell.n * est.nfe_per_image * 0.5)
        assert "card fm-tiny: 0.5 s/NFE (h100)" == est.source
    total = sum(6 * s * (2 if c != 1.0 else 1) * 0.5 for s in (1, 2) for c in (1.0, 2.0))
    assert estimate_plan_gpu_hours(plan).gpu_hours == pytest.approx(total / 3600)


# ---- calibration from completed manifests -------------------------------------------------------------

@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory) -> Path:
    """The smoke cells of steps 1 generated for real (debug executor): manifests with measured seconds."""
    root = tmp_path_factory.mktemp("calib")
    plan = plan_for(REPO / "model_zoo" / "cards" / "fm-tiny.yaml", "steps=[1]")
    run_plan(plan, root / "run", root / "cache", DebugExecutor())
    return root / "run"


def manifests(run: Path, cell_id: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "cells" / cell_id / "shards").glob("*.json"))]


def test_calibration_uses_this_cells_manifests_then_the_models(calibrated_run, tmp_path):
    plan = plan_for(REPO / "model_zoo" / "cards" / "fm-tiny.yaml", "steps=[1, 3]")
    done = {c.cell_id for c in plan.cells if (calibrated_run / "cells" / c.cell_id).exists()}
    assert len(done) == 2  # steps=1 × cfg {1, 2}
    samples = [s for c in done for m in manifests(calibrated_run, c) for s in m["samples"]]
    for cell in plan.cells:
        # the adapter's declared NFE is what the generated samples recorded
        recorded = {s["nfe"] for m in manifests(calibrated_run, cell.cell_id) for s in m["samples"]}
        assert recorded in (set(), {expected_nfe(cell)})
    per_nfe = sum(s["seconds"] for s in samples) / sum(s["nfe"] for s in samples)
    for cell in plan.cells:
        est = estimate_cell_seconds(cell, [calibrated_run])
        if cell.cell_id in done:
            own = [s["seconds"] for m in manifests(calibrated_run, cell.cell_id) for s in m["samples"]]
            assert est.seconds_per_image == pytest.approx(sum(own) / len(own))
            assert est.source == f"calibration: {len(own)} samples of this cell"
        else:  # steps=3: same model, not generated → seconds per NFE of the model × this cell's NFE
            assert est.seconds_per_image == pytest.approx(per_nfe * expected_nfe(cell))
            assert est.source.startswith("calibration:") and "samples of fm-tiny" in est.source
        assert not estimate_cell_seconds(cell).known  # no card cost, no calibration: unknown
        assert estimate_cell_seconds(cell).source == "unknown (no card cost, no completed shards)"
    other = plan_for(_other_model_card(tmp_path))
    hours = estimate_plan_gpu_hours(other, [calibrated_run])
    assert hours.known_cells == 0 and len(hours.unknown_cells) == 4 and "4 cells of unknown cost" in str(hours)


def _other_model_card(tmp_path: Path) -> Path:
    """A different model (other init seed): the fm-tiny manifests must not calibrate it."""
    path = tmp_path / "fm-other.yaml"
    path.write_text(FM_TINY.replace("name: fm-tiny", "name: fm-other").replace("init_seed: 0", "init_seed: 1"))
    return path


def test_shard_bundles_size_tasks_by_cost_and_keep_unknown_ones_single(calibrated_run, tmp_path):
    profile = parse_profile({"time_min": 60, "signal_delay_s": 60, "task_target_min": 1}, tmp_path / "p.yaml")
    # 60 s budget; 2.5 s/NFE: shards of 4 samples cost 10/20/20/40 s by cell, shards of 2 half that
    plan = plan_for(costed_card(tmp_path, 2.5))
    run = tmp_path / "run"
    cell_dirs = prepare_run(plan, run, tmp_path / "cache")
    shards = plan.shards(cell_dirs)
    stage = generate_stage(plan, cell_dirs, "cpu", run)
    bundles = pack_stage(stage, range(len(stage.tasks)), profile)
    assert list(stage.tasks) == shards and [s for b in bundles for s in b.parts] == shards
    costs = [estimate_cell_seconds(c).samples_seconds(s.stop - s.start)
             for s in shards for c in plan.cells if cell_dirs[c.cell_id] == s.cell_dir]
    assert costs == [10, 5, 20, 10, 20, 10, 40, 20] == list(stage.weights)
    assert [len(b.parts) for b in bundles] == [4, 2, 2]  # 45 s | 30 s | 60 s: filled up to, never over, 60 s
    unknown = plan_for(REPO / "model_zoo" / "cards" / "fm-tiny.yaml")
    dirs = prepare_run(unknown, tmp_path / "run2", tmp_path / "cache")
    stage = generate_stage(unknown, dirs, "cpu", tmp_path / "run2")
    assert [len(b.parts) for b in pack_stage(stage, range(len(stage.tasks)), profile)] \
        == [1] * 8  # unknown cost: one shard per task, as before


def test_extraction_bundles_group_shards_of_one_extractor_set_up_to_the_image_budget(tmp_path):
    from harness.executors.base import Stage
    from harness.run.extract import ExtractTask, extract_shard

    tasks = [ExtractTask(f"/r/cells/{c}", s, min(s + 4, n), extractors, "/c")
             for extractors in (("cnn",), ("cnn", "inception")) for c, n in (("a", 6), ("b", 6), ("c", 14))
             for s in range(0, n, 4)]
    stage = Stage("extract", extract_shard, tuple(tasks), weights=tuple(float(t.stop - t.start) for t in tasks),
                  weight_unit="images", groups=tuple(",".join(t.extractors) for t in tasks))
    profile = parse_profile({"extract_images_per_task": 12}, tmp_path / "p.yaml")
    bundles = pack_stage(stage, range(len(tasks)), profile)
    sizes = [[t.stop - t.start for t in b.parts] for b in bundles]
    assert sizes == [[4, 2, 4, 2], [4, 4, 4], [2], [4, 2, 4, 2], [4, 4, 4], [2]]  # never over 12 images
    assert all(len({t.extractors for t in b.parts}) == 1 for b in bundles)  # one extractor set per task
    assert [t for b in bundles for t in b.parts] == tasks  # each once, in order
    profile = parse_profile({"extract_images_per_task": 10**6}, tmp_path / "p.yaml")
    assert len(pack_stage(stage, range(len(tasks)), profile)) == 2  # one task per extractor set


def test_a_serial_stage_is_one_array_task_running_its_tasks_in_order(tmp_path):
    from harness.executors.base import Stage

    stage = Stage("cost", str, tuple(range(5)), serial=True)
    packed = pack_stage(stage, [0, 2, 4], parse_profile({}, tmp_path / "p.yaml"))
    assert len(packed) == 1 and packed[0].parts == (0, 2, 4) and packed[0]() == ["0", "2", "4"]
