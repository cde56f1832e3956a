"""Configuration errors and the checks that raise them."""

from __future__ import annotations

import math
from typing import Any


class EmulatorConfigError(ValueError):
    """A configuration value breaks its rule; the message names the field and the rule."""


def require_number(name: str, value: Any, minimum: float, maximum: float | None = None) -> None:
    """
    Raise :class:`EmulatorConfigError` unless ``value`` is a finite number in range.

    :param name: field name used in the message.
    :param value: the value to check.
    :param minimum: smallest allowed value.
    :param maximum: largest allowed value, or None for no upper bound.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise EmulatorConfigError(f"{name} must be a number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise EmulatorConfigError(f"{name} must be {bound}, got {value!r}")


def require_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    """Like :func:`require_number` but the value must be an integer."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise EmulatorConfigError(f"{name} must be an integer, got {value!r}")
    require_number(name, value, minimum, maximum)


def coerce_number(current: Any, value: Any) -> Any:
    """JSON has one number type: let an integer set a float field (``"job_seconds": 1``)."""
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
