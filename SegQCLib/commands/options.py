"""Option values with their allowed range, checked by argparse: every out-of-range option of every command is the
same kind of error (``segqc <command>: error: argument --x: ...``, exit code 2), before any work starts."""

from __future__ import annotations

import argparse
import math
from typing import Callable, Union

from ..network.config_schema import MAX_WINDOW_OVERLAP

Number = Union[int, float]


def _ranged(kind: Callable[[str], Number], allowed: Callable[[Number], bool], description: str
            ) -> Callable[[str], Number]:
    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value) or not allowed(value):
            raise argparse.ArgumentTypeError(f"must be {description}, got {text}")
        return value

    parse.__name__ = description  # argparse names the type in its own messages
    return parse


probability_below_one = _ranged(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
window_overlap = _ranged(float, lambda v: 0.0 <= v <= MAX_WINDOW_OVERLAP, f"a number in [0, {MAX_WINDOW_OVERLAP}]")
non_negative_float = _ranged(float, lambda v: v >= 0.0, "a number >= 0")
non_negative_int = _ranged(int, lambda v: v >= 0, "a whole number >= 0")
positive_int = _ranged(int, lambda v: v >= 1, "a whole number >= 1")
