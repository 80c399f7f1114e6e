"""Metric-engine benchmarks, each measured side by side in one run (speed targets live here, not in tests).

1. Fréchet distance at d=2048 on synthetic full-rank covariances: ours (float64 symmetric eigh) vs the
   clean-fid / pytorch-fid formula with ``scipy.linalg.sqrtm``; wall ratio and |ΔFID| (targets >= 4x, <= 1e-8).
   1b. A cell of n < d rows (``--cell-n``, default 1000) against reference statistics: the exact Gram route vs
   the statistics route vs scipy sqrtm.
2. Peak RSS of FID streamed over 50k synthetic 2048-d rows (batches of 1000 generated on the fly), in a
   fresh subprocess so nothing else counts (target <= 1 GB).
3. FID + IS + KID on the same N images and the same (random Kaiming) weights: the engine's single pass
   (decode once, one Inception pass per image feeding all three) vs torch-fidelity ``calculate_metrics``.
4. Bootstrap cost: B=200 FID replicates at d=2048 for an n-sample cell (Gram form).
5. FID + IS + CLIP Score on the same N PNG files (plus N reference PNGs) and the same weights (random Kaiming
   Inception in torch-fidelity's format; a random full-size ViT-B/16 CLIP in OpenAI's layout): the engine's
   single pass (``harness.cli.score``: decode each file once, feed the Inception and CLIP extractors from it, then
   every metric) vs the peer chain run one after the other: torch-fidelity ``calculate_metrics`` (FID + IS)
   on the two folders, then open_clip (CLIP Score) on the generated folder. Target >= 2x.

    .venv/bin/python bench/metrics.py [--images 32] [--rows 50000] [--cell-n 1000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def synthetic_stats(rng: np.random.Generator, d: int, shift: float):
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(shift, 1, size=d), a @ a.T + 0.1 * np.eye(d)


def bench_frechet(d: int) -> None:
    import scipy.linalg

    from harness.metrics.fid import frechet_distance

    rng = np.random.default_rng(0)
    (m1, s1), (m2, s2) = synthetic_stats(rng, d, 0.0), synthetic_stats(rng, d, 0.3)
    t = time.perf_counter()
    ours, _ = frechet_distance(m1, s1, m2, s2)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    theirs = float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)
    t_scipy = time.perf_counter() - t
    print(f"frechet d={d}: ours {t_ours:.2f} s, scipy sqrtm {t_scipy:.2f} s, ratio {t_scipy / t_ours:.2f}x, "
          f"FID {ours:.6f}, |dFID| {abs(ours - theirs):.2e}")


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_frechet_gram(n: int, d: int) -> None:
    """A cell of n < d samples against reference statistics: the Gram route on its rows vs the statistics route
    vs scipy sqrtm, on the same numbers (what every cell of a sweep with n=1000 pays)."""
    import scipy.linalg

    from harness.metrics.fid import frechet_distance, frechet_distance_gram

    rng = np.random.default_rng(2)
    x = np.maximum(rng.normal(size=(n, d)) @ (rng.normal(size=(d, d)) / np.sqrt(d)), 0)
    m2, s2 = synthetic_stats(rng, d, 0.3)
    (gram, _), t_gram = _timed(lambda: frechet_distance_gram(x, m2, s2))
    (stats, _), t_stats = _timed(lambda: frechet_distance(x.mean(0), np.cov(x, rowvar=False), m2, s2))

    def scipy_route() -> float:
        m1, s1 = x.mean(0), np.cov(x, rowvar=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = scipy.linalg.sqrtm(s1 @ s2)
        return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)

    theirs, t_scipy = _timed(scipy_route)
    print(f"frechet n={n} rows vs stats, d={d}: Gram route {t_gram:.2f} s, statistics route {t_stats:.2f} s "
          f"({t_stats / t_gram:.1f}x), scipy sqrtm {t_scipy:.2f} s ({t_scipy / t_gram:.1f}x); FID {gram:.6f}, "
          f"|Gram-stats| {abs(gram - stats):.2e}, |Gram-scipy| {abs(gram - theirs):.2e}")


def rss_child(rows: int, d: int) -> None:
    from harness.metrics.fid import StreamingStats, frechet_distance

    rng = np.random.default_rng(1)
    stats = StreamingStats()
    for start in range(0, rows, 1000):
        stats.update(rng.normal(size=(min(1000, rows - start), d)).astype(np.float32))
    m2, s2 = synthetic_stats(rng, d, 0.1)
    value, _ = frechet_distance(stats.mean, stats.cov, m2, s2)
    print(f"{value} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


def bench_rss(rows: int, d: int) -> None:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(rows), "--dim", str(d)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()
    print(f"streamed FID over {rows} x {d} rows: peak RSS {int(out[1]) / 1024:.0f} MB (whole process incl. "
          f"torch import), {time.perf_counter() - t:.1f} s, FID {float(out[0]):.4f}")


def bench_engine_vs_torch_fidelity(n: int) -> None:
    import pytest
    import torch_fidelity
    from metric_fixtures import image_set, use_inception_weights, write_random_inception_weights
    from test_metric_certify import _Uint8Chw

    from harness.features import get_extractor
    from harness.features.inception_tf1 import WEIGHTS_ENTRY, WEIGHTS_FILE
    from harness.metrics import get_metric
    from harness.metrics.base import ShardFeatures
    from harness.references.artefacts import ReferenceFeatures, ReferenceStats

    with tempfile.TemporaryDirectory() as tmp:
        weights = write_random_inception_weights(Path(tmp) / WEIGHTS_ENTRY / WEIGHTS_FILE)
        use_inception_weights(pytest.MonkeyPatch(), Path(tmp))
        gen, ref = image_set(1, n, 64), image_set(2, n, 64, bright=0.8)
        t = time.perf_counter()
        ext = get_extractor("inception-tf1")
        ext.load()
        g, r = ext.extract(gen), ext.extract(ref)
        rows = r["pool3"].astype(np.float64)
        spec = {"output": "pool3"}
        stats = ReferenceStats(rows.mean(0), np.cov(rows, rowvar=False), n, ext.spec.key, "bench", spec)
        ours = {
            "fid": get_metric("fid_tf1").compute([ShardFeatures(g["pool3"], (None,) * n)], stats).value,
            "is": get_metric("is").compute([ShardFeatures(g["logits_unbiased"], (None,) * n)], None).value,
            "kid": get_metric("kid").compute([ShardFeatures(g["pool3"], (None,) * n)],
                                             ReferenceFeatures(r["pool3"], ext.spec.key, "bench", spec)).value}
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        theirs = torch_fidelity.calculate_metrics(
            input1=_Uint8Chw(gen), input2=_Uint8Chw(ref), cuda=False, isc=True, fid=True, kid=True,
            feature_extractor_weights_path=str(weights), kid_subset_size=n, cache=False, save_cpu_ram=True,
            verbose=False)
        t_tf = time.perf_counter() - t
    print(f"FID+IS+KID on {n}+{n} images 64x64 (CPU, {os.cpu_count()} cores): engine {t_ours:.1f} s, "
          f"torch-fidelity {t_tf:.1f} s, ratio {t_tf / t_ours:.2f}x; |dFID| "
          f"{abs(ours['fid'] - theirs['frechet_inception_distance']):.2e}, |dIS| "
          f"{abs(ours['is'] - theirs['inception_score_mean']):.2e}, |dKID| "
          f"{abs(ours['kid'] - theirs['kernel_inception_distance_mean']):.2e}")


def _write_pngs(folder: Path, images: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for k, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{k:05d}.png")
    return folder


def _open_clip_chain(model_path: Path, folder: Path, prompts: list[str], device: str = "cpu") -> float:
    """The peer way: open_clip's model + eval transform + tokenizer, one image at a time from the files."""
    import open_clip
    import torch
    from open_clip.model import build_model_from_openai_state_dict
    from PIL import Image

    state = torch.load(model_path, map_location="cpu", weights_only=True)
    model = build_model_from_openai_state_dict(state, quick_gelu=True, cast_dtype=None).float().eval().to(device)
    preprocess = open_clip.transform.image_transform(model.visual.image_size, is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    files = sorted(folder.glob("*.png"))
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files]).to(device)
        img = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokenizer(prompts).to(device)), dim=-1)
    return float((100 * (img * txt).sum(-1)).mean())


def _profiled(fn):
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(fn)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return result


def bench_single_pass_vs_peers(n: int, rounds: int = 2, profile: bool = False, reference_cached: bool = False,
                               device: str = "cpu") -> None:
    """``reference_cached``: the sweep case, where every cell is scored against one reference. Both sides keep
    the reference's features between calls (torch-fidelity: ``cache=True`` with ``input2_cache_name``; the
    engine: its content-addressed feature cache), filled by one untimed warm-up call each."""
    import open_clip
    import pytest
    import torch
    import torch_fidelity
    from metric_fixtures import image_set, use_inception_weights, write_random_inception_weights

    import harness.features as loaded_cache
    from harness.cli.score import ImageSource, extract_all, resolve_references
    from harness.features import weights
    from harness.features.inception_tf1 import WEIGHTS_ENTRY, WEIGHTS_FILE
    from harness.hashing import sha256_file
    from harness.metrics import get_metric
    from harness.metrics.base import ShardFeatures

    prompts = [f"a photo of a {c}" for c in ("tench", "goldfish", "shark", "hen")] * (n // 4 + 1)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        root = Path(tmp)
        inception = write_random_inception_weights(root / WEIGHTS_ENTRY / WEIGHTS_FILE)
        use_inception_weights(mp, root)
        torch.manual_seed(0)
        clip_path = root / "clip-vit-b-16-openai" / "ViT-B-16.pt"
        clip_path.parent.mkdir()
        torch.save(open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).state_dict(), clip_path)
        entry = weights.ENTRIES["clip-vit-b-16-openai"]
        mp.setitem(weights.ENTRIES, entry.name, entry.with_pins({"ViT-B-16.pt": sha256_file(clip_path)}))
        gen = _write_pngs(root / "gen", image_set(1, n, 64))  # one size: torch-fidelity batches files as they are
        ref = _write_pngs(root / "ref", image_set(2, n, 64, bright=0.8))
        prompts = prompts[:n]

        def engine() -> dict[str, float]:
            loaded_cache._LOADED.clear()  # nothing loaded before: the engine pays its model loading too
            metrics = [get_metric(m) for m in ("fid_tf1", "is", "clip_score")]
            cache = root / ("cache" if reference_cached else f"cache{time.time()}")
            references, _ = resolve_references(metrics[:1], str(ref), None, None, cache, device)
            feats = extract_all(ImageSource(gen), ["clip-vit-b-16-openai", "inception-tf1"], device)  # one decode
            return {m.name: m.compute([ShardFeatures(feats[m.extractor][m.output], (None,) * n, tuple(prompts))],
                                      references.get(m.name)).value for m in metrics}

        def peers() -> dict[str, float]:
            caching = {"cache": True, "cache_root": str(root / "fidelity_cache"), "input1_cache_name": None,
                       "input2_cache_name": "bench-reference"} if reference_cached else {"cache": False}
            out = torch_fidelity.calculate_metrics(
                input1=str(gen), input2=str(ref), cuda=device.startswith("cuda"), isc=True, fid=True, verbose=False,
                feature_extractor_weights_path=str(inception), save_cpu_ram=True, **caching)
            return {**out, "clip": _open_clip_chain(clip_path, gen, prompts, device)}

        times: dict[str, list[float]] = {"engine": [], "peers": []}
        results: dict[str, dict] = {}
        if reference_cached:  # untimed warm-up: fills both reference caches
            peers(), engine()
        for _ in range(rounds):  # alternating, so neither side always runs on warm caches
            for name, fn in (("peers", peers), ("engine", engine)):
                t = time.perf_counter()
                results[name] = _profiled(fn) if profile and name == "engine" else fn()
                times[name].append(round(time.perf_counter() - t, 1))
        ours, theirs = results["engine"], results["peers"]
        clip = theirs["clip"]
        t_ours, t_peers = min(times["engine"]), min(times["peers"])
    mode = "reference features cached on both sides" if reference_cached else "nothing cached"
    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU {os.cpu_count()} cores"
    print(f"FID+IS+CLIP on {n} generated (64 px) + {n} reference PNGs ({mode}), {where}: "
          f"engine single "
          f"pass {t_ours:.1f} s, torch-fidelity then open_clip {t_peers:.1f} s, ratio {t_peers / t_ours:.2f}x "
          f"(best of {rounds} alternating rounds: engine {times['engine']}, peers {times['peers']}) "
          f"(target >= 2x); |dFID| {abs(ours['fid_tf1'] - theirs['frechet_inception_distance']):.2e}, "
          f"|dIS| {abs(ours['is'] - theirs['inception_score_mean']):.2e}, |dCLIP| {abs(ours['clip_score'] - clip):.2e}")


def bench_bootstrap(n: int, d: int, b: int) -> None:
    from harness.metrics.bootstrap import bootstrap_indices
    from harness.metrics.fid import frechet_replicates

    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, d))
    mu, sigma = synthetic_stats(rng, d, 0.1)
    idx = bootstrap_indices("bench", n, b)
    t = time.perf_counter()
    values = frechet_replicates(x, mu, sigma, idx)
    print(f"bootstrap FID: B={b} replicates, n={n}, d={d}: {time.perf_counter() - t:.1f} s "
          f"(CI {np.percentile(values, 2.5):.3f} .. {np.percentile(values, 97.5):.3f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--cell-n", type=int, default=1000)
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--only", choices=["frechet", "frechet-gram", "rss", "engine", "bootstrap", "single-pass"])
    p.add_argument("--rounds", type=int, default=2, help="single-pass: alternating rounds per side (best counts)")
    p.add_argument("--profile", action="store_true", help="single-pass: cProfile the engine side")
    p.add_argument("--reference-cached", action="store_true",
                   help="single-pass: the sweep case, reference features cached on both sides")
    p.add_argument("--device", default="cpu", help="single-pass: where both sides run their networks")
    p.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child, args.dim)
    steps = {"frechet": lambda: bench_frechet(args.dim),
             "frechet-gram": lambda: bench_frechet_gram(args.cell_n, args.dim),
             "rss": lambda: bench_rss(args.rows, args.dim),
             "engine": lambda: bench_engine_vs_torch_fidelity(args.images),
             "bootstrap": lambda: bench_bootstrap(args.cell_n, args.dim, args.replicates),
             "single-pass": lambda: bench_single_pass_vs_peers(args.images, args.rounds, args.profile,
                                                                        args.reference_cached, args.device)}
    for name, step in steps.items():
        if args.only in (None, name):
            step()


if __name__ == "__main__":
    main()
