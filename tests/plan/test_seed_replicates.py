"""Seed replicates (``seeds: [...]``): every cell once per seed, per-seed rows, and the between-seed spread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import ProtocolError
from harness.executors import make_executor
from harness.plan.protocol import load_protocol, make_plan
from harness.reports.results import seed_of
from harness.run.runner import run_plan

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "protocols" / "smoke.yaml"
FAST = ["metrics=[fid_mnist, class_alignment]", "steps=[1]"]


def plan(*overrides: str):
    return make_plan(load_protocol(SMOKE, [*FAST, *overrides]))


def test_every_cell_once_per_seed_and_seed_0_keeps_its_ids():
    single, replicated = plan(), plan("seeds=[0, 5, 7]")
    assert len(replicated.cells) == 3 * len(single.cells)
    assert {c.seed for c in replicated.cells} == {0, 5, 7}
    assert {c.cell_id for c in single.cells} == {c.cell_id for c in replicated.cells if c.seed == 0}
    assert plan("seeds=[3]").cells == plan("seed=3").cells  # one replicate is the plain seed


@pytest.mark.parametrize("override, message", [
    ("seeds=[0, 1, 0]", "key 'seeds' repeats 0"),
    ("seeds=[]", "key 'seeds' has value []"),
    ("seeds=[-1]", "key 'seeds[0]' has value -1"),
    ("seeds=3", "key 'seeds' has value 3"),
])
def test_bad_seed_lists_are_refused_by_name(override, message):
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plan(override)


def test_seed_and_seeds_together_in_one_file_are_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(SMOKE.read_text() + "seeds: [1, 2]\n")  # the smoke file has `seed: 0`
    with pytest.raises(ProtocolError, match="keys 'seed' .* and 'seeds' .* both given"):
        load_protocol(path)
    assert load_protocol(path, ["seeds=[1, 2]"]).seeds == (1, 2)  # --set replaces the file's other key


@pytest.fixture(scope="module")
def replicated_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seeds")
    run_plan(plan("seeds=[0, 1]"), root / "run", root / "cache", make_executor("debug"))
    return root / "run"


def test_per_seed_rows_and_the_between_seed_spread_in_the_leaderboard(replicated_run):
    frame = pd.read_parquet(replicated_run / "results.parquet")
    frame = frame.assign(seed=[seed_of(p) for p in frame.seed_policy])
    assert sorted(set(frame.seed)) == ["0", "1"] and len(frame) == 2 * 2 * 2  # 2 cfg × 2 seeds × 2 metrics
    spread = pd.read_csv(replicated_run / "seeds.csv")
    assert len(spread) == 4 and (spread.seeds == 2).all()
    for r in spread.itertuples():  # an independent recomputation from the per-seed rows
        cfg = frame.cfg.isna() if pd.isna(r.cfg) else frame.cfg == r.cfg
        values = frame[(frame.metric == r.metric) & cfg & (frame.steps == r.steps)].value.to_numpy()
        assert len(values) == 2
        assert r.mean == pytest.approx(values.mean()) and r.between_seed_sd == pytest.approx(np.std(values, ddof=1))
        assert r.min == pytest.approx(values.min()) and r.max == pytest.approx(values.max())
    text = (replicated_run / "leaderboard.md").read_text()
    assert "## Seed replicates" in text and "| 2 (0,1) |" in text


def test_seeds_draw_different_noise_and_seed_0_matches_the_plain_run(replicated_run, tmp_path):
    run_plan(plan(), tmp_path / "run", tmp_path / "cache", make_executor("debug"))
    plain = {p.relative_to(tmp_path / "run"): p.read_bytes() for p in (tmp_path / "run").glob("cells/*/images/*.png")}
    both = {p.relative_to(replicated_run): p.read_bytes() for p in replicated_run.glob("cells/*/images/*.png")}
    assert plain.items() <= both.items()  # seed 0's cells: same ids, byte-identical images
    others = {k: v for k, v in both.items() if k not in plain}
    assert len(others) == len(plain) and not set(others.values()) & set(plain.values())
    assert not (tmp_path / "run" / "seeds.csv").exists()  # no replicates, no spread table
