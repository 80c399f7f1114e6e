"""Knob values validated at plan time from the family's declaration (type, bounds, choices); families that
declare only names keep today's behaviour (the family checks values when sampling)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from harness.errors import ProtocolError
from harness.models.adapters import get_adapter_class
from harness.models.cards import load_card
from harness.models.knobs import Knob, check_knob_values, knob_from_declaration
from harness.plan.protocol import make_plan, protocol_from_dict

CARDS = Path(__file__).resolve().parents[2] / "model_zoo" / "cards"
UNIT = Knob("t", "number", 0.0, 1.0)
OPEN = Knob("tol", "number", 0.0, 1.0, min_open=True, max_open=True)
POSITIVE = Knob("n", "integer", 1)
CHOICE = Knob("mode", "choice", choices=("cfg", "autoguidance"))


@pytest.mark.parametrize("knob, value, ok", [
    (UNIT, 0, True), (UNIT, 1.0, True), (UNIT, 0.5, True), (UNIT, -0.1, False), (UNIT, 1.01, False),
    (UNIT, True, False), (UNIT, "0.5", False), (UNIT, float("nan"), False),
    (OPEN, 0.0, False), (OPEN, 1.0, False), (OPEN, 1e-6, True),
    (POSITIVE, 1, True), (POSITIVE, 0, False), (POSITIVE, 2.0, False),
    (CHOICE, "cfg", True), (CHOICE, "ag", False), (CHOICE, None, False),
    (Knob("flag", "bool"), False, True), (Knob("flag", "bool"), 0, False),
])
def test_knob_accepts(knob: Knob, value, ok: bool) -> None:
    assert knob.accepts(value) is ok


def test_knob_is_its_name_and_pickles() -> None:
    assert UNIT == "t" and "t" in (UNIT,) and ",".join((UNIT, CHOICE)) == "t,mode"
    assert [k.expectation() for k in (UNIT, OPEN, POSITIVE, CHOICE)] == [
        "a finite number in [0, 1]", "a finite number in (0, 1)", "an integer >= 1", "one of cfg, autoguidance"]
    again = pickle.loads(pickle.dumps(OPEN))
    assert again == "tol" and again.expectation() == OPEN.expectation() and again.min_open
    with pytest.raises(ValueError, match="kind 'float'"):
        Knob("x", "float")


def test_names_without_declaration_pass_any_value() -> None:
    check_knob_values([("t", 99.0), ("mode", "anything")], ("t", "mode"), "p.yaml: key 'models[0].knobs", "m")


def test_declarations_from_a_card_file() -> None:
    assert knob_from_declaration("plain") == "plain" and not isinstance(knob_from_declaration("plain"), Knob)
    knob = knob_from_declaration({"name": "g", "kind": "choice", "choices": ["a", "b"]})
    assert isinstance(knob, Knob) and knob.expectation() == "one of a, b"
    with pytest.raises(ProtocolError, match=r"card.yaml: knob .*kind 'text'; expected one of number, integer"):
        knob_from_declaration({"name": "g", "kind": "text"}, "card.yaml: ")
    with pytest.raises(ProtocolError, match="choices are given exactly when kind is 'choice'"):
        knob_from_declaration({"name": "g", "kind": "number", "choices": [1]})


def _plan(card: str, knobs: dict, sampler: str = "euler", cfg: list | None = None) -> None:
    raw = {"name": "p", "models": [{"card": card, "sampler": sampler, "knobs": knobs}], "datasets": ["imagenet-val"],
           "steps": [1], "cfg": cfg or ["natural"], "n": 4}
    make_plan(protocol_from_dict(raw, source="p.yaml"))


@pytest.mark.parametrize("card, knobs, sampler, message", [
    ("imf-xl2", {"t_min": 1.5, "t_max": 1.0}, "euler",
     "p.yaml: key 'models[0].knobs.t_min' has value 1.5; model 'imf-xl2' (imf) expects a finite number in [0, 1]"),
    ("sit-xl2", {"cfg_channels": 5}, "euler",
     "p.yaml: key 'models[0].knobs.cfg_channels' has value 5; model 'sit-xl2' (sit) expects one of 3, 4"),
    ("sit-xl2", {"atol": 0.0}, "dopri5",
     "p.yaml: key 'models[0].knobs.atol' has value 0.0; model 'sit-xl2' (sit) expects a finite number in (0, 1)"),
    ("rae-dit-dh-xl", {"guidance_method": "ag"}, "euler",
     "p.yaml: key 'models[0].knobs.guidance_method' has value 'ag'; model 'rae-dit-dh-xl' (rae) expects "
     "one of cfg, autoguidance"),
])
def test_bad_knob_value_refused_at_plan(no_data, card: str, knobs: dict, sampler: str,  # noqa: F811
                                        message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        _plan(card, knobs, sampler)
    assert str(err.value) == message


def test_flux_true_cfg_scale_refused_at_plan(no_data) -> None:  # noqa: F811
    raw = {"name": "p", "models": [{"card": "flux1-dev", "knobs": {"true_cfg_scale": -1}}],
           "datasets": ["partiprompts"], "steps": [4], "cfg": [3.5], "n": 4}
    with pytest.raises(ProtocolError, match=r"key 'models\[0\].knobs.true_cfg_scale' has value -1; model "
                                            r"'flux1-dev' \(flux\) expects a finite number >= 0$"):
        make_plan(protocol_from_dict(raw, source="p.yaml"))


def test_good_values_plan(no_data) -> None:  # noqa: F811
    _plan("imf-xl2", {"t_min": 0.4, "t_max": 0.65})
    _plan("sit-xl2", {"cfg_channels": 4, "atol": 1e-6, "rtol": 1e-3}, "dopri5")
    _plan("rae-dit-dh-xl", {"guidance_method": "autoguidance"})


def test_bad_recipe_knob_names_the_card_file(no_data, tmp_path: Path) -> None:  # noqa: F811
    raw = yaml.safe_load((CARDS / "imf-xl2.yaml").read_text())
    raw["recipes"]["official"]["knobs"] = {"t_min": "low"}
    card = tmp_path / "imf-bad.yaml"
    card.write_text(yaml.safe_dump(raw))
    protocol = {"name": "p", "models": [{"card": str(card), "recipe": "official"}], "datasets": ["imagenet-val"],
                "steps": [1], "n": 4}
    with pytest.raises(ProtocolError) as err:
        make_plan(protocol_from_dict(protocol, source="p.yaml"))
    assert str(err.value) == (f"p.yaml: models[0] recipe 'official' of {card}: key 'knobs.t_min' has value 'low'; "
                              f"model 'imf-xl2' (imf) expects a finite number in [0, 1]")


def test_declared_knobs_come_from_the_families() -> None:
    for card, name in (("imf-xl2", "t_max"), ("sit-xl2", "rtol"), ("flux1-dev", "true_cfg_scale"),
                       ("rae-dit-dh-xl", "guidance_method")):
        model = load_card(card)
        knobs = get_adapter_class(model.family).capabilities_for(model).knobs
        assert any(isinstance(k, Knob) and k == name for k in knobs), (card, knobs)


@pytest.mark.parametrize("knobs, cfg, message", [
    ({"t_min": 0.7, "t_max": 0.5}, 8.0, "guidance interval t_min=0.7, t_max=0.5; expected 0 <= t_min <= t_max <= 1"),
    ({}, 0.5, "cfg \\(ω\\) = 0.5 < 1"),
])
def test_family_value_checks_run_at_plan(no_data, knobs: dict, cfg: float, message: str) -> None:  # noqa: F811
    """Constraints across knobs (or on cfg) the declaration cannot express: the family's own check, at plan."""
    with pytest.raises(ProtocolError, match=f"^p.yaml: model 'imf-xl2': {message}"):
        _plan("imf-xl2", knobs, cfg=[cfg])
