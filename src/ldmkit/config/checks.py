"""Small field checks used by the config dataclasses' `__post_init__`.

Each raises `UsageError` naming the owner class, the field, the value given and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ldmkit.errors import UsageError


def check_int(owner: str, name: str, value: object, *, minimum: int | None = None) -> None:
    """`value` must be an int (not a bool) and, when given, >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{owner}.{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{owner}.{name} must be >= {minimum}, got {value}")


def check_float(
    owner: str,
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
    positive: bool = False,
) -> None:
    """`value` must be a finite real number, optionally > 0, >= minimum, <= maximum and < below."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{owner}.{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise UsageError(f"{owner}.{name} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{owner}.{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{owner}.{name} must be <= {maximum}, got {value}")
    if below is not None and value >= below:
        raise UsageError(f"{owner}.{name} must be < {below}, got {value}")


def check_choice(owner: str, name: str, value: object, allowed: Iterable[str]) -> None:
    """`value` must be one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise UsageError(f"{owner}.{name} must be one of {', '.join(allowed)}; got {value!r}")


def check_bool(owner: str, name: str, value: object) -> None:
    """`value` must be True or False."""
    if not isinstance(value, bool):
        raise UsageError(f"{owner}.{name} must be true or false, got {value!r}")
