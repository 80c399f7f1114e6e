"""The CPU side of extraction — decoding the files and each extractor's per-image PIL preprocessing — on one
thread vs the shared pool (`harness/parallel.py`), the same images and the same code, side by side.

On a GPU node this work, not the network, bounds extraction throughput (a 512 px PNG costs ~4.5 ms to decode
on one core); here the network is left out so the figure is the CPU side alone. Each measurement is the best of
--repeats; outputs are checked equal between thread counts.

    PYTHONPATH=.:tests .venv/bin/python bench/cpu_side.py [--images 256] [--size 512] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def stages():
    import open_clip
    import torch
    from open_clip.transform import image_transform
    from PIL import Image

    from harness.features.clip_cmmd import cmmd_pixels
    from harness.features.dinov2 import dgm_eval_pixels
    from harness.features.inception_clean import clean_resize
    from harness.parallel import thread_map

    clip = image_transform(224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD)
    mean, std = torch.tensor(open_clip.OPENAI_DATASET_MEAN), torch.tensor(open_clip.OPENAI_DATASET_STD)
    return {
        "clip (open_clip transform, 224)": lambda x: torch.stack(thread_map(lambda im: clip(Image.fromarray(im)), x)),
        "cmmd (crop + bicubic 336)": lambda x: torch.stack(thread_map(lambda im: cmmd_pixels(
            Image.fromarray(im), 336, mean.view(3, 1, 1), std.view(3, 1, 1)), x)),
        "dinov2 (bicubic squash 224)": dgm_eval_pixels,
        "inception-clean (float bicubic 299)": lambda x: np.stack(thread_map(clean_resize, x)),
    }


def best_of(repeats: int, fn):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", default=f"1,{os.cpu_count()}")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    from metric_fixtures import image_set
    from PIL import Image

    from harness.cli.score import ImageSource

    counts = [int(t) for t in args.threads.split(",")]
    images = image_set(0, args.images, args.size)
    print(f"{args.images} PNGs {args.size}x{args.size}, {os.cpu_count()} cores; img/s per thread count {counts}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, image in enumerate(images):
            Image.fromarray(image).save(Path(tmp) / f"{i:05d}.png")
        rows: dict[str, list[tuple[float, object]]] = {}
        for threads in counts:
            os.environ["HARNESS_CPU_THREADS"] = str(threads)
            rows.setdefault("decode (ImageSource.batches)", []).append(
                best_of(args.repeats, lambda: np.concatenate(list(ImageSource(Path(tmp)).batches()))))
            for name, fn in stages().items():
                rows.setdefault(name, []).append(best_of(args.repeats, lambda fn=fn: fn(images)))
    for name, results in rows.items():
        first = np.asarray(results[0][1])
        same = all(np.array_equal(first, np.asarray(out)) for _, out in results[1:])
        rates = ", ".join(f"{args.images / t:7.1f}" for t, _ in results)
        print(f"{name:<38} {rates}  speed-up {results[0][0] / results[-1][0]:.2f}x  "
              f"{'identical outputs' if same else 'OUTPUTS DIFFER'}")


if __name__ == "__main__":
    main()
