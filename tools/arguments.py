"""Command-line values as fire hands them over: JSON objects and comma-separated lists."""

from __future__ import annotations

import json
from pathlib import Path


def as_mapping(value, what: str) -> dict | None:
    """A dict from fire (already parsed), a JSON string or a JSON file path."""
    if value is None or isinstance(value, dict):
        return value
    text = Path(value).read_text() if Path(str(value)).is_file() else str(value)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--{what}: not JSON nor a JSON file: {value!r} ({err})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"--{what}: expected a JSON object, got {parsed!r}")
    return parsed


def as_list(value) -> list[str]:
    """A comma-separated string, a list, or one number from fire, as a list of strings."""
    if value is None:
        return []
    if isinstance(value, (int, float)):
        return [str(value)]
    return [str(v) for v in (value.split(",") if isinstance(value, str) else value) if str(v)]
