"""Every registered feature extractor through the extractor conformance suite (tests/conformance_plugins.py).

Spec checks need only the spec (for some extractors a hash of weight files, so those skip when the weights are
absent); the extraction checks load the network on the CPU once per extractor and feed it a few small images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.features import ExtractorSpec, available_extractors, get_extractor
from tests.support.conformance_plugins import ExtractorConformance, skip_if_weights_absent

# Offline stand-ins for weights this machine may lack (fixtures of tests/support/metric_fixtures.py,
# tests/support/clip_metric_fixtures.py and tests/support/imagereward_fixtures.py): random networks of the real
# architecture under the real entry names.
STAND_IN_WEIGHTS = {"inception-tf1": "tf1_weights", "inception-clean": "tf1_weights",
                    "clip-vit-b-16-openai": "installed", "clip-vit-l-14-openai": "installed",
                    "hps-v2.1": "hps_installed",
                    "imagereward-v1.0": "imagereward_installed"}
_LOADED: dict[str, Any] = {}  # one CPU load per extractor for the whole session (extraction needs no weights file)


@pytest.fixture(params=available_extractors())
def extractor_name(request: pytest.FixtureRequest) -> str:
    if request.param in STAND_IN_WEIGHTS:
        request.getfixturevalue(STAND_IN_WEIGHTS[request.param])
    return request.param


@pytest.fixture
def spec_of() -> Callable[[str], ExtractorSpec]:
    return lambda name: skip_if_weights_absent(lambda: get_extractor(name).spec)


@pytest.fixture
def loaded(extractor_name: str) -> Any:
    if extractor_name not in _LOADED:
        extractor = get_extractor(extractor_name)
        skip_if_weights_absent(lambda: extractor.load("cpu"))
        _LOADED[extractor_name] = extractor
    return _LOADED[extractor_name]


class TestExtractorConformance(ExtractorConformance):
    pass


def test_registry_names_are_the_extractors_own() -> None:
    """Error messages and ``harness ls extractors`` name an extractor by its ``name``: it must be its registry key."""
    assert {name: get_extractor(name).name for name in available_extractors()} == \
        {n: n for n in available_extractors()}
