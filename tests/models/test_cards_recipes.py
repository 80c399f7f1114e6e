"""Hub cards (weights resolved at load, not plan), named recipes, 'natural' guidance and family knobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import ProtocolError
from harness.models.adapters import Capabilities, check_settings
from harness.models.cards import WeightsMissingError, card_from_dict, is_pinned, require_pinned, resolve_hub_snapshot
from harness.plan.protocol import make_plan, protocol_from_dict
from harness.types import SamplerSettings

REV = "0123456789abcdef0123456789abcdef01234567"
FM_PARAMS = yaml.safe_load((Path(__file__).resolve().parents[2] / "model_zoo" / "cards" / "fm-tiny.yaml")
                           .read_text())["params"]


def hub_card(**extra):
    return {"name": "hubby", "family": "flow_matching", "hub": {"repo": "org/model", "revision": REV},
            "params": FM_PARAMS, **extra}


def test_hub_card_is_content_addressed_by_commit_and_needs_no_file_at_plan_time():
    card = card_from_dict(hub_card())
    assert card.hub == ("org/model", REV)
    assert card.weights_digest == f"hf:org/model@{REV}"
    other = card_from_dict(hub_card(hub={"repo": "org/model", "revision": "f" * 40}))
    assert other.identity() != card.identity()


def test_unpinned_hub_card_plans_but_refuses_to_run():
    assert is_pinned(card_from_dict(hub_card()))
    unpinned = card_from_dict(hub_card(hub={"repo": "org/model", "revision": "main"}), source="c.yaml")
    assert not is_pinned(unpinned)
    with pytest.raises(ProtocolError, match="hub.revision 'main' of org/model: a branch or tag.*"
                                            "harness weights fetch hubby"):
        require_pinned(unpinned)


def test_an_unpinned_file_reference_in_params_refuses_to_run_like_the_hub_revision():
    """A UNet/LoRA/VAE named as {repo, revision, ...} in params moves the images as much as hub.revision does."""
    raw = hub_card(params={"unet": {"repo": "org/unet", "revision": "main", "file": "u.pt"}})
    card = card_from_dict(raw, source="c.yaml")
    assert is_pinned(card)  # the card's own hub revision is a commit
    with pytest.raises(ProtocolError, match=r"params.unet.revision 'main' of org/unet: a branch or tag"):
        require_pinned(card)
    require_pinned(card_from_dict(hub_card(params={"unet": {"repo": "org/unet", "revision": REV, "file": "u.pt"}})))


@pytest.mark.parametrize("hub, fragment", [
    ({"repo": "org/model", "revision": ""}, "must be a commit id"),
    ({"repo": "model", "revision": REV}, "'org/name'"),
    ({"repo": "org/model"}, "exactly 'repo' and 'revision'"),
])
def test_bad_hub_keys_are_refused(hub, fragment):
    with pytest.raises(ProtocolError, match=fragment):
        card_from_dict(hub_card(hub=hub))


def test_hub_and_local_weights_together_are_refused():
    with pytest.raises(ProtocolError, match="not both"):
        card_from_dict(hub_card(weights="x.pt", weights_sha256="a" * 64))


def test_missing_hub_snapshot_names_the_card_and_the_command():
    card = card_from_dict(hub_card(), source="cards/hubby.yaml")
    with pytest.raises(WeightsMissingError) as e:
        resolve_hub_snapshot(card)
    msg = str(e.value)
    assert "hubby" in msg and f"org/model@{REV}" in msg and "harness weights fetch hubby" in msg


def test_hub_snapshot_resolves_from_the_local_cache(tmp_path, monkeypatch):
    # Lay out the HF cache the way huggingface_hub writes it; resolution must find it offline.
    cache = tmp_path / "hub"
    snap = cache / "models--org--model" / "snapshots" / REV
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (cache / "models--org--model" / "refs").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    path = resolve_hub_snapshot(card_from_dict(hub_card()))
    assert path == snap and (path / "config.json").exists()


def protocol(models, **extra):
    raw = {"name": "p", "models": models, "datasets": ["mnist-5k"], "steps": [1], "n": 4, **extra}
    return protocol_from_dict(raw, source="p.yaml")


def card_file(tmp_path: Path, **extra) -> str:
    raw = {"name": "fm-rec", "family": "flow_matching", "params": FM_PARAMS, **extra}
    path = tmp_path / "fm-rec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_recipe_expands_to_its_settings(tmp_path):
    card = card_file(tmp_path, recipes={
        "official": {"steps": 4, "cfg": 2.0, "sampler": "euler", "citation": "paper §4"},
        "matched": {"steps": [1, 25], "cfg": [7.0, "natural"]},
    })
    official = make_plan(protocol([{"card": card, "recipe": "official"}]))
    assert [(c.settings.steps, c.settings.cfg) for c in official.cells] == [(4, 2.0)]
    matched = make_plan(protocol([{"card": card, "recipe": "matched"}]))
    # fm-tiny's natural guidance is 1.0 (its released value), so "natural" becomes cfg=1.0
    assert [(c.settings.steps, c.settings.cfg) for c in matched.cells] == [(1, 7.0), (1, 1.0), (25, 7.0), (25, 1.0)]


def test_unknown_recipe_and_recipe_plus_settings_are_refused(tmp_path):
    card = card_file(tmp_path, recipes={"official": {"steps": 4, "cfg": 2.0}})
    with pytest.raises(ProtocolError, match="has no recipe 'oficial'.*did you mean 'official'"):
        make_plan(protocol([{"card": card, "recipe": "oficial"}]))
    with pytest.raises(ProtocolError, match="also \\['steps'\\]"):
        protocol([{"card": card, "recipe": "official", "steps": [2]}])


def test_bad_recipe_key_is_refused(tmp_path):
    with pytest.raises(ProtocolError, match="unknown key 'stpes'"):
        card_from_dict({"name": "x", "family": "flow_matching", "recipes": {"official": {"stpes": 4}}})


def test_natural_cfg_collapses_onto_an_equal_listed_value_and_means_none_without_guidance():
    plan = make_plan(protocol(["fm-tiny"], cfg=[1.0, "natural", 3.0]))
    assert [c.settings.cfg for c in plan.cells] == [1.0, 3.0]
    plan = make_plan(protocol(["fm-tiny-noguide"], cfg=["natural"]))
    assert [c.settings.cfg for c in plan.cells] == [None]


def test_knobs_a_family_does_not_declare_are_refused_at_plan_time():
    with pytest.raises(ProtocolError, match="knob 'guidance_interval' is not honoured.*allowed knobs: none"):
        make_plan(protocol([{"card": "fm-tiny", "cfg": [2.0], "knobs": {"guidance_interval": [0.1, 0.9]}}]))


def test_declared_knobs_pass_and_are_part_of_the_cell_identity():
    caps = Capabilities(conditioning="class", guidance="interval", min_steps=1, max_steps=4, resolution=8,
                        num_classes=10, knobs=("guidance_interval",))
    card = card_from_dict({"name": "x", "family": "flow_matching"})
    with_knob = SamplerSettings(2, 3.0, knobs={"guidance_interval": [0.1, 0.9]})
    check_settings(card, caps, with_knob)
    assert with_knob.knob("guidance_interval") == (0.1, 0.9)
    assert with_knob != SamplerSettings(2, 3.0)
    # JSON round trip (cell.json stores lists) gives back an equal, equally hashed value
    assert SamplerSettings(2, 3.0, knobs=[["guidance_interval", [0.1, 0.9]]]) == with_knob


def test_ls_cards_shows_each_cards_capabilities(capsys):
    from harness.cli import main

    assert main(["ls", "cards"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "guidance=embedded" in lines["flux1-dev"] and "knobs=true_cfg_scale" in lines["flux1-dev"]
    assert "guidance=none" in lines["soflow-xl2"] and "one-step" in lines["soflow-xl2"]
    assert "samplers=euler,heun" in lines["fm-mnist"] and "natural_cfg=1 " in lines["fm-mnist"]
