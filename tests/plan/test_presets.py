"""Every protocols/*.yaml plans offline (no data location set) to its known grid; the reference_stats key
(FID against imported mu/sigma, e.g. the ADM ImageNet-256 batch) is validated at plan time and used by the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.errors import HarnessError, ProtocolError
from harness.plan.protocol import load_protocol, make_plan, protocol_from_dict

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"
# preset → (cells, refused settings, datasets absent offline). A new preset must be added here.
EXPECTED = {
    "smoke": (4, 0, set()),
    "quickstart": (21, 0, set()),  # fm-mnist 4 steps x 3 cfg + two one-step models x 4 steps + the real floor
    "quickstart-inception": (5, 0, set()),  # 3 MMHM-selected cells + the flow best-fid cell + the real floor
    "paper_fair": (84, 4, {"imagenet-val", "imagenetv2-mf", "relaionet"}),  # 8 models x 3 datasets; 2x2 each
    "ablation_cfg_steps": (48, 42, {"imagenet-val"}),  # iMF 7x6; MeanFlow 6 unguided, 42 guided refused
    "imagenet256_fid50k": (9, 0, {"imagenet-val"}),
    "coco2014_30k": (9, 0, {"coco2014-30k"}),
}


def test_every_preset_has_an_expectation() -> None:
    assert {p.stem for p in PROTOCOLS.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_plans_offline(no_data, name: str, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    cells, refused, absent = EXPECTED[name]
    plan = make_plan(load_protocol(PROTOCOLS / f"{name}.yaml"))
    assert (len(plan.cells), len(plan.refused), set(plan.missing_data)) == (cells, refused, absent)
    assert all(c.provisional == (c.dataset.id in absent) for c in plan.cells)
    assert main(["plan", name]) == 0  # by name, as a user types it
    assert f"{cells} cells" in capsys.readouterr().out


def test_ablation_grid_is_the_papers(no_data) -> None:  # noqa: F811
    plan = make_plan(load_protocol(PROTOCOLS / "ablation_cfg_steps.yaml"))
    grid = {(c.settings.steps, c.settings.cfg) for c in plan.cells if c.model.name == "imf-xl2"}
    assert grid == {(s, w) for s in (1, 5, 10, 15, 20, 25) for w in (1.0, 3.0, 6.0, 7.0, 9.0, 12.0, 15.0)}
    assert {(c.settings.steps, c.settings.cfg) for c in plan.cells if c.model.name == "meanflow-xl2"} == \
        {(s, None) for s in (1, 5, 10, 15, 20, 25)}
    assert all(dict(c.settings.knobs) == {"t_min": 0.4, "t_max": 0.65} for c in plan.cells if c.model.name == "imf-xl2")


def _stats_file(path: Path, dim: int = 4, n: int | None = 12) -> Path:
    rows = np.random.default_rng(0).normal(size=(20, dim))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=rows.mean(0), sigma=np.cov(rows, rowvar=False), **({"n": n} if n else {}))
    return path


def _fid_protocol(metrics: list[str], reference_stats: dict | None) -> dict:
    raw = yaml.safe_load((PROTOCOLS / "smoke.yaml").read_text())
    return {**raw, "metrics": metrics, "reference_stats": reference_stats}


def test_reference_stats_file_under_harness_data(no_data, tmp_path: Path, monkeypatch, tf1_weights) -> None:  # noqa: F811
    spec = {"file": "adm/ref.npz", "format": "adm"}
    plan = make_plan(protocol_from_dict(_fid_protocol(["fid_tf1", "is"], spec), source="p.yaml"))
    assert "HARNESS_DATA is not set" in plan.missing_reference
    with pytest.raises(HarnessError, match="p.yaml: cannot run: reference_stats file 'adm/ref.npz' is relative"):
        plan.require_data()
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    assert "does not exist" in plan.missing_reference
    _stats_file(tmp_path / "adm" / "ref.npz")
    assert plan.missing_reference == ""
    plan.require_data()
    stats = plan.protocol.reference_stats.load()
    assert stats.n == 12 and stats.spec["imported_from"]["format"] == "adm"


@pytest.mark.parametrize("value, message", [
    ("ref.npz", "key 'reference_stats' has value 'ref.npz'; expected a mapping with file"),
    ({"file": "x.npz"}, "expected a mapping with file"),
    ({"file": "x.npz", "format": "adm", "extra": 1}, "expected a mapping with file"),
    ({"file": "x.npz", "format": "torchmetrics"}, "key 'reference_stats.format' has value 'torchmetrics'; expected "
                                                  "one of adm, clean-fid"),
    ({"file": "x.npz", "format": "adm", "n": 1}, "key 'reference_stats.n' has value 1; expected an integer >= 2"),
])
def test_reference_stats_key_validated(value, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        protocol_from_dict(_fid_protocol(["fid_tf1"], value), source="p.yaml")


@pytest.mark.parametrize("metric, uses", [("fid", "extractor inception-fid-helper"), ("kid", "reference feature rows")])
def test_reference_stats_refuses_metrics_it_cannot_serve(metric: str, uses: str) -> None:
    raw = _fid_protocol([metric], {"file": "/nowhere/ref.npz", "format": "adm"})
    with pytest.raises(ProtocolError, match=f"p.yaml: key 'metrics': {metric} uses {uses}, but reference_stats "
                                            f"\\(adm\\) holds mu/sigma of inception-tf1"):
        make_plan(protocol_from_dict(raw, source="p.yaml"))


def test_run_scores_against_the_imported_statistics(tmp_path: Path, tf1_weights, monkeypatch, shared_cache) -> None:
    """Statistics written from the dataset's own reference images give the FID the dataset reference gives."""
    from harness.datasets import get_dataset
    from harness.features import get_extractor, inception_tf1

    ext = get_extractor("inception-tf1")
    ext.load()
    monkeypatch.setattr(inception_tf1, "OFFICIAL_SHA256_PREFIX", ext.spec.weights_sha256[:8])
    reference_n = 32
    images = np.concatenate(list(get_dataset("mnist-5k").reference_images(reference_n)))
    rows = ext.extract(images)["pool3"].astype(np.float64)
    adm = tmp_path / "adm.npz"
    np.savez(adm, mu=rows.mean(0), sigma=np.cov(rows, rowvar=False), arr_0=images)
    base = {**yaml.safe_load((PROTOCOLS / "smoke.yaml").read_text()), "metrics": ["fid_tf1"], "bootstrap": 0,
            "reference_n": reference_n, "cfg": [2.0], "steps": [1]}
    values = {}
    for name, extra in (("own", {}), ("imported", {"reference_stats": {"file": str(adm), "format": "adm"}})):
        protocol = tmp_path / f"{name}.yaml"
        protocol.write_text(yaml.safe_dump({**base, "name": name, **extra}))
        run = tmp_path / name
        assert main(["run", str(protocol), "--results", str(run), "--executor", "debug",
                     "--cache", str(shared_cache)]) == 0
        frame = pd.read_parquet(run / "results.parquet")
        values[name] = (float(frame.value.iloc[0]), frame.reference_id.iloc[0])
    assert values["imported"][0] == pytest.approx(values["own"][0], rel=1e-6) and values["own"][0] > 0
    assert values["imported"][1] != values["own"][1]  # recorded as a different reference (the file's sha256)
