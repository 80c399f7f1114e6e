"""The external adapter: the file protocol, what it passes to the runner, and every way a runner can fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.errors import GenerationError, HarnessError, ProtocolError
from harness.types import SamplerSettings
from model_zoo.external import ExternalAdapter
from model_zoo.external_demo import make_image
from tests.support.conformance import requests_for

# A runner that copies what it received next to the test, then behaves as the demo runner.
SPY = ("import json, shutil, sys, runpy; shutil.copy(sys.argv[1], sys.argv[3]); "
       "sys.argv = ['demo', sys.argv[1], sys.argv[2]]; runpy.run_path({demo!r}, run_name='__main__')")


def test_requests_reach_the_runner_and_images_come_back(tmp_path: Path) -> None:
    from model_zoo.external import DEMO_RUNNER

    spy = tmp_path / "seen.json"
    a = ExternalAdapter.tiny(command=["{python}", "-c", SPY.format(demo=str(DEMO_RUNNER)), "{requests}", "{out}",
                                      str(spy)], runner_params={"ckpt": "x"})
    s = SamplerSettings(3, 2.0, "euler")
    reqs = requests_for(a, [11, 12], s, first_index=40)
    outs = a.sample(reqs)
    seen = json.loads(spy.read_text())
    assert seen["format"] == "onestep-bench/external/v1" and seen["params"] == {"ckpt": "x"}
    assert seen["settings"] == {"steps": 3, "cfg": 2.0, "sampler": "euler", "knobs": {}}
    assert seen["samples"] == [{"index": r.index, "seed": r.seed, "label": r.label, "prompt": None} for r in reqs]
    for r, o in zip(reqs, outs):
        assert np.array_equal(o.image, make_image(r.seed, r.label, 3, 2.0, 16)) and o.nfe == 6


def _runner(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "runner.py"
    script.write_text("import json, sys\nfrom pathlib import Path\nimport numpy as np\nfrom PIL import Image\n"
                      "req = json.loads(Path(sys.argv[1]).read_text()); out = Path(sys.argv[2])\n" + body)
    return ["{python}", str(script), "{requests}", "{out}"]


WRITE = ("for s in req['samples']:\n"
         "    img = np.full(({side}, {side}, 3), s['index'] % 200 + 1, np.uint8)\n"
         "    Image.fromarray(img).save(out / f\"{{s['index']:07d}}.png\")\n"
         "json.dump({{'samples': [{{'index': s['index'], 'nfe': {nfe}}} for s in req['samples']]}}, "
         "open(out / 'results.json', 'w'))\n")


@pytest.mark.parametrize("body, match", [
    ("sys.stderr.write('CUDA out of memory'); sys.exit(3)", "exited with 3: CUDA out of memory"),
    ("pass", "no valid results.json"),
    (WRITE.format(side=16, nfe=5), "reports nfe=5 but the card declares 2"),
    (WRITE.format(side=16, nfe=0), "nfe=0"),
    (WRITE.format(side=8, nfe=2), r"\(8, 8, 3\); expected \(16, 16, 3\)"),
    ("json.dump({'samples': [{'index': s['index'], 'nfe': 2} for s in req['samples']]}, "
     "open(out / 'results.json', 'w'))", "cannot read 0000000.png"),
])
def test_runner_failures_are_clear_errors(tmp_path: Path, body: str, match: str) -> None:
    a = ExternalAdapter.tiny(command=_runner(tmp_path, body))
    with pytest.raises(GenerationError, match=match):
        a.sample(requests_for(a, [1], SamplerSettings(2, 1.0)))


def test_reported_nfe_is_taken_as_executed(tmp_path: Path) -> None:
    a = ExternalAdapter.tiny(command=_runner(tmp_path, WRITE.format(side=16, nfe=37)), nfe="reported")
    s = SamplerSettings(2, 1.0)
    assert a.expected_nfe(s) is None
    assert [o.nfe for o in a.sample(requests_for(a, [1, 2], s))] == [37, 37]


def test_environment_variables_and_params(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONESTEP_TEST_RUNNER", raising=False)
    with pytest.raises(HarnessError, match="ONESTEP_TEST_RUNNER.*not set"):
        ExternalAdapter.tiny(command=["$ONESTEP_TEST_RUNNER", "{requests}", "{out}"])
    monkeypatch.setenv("ONESTEP_TEST_RUNNER", "/opt/rae/bin/python")
    argv = ExternalAdapter.tiny(command=["$ONESTEP_TEST_RUNNER", "{requests}", "{out}"]).argv
    assert argv[0] == "/opt/rae/bin/python"
    for bad, match in [({"command": ["run", "{out}"]}, "must pass"), ({"nfe": "guess"}, "nfe"),
                       ({"capabilities": {"guidance": "cfg"}}, "missing"), ({"colour": 1}, "unknown key")]:
        with pytest.raises(ProtocolError, match=match):
            ExternalAdapter.tiny(**bad)
