"""Parsing helpers shared by every command: comma lists, JSON options, the console."""

from __future__ import annotations

import json
from typing import Optional

from asdkit.errors import ConfigError

BACKBONE_CONFIG_HELP = "Architecture overrides as JSON (e.g. a tiny model for a quick try: '{\"num_hidden_layers\": 2}')."


def csv_list(value: Optional[str]) -> Optional[list[str]]:
    """``"fan, pump"`` -> ``["fan", "pump"]``; None stays None; an empty list is an error."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"empty list: {value!r}")
    return items


def json_dict(value: Optional[str], option: str) -> Optional[dict]:
    """A JSON object given on the command line (None stays None)."""
    if value is None:
        return None
    try:
        d = json.loads(value)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{option}: not valid JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{option}: must be a JSON object, e.g. '{{\"num_hidden_layers\": 2}}'")
    return d


def console():
    from rich.console import Console

    return Console()
