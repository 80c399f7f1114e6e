"""``harness weights``: look-up order, fetch from a real HTTP server on 127.0.0.1 with sha256 verification,
trust-on-first-fetch records, and a run refused before any compute when weights are missing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.features import weights
from harness.features.weights import WeightsEntry, WeightsFile, WeightsNotFound, fetch, locate, verify

PAYLOAD = b"weights bytes " * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "model.bin").write_bytes(PAYLOAD)
    (served / "config.json").write_text('{"a": 1}')
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "weights"


def _install(monkeypatch, entry: WeightsEntry) -> WeightsEntry:
    monkeypatch.setitem(weights.ENTRIES, entry.name, entry)
    return entry


def test_fetch_pinned_file_through_the_cli(server, home, monkeypatch, capsys):
    _install(monkeypatch, WeightsEntry("test-net", (WeightsFile("model.bin", f"{server}/model.bin", SHA),),
                                       ("test-extractor",), "a test file"))
    assert main(["weights", "fetch", "test-net"]) == 0
    assert (home / "test-net" / "model.bin").read_bytes() == PAYLOAD
    assert main(["weights", "verify", "test-net"]) == 0
    assert "ok (pinned sha256" in capsys.readouterr().out
    assert fetch("test-net") == [f"{home / 'test-net' / 'model.bin'}: already present and verified"]
    (home / "test-net" / "model.bin").write_bytes(PAYLOAD + b"x")
    assert main(["weights", "verify", "test-net"]) == 2
    assert "does not match the expected" in capsys.readouterr().err


def test_wrong_digest_refused_and_nothing_left(server, home, monkeypatch):
    _install(monkeypatch, WeightsEntry("test-net", (WeightsFile("model.bin", f"{server}/model.bin", "0" * 64),),
                                       ("test-extractor",), "a test file"))
    with pytest.raises(HarnessError, match=f"downloaded sha256 {SHA} does not match the pinned 0000"):
        fetch("test-net")
    assert not any((home / "test-net").iterdir())  # no partial file, no target


def test_http_error_leaves_nothing(server, home, monkeypatch):
    _install(monkeypatch, WeightsEntry("test-net", (WeightsFile("model.bin", f"{server}/absent.bin", SHA),),
                                       ("test-extractor",), "a test file"))
    with pytest.raises(HarnessError, match="absent.bin: download failed .*404"):
        fetch("test-net")
    assert not any((home / "test-net").iterdir())


def test_trust_on_first_fetch_records_and_enforces(server, home, monkeypatch):
    _install(monkeypatch, WeightsEntry("test-repo", (WeightsFile("config.json", f"{server}/config.json", None),
                                                     WeightsFile("model.bin", f"{server}/model.bin", None)),
                                       ("test-extractor",), "a test repo", hf_repo="org/test-repo"))
    lines = fetch("test-repo")
    assert all("recorded: not pinned upstream" in line for line in lines)
    assert f"{SHA}  model.bin" in (home / "test-repo" / "SHA256SUMS").read_text()
    assert all(": ok (recorded at fetch" in line for line in verify("test-repo"))
    (home / "test-repo" / "config.json").write_text('{"a": 2}')
    with pytest.raises(HarnessError, match="config.json: sha256 .* does not match"):
        verify("test-repo")


def test_lookup_order_hf_cache_and_missing_message(home, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--yuvalkirstain--PickScore_v1" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert locate("pickscore-v1") is None  # one of two files: not usable
    expected = (r"not computed: weights not found \(harness weights fetch pickscore-v1\); needs config.json, "
                r"model.safetensors in .*weights/pickscore-v1 or the Hugging Face cache of yuvalkirstain/PickScore_v1")
    with pytest.raises(WeightsNotFound, match=expected):
        weights.require("pickscore-v1")
    (snapshot / "model.safetensors").write_bytes(b"x")
    assert locate("pickscore-v1") == snapshot
    (home / "pickscore-v1").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (home / "pickscore-v1" / name).write_bytes(b"y")
    assert locate("pickscore-v1") == home / "pickscore-v1"  # HARNESS_WEIGHTS first
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "ViT-L-14.pt").write_bytes(b"z")
    assert locate("clip-vit-l-14-openai") == tmp_path / "torch" / "hub" / "checkpoints"


def test_list_and_run_refused_before_compute(home, tmp_path, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "MISSING (harness weights fetch clip-vit-b-16-openai)" in out and "inception-fid-helper" in out
    results = tmp_path / "results"
    # fd_dinov2: a metric the smoke protocol's dataset can feed (reference images; clip_score would now be refused
    # earlier, for want of prompts), whose extractor's weights are absent here
    code = main(["run", "smoke", "--set", "metrics=[fid, fd_dinov2]", "--results", str(results),
                 "--executor", "debug"])
    assert code == 2
    err = capsys.readouterr().err
    assert "metric 'fd_dinov2' (extractor 'dinov2-vit-l-14'): not computed: weights not found " \
           "(harness weights fetch dinov2-vit-l-14)" in err
    assert not results.exists()  # nothing generated
    assert main(["weights", "fetch", "no-such"]) == 2
    assert "unknown weights 'no-such'" in capsys.readouterr().err


def test_inception_tf1_entry_is_torch_fidelitys_release_file():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    from harness.features.inception_tf1 import WEIGHTS_FILE

    entry = weights.get_entry("inception-tf1")
    (file,) = entry.files
    assert file.url == URL_INCEPTION_V3 and file.relative == WEIGHTS_FILE == URL_INCEPTION_V3.rsplit("/", 1)[1]
    # torch.hub naming: the 8 hex digits before ".pth" are the sha256 prefix of the file
    assert len(file.sha256) == 64 and file.sha256.startswith(WEIGHTS_FILE.rsplit("-", 1)[1].removesuffix(".pth"))
    assert set(entry.used_by) == {"inception-tf1", "inception-clean"} and entry.provenance
    assert weights.entries_for_extractor("inception-clean") == ["inception-tf1"]


def test_fetch_inception_tf1_from_a_local_server_then_the_extractor_uses_it(server, home, tmp_path, monkeypatch,
                                                                           capsys):
    """The command the extractor's error names, end to end: fetch (digest-checked) -> found -> loaded."""
    from harness.features import get_extractor
    from harness.features.inception_tf1 import WEIGHTS_FILE
    from harness.hashing import sha256_file
    from tests.support.metric_fixtures import image_set, write_random_inception_weights

    served = write_random_inception_weights(tmp_path / "served" / WEIGHTS_FILE)  # the server's folder
    real = weights.get_entry("inception-tf1")
    local = WeightsEntry(real.name, (WeightsFile(WEIGHTS_FILE, f"{server}/{WEIGHTS_FILE}", real.files[0].sha256),),
                         real.used_by, real.source)
    _install(monkeypatch, local)
    with pytest.raises(WeightsNotFound, match="harness weights fetch inception-tf1"):
        get_extractor("inception-tf1").spec  # noqa: B018
    # the official pin refuses these (random) bytes and leaves nothing behind
    assert main(["weights", "fetch", "inception-tf1"]) == 2
    assert "does not match the pinned 6726825d" in capsys.readouterr().err
    assert not any((home / "inception-tf1").iterdir())
    sha = sha256_file(served)
    _install(monkeypatch, local.with_pins({WEIGHTS_FILE: sha}))
    assert main(["weights", "fetch", "inception-tf1"]) == 0
    assert f"fetched, sha256 {sha}" in capsys.readouterr().out
    ext = get_extractor("inception-tf1")
    assert ext.weights_path() == home / "inception-tf1" / WEIGHTS_FILE and ext.spec.weights_sha256 == sha
    ext.load()
    assert ext.extract(image_set(0, 2, 40))["pool3"].shape == (2, 2048)
    assert main(["weights", "verify", "inception-tf1"]) == 0
