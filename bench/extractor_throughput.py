"""Extractor throughput (images/s) with TF32 off — what every spec promises — and on, and what TF32 does to the
features, for each extractor the metrics use. Meant for a GPU (`--device cuda`); runs on a CPU too (TF32 is then
a no-op and the two columns measure the same thing twice).

Weights: the packaged FID Inception is real; the others are random at their real sizes (no hub here) — random
Kaiming Inception in torch-fidelity's format, random full-size ViT-B/16 and ViT-L/14@336 CLIPs in OpenAI's layout,
a random full-size DINOv2 ViT-L/14 folder — so speeds are real and features are not. Images: smooth random
colour images at --size (256 by default, so every extractor's resize runs).

    PYTHONPATH=.:tests .venv/bin/python bench/extractor_throughput.py --device cuda [--images 1024] [--batch 64]
        [--only inception-fid-helper,inception-tf1,clip-vit-b-16-openai,clip-vit-l-14-336-cmmd,dinov2-vit-l-14]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

ALL = ("inception-fid-helper", "inception-tf1", "clip-vit-b-16-openai", "clip-vit-l-14-336-cmmd", "dinov2-vit-l-14")


def _pin(mp, entry_name: str, path: Path) -> None:
    from harness.features import weights
    from harness.hashing import sha256_file

    entry = weights.ENTRIES[entry_name]
    mp.setitem(weights.ENTRIES, entry_name, entry.with_pins({path.name: sha256_file(path)}))


def install_random_weights(root: Path, mp, names: list[str]) -> None:
    """Random weights of the real sizes under ``root`` (HARNESS_WEIGHTS), pins swapped to them."""
    import open_clip
    import torch
    from metric_fixtures import use_inception_weights, write_random_inception_weights

    from harness.features.inception_tf1 import WEIGHTS_ENTRY, WEIGHTS_FILE

    mp.setenv("HARNESS_WEIGHTS", str(root))
    torch.manual_seed(0)
    if "inception-tf1" in names:
        write_random_inception_weights(root / WEIGHTS_ENTRY / WEIGHTS_FILE)
        use_inception_weights(mp, root)
    for name, entry, arch, file in (("clip-vit-b-16-openai", "clip-vit-b-16-openai", "ViT-B-16-quickgelu",
                                     "ViT-B-16.pt"),
                                    ("clip-vit-l-14-336-cmmd", "clip-vit-l-14-336-openai", "ViT-L-14-336-quickgelu",
                                     "ViT-L-14-336px.pt")):
        if name in names:
            path = root / entry / file
            path.parent.mkdir(parents=True)
            torch.save(open_clip.create_model(arch, pretrained=None).state_dict(), path)
            _pin(mp, entry, path)
    if "dinov2-vit-l-14" in names:
        from transformers import Dinov2Config, Dinov2Model

        config = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
                              image_size=518, layerscale_value=1e-5)
        Dinov2Model(config).save_pretrained(root / "dinov2-vit-l-14")


def measure(name: str, images: np.ndarray, batch: int, device: str) -> str:
    import torch

    from harness.features import get_extractor

    ext = get_extractor(name)
    ext.batch_size = batch
    ext.load(device)
    ext.extract(images[:batch])  # warm-up: kernels chosen, memory allocated
    rates, outputs = {}, {}
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        start = time.perf_counter()
        outputs[tf32] = ext.extract(images)
        rates[tf32] = len(images) / (time.perf_counter() - start)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    shifts = []
    for key, off in outputs[False].items():
        on = outputs[True][key]
        shifts.append(f"{key} max|d| {np.abs(on - off).max():.2e} (of max|x| {np.abs(off).max():.2e})")
    return (f"{name:<24} batch {batch:>3}: tf32 off {rates[False]:8.1f} img/s, on {rates[True]:8.1f} img/s "
            f"({rates[True] / rates[False]:.2f}x); " + "; ".join(shifts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--only", default=",".join(ALL), help="comma-separated extractor names")
    args = p.parse_args()
    import pytest
    import torch
    from metric_fixtures import image_set

    import harness.features as loaded_cache
    from harness.features.base import extraction_threads

    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(ALL)}")
    cpu = f"cpu x{extraction_threads()} (HARNESS_EXTRACT_THREADS)"  # every extraction runs at that count
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu
    print(f"device {device_name}; {args.images} images {args.size}x{args.size}; torch {torch.__version__}")
    images = image_set(0, args.images, args.size)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        install_random_weights(Path(tmp), mp, names)
        mp.setattr(loaded_cache, "_LOADED", {})
        for name in names:
            print(measure(name, images, args.batch, args.device), flush=True)


if __name__ == "__main__":
    main()
