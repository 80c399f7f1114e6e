"""Import reference statistics written by other tools (mu/sigma ``.npz``) as ReferenceStats.

Every format is declared with the preprocessing that produced it and the extractor of ours that
reproduces it, if any. The import records {format, file, sha256} in the spec and takes that
extractor's key only when the local weights are the official TF-2015 Inception port (the torch hub
file-name hash ``6726825d``); otherwise the reference gets a key of its own, so FID against it is
refused (spec mismatch) instead of silently mixing preprocessing or weights.
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.features import get_extractor
from harness.hashing import digest, sha256_file
from harness.references.artefacts import ReferenceStats

# format -> (our extractor that reproduces its preprocessing or None, what produced the file)
FORMATS: dict[str, tuple[str | None, str]] = {
    "adm": ("inception-tf1", "guided-diffusion evaluator: TF graph inception-2015-12-05, TF1 bilinear, (x-128)/128"),
    "clean-fid": ("inception-clean", "clean-fid mode 'clean': PIL bicubic float resize, (x-128)/128"),
    "clean-fid-legacy-tf": ("inception-tf1", "clean-fid mode 'legacy_tensorflow': TF1-style resize"),
    "pytorch-fid": (None, "pytorch-fid: torch bilinear align_corners=False, 2x-1 normalisation (no extractor "
                          "here reproduces it)"),
}


def _npy_rows(path: Path, member: str) -> int | None:
    """Number of rows of an array inside an .npz, read from its header only (ADM arr_0 is ~2 GB)."""
    with zipfile.ZipFile(path) as zf:
        if f"{member}.npy" not in zf.namelist():
            return None
        with zf.open(f"{member}.npy") as f:
            fmt = np.lib.format
            major, _ = fmt.read_magic(f)
            header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            shape, _, _ = header(f)
    return int(shape[0]) if shape else None


def import_reference(path: str | Path, fmt: str, n: int | None = None) -> ReferenceStats:
    """Read ``mu``/``sigma`` from a foreign .npz; ``n`` from the file (``n`` key, ADM ``arr_0``) or given."""
    path = Path(path)
    if fmt not in FORMATS:
        raise HarnessError(f"{path}: unknown reference format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise HarnessError(f"{path}: reference statistics file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("mu", "sigma") if k not in data.files]
            if missing:
                raise HarnessError(f"{path}: not a {fmt} statistics file: missing key(s) {', '.join(missing)} "
                                   f"(has {', '.join(data.files) or 'nothing'})")
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
            stored_n = int(data["n"]) if "n" in data.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise HarnessError(f"{path}: unreadable .npz ({type(err).__name__}: {err})") from err
    n = n or stored_n or _npy_rows(path, "arr_0")
    if not n or n < 2:
        raise HarnessError(f"{path}: the number of reference images is not stored in the file; "
                           f"pass it (--reference-n N)")
    d = mu.shape[0] if mu.ndim == 1 else -1
    if d < 1 or sigma.shape != (d, d) or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise HarnessError(f"{path}: mu {mu.shape} / sigma {sigma.shape} are not a finite (d,) and (d, d) pair")
    if not np.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-8):
        raise HarnessError(f"{path}: sigma is not symmetric; not a covariance matrix")
    extractor_name, produced_by = FORMATS[fmt]
    file_sha = sha256_file(path)
    origin = {"format": fmt, "file": path.name, "sha256": file_sha, "produced_by": produced_by}
    key, extractor_spec = digest({"foreign": origin}, length=24), None
    if extractor_name is not None:
        from harness.features.inception_tf1 import OFFICIAL_SHA256_PREFIX

        spec = get_extractor(extractor_name).spec
        if spec.weights_sha256.startswith(OFFICIAL_SHA256_PREFIX):
            key, extractor_spec = spec.key, asdict(spec)
        else:
            origin["not_matched"] = (f"local {extractor_name} weights sha256 {spec.weights_sha256[:12]}... are not "
                                     f"the official port ({OFFICIAL_SHA256_PREFIX}...)")
    return ReferenceStats(mu=mu, sigma=sigma, n=int(n), extractor_key=key, source_digest=file_sha,
                          spec={"extractor": extractor_spec, "output": "pool3", "imported_from": origin})
