"""Every shipped text-to-image card plans its official and setting-matched recipes, with honest NFE."""

from __future__ import annotations

import pytest

from harness.models.cards import is_pinned, load_card
from tests.support.zoo_t2i_support import plan_cells

CARDS = ["sd35-large", "sd35-medium", "sd35-large-turbo", "flux1-dev", "flux1-schnell", "sdxl-base", "sdxl-turbo",
         "sd-turbo", "lcm-dreamshaper-v7"]


@pytest.mark.parametrize("card", CARDS)
def test_recipes_plan_and_nfe_follows_the_guidance_mechanism(card: str) -> None:
    model = load_card(card)
    assert not is_pinned(model), "a real commit id cannot be known offline; cards say `main` until pinned"
    assert model.recipes["official"].get("citation")
    for recipe in ("official", "matched"):
        cells = plan_cells(card, recipe)
        assert cells
        for steps, cfg, guidance, nfe in cells:
            doubled = guidance == "cfg" and cfg > 1  # true CFG runs a second pass per step; embedded never does
            assert nfe == steps * (2 if doubled else 1), (card, recipe, steps, cfg)


def test_paper_matched_grid_per_mechanism() -> None:
    assert plan_cells("sd35-large", "matched") == [(1, 7.0, "cfg", 2), (1, 3.5, "cfg", 2), (25, 7.0, "cfg", 50),
                                                   (25, 3.5, "cfg", 50)]
    assert plan_cells("flux1-dev", "matched") == [(1, 7.0, "embedded", 1), (1, 3.5, "embedded", 1),
                                                  (25, 7.0, "embedded", 25), (25, 3.5, "embedded", 25)]
    assert plan_cells("flux1-schnell", "matched") == [(1, None, "none", 1), (25, None, "none", 25)]
    assert plan_cells("sd35-large-turbo", "matched") == [(1, 7.0, "cfg", 2), (1, 0.0, "cfg", 1),
                                                         (25, 7.0, "cfg", 50), (25, 0.0, "cfg", 25)]
