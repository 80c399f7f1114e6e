"""Content-addressed cell ids and per-sample seeds (ARCHITECTURE §2.1, §2.2)."""

from __future__ import annotations

import dataclasses

from harness import SAMPLING_VERSION
from harness.models.cards import card_from_dict
from harness.plan.protocol import load_protocol, make_plan
from harness.run.generate import requests_for, sample_seed
from harness.types import Cell, DatasetRef, SamplerSettings

CARD = card_from_dict({"name": "a", "family": "flow_matching", "weights": None, "params": {"hidden": 32}})
BASE = Cell(model=CARD, settings=SamplerSettings(steps=4, cfg=2.0), dataset=DatasetRef("mnist-5k", "d" * 64, 10),
            seed=0, n=16, sampling_version=SAMPLING_VERSION)


def test_every_input_changes_the_cell_id():
    variants = [
        dataclasses.replace(BASE, model=card_from_dict({"name": "a", "family": "flow_matching", "weights": None,
                                                        "params": {"hidden": 64}})),
        dataclasses.replace(BASE, model=dataclasses.replace(CARD, weights_digest="f" * 64)),
        dataclasses.replace(BASE, model=dataclasses.replace(CARD, dtype="bfloat16")),
        dataclasses.replace(BASE, settings=SamplerSettings(steps=5, cfg=2.0)),
        dataclasses.replace(BASE, settings=SamplerSettings(steps=4, cfg=2.5)),
        dataclasses.replace(BASE, settings=SamplerSettings(steps=4, cfg=None)),
        dataclasses.replace(BASE, settings=SamplerSettings(steps=4, cfg=2.0, sampler="heun")),
        dataclasses.replace(BASE, dataset=DatasetRef("mnist-5k", "e" * 64, 10)),
        dataclasses.replace(BASE, dataset=DatasetRef("other", "d" * 64, 10)),
        dataclasses.replace(BASE, seed=1),
        dataclasses.replace(BASE, n=17),
        dataclasses.replace(BASE, sampling_version=SAMPLING_VERSION + 1),
    ]
    ids = {v.cell_id for v in variants}
    assert len(ids) == len(variants) and BASE.cell_id not in ids


def test_cell_id_ignores_names_and_paths():
    """The card's name and source file are labels, not identity: same weights + settings → same cell."""
    renamed = dataclasses.replace(BASE, model=dataclasses.replace(CARD, name="renamed", source="/elsewhere.yaml"))
    assert renamed.cell_id == BASE.cell_id


def test_cell_id_is_stable_across_plans_and_shard_layouts():
    a = make_plan(load_protocol("protocols/smoke.yaml"))
    b = make_plan(load_protocol("protocols/smoke.yaml", ["shard_size=1", "batch_size=2"]))
    assert [c.cell_id for c in a.cells] == [c.cell_id for c in b.cells]


def test_seed_depends_only_on_protocol_seed_dataset_and_index():
    seeds = [sample_seed(0, "mnist-5k", i) for i in range(1000)]
    assert len(set(seeds)) == 1000
    assert all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(0, "mnist-5k", 7) == seeds[7]
    assert sample_seed(1, "mnist-5k", 7) != seeds[7]
    assert sample_seed(0, "other", 7) != seeds[7]


def test_same_index_same_seed_and_label_in_every_cell_of_a_model():
    plan = make_plan(load_protocol("protocols/smoke.yaml"))
    per_cell = [[(r.seed, r.label) for r in requests_for(c, list(range(6)))] for c in plan.cells]
    assert all(p == per_cell[0] for p in per_cell)
    assert [label for _, label in per_cell[0]] == [0, 1, 2, 3, 4, 5]
