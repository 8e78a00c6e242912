"""Reads configuration JSON strictly: a key given twice in one object is refused, as in YAML.

Python's reader (like most) keeps the last of two equal keys without a word, so a second `kafka`
object would silently replace the first. The objects are read as lists of pairs and built here,
which finds every repeated key with its key path.
"""

from __future__ import annotations

import json
from typing import Any

from streamproc.errors import ConfigError, ConfigProblem

__all__ = ["load_json"]


class _Pairs(list[tuple[str, Any]]):
    """The members of one JSON object in file order, repeated keys included."""

    __slots__ = ()


def load_json(text: str, source: str) -> Any:
    """The data of one JSON document; raises ConfigError for repeated keys (each with its key path)
    or JSON that does not parse (with the line)."""
    try:
        data = json.loads(text, object_pairs_hook=_Pairs)
        problems: list[ConfigProblem] = []
        result = _build(data, "", source, problems)
    except json.JSONDecodeError as exc:
        raise ConfigError(ConfigProblem(source, f"line {exc.lineno}", f"not valid JSON: {exc.msg}")) from None
    except RecursionError:
        raise ConfigError(ConfigProblem(source, "", "not valid JSON: nested too deeply")) from None
    if problems:
        raise ConfigError(problems)
    return result


def _build(value: Any, path: str, source: str, problems: list[ConfigProblem]) -> Any:
    """Plain dicts and lists from the parsed pairs, each repeated key recorded."""
    if isinstance(value, _Pairs):
        out: dict[str, Any] = {}
        for key, item in value:
            child = f"{path}.{key}" if path else key
            if key in out:
                problems.append(
                    ConfigProblem(
                        source,
                        child,
                        "duplicate key; JSON readers keep only the last, so remove or merge one",
                    )
                )
            out[key] = _build(item, child, source, problems)
        return out
    if isinstance(value, list):
        return [_build(item, f"{path}[{i}]", source, problems) for i, item in enumerate(value)]
    return value
