"""Cost of reading a reference set through 🤗 datasets (harness/datasets/hf_hub.py), offline on a local repository.

Builds a dataset repository in the hub layout (N random PNGs in 4 parquet shards + README card) in a temp dir,
with HF_HOME and the harness cache there too, then times, in this process:
- the first digest (the library prepares its arrow cache, then one pass hashes every image's bytes, labels),
  against a bare loop that sha256-hashes the same image bytes read with pyarrow (the content digest's floor);
- the digest again after the in-process memo is dropped (another worker process: the scan read back from disk);
- the first 64 reference images, memory-mapped and streamed, against decoding all N (reads only what it needs).

    OMP_NUM_THREADS=1 .venv/bin/python bench/hf_datasets.py [--n 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="bench-hf-"))
os.environ.update({"HF_HOME": str(TMP / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                   "HARNESS_CACHE": str(TMP / "cache"), "HARNESS_PROGRESS": "0"})

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

CARD = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: test\n    path: data/*.parquet\n---\n"


def build(root: Path, n: int) -> list[Path]:
    import datasets

    rng = np.random.default_rng(0)
    images = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    table = datasets.Dataset.from_dict({"image": images, "label": [i % 1000 for i in range(n)]}, features=features)
    (root / "data").mkdir(parents=True)
    shards = [root / "data" / f"test-{k}.parquet" for k in range(4)]
    for k, shard in enumerate(shards):
        table.shard(4, k, contiguous=True).to_parquet(str(shard))
    (root / "README.md").write_text(CARD)
    return shards


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    import pyarrow.parquet as pq

    from harness.datasets import get_dataset, hf_hub

    shards = build(TMP / "repo", args.n)
    spec = f"hf:{TMP / 'repo'}"

    def bare() -> str:
        h = hashlib.sha256()
        for shard in shards:
            for record in pq.read_table(shard, columns=["image"]).column("image").to_pylist():
                h.update(hashlib.sha256(record["bytes"]).digest())
        return h.hexdigest()

    t_bare, _ = timed(bare)
    t_first, first = timed(lambda: get_dataset(spec).digest)
    hf_hub._SCANS.clear()
    t_again, again = timed(lambda: get_dataset(spec).digest)
    assert again == first
    mapped, streamed = get_dataset(spec), get_dataset(spec + "?streaming=true")
    t_64, _ = timed(lambda: next(iter(mapped.reference_images(64, batch_size=64))))
    t_64s, _ = timed(lambda: next(iter(streamed.reference_images(64, batch_size=64))))
    t_all, _ = timed(lambda: sum(len(b) for b in mapped.reference_images(args.n, batch_size=256)))
    print(f"n={args.n} images (96x96 PNG, {sum(s.stat().st_size for s in shards) / 1e6:.1f} MB in 4 shards)")
    print(f"bare sha256 of the image bytes      {t_bare:7.3f} s")
    print(f"first digest (prepare + scan)       {t_first:7.3f} s   ({t_first / t_bare:.1f}x the bare hash)")
    print(f"digest, scan read back from disk    {t_again:7.3f} s")
    print(f"first 64 reference images, mapped   {t_64:7.3f} s")
    print(f"first 64 reference images, streamed {t_64s:7.3f} s")
    print(f"all {args.n} reference images, mapped {t_all:7.3f} s   (64 of them: {t_64 / t_all:.3f} of it)")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
