"""A model from a callable (model_zoo/callable_model.py): a function defined here runs plan → run → report;
one that breaks batch == singles (or seeds) is refused, naming the check, before any image is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import harness
from harness.errors import HarnessError, ProtocolError
from harness.models.cards import load_card
from model_zoo.callable_model import CallableAdapter

CAPS = {"conditioning": "class", "guidance": "cfg", "min_steps": 1, "max_steps": 8, "resolution": 28,
        "num_classes": 10, "natural_cfg": 2.0}


def digit_like(conditions, steps, cfg, generators, brightness: int = 255) -> np.ndarray:
    """A well-behaved generator: each image from its own generator (noise), its label and the settings."""
    out = np.zeros((len(conditions), 28, 28, 3), np.uint8)
    for i, (label, g) in enumerate(zip(conditions, generators)):
        noise = torch.rand((28, 28), generator=g, dtype=torch.float64).numpy()
        stroke = np.zeros((28, 28))
        stroke[4:24, 10 + label: 13 + label] = 1.0  # a vertical bar whose place depends on the label
        image = np.clip(stroke * (0.5 + 0.25 * (cfg or 1.0)) + 0.3 * noise / steps, 0, 1)
        out[i] = np.rint(image * brightness).astype(np.uint8)[..., None]
    return out


def shared_noise(conditions, steps, cfg, generators) -> np.ndarray:
    """Breaks batch == singles: every image draws its noise from the first generator, one after another."""
    return digit_like(conditions, steps, cfg, [generators[0]] * len(conditions))


def unseeded(conditions, steps, cfg, generators) -> np.ndarray:
    """Breaks same seed → same images: noise from torch's global generator."""
    return digit_like(conditions, steps, cfg, [None] * len(conditions))


def float_images(conditions, steps, cfg, generators) -> np.ndarray:
    return digit_like(conditions, steps, cfg, generators).astype(np.float32) / 255.0


def _card(tmp_path: Path, function: str, **params) -> Path:
    """A card file naming ``function`` of this module (``params`` override the card's params)."""
    path = tmp_path / f"{function}.yaml"
    path.write_text(yaml.safe_dump({"name": f"callable-{function}", "family": "callable", "params": {
        "entry": f"{__name__}:{function}", "capabilities": CAPS, "nfe": {"per_step": 1, "cfg_doubles": True},
        **params}}))
    return path


def _protocol(card: Path, **changes) -> dict:
    return {"name": "callable-test", "models": [str(card)], "datasets": ["mnist-5k"], "steps": [1, 2],
            "cfg": [1.0, 2.0], "n": 6, "shard_size": 4, "batch_size": 4, "metrics": ["class_alignment"],
            "bootstrap": 0, **changes}


def test_a_callable_runs_plan_run_report(tmp_path, shared_cache):
    card = _card(tmp_path, "digit_like", options={"brightness": 250})
    done = harness.run(_protocol(card), results=tmp_path / "run", executor="debug", cache=shared_cache)
    frame = done.results
    assert len(frame) == 4 and set(frame.model) == {"callable-digit_like"} and set(frame.family) == {"callable"}
    nfe = frame.set_index(["steps", "cfg"]).nfe_mean.to_dict()
    assert nfe == {(1, 1.0): 1, (1, 2.0): 2, (2, 1.0): 2, (2, 2.0): 4}  # the card's NFE rule
    pngs = sorted((tmp_path / "run").glob("cells/*/images/*.png"))
    assert len(pngs) == 4 * 6
    brightest = max(np.asarray(Image.open(p)).max() for p in pngs)
    assert 200 < brightest <= 250  # the card's options reached the function
    assert "| callable-digit_like |" in (tmp_path / "run" / "leaderboard.md").read_text()
    written = done.report(out=tmp_path / "report")
    assert tmp_path / "report" / "leaderboard.md" in written and all(p.is_file() for p in written)


@pytest.mark.parametrize(("entry", "check"), [("shared_noise", "'batch == singles'"),
                                              ("unseeded", "'same seed → same images'")])
def test_a_callable_that_fails_a_conformance_check_is_refused_by_name(entry, check, tmp_path, shared_cache):
    card = _card(tmp_path, entry)
    with pytest.raises(HarnessError, match=f"model 'callable-{entry}' \\(callable {__name__}:{entry}\\) failed the "
                                           f"conformance check {check}"):
        harness.run(_protocol(card), results=tmp_path / "run", executor="debug", cache=shared_cache)
    assert not list((tmp_path / "run").glob("cells/*/images/*.png")), "images written before the check"


def test_what_the_card_does_not_declare_is_refused_at_plan_time(tmp_path):
    from harness.api.runs import checked_plan

    card = _card(tmp_path, "digit_like")
    with pytest.raises(ProtocolError, match=r"steps=9 is outside its range \[1, 8\]"):
        checked_plan(_protocol(card, steps=[9]))
    with pytest.raises(ProtocolError, match=r"knob 'eta' is not honoured"):
        checked_plan(_protocol(card, models=[{"card": str(card), "knobs": {"eta": 0.5}}]))
    unguided = _card(tmp_path, "float_images", capabilities={**CAPS, "guidance": "none", "natural_cfg": None})
    with pytest.raises(ProtocolError, match=r"cfg=1.0 asked of a model without guidance"):
        checked_plan(_protocol(unguided))


@pytest.mark.parametrize(("params", "message"), [
    ({"entry": "no colon"}, r"params.entry='no colon'; expected 'package.module:function'"),
    ({"nfe": "steps"}, r"params.nfe='steps'; expected \{per_step, cfg_doubles, extra\}"),
    ({"capabilities": {**CAPS, "resolution": "28"}}, r"params.capabilities.resolution='28' has the wrong type"),
    ({"weights_path": "x"}, r"unknown key\(s\) \['weights_path'\] for family callable"),
])
def test_bad_cards_are_refused_naming_the_key(params, message, tmp_path):
    card = load_card(str(_card(tmp_path, "digit_like", **params)))
    with pytest.raises(ProtocolError, match=message):
        CallableAdapter.capabilities_for(card)


def test_bad_functions_and_outputs_are_refused_naming_the_entry(tmp_path):
    adapter = CallableAdapter(load_card(str(_card(tmp_path, "float_images"))))
    with pytest.raises(HarnessError, match=r"float_images\) returned float32 \(4, 28, 28, 3\); expected uint8"):
        adapter.load()
    missing = CallableAdapter(load_card(str(_card(tmp_path, "nothing_here"))))
    with pytest.raises(HarnessError, match=f"{__name__} has no function 'nothing_here'"):
        missing.load()


def test_the_card_weights_file_is_checked_at_load(tmp_path):
    """``weights`` + ``weights_sha256`` (a checkpoint, or the module itself) name the bytes in every cell id."""
    from harness.hashing import sha256_file

    module = Path(__file__)
    raw = yaml.safe_load(_card(tmp_path, "digit_like").read_text())
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**raw, "weights": str(module), "weights_sha256": sha256_file(module)}))
    CallableAdapter(load_card(str(good))).load()
    stale = tmp_path / "stale.yaml"
    stale.write_text(yaml.safe_dump({**raw, "weights": str(module), "weights_sha256": "0" * 64}))
    with pytest.raises(HarnessError, match=r"sha256 mismatch"):
        CallableAdapter(load_card(str(stale))).load()
