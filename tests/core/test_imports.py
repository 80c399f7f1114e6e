"""Every module imports on its own, and every CLI verb runs from a fresh interpreter.

The rest of the suite imports ``harness.datasets`` first (conftest), which hid an import cycle that made
``harness dataset NAME`` crash; these tests never share an interpreter with that import order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "protocols" / "smoke.yaml")

# Run in ONE fresh interpreter: third-party libraries are imported once, then every module of ours is imported
# in a forked child that has imported nothing of harness or model_zoo, so import order cannot hide a cycle.
ISOLATED_IMPORTS = r"""
import importlib, json, os, sys, traceback
for heavy in ("numpy", "torch", "torchvision", "pandas", "PIL.Image", "yaml", "scipy.linalg", "matplotlib",
              "transformers", "diffusers", "open_clip", "submitit", "pyarrow.parquet"):
    try:
        importlib.import_module(heavy)
    except Exception:
        pass  # the module that needs it reports the failure itself
assert not any(m.split(".")[0] in ("harness", "model_zoo") for m in sys.modules), "parent imported ours"
failures = {}
for name in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc().encode()[-2000:])
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failures[name] = text or f"exit status {status}"
print(json.dumps(failures))
"""


def _modules() -> list[str]:
    names = []
    for package in ("harness", "model_zoo"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HARNESS_PROGRESS": "0",
            "HARNESS_CACHE": str(tmp_path / "cache")}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="isolation by fork")
def test_every_module_imports_in_a_fresh_interpreter(tmp_path):
    modules = _modules()
    assert "harness.datasets.folders" in modules and "model_zoo.sd3" in modules and len(modules) > 80
    res = subprocess.run([sys.executable, "-c", ISOLATED_IMPORTS, json.dumps(modules)], cwd=tmp_path,
                         env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    failures = json.loads(res.stdout.strip().splitlines()[-1])
    assert failures == {}, "\n".join(f"--- {m}\n{tb}" for m, tb in failures.items())


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)


VERBS = ["plan", "validate", "run", "status", "report", "ls", "score", "dataset", "weights", "cost"]


def test_every_verb_has_help_from_a_fresh_interpreter(tmp_path):
    from harness.cli import build_parser

    listed = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert sorted(listed) == sorted(VERBS)  # a new verb must be added here (and to the real invocations below)
    for verb in VERBS:
        res = _cli(tmp_path, verb, "--help")
        assert res.returncode == 0 and f"usage: harness {verb}" in res.stdout, (verb, res.stderr[-2000:])


def test_dataset_mnist_prints_its_manifest_from_a_fresh_interpreter(tmp_path):
    res = _cli(tmp_path, "dataset", "mnist")
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads(res.stdout)
    assert manifest["dataset"] == "mnist" and manifest["n"] == 10_000 and sum(manifest["class_histogram"]) == 10_000


def test_every_verb_runs_once_from_a_fresh_interpreter(tmp_path):
    """One real invocation per verb (plan → run → status → report on the same tiny run), each its own process."""
    from tests.support.report_rows import make_run, sweep_cells

    run = tmp_path / "run"
    small = ["--set", "n=2", "--set", "metrics=[class_alignment]"]
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (28, 28), (i * 40, 0, 0)).save(images / f"{i}.png")
    synthetic = make_run(tmp_path / "synthetic", sweep_cells())
    calls = {
        "plan": (["plan", SMOKE], "4 cells"),
        "validate": (["validate", SMOKE], "4 cells"),
        "run": (["run", SMOKE, *small, "--executor", "debug", "--results", str(run)], ""),
        "status": (["status", str(run)], "4/4 shards complete"),
        "report": (["report", str(synthetic)], "leaderboard.md"),
        "ls": (["ls", "datasets"], "mnist-5k"),
        "score": (["score", str(images), "--metrics", "fid_mnist", "--reference", "mnist-5k", "--reference-n", "8",
                   "--out", str(tmp_path / "score.parquet")], "fid_mnist"),
        "dataset": (["dataset", "mnist-5k"], '"dataset": "mnist-5k"'),
        "weights": (["weights", "list"], "mnist-cnn"),
        "cost": (["cost", "fm-tiny", "--steps", "1", "--k", "2", "--warmup", "0", "--batch", "2"],
                 "fm-tiny measured on cpu"),
    }
    assert sorted(calls) == sorted(VERBS)
    for verb, (args, expected) in calls.items():
        res = _cli(tmp_path, *args)
        assert res.returncode == 0 and expected in res.stdout, (verb, res.stdout[-1500:], res.stderr[-2000:])
        assert "Traceback" not in res.stderr, (verb, res.stderr[-2000:])
