"""The values a setting accepts, as data: one `Limit` per run field (`config.FIELD_LIMITS`) and
per analysis parameter (`Analysis.limits` in the analyses registry). Validation reads them
before anything is written; the dashboard's forms and the Lab's server-side checks read the
same objects (`lab_max`: the largest value the Lab lets a browser ask for).

    Limit.interval("(0, inf)")         lr: positive and finite
    Limit.interval("[3, 401]", integer=True, lab_max=201)
    Limit.one_of("train", "test")
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import ConfigError

_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*$")


@dataclass(frozen=True)
class Limit:
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False       # `lo` itself is excluded
    hi_open: bool = False
    integer: bool = False       # whole numbers only
    choices: tuple = ()         # when given: the value must be one of these (no range)
    lab_max: float | None = None  # the Lab's interactive upper bound (<= hi)
    words: tuple = ()           # values accepted besides the range (e.g. "last" for epochs)

    @classmethod
    def interval(cls, text: str, *, integer: bool = False, lab_max=None, words=()) -> "Limit":
        """From interval notation: "[0, 1)", "(0, inf)", "[1, 2**31)" (ends may be inf)."""
        found = _INTERVAL.match(text)
        if not found:
            raise ValueError(f"not an interval: {text!r}")
        left, lo, hi, right = found.groups()
        return cls(_number(lo), _number(hi), left == "(", right == ")", integer,
                   lab_max=lab_max, words=tuple(words))

    @classmethod
    def one_of(cls, *choices) -> "Limit":
        return cls(choices=tuple(choices))

    def __str__(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        kind = "an integer" if self.integer else "a finite number"
        words = "".join(f" or '{w}'" for w in self.words)
        return (f"{kind} in {'(' if self.lo_open else '['}{_show(self.lo)}, "
                f"{_show(self.hi)}{')' if self.hi_open else ']'}{words}")

    def check(self, name: str, value):
        """`value` if it is accepted (an integral float as an int for integer limits), else a
        ConfigError naming `name` and what is accepted."""
        if self.choices:
            if value not in self.choices:
                raise ConfigError(f"{name}={value!r} is not allowed; {self}")
            return value
        if isinstance(value, str) and value in self.words:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be {self}, not {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value!r} is not finite: it must be {self}")
        if self.integer and value != int(value):
            raise ConfigError(f"{name} must be {self}, not {value!r}")
        below = value <= self.lo if self.lo_open else value < self.lo
        above = value >= self.hi if self.hi_open else value > self.hi
        if below or above:
            raise ConfigError(f"{name}={value!r} is out of range: it must be {self}")
        return int(value) if self.integer else value


def _number(text: str) -> float:
    text = text.strip()
    if text in ("inf", "+inf", "-inf"):
        return math.inf if text != "-inf" else -math.inf
    if text.startswith("2**"):
        return 2 ** int(text[3:])
    return float(text) if any(c in text for c in ".e") else int(text)


def _show(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, int) and x >= 2**20 and (x & (x - 1)) == 0:
        return f"2**{x.bit_length() - 1}"
    return f"{x:g}" if isinstance(x, float) else str(x)
