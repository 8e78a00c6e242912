"""Expands `${VAR}` references from the environment in the configuration's strings.

`${VAR}`, `${VAR:-default}` (unset or empty) and `${VAR-default}` (unset) as in a shell; `$${` is a
literal `${`. A string that is wholly one reference is marked (`FromEnv`), so a number or boolean
key may be given as `${PORT}` and parsed once expanded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["FromEnv", "interpolate", "plain"]

_VAR = re.compile(r"\$(\$)?\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class FromEnv(str):
    """A string that came (wholly) out of `${VAR}`; number and boolean keys may then parse it."""

    __slots__ = ()


def plain(value: Any) -> Any:
    """The same data with every string a plain `str` (what partner code and validators expect)."""
    if isinstance(value, str):
        return str(value) if type(value) is not str else value
    if isinstance(value, dict):
        return {key: plain(val) for key, val in value.items()}
    if isinstance(value, list):
        return [plain(val) for val in value]
    return value


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand `${VAR}`, `${VAR:-default}` (unset or empty) and `${VAR-default}` (unset); `$${` is a
    literal `${`. Returns the text and the problems found (missing variables, bad syntax)."""
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        inner = match.group(2)
        name, default, when_empty = inner, None, False
        for sep in (":-", "-"):
            pos = inner.find(sep)
            if pos > 0:
                name, default, when_empty = inner[:pos], inner[pos + len(sep) :], sep == ":-"
                break
        if not _VAR_NAME.fullmatch(name):
            problems.append(
                f"${{{inner}}} is not a valid variable reference (use ${{NAME}} or ${{NAME:-default}})"
            )
            return ""
        value = env.get(name)
        if value is None or (when_empty and value == ""):
            if default is None:
                problems.append(f"environment variable {name} is not set")
                # Keep the reference as the value: the file is refused anyway, and other checks of
                # this value then do not report it a second time as empty.
                return match.group(0)
            return default
        return value

    if "$" not in text:
        return text, problems
    out = _VAR.sub(replace, text)
    whole = _VAR.fullmatch(text)
    if whole is not None and not whole.group(1):
        return FromEnv(out), problems
    return out, problems
