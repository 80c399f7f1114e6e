"""The README's "Python API" examples run as written (every ```python block after the marker line), so the
documentation cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- readme-api-example -->"


def examples() -> list[str]:
    return re.findall(re.escape(MARKER) + r"\n```python\n(.*?)\n```", README.read_text(), flags=re.S)


def test_the_readme_shows_score_run_load_results_and_a_callable_model():
    found = examples()
    assert len(found) == README.read_text().count(MARKER) == 3  # a marker without its block is caught too
    for needed in ("harness.score(", "harness.run(", "harness.load_results(", "family: callable", ".report()"):
        assert any(needed in code for code in found), needed


@pytest.mark.slow
def test_the_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write results/ and a card file where they run
    namespace: dict = {"__name__": "readme_examples"}
    for i, code in enumerate(examples(), 1):
        exec(compile(code, f"README.md Python API example {i}", "exec"), namespace)
    rows = namespace["rows"]
    assert list(rows.metric) == ["fid_mnist", "is_mnist"] and rows.value.notna().all()
    assert (rows.ci_low <= rows.value).all() and (rows.value <= rows.ci_high).all()
    smoke = tmp_path / "results" / "smoke-api"
    assert (smoke / "leaderboard.md").is_file() and (smoke / "index.html").is_file()
    pd.testing.assert_frame_equal(namespace["table"], pd.read_parquet(smoke / "results.parquet"))
    mine = namespace["run"].results
    assert set(mine.model) == {"my-model"} and set(mine.family) == {"callable"} and len(mine) == 4
    assert mine.set_index(["steps", "cfg"]).nfe_mean.to_dict() == {(1, 1.0): 1, (1, 2.0): 2, (4, 1.0): 4,
                                                                   (4, 2.0): 8}
