"""Checks that both the Python API and the ``harness`` command run before any compute: the device, the
protocol's name or file, the weights the metrics need. Light to import (the CLI imports it at start)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError

PROTOCOLS_DIR = Path(__file__).resolve().parents[2] / "protocols"


def protocol_path(arg: str | Path) -> Path:
    """A protocol file, or the name of one in protocols/."""
    path = Path(arg)
    if not path.exists() and (PROTOCOLS_DIR / f"{arg}.yaml").exists():
        return PROTOCOLS_DIR / f"{arg}.yaml"
    return path


def check_device(device: str, local: bool = True, flag: str = "--device") -> None:
    """A torch device string; a CUDA one must be visible here unless the work runs elsewhere (``local=False``:
    Slurm jobs see the compute nodes' GPUs, not the login node's). ``flag`` names the input in messages."""
    import torch

    if not isinstance(device, str):
        raise HarnessError(f"{flag} {device!r}: not a device; expected cpu, cuda or cuda:N")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise HarnessError(f"{flag} {device!r}: not a device; expected cpu, cuda or cuda:N") from None
    if parsed.type not in ("cpu", "cuda"):
        raise HarnessError(f"{flag} {device!r}: device type {parsed.type!r} is not supported; expected cpu, cuda "
                           "or cuda:N")
    if parsed.type != "cuda" or not local:
        return
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible == 0:
        raise HarnessError(f"{flag} {device}: no CUDA GPU is visible on this machine; use {flag} cpu")
    if parsed.index is not None and parsed.index >= visible:
        raise HarnessError(f"{flag} {device}: only {visible} GPU(s) visible (cuda:0 to cuda:{visible - 1})")


def require_for_metrics(metric_names: Sequence[str]) -> None:
    """Refuse, before any compute, a run whose metrics need weights this machine lacks."""
    from harness.features.weights import entries_for_extractor, require
    from harness.metrics import get_metric, measured_metrics

    for metric in measured_metrics(metric_names):  # a composite needs no weights of its own, its components do
        extractor = get_metric(metric).extractor
        for name in entries_for_extractor(extractor):
            require(name, needed_by=f"metric {metric!r} (extractor {extractor!r})")
