"""Protocol validation and plan-time refusals: every bad input exits non-zero with one line, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import ProtocolError
from harness.plan.protocol import load_protocol, make_plan, parse_overrides

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "protocols" / "smoke.yaml"


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_refused(capsys, tmp_path: Path, argv: list[str], *fragments: str) -> None:
    """Non-zero exit, one line naming the problem, and nothing generated."""
    results = tmp_path / "results"
    code, err = run_cli(capsys, *argv, "--results", str(results)) if argv[0] == "run" else run_cli(capsys, *argv)
    assert code != 0
    assert err.startswith("error: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (results / "cells").exists()


def test_smoke_protocol_loads_and_plans():
    plan = make_plan(load_protocol(SMOKE))
    assert len(plan.cells) == 4
    assert {(c.settings.steps, c.settings.cfg) for c in plan.cells} == {(1, 1.0), (1, 2.0), (2, 1.0), (2, 2.0)}


def test_malformed_yaml(capsys, tmp_path):
    bad = write(tmp_path, "name: x\nmodels: [fm-tiny\nsteps: [1]\n")
    assert_refused(capsys, tmp_path, ["run", str(bad)], str(bad), "malformed YAML", "line")


def test_unknown_key_suggests_closest(capsys, tmp_path):
    text = SMOKE.read_text().replace("shard_size:", "shard_sise:")
    assert_refused(capsys, tmp_path, ["run", str(write(tmp_path, text))], "unknown key 'shard_sise'",
                   "did you mean 'shard_size'")


def test_unknown_set_key_suggests_closest(capsys, tmp_path):
    assert_refused(capsys, tmp_path, ["run", str(SMOKE), "--set", "step=[1]"], "unknown key 'step'",
                   "did you mean 'steps'")


def test_unknown_card(capsys, tmp_path):
    assert_refused(capsys, tmp_path, ["run", str(SMOKE), "--set", "models=[fm-tinyy]"],
                   "unknown model card 'fm-tinyy'", "did you mean 'fm-tiny'")


def test_unknown_adapter_family(capsys, tmp_path):
    card = write(tmp_path, "name: ghost\nfamily: flow_matchin\nweights: null\n", "ghost.yaml")
    assert_refused(capsys, tmp_path, ["run", str(SMOKE), "--set", f"models=[{card}]"],
                   "unknown adapter family 'flow_matchin'", "did you mean 'flow_matching'")


def test_steps_outside_model_range(capsys, tmp_path):
    assert_refused(capsys, tmp_path, ["run", str(SMOKE), "--set", "steps=[1, 100000]"],
                   "steps=100000", "outside its range")


def test_cfg_for_model_without_guidance(capsys, tmp_path):
    assert_refused(capsys, tmp_path, ["run", str(SMOKE), "--set", "models=[fm-tiny-noguide]"],
                   "fm-tiny-noguide", "without guidance", "cfg: [null]")


def test_model_without_guidance_accepts_null_cfg():
    proto = load_protocol(SMOKE, ["models=[{card: fm-tiny-noguide, cfg: [null]}]"])
    plan = make_plan(proto)
    assert [c.settings.cfg for c in plan.cells] == [None, None]


def test_bad_value_names_key_value_and_allowed(capsys, tmp_path):
    assert_refused(capsys, tmp_path, ["validate", str(SMOKE), "--set", "n=0"], "'n'", "0", "integer >= 1")
    assert_refused(capsys, tmp_path, ["validate", str(SMOKE), "--set", "cfg=[-1]"], "cfg[0]", "-1")
    assert_refused(capsys, tmp_path, ["validate", str(SMOKE), "--set", "metrics=[fidd]"],
                   str(SMOKE), "metrics[0]", "unknown metric 'fidd'", "did you mean 'fid'")


def test_missing_required_key(capsys, tmp_path):
    text = "\n".join(line for line in SMOKE.read_text().splitlines() if not line.startswith("steps:"))
    assert_refused(capsys, tmp_path, ["validate", str(write(tmp_path, text))], "missing required key 'steps'")


def test_n_not_divisible_keeps_a_short_last_shard():
    plan = make_plan(load_protocol(SMOKE, ["n=10", "shard_size=4"]))
    dirs = {c.cell_id: f"/x/{c.cell_id}" for c in plan.cells}
    spans = sorted({(t.start, t.stop) for t in plan.shards(dirs)})
    assert spans == [(0, 4), (4, 8), (8, 10)]
    assert sum(b - a for a, b in spans) == 10


def test_overrides_are_yaml_values():
    assert parse_overrides(["steps=[1, 2]", "n=8", "cfg=[null, 2.5]"]) == {
        "steps": [1, 2], "n": 8, "cfg": [None, 2.5]}
    with pytest.raises(ProtocolError, match="expected key=value"):
        parse_overrides(["steps"])


def test_results_dir_on_read_only_path(capsys, tmp_path):
    """A path that cannot be created (under /proc, read-only for root too) is refused before generating."""
    code, err = run_cli(capsys, "run", str(SMOKE), "--results", "/proc/onestep-bench-run", "--executor", "debug")
    assert code != 0
    assert err.startswith("error: /proc/onestep-bench-run: results directory is not writable"), err


def test_plan_prints_totals(capsys):
    assert main(["plan", str(SMOKE)]) == 0
    out = capsys.readouterr().out
    # smoke: steps {1,2} x cfg {1,2}, n=6, shard 4 → 4 cells, 8 shards, 24 samples;
    # NFE per sample 1, 2 (cfg doubles), 2, 4 → 6 * (1 + 2 + 2 + 4) = 54
    assert "4 cells, 8 shards, 24 samples, 54 total NFE" in out


def test_unquoted_numeric_sha_is_explained(tmp_path):
    from harness.models.cards import load_card

    (tmp_path / "w.pt").write_bytes(b"x")
    card = write(tmp_path, f"name: c\nfamily: flow_matching\nweights: {tmp_path / 'w.pt'}\n"
                           f"weights_sha256: {'1' * 64}\n", "c.yaml")
    with pytest.raises(ProtocolError, match="read as a number .* quote it"):
        load_card(str(card))


def test_ls_lists_registered_pieces(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for expected in ("flow_matching", "fm-tiny-noguide", "mnist-5k", "class_alignment", "inception-fid-helper",
                     "smoke.yaml", "quickstart.yaml"):
        assert expected in out


def test_status_of_a_non_run_directory(capsys, tmp_path):
    code, err = run_cli(capsys, "status", "--results", str(tmp_path))
    assert code == 2 and "not a run directory" in err and "\n" not in err
