"""The real-data floor (protocol key ``real``): planned, drawn, scored like a model, shown but never ranked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.datasets import get_dataset, plan_dataset
from harness.errors import HarnessError, ProtocolError
from harness.models.adapters import get_adapter_class
from harness.plan.protocol import make_plan, protocol_from_dict
from harness.plan.real_floor import REAL_FAMILY, real_card
from harness.reports import build_boards, load_runs
from harness.reports.plots import draw_floor, pyplot
from harness.types import DatasetRef, SampleRequest

BASE = {"name": "floor", "models": [{"card": "student-mnist", "cfg": [None]}], "datasets": ["mnist"],
        "steps": [1], "n": 40, "shard_size": 20, "batch_size": 20, "metrics": ["fid_mnist", "class_alignment"],
        "reference_n": 500, "bootstrap": 50}


def plan_of(**changes):
    return make_plan(protocol_from_dict({**BASE, **changes}))


def test_real_adds_one_unranked_cell_per_dataset_and_leaves_model_cells_alone():
    without, with_floor = plan_of(), plan_of(real=["mnist-train"])
    assert [c.cell_id for c in with_floor.cells[:-1]] == [c.cell_id for c in without.cells]
    floor = with_floor.cells[-1]
    assert floor.model.family == REAL_FAMILY and floor.model.name == "real-mnist-train"
    assert (floor.settings.steps, floor.settings.cfg, floor.n) == (0, None, 40)
    assert floor.model.weights_digest == get_dataset("mnist-train").digest  # content, never the name
    other = plan_of(real=["mnist-5k"]).cells[-1]
    assert other.cell_id != floor.cell_id


@pytest.mark.parametrize(("real", "expected"), [
    (["mnist"], "key 'real\\[0\\]': real source 'mnist' is the reference dataset 'mnist' itself"),
    (["mnist-trian"], "did you mean 'mnist-train'"),
    ("mnist-train", "key 'real' has value 'mnist-train'"),
])
def test_bad_real_entries_are_refused_by_name(real, expected):
    with pytest.raises(ProtocolError, match=expected):
        plan_of(real=real)


def test_a_floor_of_other_classes_or_for_prompts_is_refused():
    imagenet = plan_dataset("imagenet-val")[1]  # provisional offline: its class count is still known
    with pytest.raises(ProtocolError, match="has 10 classes but dataset 'imagenet-val' asks for 1000"):
        real_card("mnist-5k", imagenet)
    text = DatasetRef(id="prompts", digest="d", num_classes=None, provides=("prompts",))
    with pytest.raises(ProtocolError, match="image-caption pairs"):
        real_card("mnist-train", text)


@pytest.fixture(scope="module")
def floor_adapter():
    card, missing = real_card("mnist-train", get_dataset("mnist").ref())
    assert missing == ""
    adapter = get_adapter_class(REAL_FAMILY)(card)
    adapter.load("cpu")
    return adapter


def test_draws_are_real_training_digits_of_the_requested_class(floor_adapter):
    source = get_dataset("mnist-train")
    images, labels = source._arrays
    settings = make_plan(protocol_from_dict({**BASE, "real": ["mnist-train"]})).cells[-1].settings
    requests = [SampleRequest(index=i, seed=1000 + i, settings=settings, label=i % 10) for i in range(30)]
    outputs = floor_adapter.sample(requests)
    by_bytes = {img.tobytes(): int(y) for img, y in zip(images, labels, strict=True)}
    for r, out in zip(requests, outputs, strict=True):
        assert out.nfe == 0 and out.image.shape == (28, 28, 3) and out.image.dtype == np.uint8
        assert by_bytes[np.ascontiguousarray(out.image[..., 0]).tobytes()] == r.label
    again = floor_adapter.sample(requests[:5])
    assert all((a.image == b.image).all() for a, b in zip(outputs[:5], again, strict=True))  # seeded
    assert len({o.image.tobytes() for o in outputs}) > 25  # draws differ (a repeat is possible, rare)


def test_a_source_changed_since_the_plan_is_refused():
    card, _ = real_card("mnist-train", get_dataset("mnist").ref())
    stale = type(card)(**{**card.__dict__, "weights_digest": "0" * 64})
    with pytest.raises(HarnessError, match="changed since the plan"):
        get_adapter_class(REAL_FAMILY)(stale).load("cpu")


@pytest.fixture(scope="module")
def floor_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("floor")
    protocol = root / "floor.yaml"
    import yaml

    protocol.write_text(yaml.safe_dump({**BASE, "real": ["mnist-train"]}))
    assert main(["run", str(protocol), "--results", str(root / "run"), "--cache", str(root / "cache")]) == 0
    return root / "run"


def test_the_floor_is_scored_like_a_cell_and_shown_but_never_ranked(floor_run):
    rows = pd.read_parquet(floor_run / "results.parquet")
    floor = rows[rows.family == REAL_FAMILY]
    assert set(floor.metric) == {"fid_mnist", "class_alignment"} and set(floor.n) == {40}
    assert (floor.ci_low <= floor.value).all() and (floor.value <= floor.ci_high).all()
    assert floor.set_index("metric").value["class_alignment"] == 1.0  # real digits of the asked class
    md = (floor_run / "leaderboard.md").read_text()
    line = next(x for x in md.splitlines() if "real-mnist-train" in x and x.startswith("|"))
    assert line.startswith("| floor ") and "MMHM" not in line and line.count("real-mnist-train") == 1
    assert "Real-data floor (real-mnist-train)" in md
    selection = md.split("### Selection per model")[1].split("≈ marks")[0]
    assert "real-mnist-train" not in selection
    csv = pd.read_csv(floor_run / "leaderboard.csv")
    assert csv.real_floor.sum() == 1 and csv.loc[csv.real_floor, "rank"].isna().all()
    assert csv.loc[~csv.real_floor, "rank"].notna().all()
    assert r"\textit{real-mnist-train (real data)}" in (floor_run / "leaderboard.tex").read_text()
    assert "real-mnist-train" in (floor_run / "index.html").read_text()


def test_the_floor_is_a_horizontal_line_in_the_plots(floor_run):
    board = build_boards(load_runs([floor_run]))[0]
    assert "real-mnist-train" not in set(board.table.model) and len(board.floor) == 1
    plt = pyplot()
    fig, ax = plt.subplots()
    draw_floor(ax, board, "fid_mnist")
    (line,) = ax.lines
    assert set(line.get_ydata()) == {board.floor.fid_mnist.iloc[0]} and "real data" in line.get_label()
    plt.close(fig)


def test_mmhm_best_bound_from_the_floor(floor_run, tmp_path):
    results = load_runs([floor_run])
    board = build_boards(results, mmhm_best="real")[0]
    floor_fid = board.floor.fid_mnist.iloc[0]
    lo, hi = board.scores.bounds.lo_hi["fid_mnist"]
    assert lo == floor_fid or lo == hi  # the best fid bound is the floor's (or no model is worse than it)
    assert "real-data floor" in board.notes[0]
    with pytest.raises(HarnessError, match="both fix"):
        build_boards(results, bounds=board.scores.bounds, mmhm_best="real")
    assert main(["report", str(floor_run), "--out", str(tmp_path), "--mmhm-best", "real"]) == 0
    assert "as the best bound" in (tmp_path / "leaderboard.md").read_text()


def test_mmhm_best_real_without_a_floor_is_refused(tmp_path):
    from tests.support.report_rows import make_run, sweep_cells

    run = make_run(tmp_path / "run", sweep_cells())
    with pytest.raises(HarnessError, match="has 0 real-data floor cells"):
        build_boards(load_runs([run]), mmhm_best="real")


def test_the_floor_is_the_top_row_of_the_image_grid(floor_run):
    from harness.reports.grid import _label, grid_cells, pages

    results = load_runs([floor_run])
    board = build_boards(results)[0]
    cells, indices, _ = grid_cells(board, results.cell_dir_of)
    first = pages(cells)[0].iloc[0]
    assert first.model == "real-mnist-train" and _label(first) == "real-mnist-train (real data)"
    assert indices and _label(pages(cells)[0].iloc[1]).startswith("student-mnist 1 st")
