"""The committed label table against the ImageNet metadata that installed packages ship (timm, open_clip)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from harness.datasets.labels import imagenet_labels, normalise_folder_name
from harness.errors import HarnessError

REPO = Path(__file__).resolve().parents[2]


def _timm_info(name: str) -> list[str]:
    root = Path(importlib.util.find_spec("timm").submodule_search_locations[0]) / "data" / "_info"
    return (root / name).read_text().splitlines()


def test_indices_and_wnids_equal_timm_synset_order():
    table = imagenet_labels()
    wnids = _timm_info("imagenet_synsets.txt")
    assert len(table) == 1000 == len(wnids)
    assert [c.wnid for c in table.classes] == wnids
    assert wnids == sorted(wnids)  # ImageNet label id = rank of the sorted wnid (ImageNetV2 relies on it)
    assert [c.index for c in table.classes] == list(range(1000))


def test_lemma_is_first_wordnet_lemma():
    lemmas = dict(line.split("\t", 1) for line in _timm_info("imagenet_synset_to_lemma.txt"))
    for c in imagenet_labels().classes:
        assert c.lemma == lemmas[c.wnid].split(",")[0].strip(), c


def test_names_are_prompt_ready_and_distinct():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    table = imagenet_labels()
    names = [c.name for c in table.classes]
    assert not [n for n in names if "_" in n or n != n.strip() or not n]
    assert len({n.lower() for n in names}) == 1000
    # curated names are OpenAI's CLIP names except the two open_clip still duplicates
    differing = {i for i, n in enumerate(names) if n != IMAGENET_CLASSNAMES[i]}
    assert differing == {744, 836}
    assert (names[134], names[517]) == ("crane bird", "construction crane")
    assert names[638] != names[639]
    assert table.prompt(0) == "a photo of a tench"


def test_generator_reproduces_committed_file(tmp_path):
    script = REPO / "scripts" / "make_label_table.py"
    code = (f"import runpy, pathlib; ns = runpy.run_path({str(script)!r}); "
            f"rows = ns['build_rows'](); print('\\n'.join('\\t'.join(map(str, r)) for r in rows))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    committed = (REPO / "harness" / "data" / "imagenet_labels.tsv").read_text().splitlines()[1:]
    assert out.splitlines() == committed


@pytest.mark.parametrize("folder, index", [("n02012849", 134), ("great_white_shark", 2), ("Great-White-Shark", 2),
                                           ("construction crane", 517), ("crane_bird", 134), ("tench", 0)])
def test_folder_matching(folder, index):
    assert imagenet_labels().match_folder(folder).index == index


@pytest.mark.parametrize("folder, candidates", [("crane", ("134 n02012849", "517 n03126707")),
                                                ("maillot", ("638 n03710637", "639 n03710721")),
                                                ("Cardigan", ("264 n02113186", "474 n02963159"))])
def test_duplicate_names_refused_with_candidates(folder, candidates):
    with pytest.raises(HarnessError, match="ambiguous") as err:
        imagenet_labels().match_folder(folder)
    for candidate in candidates:
        assert candidate in str(err.value)


def test_unknown_folder_and_label_errors():
    table = imagenet_labels()
    with pytest.raises(HarnessError, match="'zebra_crossing' matches no ImageNet class"):
        table.match_folder("zebra_crossing")
    with pytest.raises(HarnessError, match="outside 0..999"):
        table[1000]
    assert normalise_folder_name("Jack-o'-lantern") == "jack_o__lantern"
