"""Planning without data (provisional cell ids, `run` refuses) and the plan-time refusals of what a dataset
provides: the model, the dataset and what each has are named, before any compute."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from harness.datasets import dataset_class
from harness.datasets.labels import imagenet_labels
from harness.errors import HarnessError, ProtocolError
from harness.plan.protocol import load_protocol, make_plan, protocol_from_dict
from harness.run.runner import prepare_run

REPO = Path(__file__).resolve().parents[2]
PAPER_FAIR = REPO / "protocols" / "paper_fair.yaml"
EIGHT = ("meanflow-xl2", "imf-xl2", "soflow-xl2", "sit-xl2", "rae-dit-dh-xl", "scale-rae", "sd35-large", "flux1-dev")
ROW = re.compile(r"^ (~| )([0-9a-f]{16})\s+(\S+)\s+(\S+)\s+steps=(\d+)\s+cfg=(\S+)\s+guidance=(\S+)\s+"
                 r"sampler=(\S+).*nfe/sample=(\S+)")


def _rows(out: str) -> list[tuple[str, ...]]:
    return [m.groups() for m in map(ROW.match, out.splitlines()) if m]


def test_paper_fair_plans_offline_with_provisional_ids(no_data, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(PAPER_FAIR)]) == 0
    out = capsys.readouterr().out
    for dataset, variable in (("imagenet-val", "HARNESS_DATASET_IMAGENET_VAL"),
                              ("imagenetv2-mf", "HARNESS_DATASET_IMAGENETV2_MF"),
                              ("relaionet", "HARNESS_DATASET_RELAIONET")):
        header = next(line for line in out.splitlines() if line.startswith(f"  provisional dataset {dataset}:"))
        assert variable in header and "HARNESS_DATA=" in header
    rows = _rows(out)
    assert len(rows) == 84 and all(marker == "~" for marker, *_ in rows)
    assert {r[2] for r in rows} == set(EIGHT)
    assert {r[3] for r in rows} == {"imagenet-val", "imagenetv2-mf", "relaionet"}
    by_setting = {(r[2], int(r[4]), r[5]): (r[6], r[7], r[8]) for r in rows}
    # the mechanism actually used and the evaluations per image, per model (same on every dataset)
    assert by_setting[("sit-xl2", 25, "7")] == ("cfg", "euler", "50")
    assert by_setting[("flux1-dev", 25, "7")] == ("embedded", "euler", "25")
    assert by_setting[("imf-xl2", 1, "8")] == ("interval", "euler", "1")
    assert by_setting[("soflow-xl2", 25, "none")] == ("none", "renoise", "25")
    assert by_setting[("scale-rae", 1, "1.42")] == ("cfg", "euler", "adaptive")
    # SoFlow (and MeanFlow) at cfg 7.0: refused with the reason, listed, never a cell
    assert not any(r[2] in ("soflow-xl2", "meanflow-xl2") and r[5] != "none" for r in rows)
    refused = [line for line in out.splitlines() if line.strip().startswith("refused")]
    assert len(refused) == 2  # one line per model and setting, listing its steps
    soflow = next(line for line in refused if "soflow-xl2" in line)
    assert "steps=1,25 cfg=7 sampler=renoise not run:" in soflow and "asked of a model without guidance" in soflow
    summary, estimate = out.rstrip().splitlines()[-2:]
    assert summary.endswith("provisional ids (data absent: imagenet-val, imagenetv2-mf, relaionet)")
    assert estimate.startswith("generation estimate: ")
    assert "84 cells" in out and "4 refused settings listed, not run" in out


def test_run_refuses_a_provisional_plan_before_anything_is_written(no_data, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["run", str(PAPER_FAIR), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "cannot run: cell ids are provisional" in err and "HARNESS_DATASET_IMAGENET_VAL" in err
    assert not results.exists()
    plan = make_plan(load_protocol(PAPER_FAIR))
    with pytest.raises(HarnessError, match="HARNESS_DATASET_RELAIONET"):
        prepare_run(plan, results, tmp_path / "cache")  # the Slurm path goes through here too
    assert not results.exists()


def _imagenet_folder(root: Path) -> Path:
    for k, wnid in enumerate(("n01440764", "n02012849")):
        (root / wnid).mkdir(parents=True)
        pixels = np.random.default_rng(k).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / wnid / f"ILSVRC2012_val_{k}.JPEG")
    return root


def _one_model(dataset: str, card: str = "sit-xl2", **extra) -> dict:
    return {"name": "p", "models": [{"card": card, "sampler": "euler", **extra}], "datasets": [dataset],
            "steps": [1], "cfg": [1.5], "n": 4}


def test_present_data_gives_real_ids_and_bad_data_is_still_an_error(no_data, tmp_path: Path, monkeypatch) -> None:
    offline = make_plan(protocol_from_dict(_one_model("imagenet-val")))
    assert offline.cells[0].provisional and set(offline.missing_data) == {"imagenet-val"}
    monkeypatch.setenv("HARNESS_DATASET_IMAGENET_VAL", str(tmp_path / "nowhere"))
    still = make_plan(protocol_from_dict(_one_model("imagenet-val")))
    assert "nowhere does not exist" in still.missing_data["imagenet-val"]
    monkeypatch.setenv("HARNESS_DATASET_IMAGENET_VAL", str(_imagenet_folder(tmp_path / "val")))
    online = make_plan(protocol_from_dict(_one_model("imagenet-val")))
    assert not online.cells[0].provisional and not online.missing_data
    assert online.cells[0].cell_id != offline.cells[0].cell_id
    online.require_data()  # does not raise
    (tmp_path / "val" / "not-a-class").mkdir()  # present but malformed: an error, never provisional
    (tmp_path / "val" / "not-a-class" / "x.JPEG").write_bytes(b"")
    with pytest.raises(HarnessError, match="not-a-class"):
        make_plan(protocol_from_dict(_one_model("imagenet-val")))


def test_class_count_without_files_comes_from_the_label_table() -> None:
    for name in ("imagenet-val", "imagenetv2-mf", "relaionet", "imagenet-val-admcrop"):
        assert dataset_class(name).num_classes == len(imagenet_labels()) == 1000


def test_class_count_mismatch_is_refused_without_files(no_data) -> None:
    with pytest.raises(ProtocolError, match=r"models\[0\]: model 'fm-tiny' is conditioned on 10 classes but "
                                            r"dataset 'imagenet-val' has 1000"):
        make_plan(protocol_from_dict({**_one_model("imagenet-val", card="fm-tiny"), "cfg": [2.0]}, source="x.yaml"))


@pytest.mark.parametrize("card, dataset, needs, provides", [
    ("sd35-large", "mnist-5k", "text-conditioned (needs prompts)", "labels, images"),
    ("fm-tiny", "partiprompts", "class-conditional (needs labels)", "prompts"),
    ("sit-xl2", "coco2014-30k", "class-conditional (needs labels)", "prompts, images"),
])
def test_model_on_a_dataset_without_its_conditions_is_refused(no_data, card, dataset, needs, provides) -> None:
    raw = {**_one_model(dataset, card=card), "cfg": [2.0]}
    with pytest.raises(ProtocolError) as err:
        make_plan(protocol_from_dict(raw, source="x.yaml"))
    assert str(err.value) == (f"x.yaml: models[0]: model {card!r} is {needs} but dataset {dataset!r} "
                              f"provides {provides}")


def test_reference_metric_on_a_prompts_only_dataset_is_refused(no_data) -> None:
    raw = {**_one_model("partiprompts", card="sd35-large"), "cfg": [2.0], "metrics": ["fid"]}
    with pytest.raises(ProtocolError, match=r"x.yaml: key 'metrics': fid need reference images but dataset "
                                            r"'partiprompts' provides prompts$"):
        make_plan(protocol_from_dict(raw, source="x.yaml"))


def test_unsupported_list_and_its_validation(no_data) -> None:
    raw = _one_model("imagenet-val", card="soflow-xl2", unsupported="list")
    raw["models"][0]["sampler"] = "renoise"
    raw["cfg"] = [7.0, "natural"]
    plan = make_plan(protocol_from_dict(raw, source="x.yaml"))
    assert [c.settings.cfg for c in plan.cells] == [None]
    assert [(r.model, r.settings.cfg) for r in plan.refused] == [("soflow-xl2", 7.0)]
    raw["models"][0]["unsupported"] = "skip"
    with pytest.raises(ProtocolError, match=r"x.yaml: key 'models\[0\].unsupported' has value 'skip'; expected one "
                                            r"of refuse, list"):
        protocol_from_dict(raw, source="x.yaml")
    raw["models"][0].pop("unsupported")  # default: the whole plan is refused
    with pytest.raises(ProtocolError, match="cfg=7.0 asked of a model without guidance"):
        make_plan(protocol_from_dict(raw, source="x.yaml"))


def test_a_plan_whose_every_setting_is_refused_says_why(no_data) -> None:
    raw = {**_one_model("imagenet-val", card="soflow-xl2", unsupported="list"), "cfg": [7.0]}
    raw["models"][0]["sampler"] = "renoise"
    with pytest.raises(HarnessError, match="expands to no cells; every setting was refused, e.g. model "
                                           "'soflow-xl2' \\(soflow\\): cfg=7.0 asked of a model without guidance"):
        make_plan(protocol_from_dict(raw, source="x.yaml"))
