"""Demo runner for the external adapter's protocol (``external.py``): a stand-in for a model's own
environment, run as ``python external_demo.py REQUESTS OUT``. Each image depends only on its sample's seed,
label, steps and cfg (smooth seeded noise, a class colour, contrast scaled by cfg)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def make_image(seed: int, label: int, steps: int, cfg: float | None, side: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((side, side, 3))
    for _ in range(steps):  # a few smoothing passes: "steps" visibly matter
        x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1)) / 3
    colour = np.array([(label * 37) % 255, (label * 91) % 255, (label * 53) % 255]) / 255.0
    img = 0.5 + 0.5 * colour + (cfg or 1.0) * 0.2 * x
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def main(requests_file: str, out: str) -> None:
    req = json.loads(Path(requests_file).read_text())
    s = req["settings"]
    results = []
    for sample in req["samples"]:
        image = make_image(sample["seed"], sample["label"], s["steps"], s["cfg"], 16)
        Image.fromarray(image, "RGB").save(Path(out) / f"{sample['index']:07d}.png")
        results.append({"index": sample["index"], "nfe": s["steps"] * (2 if s["cfg"] not in (None, 1.0) else 1)})
    (Path(out) / "results.json").write_text(json.dumps({"samples": results}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
