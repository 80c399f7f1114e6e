"""``harness ls``: what the harness knows about, each item with the capabilities ``plan`` checks against."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.datasets import get_dataset
from harness.errors import HarnessError
from harness.features import available_extractors, get_extractor, packaged_weights
from harness.features.weights import entries_for_extractor


def _card_line(card) -> str:
    """One card with the capabilities its family declares for it (what `plan` will accept)."""
    from harness.models.adapters import get_adapter_class

    caps = get_adapter_class(card.family).capabilities_for(card)
    cfg = f" natural_cfg={caps.natural_cfg:g}" if caps.natural_cfg is not None else ""
    knobs = f" knobs={','.join(caps.knobs)}" if caps.knobs else ""
    recipes = f" recipes={','.join(card.recipes)}" if card.recipes else ""
    return (f"{card.name:<22} family={card.family:<15} {caps.conditioning:<5} guidance={caps.guidance:<8}{cfg} "
            f"steps={caps.min_steps}-{caps.max_steps} samplers={','.join(caps.samplers)} "
            f"{'one-step' if caps.one_step else 'multi-step'} {caps.resolution}px{knobs}{recipes}")


def _nfe_rule(adapter, caps) -> str:
    """The family's declared NFE as a formula in steps, probed from ``expected_nfe`` (no weights loaded)."""
    from harness.types import SamplerSettings

    def formula(cfg: float | None) -> str:
        def nfe(steps: int) -> int | None:
            return adapter.expected_nfe(SamplerSettings(steps=steps, cfg=cfg, sampler=caps.samplers[0]))

        # Probed at 1 and 2 steps whatever the card's range: the rule is the family's, not the card's.
        first = nfe(1)
        if first is None:
            return "adaptive (counted while sampling)"
        per_step = nfe(2) - first
        offset = first - per_step
        term = "steps" if per_step == 1 else f"{per_step}*steps"
        return term + (f"{offset:+d}" if offset else "")

    if caps.guidance == "none":
        return formula(None)
    low = min(caps.natural_cfg if caps.natural_cfg is not None else 1.0, 1.0)
    rules = {cfg: formula(cfg) for cfg in (low, 7.0)}
    if len(set(rules.values())) == 1:
        return rules[low]
    return "; ".join(f"{rule} at cfg={cfg:g}" for cfg, rule in rules.items())


def _adapter_lines() -> list[str]:
    """Per family: what it honours (from its first shipped card; steps and natural cfg vary per card)."""
    from harness.models.adapters import discover
    from harness.models.cards import available_cards, load_card

    cards: dict[str, list] = {}
    for name in available_cards():
        card = load_card(name)
        cards.setdefault(card.family, []).append(card)
    lines = []
    for family, cls in sorted(discover().items()):
        head = f"{family:<16} ({cls.__module__})"
        if family not in cards:
            lines.append(f"{head}  no shipped card")
            continue
        card = cards[family][0]
        caps = cls.capabilities_for(card)
        samplers = dict.fromkeys(s for c in cards[family] for s in cls.capabilities_for(c).samplers)
        try:
            nfe = _nfe_rule(cls(card), caps)
        except HarnessError as e:  # a family whose NFE needs more than the card (reported, not hidden)
            nfe = f"unknown ({e})"
        lines.append(f"{head}  {caps.conditioning}  guidance={caps.guidance}  "
                     f"knobs={','.join(caps.knobs) or 'none'}  samplers={','.join(samplers)}  nfe/sample={nfe}  "
                     f"cards={','.join(c.name for c in cards[family])}")
        if caps.guidance_note:
            lines.append(f"    {caps.guidance_note}")
    return lines


def cmd_ls(args: argparse.Namespace, protocols_dir: Path) -> int:
    from harness.datasets import available_datasets
    from harness.metrics import metric_lines
    from harness.models.cards import available_cards, load_card

    sections = {
        "adapters": _adapter_lines,
        "cards": lambda: [_card_line(load_card(n)) for n in available_cards()],
        "datasets": available_datasets,
        "metrics": metric_lines,
        "extractors": extractor_lines,
        "protocols": lambda: [str(p) for p in sorted(protocols_dir.glob("*.yaml"))],
    }
    for name, listing in sections.items():
        if args.what in ("all", name):
            print(f"{name}:")
            for line in listing():
                print(f"  {line}")
    return 0


def extractor_lines() -> list[str]:
    """One line per extractor for ``harness ls extractors``: its outputs and where its weights come from."""
    lines = []
    for name in available_extractors():
        ext, packaged = get_extractor(name), packaged_weights(name)
        source = (f"weights packaged in {packaged.PIN}" if packaged else
                  f"weights {', '.join(entries_for_extractor(name))} (harness weights list)")
        lines.append(f"{name:<24} outputs {','.join(ext.outputs):<22} {source}")
    return lines


def cmd_dataset(args: argparse.Namespace) -> int:
    """``harness dataset NAME``: scan + validate (errors name the path), then print the manifest as JSON."""
    dataset = get_dataset(args.name)
    record = getattr(dataset, "manifest_record", None)
    manifest = record() if record else dataset.manifest() if hasattr(dataset, "manifest") else None
    if not isinstance(manifest, dict):
        manifest = {"dataset": args.name, "digest": dataset.digest, "size": dataset.size}
    print(json.dumps(manifest, indent=1))
    return 0
