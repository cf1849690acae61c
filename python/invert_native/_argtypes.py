"""argparse types for the command lines (invert-native and its bench): numbers checked
when the options are read, so that a bad value is a one-line usage error (exit 2)."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def whole_number(minimum: int, hint: str = "") -> Callable[[str], int]:
    """A type accepting whole numbers >= ``minimum``; ``hint`` is added to the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            more = {0: "0 or more", 1: "at least 1"}.get(minimum, f">= {minimum}")
            raise argparse.ArgumentTypeError(
                f"must be a whole number, {more}, got {text!r}" + (f" {hint}" if hint else ""))
        return value

    return parse


def real_number(minimum: float, strict: bool) -> Callable[[str], float]:
    """A type accepting finite numbers >= ``minimum`` (> with ``strict``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > minimum if strict else value >= minimum)):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'>' if strict else '>='} {minimum:g}, got {text!r}")
        return value

    return parse
