"""Regenerate harness/data/imagenet_labels.tsv, the committed ImageNet-1k label table.

Columns: index, wnid, name, lemma.
- index/wnid: timm's ``imagenet_synsets.txt`` (the standard order: sorted wnids, index = ImageNet label id).
- lemma: the first WordNet lemma of the synset (timm ``imagenet_synset_to_lemma.txt``), the name the paper's
  code (Keras ``imagenet_class_index.json`` style, with underscores) uses; several classes share one.
- name: the prompt name, "a photo of a {name}". OpenAI's curated CLIP class names (open_clip
  ``IMAGENET_CLASSNAMES``: no underscores, crane and maillot already split) with the two pairs that list
  still duplicates made distinct below.

Run: PYTHONPATH=$PWD .venv/bin/python scripts/make_label_table.py
"""

from __future__ import annotations

from pathlib import Path

from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
from timm.data import ImageNetInfo

OUT = Path(__file__).resolve().parent.parent / "harness" / "data" / "imagenet_labels.tsv"

# open_clip names 657/744 are both "missile" and 836/837 both "sunglasses". WordNet glosses:
# n04008634 "projectile, missile": a weapon thrown or projected at a target (657 n03773504 is the rocket);
# n04355933 "sunglass": the convex lens (837 n04356056 is "sunglasses, dark glasses, shades").
OVERRIDES = {744: "projectile", 836: "sunglass"}


def build_rows() -> list[tuple[int, str, str, str]]:
    info = ImageNetInfo("imagenet-1k")
    rows = []
    for index, clip_name in enumerate(IMAGENET_CLASSNAMES):
        wnid = info.index_to_label_name(index)
        lemma = info.index_to_description(index).split(",")[0].strip()
        rows.append((index, wnid, OVERRIDES.get(index, clip_name), lemma))
    names = [r[2].lower() for r in rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates or any("_" in n or "\t" in n for n in names) or len(rows) != 1000:
        raise SystemExit(f"label table not clean: duplicates {duplicates}")
    return rows


def main() -> None:
    lines = ["index\twnid\tname\tlemma"] + [f"{i}\t{w}\t{n}\t{lem}" for i, w, n, lem in build_rows()]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(lines) - 1} classes)")


if __name__ == "__main__":
    main()
