"""Typed knob declarations: what values a family-specific knob accepts, checked at plan time.

``Capabilities.knobs`` lists the knobs a family honours. An entry may be a plain name (any value passes the
plan; the family checks it when sampling, as before) or a :class:`Knob`, a ``str`` subclass that is still the
knob's name everywhere a name is used (``in``, ``join``, printing) and also declares the allowed type and
bounds or choices, so a bad value is refused before any compute with the file, key, value and expectation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from harness.errors import ProtocolError

KINDS = ("number", "integer", "bool", "choice")


class Knob(str):
    """A knob name with its allowed values. ``minimum``/``maximum`` are inclusive unless ``*_open``."""

    kind: str
    minimum: float | None
    maximum: float | None
    min_open: bool
    max_open: bool
    choices: tuple[Any, ...]

    def __new__(cls, name: str, kind: str, minimum: float | None = None, maximum: float | None = None,
                min_open: bool = False, max_open: bool = False, choices: Iterable[Any] = ()) -> Knob:
        if kind not in KINDS:
            raise ValueError(f"knob {name!r}: kind {kind!r}; expected one of {', '.join(KINDS)}")
        if (kind == "choice") != bool(tuple(choices)):
            raise ValueError(f"knob {name!r}: choices are given exactly when kind is 'choice'")
        knob = super().__new__(cls, name)
        knob.kind, knob.minimum, knob.maximum = kind, minimum, maximum
        knob.min_open, knob.max_open, knob.choices = min_open, max_open, tuple(choices)
        return knob

    def __reduce__(self) -> tuple[Any, ...]:  # str's default pickling would call __new__ with the name only
        return (Knob, (str(self), self.kind, self.minimum, self.maximum, self.min_open, self.max_open, self.choices))

    def expectation(self) -> str:
        """What the knob accepts, in words: 'a number in [0, 1]', 'an integer >= 1', 'one of cfg, autoguidance'."""
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind == "bool":
            return "true or false"
        what = "a finite number" if self.kind == "number" else "an integer"
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"{what} in {'(' if self.min_open else '['}{lo:g}, {hi:g}{')' if self.max_open else ']'}"
        if lo is not None:
            return f"{what} {'>' if self.min_open else '>='} {lo:g}"
        if hi is not None:
            return f"{what} {'<' if self.max_open else '<='} {hi:g}"
        return what

    def accepts(self, value: Any) -> bool:
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.kind == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int if self.kind == "integer" else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        lo, hi = self.minimum, self.maximum
        if lo is not None and (value <= lo if self.min_open else value < lo):
            return False
        return not (hi is not None and (value >= hi if self.max_open else value > hi))


def knob_from_declaration(declared: str | Mapping[str, Any], where: str = "") -> str:
    """A knob entry as written in a card or capabilities file: a name, or ``{name, kind, minimum, maximum,
    min_open, max_open, choices}``; returns the name (undeclared type) or a :class:`Knob`."""
    if isinstance(declared, str):
        return declared
    if not isinstance(declared, Mapping) or not isinstance(declared.get("name"), str):
        raise ProtocolError(f"{where}knob {declared!r}: expected a name or a mapping with 'name' and 'kind'")
    fields = {k: v for k, v in declared.items() if k != "name"}
    try:
        return Knob(declared["name"], **fields)
    except (TypeError, ValueError) as err:
        raise ProtocolError(f"{where}knob {declared!r}: {err}") from None


def check_knob_values(knobs: Iterable[tuple[str, Any]], declared: Iterable[str], where: str, who: str) -> None:
    """Refuse a value outside its knob's declaration. ``where`` names the file and the key prefix
    (``"p.yaml: key 'models[0].knobs"``), ``who`` the model whose family declared the knob."""
    by_name = {str(k): k for k in declared}
    for name, value in knobs:
        knob = by_name.get(name)
        if isinstance(knob, Knob) and not knob.accepts(value):
            raise ProtocolError(f"{where}.{name}' has value {value!r}; {who} expects {knob.expectation()}")


# a guidance interval in normalised time, as iMF and RAE take it (t_min <= t_max is the family's check)
INTERVAL_KNOBS = (Knob("t_min", "number", 0.0, 1.0), Knob("t_max", "number", 0.0, 1.0))
