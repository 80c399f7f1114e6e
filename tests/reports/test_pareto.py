"""Cost rows in reports: MMHM ignores them unless named, the leaderboard shows them as cost columns with the
device, two devices never share a column, and the Pareto / equal-budget views (harness/reports/pareto.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.reports import build_boards, results_from_frame, rows_to_frame, write_results_report
from harness.reports.cost_columns import COST_METRICS, cost_variant
from harness.reports.pareto import budgets, equal_budget_table
from harness.types import MetricRow
from tests.support.report_rows import row

# model, steps, cfg, nfe, fid_mnist (value, ci), class_alignment, latency p50 ms (value, ci), gflops
CELLS = [("onestep", 1, None, 1, (50.0, (45.0, 55.0)), 0.99, (2.0, (1.9, 2.1)), 0.14),
         ("multi", 1, 1.0, 1, (900.0, (880.0, 920.0)), 0.99, (2.1, (2.0, 2.2)), 0.14),
         ("multi", 2, 1.5, 4, (120.0, (110.0, 130.0)), 0.995, (8.0, (7.8, 8.3)), 0.55),
         ("multi", 8, 1.5, 16, (48.0, (40.0, 56.0)), 0.99, (30.0, (29.0, 31.0)), 2.2)]


def cost_row(cell: str, model: str, steps: int, cfg, nfe: float, metric: str, value: float, ci=None,
             device: str = "cpu") -> MetricRow:
    base = row(cell, metric, value, model=model, steps=steps, cfg=cfg, ci=ci, nfe=nfe, sec=value / 1e3)
    return MetricRow(**{**base.__dict__, "variant": cost_variant(device, dtype="float32", k=64),
                        "higher_is_better": COST_METRICS[metric], "extractor_id": ""})


def rows_of(devices=("cpu",), cost: bool = True) -> list[MetricRow]:
    out = []
    for model, steps, cfg, nfe, fid, align, lat, gflops in CELLS:
        cell = f"{model}-{steps}-{cfg}"
        kw = {"model": model, "steps": steps, "cfg": cfg, "nfe": nfe, "sec": 0.5}
        out += [row(cell, "fid_mnist", fid[0], ci=fid[1], **kw), row(cell, "class_alignment", align,
                                                                     ci=(align - 0.01, min(1.0, align + 0.004)), **kw)]
        out[-2] = MetricRow(**{**out[-2].__dict__, "higher_is_better": False})
        for i, device in enumerate(devices if cost else ()):
            scale = 10.0 ** -i  # a faster second device
            out += [cost_row(cell, model, steps, cfg, nfe, "latency_ms_b1", lat[0] * scale,
                             (lat[1][0] * scale, lat[1][1] * scale), device),
                    cost_row(cell, model, steps, cfg, nfe, "gflops_per_image", gflops, (gflops, gflops), device)]
    return out


def boards_of(rows, **kw):
    return build_boards(results_from_frame("run", rows_to_frame(rows)), **kw)


def test_mmhm_ignores_cost_rows_unless_named():
    (board,) = boards_of(rows_of())
    assert board.scores.metrics == ("class_alignment", "fid_mnist")
    assert board.metrics == ["class_alignment", "fid_mnist"]
    assert board.cost_metrics == ["latency_ms_b1", "gflops_per_image"]
    (asked,) = boards_of(rows_of(), mmhm_metrics=["fid_mnist", "latency_ms_b1"])
    assert asked.scores.metrics == ("fid_mnist", "latency_ms_b1")


def test_leaderboard_shows_cost_columns_measured_on_the_device(tmp_path):
    written = write_results_report(results_from_frame(tmp_path, rows_to_frame(rows_of())), tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    header = next(line for line in text.splitlines() if line.replace(" ", "").startswith("|rank"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols.index("latency_ms_b1 ↓") > cols.index("MMHM ↑") and "gflops_per_image ↓" in cols
    assert cols[-1] == "selected as"
    assert "Cost columns measured on cpu" in text
    assert "2.000 [1.900, 2.100]" in text  # the latency p50 with its interval
    csv = pd.read_csv(tmp_path / "leaderboard.csv").set_index("cell_id")
    assert (csv.sec_per_image == 0.5).all()  # NFE and s/img of a cell come from its quality rows, not its cost rows
    assert tmp_path / "equal_budget.md" in written and tmp_path / "equal_budget.html" in written
    for stem in ("pareto_fid_mnist_vs_latency_ms_b1_ds", "pareto_mmhm_vs_gflops_per_image_ds"):
        assert (tmp_path / "plots" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "index.html").read_text()
    assert "equal_budget.md" in page and "pareto_fid_mnist_vs_latency_ms_b1_ds.png" in page


def test_two_devices_never_share_a_column():
    (board,) = boards_of(rows_of(devices=("cpu", "NVIDIA H100")))
    assert "latency_ms_b1 @ cpu" in board.cost_metrics and "latency_ms_b1 @ NVIDIA H100" in board.cost_metrics
    t = board.table.set_index("cell_id")
    assert t.loc["multi-8-1.5", "latency_ms_b1 @ cpu"] == 30.0
    assert t.loc["multi-8-1.5", "latency_ms_b1 @ NVIDIA H100"] == pytest.approx(3.0)
    assert any("2 devices" in n and "not comparable" in n for n in board.notes)


def test_no_cost_rows_no_cost_views(tmp_path):
    written = write_results_report(results_from_frame(tmp_path, rows_to_frame(rows_of(cost=False))), tmp_path)
    assert not any("pareto" in p.name or "equal_budget" in p.name for p in written)
    assert not (tmp_path / "equal_budget.md").exists()


def test_equal_budget_table_picks_the_best_cell_within_each_budget_and_flags_the_noise():
    (board,) = boards_of(rows_of())
    nfe = equal_budget_table(board, "fid_mnist", "nfe_mean")
    assert list(nfe.budget) == ["1", "1", "4", "4", "16", "16"]
    at1 = nfe[nfe.budget == "1"].set_index("model")
    assert at1.loc["onestep", "vs best"] == "best" and at1.loc["multi", "vs best"] == "worse (CIs disjoint)"
    at16 = nfe[nfe.budget == "16"].set_index("model")
    # multi's 16-NFE cell (48 [40, 56]) is best and onestep (50 [45, 55]) is inside its noise
    assert at16.loc["multi", "steps"] == 8 and at16.loc["multi", "vs best"] == "best"
    assert at16.loc["onestep", "vs best"] == "≈ best (CIs overlap)"
    ms = equal_budget_table(board, "fid_mnist", "latency_ms_b1")
    assert set(ms.budget) == {"2", "2.1", "8", "30"}


def test_equal_budget_markdown_says_where_costs_were_measured(tmp_path):
    write_results_report(results_from_frame(tmp_path, rows_to_frame(rows_of())), tmp_path)
    text = (tmp_path / "equal_budget.md").read_text()
    assert "Budget on latency p50 (ms, batch 1), measured on cpu." in text
    assert "Budget on NFE (counted exactly; no device). Cost columns of this table measured on cpu." in text


def test_budgets_on_a_measured_axis_are_few_and_include_the_dearest():
    values = pd.Series([1.0 + i for i in range(40)])
    got = budgets(values, exact=False)
    assert len(got) <= 6 and got[-1] == 40.0 and got[0] == 1.0
    assert budgets(pd.Series([1, 2, 4, 8, 16, 32, 64]), exact=True) == [1, 2, 4, 8, 16, 32, 64]


def test_cost_rows_alone_make_a_board_without_mmhm(tmp_path):
    rows = [r for r in rows_of() if r.metric in COST_METRICS]
    (board,) = boards_of(rows)
    assert board.scores is None and board.metrics == [] and board.cost_metrics
    assert any("cost metrics only" in n for n in board.notes)
    write_results_report(results_from_frame(tmp_path, rows_to_frame(rows)), tmp_path)
    assert "latency_ms_b1 ↓" in (tmp_path / "leaderboard.md").read_text()


def test_run_comparison_mmhm_ignores_cost_rows_unless_named(tmp_path):
    from harness.reports.compare import mmhm_differences

    a = results_from_frame(tmp_path / "a", rows_to_frame(rows_of()))
    b = results_from_frame(tmp_path / "b", rows_to_frame(rows_of()))
    _, notes = mmhm_differences(a, b)
    assert notes[0].startswith("ds: MMHM over class_alignment, fid_mnist with")
    _, asked = mmhm_differences(a, b, ["fid_mnist", "latency_ms_b1"])
    assert asked[0].startswith("ds: MMHM over fid_mnist, latency_ms_b1 with")


def test_variants_line_names_no_empty_extractor_for_cost_rows(tmp_path):
    write_results_report(results_from_frame(tmp_path, rows_to_frame(rows_of())), tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "(extractor )" not in text and "`latency_ms_b1` = device=" in text
    assert "(extractor ext" in text  # quality rows keep theirs
