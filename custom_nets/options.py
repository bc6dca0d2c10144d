"""Option values as command lines hand them over: python-fire and ``monai.bundle run`` pass ``--resume false``
as the string 'false', which Python reads as true."""

from __future__ import annotations

__all__ = ["as_bool", "as_optional_bool"]

_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
_NONE_WORDS = {"none", "null", "auto"}


def as_bool(value: object, option: str) -> bool:
    """``value`` (a bool, 0/1, or true/false/yes/no/on/off in any case) as a bool; anything else is an error
    naming ``--option``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _WORDS:
        return _WORDS[value.strip().lower()]
    raise ValueError(f"--{option}: expected true or false (yes/no), got {value!r}")


def as_optional_bool(value: object, option: str) -> bool | None:
    """Like :func:`as_bool`, with None (also 'none', 'null', 'auto') meaning "decide by default"."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        return None
    try:
        return as_bool(value, option)
    except ValueError:
        raise ValueError(f"--{option}: expected true, false or auto (null), got {value!r}") from None
