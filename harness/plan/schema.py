"""The protocol file's schema: its keys with what each allows and its default, and the validators of its
scalar and list values. Every error names the file, the key, the bad value and what is allowed."""

from __future__ import annotations

from typing import Any

from harness.errors import ProtocolError

# key → (description of what is allowed, default or REQUIRED)
REQUIRED = object()
TOP_KEYS: dict[str, tuple[str, Any]] = {
    "name": ("a name of letters, digits, '-' or '_'", REQUIRED),
    "description": ("free text", ""),
    "seed": ("an integer >= 0", 0),
    "seeds": ("a non-empty list of distinct integers >= 0: seed replicates, every cell once per seed (instead of "
              "'seed'; reports add the between-seed spread)", None),
    "models": ("a non-empty list of model cards (name, or {card, steps, cfg, sampler, knobs} or {card, recipe})",
               REQUIRED),
    "datasets": ("a non-empty list of dataset ids", REQUIRED),
    "steps": ("a non-empty list of integers >= 1", REQUIRED),
    "cfg": ("a non-empty list of numbers >= 0, 'natural' (the model's released value) or null (no guidance)",
            [None]),
    "sampler": ("a sampler name, e.g. 'euler'", "euler"),
    "n": ("an integer >= 1 and <= 10000000 (samples per cell)", REQUIRED),
    "shard_size": ("an integer >= 1 (samples per shard)", 64),
    "batch_size": ("an integer >= 1 (samples per generator call)", 16),
    "metrics": ("a list of metric names", []),
    "reference_n": ("an integer >= 2 and <= 10000000 (reference images for corpus metrics)", 1000),
    "bootstrap": ("an integer >= 0 (bootstrap replicates per cell for metric CIs; 0 disables)", 200),
    "reference_stats": ("{file, format, n}: FID against an imported mu/sigma file (harness/plan/reference_spec.py)",
                        None),
    "image_size": ("null (native) or {size, filter}: resize before saving (harness/plan/resize.py)", None),
    "cost": ("null, true, or {k, warmup, batch, throughput_calls, interleave: model|run}: measure each cell's "
             "latency, throughput, peak memory and FLOPs in a cost stage (harness/run/cost_stage.py); true = the "
             "defaults", None),
    "real": ("a list of dataset ids whose real images are scored like a model on every dataset: the real-data "
             "floor, e.g. [mnist-train] (harness/plan/real_floor.py)", []),
}
MODEL_KEYS = {"card", "steps", "cfg", "sampler", "knobs", "recipe", "unsupported"}
# models[i].unsupported: what a setting the model cannot honour does to the plan. "refuse" (default): the
# whole plan is refused. "list": that setting is printed as refused, with the reason, and never run (for
# presets that reproduce a paper's grid, where some models could not do what the paper asked of them).
UNSUPPORTED = ("refuse", "list")
NATURAL = "natural"  # a cfg entry meaning "the guidance value this model was released with"
CfgValue = float | None | str
# Samples per cell (and reference images) above this are a typo, not a benchmark: FID-50K uses 50,000, and
# sample file names (store.image_name) have seven digits. Whole sweeps have their own limits (harness/plan/cost.py).
MAX_SAMPLES_PER_CELL = 10_000_000


def int_value(src: str, key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or \
            (maximum is not None and value > maximum):
        allowed = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ProtocolError(f"{src}: key {key!r} has value {value!r}; expected an integer {allowed}")
    return value


def int_list(src: str, key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ProtocolError(f"{src}: key {key!r} has value {value!r}; expected {TOP_KEYS['steps'][0]}")
    return tuple(int_value(src, f"{key}[{i}]", v, 1) for i, v in enumerate(value))


def seed_list(src: str, raw: dict[str, Any]) -> tuple[int, ...]:
    """``seeds: [0, 1, 2]`` (replicates) or ``seed: S`` (one), never both: the seeds every cell is generated with."""
    if raw.get("seeds") is None:
        return (int_value(src, "seed", raw.get("seed", 0), 0),)
    if "seed" in raw:
        raise ProtocolError(f"{src}: keys 'seed' ({raw['seed']!r}) and 'seeds' ({raw['seeds']!r}) both given; "
                            f"give 'seed: S' for one seed or 'seeds: [S1, S2, ...]' for replicates")
    value = raw["seeds"]
    if not isinstance(value, list) or not value:
        raise ProtocolError(f"{src}: key 'seeds' has value {value!r}; expected {TOP_KEYS['seeds'][0]}")
    seeds = tuple(int_value(src, f"seeds[{i}]", v, 0) for i, v in enumerate(value))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ProtocolError(f"{src}: key 'seeds' repeats {repeated[0]!r} ({value!r}); replicates need distinct seeds")
    return seeds


COST_KEYS = {"k": 1, "warmup": 0, "batch": 1, "throughput_calls": 1}  # option → its lowest value
# Which cells' timed calls go round-robin in one process: those of one model (loaded once), or every cell of the
# run (all models loaded at once: drift between models cancels too, if they fit in memory together).
COST_INTERLEAVE = ("model", "run")


def cost_options(src: str, value: Any) -> tuple[tuple[str, int | str], ...] | None:
    """The protocol's ``cost`` key: None (no cost stage), or the timing plan's options that were given."""
    if value is None or value is False:
        return None
    if value is True:
        return ()
    if not isinstance(value, dict):
        raise ProtocolError(f"{src}: key 'cost' has value {value!r}; expected {TOP_KEYS['cost'][0]}")
    unknown = sorted(set(value) - set(COST_KEYS) - {"interleave"})
    if unknown:
        raise ProtocolError(f"{src}: key 'cost' has unknown option(s) {', '.join(map(repr, unknown))}; allowed: "
                            f"{', '.join([*COST_KEYS, 'interleave'])}")
    if "interleave" in value and value["interleave"] not in COST_INTERLEAVE:
        raise ProtocolError(f"{src}: key 'cost.interleave' has value {value['interleave']!r}; expected one of "
                            f"{', '.join(COST_INTERLEAVE)}")
    options: list[tuple[str, int | str]] = [(k, int_value(src, f"cost.{k}", value[k], COST_KEYS[k]))
                                            for k in COST_KEYS if k in value]
    return tuple(options + ([("interleave", value["interleave"])] if "interleave" in value else []))


def cfg_list(src: str, key: str, value: Any) -> tuple[CfgValue, ...]:
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise ProtocolError(f"{src}: key {key!r} has value {value!r}; expected {TOP_KEYS['cfg'][0]}")
    out: list[CfgValue] = []
    for i, v in enumerate(value):
        if v is None or (isinstance(v, str) and v.lower() in ("none", "null")):
            out.append(None)
        elif isinstance(v, str) and v.lower() == NATURAL:
            out.append(NATURAL)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
            out.append(float(v))
        else:
            raise ProtocolError(f"{src}: key '{key}[{i}]' has value {v!r}; expected a number >= 0 or null")
    return tuple(out)


def str_list(src: str, key: str, value: Any, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or (not value and not allow_empty) or \
            not all(isinstance(v, str) and v for v in value):
        raise ProtocolError(f"{src}: key {key!r} has value {value!r}; expected {TOP_KEYS[key][0]}")
    return tuple(value)
