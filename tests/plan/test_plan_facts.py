"""The plan carries what it computed per cell (NFE, guidance mechanism, native resolution): `harness plan`, the
cost and size estimates and the runner read ``Plan.facts`` instead of asking each cell's adapter again."""

from __future__ import annotations

import pytest

import harness.plan.cost as cost
from harness.cli import main
from harness.models.adapters import get_adapter_class
from harness.plan.cost import estimate_plan_gpu_hours
from harness.plan.protocol import CellFacts, cell_facts, load_protocol, make_plan


@pytest.fixture(scope="module")
def quickstart():
    return make_plan(load_protocol("protocols/quickstart.yaml"))


def test_every_cell_has_the_facts_its_adapter_declares(quickstart):
    assert set(quickstart.facts) == {c.cell_id for c in quickstart.cells}
    for cell in quickstart.cells:
        adapter = get_adapter_class(cell.model.family)(cell.model)
        caps = adapter.capabilities
        expected = CellFacts(adapter.expected_nfe(cell.settings), caps.guidance, caps.resolution)
        assert quickstart.facts[cell.cell_id] == expected == cell_facts(cell)
    floor = next(c for c in quickstart.cells if c.model.family == "real_images")
    assert quickstart.facts_of(floor) == CellFacts(0, "none", 28)
    guided = next(c for c in quickstart.cells if c.model.name == "fm-mnist" and c.settings.cfg == 3.0)
    assert quickstart.facts_of(guided) == CellFacts(2 * guided.settings.steps, "cfg", 28)  # true CFG doubles NFE


def test_later_layers_do_not_ask_the_adapters_again(quickstart, monkeypatch, capsys):
    def asked(*_args, **_kwargs):
        raise AssertionError("an adapter was asked for a fact the plan carries")

    monkeypatch.setattr(cost, "get_adapter_class", asked)  # cost.expected_nfe's only way to an adapter
    assert estimate_plan_gpu_hours(quickstart).known_cells == 1  # the floor (0 NFE); the rest have no cost block
    monkeypatch.setattr("harness.plan.protocol.cell_facts", asked)  # a Plan's fallback when it lacks facts
    assert main(["plan", "protocols/quickstart.yaml"]) == 0
    out = capsys.readouterr().out
    assert "real-mnist-train" in out and "nfe/sample=0" in out and "guidance=cfg" in out
