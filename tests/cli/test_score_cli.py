"""``harness score``: folders / .npz of images against folders, datasets and (foreign) statistics files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.cli.score import score_images
from harness.errors import HarnessError
from harness.features import get_extractor
from harness.metrics.inception_score import inception_score
from harness.references.foreign import import_reference
from tests.support.metric_fixtures import image_set

REPO = Path(__file__).resolve().parents[2]


def _write_pngs(folder: Path, images: np.ndarray, order: np.ndarray | None = None) -> Path:
    folder.mkdir(parents=True)
    for i in order if order is not None else range(len(images)):
        Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from harness.datasets import get_dataset

    return np.concatenate(list(get_dataset("mnist-5k").reference_images(40)))


def test_cli_scores_a_folder_and_writes_tidy_rows(tmp_path, digits, shared_cache):
    folder = _write_pngs(tmp_path / "gen", digits[:30])
    out = tmp_path / "rows.parquet"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "score", str(folder), "--metrics", "is_mnist",
                           "--bootstrap", "20", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    frame = pd.read_parquet(out)
    assert list(frame.metric) == ["is_mnist"] and frame.n[0] == 30
    ext = get_extractor("mnist-cnn")
    ext.load()
    expected = inception_score(ext.extract(digits[:30])["logits"], splits=10)[0]
    assert frame.value[0] == pytest.approx(expected, rel=1e-9)  # rows in sorted-file order = index order
    # (percentile CI of B=20 replicates; IS on resampled sets with duplicates sits below the value)
    assert np.isfinite([frame.ci_low[0], frame.ci_high[0]]).all() and frame.ci_low[0] < frame.ci_high[0]
    assert "is_mnist" in done.stdout and "MNIST-CNN proxy" in done.stdout


def test_file_order_never_changes_is(tmp_path, digits, shared_cache):
    a = _write_pngs(tmp_path / "a", digits[:30])
    b = _write_pngs(tmp_path / "b", digits[:30], order=np.random.default_rng(0).permutation(30))
    va = score_images(a, ["is_mnist"], None, shared_cache)[0].value
    assert score_images(b, ["is_mnist"], None, shared_cache)[0].value == va


def test_folder_against_folder_and_dataset(tmp_path, digits, shared_cache):
    gen = _write_pngs(tmp_path / "gen", digits[:12])
    same = score_images(gen, ["fid"], str(gen), shared_cache)[0]
    assert 0.0 <= same.value < 1e-6  # a set against itself
    other = score_images(gen, ["fid"], str(_write_pngs(tmp_path / "ref", digits[12:24])), shared_cache)[0]
    assert other.value > 1.0
    with pytest.raises(HarnessError, match="need --reference"):
        score_images(gen, ["fid"], None, shared_cache)
    with pytest.raises(HarnessError, match="not a file, folder or dataset id"):
        score_images(gen, ["fid"], "no-such-thing", shared_cache)


def test_image_npz_input_and_bad_inputs(tmp_path, digits, shared_cache):
    np.savez(tmp_path / "gen.npz", arr_0=digits[:30])
    folder = _write_pngs(tmp_path / "gen", digits[:30])
    from_npz = score_images(tmp_path / "gen.npz", ["is_mnist"], None, shared_cache)[0].value
    assert from_npz == score_images(folder, ["is_mnist"], None, shared_cache)[0].value
    np.savez(tmp_path / "bad.npz", arr_0=digits[:3].astype(np.float32))
    with pytest.raises(HarnessError, match="expected uint8"):
        score_images(tmp_path / "bad.npz", ["is_mnist"], None, shared_cache)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(HarnessError, match="x.png: unreadable image"):
        score_images(tmp_path / "broken", ["is_mnist"], None, shared_cache)


def _foreign_stats(path: Path, rows: np.ndarray, **extra) -> Path:
    rows = rows.astype(np.float64)
    np.savez(path, mu=rows.mean(0), sigma=np.cov(rows, rowvar=False), **extra)
    return path


def test_reference_import_formats_and_refusals(tmp_path, tf1_weights, monkeypatch, shared_cache):
    from harness.features import inception_tf1

    gen_images, ref_images = image_set(10, 12, 32), image_set(11, 12, 32, bright=0.7)
    gen = _write_pngs(tmp_path / "gen", gen_images)
    ref_folder = _write_pngs(tmp_path / "ref", ref_images)
    ext = get_extractor("inception-tf1")
    ext.load()
    ref_rows = ext.extract(ref_images)["pool3"]
    adm = _foreign_stats(tmp_path / "adm.npz", ref_rows, arr_0=ref_images)
    plain = _foreign_stats(tmp_path / "plain.npz", ref_rows)
    # random weights are not the official port: the import keeps its own key and FID refuses it
    with pytest.raises(HarnessError, match="extractor key"):
        score_images(gen, ["fid_tf1"], str(adm), shared_cache, reference_format="adm")
    assert "not_matched" in import_reference(adm, "adm").spec["imported_from"]
    with pytest.raises(HarnessError, match="extractor key"):
        score_images(gen, ["fid_tf1"], str(plain), shared_cache, reference_format="pytorch-fid", reference_n=12)
    with pytest.raises(HarnessError, match="--reference-format"):
        score_images(gen, ["fid_tf1"], str(plain), shared_cache)
    with pytest.raises(HarnessError, match="not stored in the file"):
        import_reference(plain, "clean-fid")
    with pytest.raises(HarnessError, match="need reference feature rows|need\\s+reference feature rows|cannot serve"):
        score_images(gen, ["kid"], str(adm), shared_cache, reference_format="adm")
    # declared official weights: the ADM statistics are accepted and give the folder's FID
    monkeypatch.setattr(inception_tf1, "OFFICIAL_SHA256_PREFIX", ext.spec.weights_sha256[:8])
    stats = import_reference(adm, "adm")
    assert stats.n == 12 and stats.extractor_key == ext.spec.key and stats.spec["imported_from"]["format"] == "adm"
    via_stats = score_images(gen, ["fid_tf1"], str(adm), shared_cache, reference_format="adm")[0].value
    via_folder = score_images(gen, ["fid_tf1"], str(ref_folder), shared_cache)[0].value
    assert via_stats == pytest.approx(via_folder, rel=1e-9) and via_folder > 0.1
    with pytest.raises(HarnessError, match="extractor key"):  # clean-fid stats never serve the tf1 FID
        score_images(gen, ["fid_tf1"], str(plain), shared_cache, reference_format="clean-fid", reference_n=12)


def test_a_reference_folder_is_extracted_once_per_content(tmp_path, digits, monkeypatch, capsys):
    import harness.api.scoring as score_mod

    calls: list[str] = []
    real_extract_all = score_mod.extract_all

    def counting_extract_all(source, extractors, device):
        calls.append(source.path.name)
        return real_extract_all(source, extractors, device)

    monkeypatch.setattr(score_mod, "extract_all", counting_extract_all)
    gen = _write_pngs(tmp_path / "gen", digits[:12])
    ref = _write_pngs(tmp_path / "ref", digits[20:40])
    cache = tmp_path / "cache"
    first = score_images(gen, ["fid_mnist"], str(ref), cache)[0]
    assert calls == ["ref", "gen"]
    again = score_images(gen, ["fid_mnist"], str(ref), cache)[0]
    assert calls == ["ref", "gen", "gen"] and again.value == first.value  # the reference came from the cache
    cached = list((cache / "references").glob("stats-*.npz"))
    assert len(cached) == 1
    Image.fromarray(digits[0]).save(ref / "0000.png")  # same name, other content: a new key, extracted again
    changed = score_images(gen, ["fid_mnist"], str(ref), cache)[0]
    assert calls[-2:] == ["ref", "gen"] and changed.value != first.value
    cached[0].write_bytes(b"not an npz")  # a damaged cache file is recomputed with a warning, never trusted
    Image.fromarray(digits[20]).save(ref / "0000.png")  # the original bytes again: the first key
    capsys.readouterr()
    restored = score_images(gen, ["fid_mnist"], str(ref), cache)[0]
    warned = [line for line in capsys.readouterr().err.splitlines() if "recomputing it" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and "corrupt reference statistics" in warned[0]
    assert restored.value == first.value and calls[-2:] == ["ref", "gen"]
