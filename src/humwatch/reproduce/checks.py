"""The checks of the study config's values, each a one-line ConfigError naming where the value is."""

from __future__ import annotations

import math
from typing import Any, Sequence

from humwatch.errors import ConfigError


def id_text(i: str | int) -> str:
    return f"{i:02d}" if isinstance(i, int) else str(i)


def check_keys(d: dict, known: Sequence[str], where: str, required: Sequence[str] = ()) -> None:
    unknown = [str(k) for k in d if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    missing = [k for k in required if k not in d]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")


def check_mapping(v: Any, where: str, nonempty: bool = False) -> None:
    if not isinstance(v, dict) or (nonempty and not v):
        raise ConfigError(f"{where} must be a {'non-empty ' if nonempty else ''}mapping, got {v!r}")


def whole_number(v: Any, where: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{where} must be a whole number {low} or more, got {v!r}")
    return v


def positive(v: Any, where: str) -> float:
    if isinstance(v, str):  # YAML reads 1e-3 (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{where} must be a positive number, got {v!r}")
    return float(v)


def fraction(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ConfigError(f"{where} must be a number from 0 to below 1, got {v!r}")
    return float(v)
