"""``harness cost CARD``: measure one model card's cost (latency, throughput, memory, FLOPs) on this machine, and
with ``--write`` record it in the card's ``cost:`` block, which `harness plan`'s GPU-hour estimate reads."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:  # the verb's heavy imports (torch via the cost stage) happen only when it runs
    from harness.run.cost_stage import CostRecord
    from harness.types import Cell, ModelCard

PROBE_DATASET = "cost-probe"  # cost does not depend on the data: a named stand-in, so the cell id is stable


def add_cost_parser(sub: argparse._SubParsersAction, positive_int: Callable[[str], int]) -> None:
    p = sub.add_parser("cost", help="measure a model card's latency, throughput, peak memory and FLOPs; --write "
                                    "records it in the card's cost: block (read by `harness plan`)")
    p.add_argument("card", help="model card name (see `harness ls cards`) or path")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: the card's official recipe, "
                                                       "else the model's fewest)")
    p.add_argument("--cfg", type=float, help="guidance (default: the model's natural value; none for models "
                                             "without guidance)")
    p.add_argument("--sampler", help="sampler (default: the model's first)")
    p.add_argument("--batch", type=positive_int, default=16, help="throughput batch (default 16, the protocols' "
                                                                  "default batch_size)")
    p.add_argument("--k", type=positive_int, help="timed batch-1 calls (default: the cost stage's DEFAULT_K, 64; "
                                                  "p95 needs >= 59 for a 95%% interval)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default: the cost stage's DEFAULT_WARMUP, 3)")
    p.add_argument("--cache", type=Path, default=None, help="where cost records are cached "
                                                            "(default: $HARNESS_CACHE or ~/.cache/onestep-bench)")
    p.add_argument("--write", action="store_true", help="write the measured cost: block into the card file")


def probe_cell(card: ModelCard, steps: int | None, cfg: float | None, sampler: str | None) -> Cell:
    """The cell `harness cost` measures: the card at the given (or default) settings, refused like a protocol's."""
    from harness import SAMPLING_VERSION
    from harness.models.adapters import check_settings, get_adapter_class
    from harness.types import Cell, DatasetRef, SamplerSettings

    caps = get_adapter_class(card.family).capabilities_for(card)
    if steps is None:
        steps = int(card.recipes.get("official", {}).get("steps", caps.min_steps))
    if cfg is None and caps.guidance != "none":
        cfg = float(caps.natural_cfg if caps.natural_cfg is not None else 1.0)
    settings = SamplerSettings(steps, cfg, sampler or caps.samplers[0])
    check_settings(card, caps, settings)  # e.g. --cfg for a model without guidance: refused, never ignored
    return Cell(card, settings, DatasetRef(PROBE_DATASET, PROBE_DATASET, caps.num_classes), seed=0, n=1,
                sampling_version=SAMPLING_VERSION)


def card_cost_block(record: CostRecord, cell: Cell) -> dict:
    """What --write records: seconds per NFE per image at the measured batch (what generation runs at), where."""
    from harness import __version__
    from harness.models.adapters import get_adapter_class

    tp = record.throughput["value"]
    block = {"seconds_per_nfe": float(f"{1.0 / (tp * record.nfe):.4g}"), "device": record.device,
             "batch": record.batch}
    if record.env.get("gpu"):
        block["gpu"] = record.env["gpu"]
    resolution = get_adapter_class(cell.model.family).capabilities_for(cell.model).resolution
    cfg = "none" if cell.settings.cfg is None else f"{cell.settings.cfg:g}"
    block["resolution"] = int(resolution)
    block["note"] = (f"harness cost {cell.model.name}: {tp:.4g} img/s at batch {record.batch}, steps "
                     f"{cell.settings.steps}, cfg {cfg}, NFE {record.nfe}, {record.env.get('threads')} threads, "
                     f"{record.dtype}, torch {record.env.get('torch')}, harness {__version__}, {record.created_at}")
    return block


def cmd_cost(args: argparse.Namespace) -> int:
    from harness.cli.checks import check_device
    from harness.models.cards import load_card, write_card_cost
    from harness.run.cost_stage import DEFAULT_K, DEFAULT_WARMUP, measure_cell
    from harness.store import default_cache_dir

    card = load_card(args.card)
    warmup = DEFAULT_WARMUP if args.warmup is None else args.warmup
    if warmup < 0:
        raise HarnessError(f"--warmup {warmup}: expected an integer >= 0")
    check_device(args.device)
    if args.write and not (card.source and Path(card.source).is_file()):
        raise HarnessError(f"--write: card {card.name!r} has no card file to write ({card.source!r})")
    cell = probe_cell(card, args.steps, args.cfg, args.sampler)
    record = measure_cell(cell, args.cache or default_cache_dir(), args.device, batch=args.batch,
                          warmup=warmup, k=DEFAULT_K if args.k is None else args.k)
    print(record.summary())
    if args.write:
        block = card_cost_block(record, cell)
        write_card_cost(Path(card.source), block)
        print(f"wrote cost: seconds_per_nfe {block['seconds_per_nfe']:g} on {block['device']} (batch "
              f"{block['batch']}) to {card.source}")
    return 0
