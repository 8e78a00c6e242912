"""Collects a config file's problems by key path and reads plain keys (numbers, strings, URLs, ...).

Every check records its problem with `Checker.add` and goes on, so one run reports everything a
user has to fix. A value converter raises ValueError with the problem; `read_key` records it at the
key's path and keeps the default, so the checks after it still run.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType, UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from streamproc.config.interpolation import FromEnv
from streamproc.config.models import KeySpec, key_specs
from streamproc.core.events import kind_in_words
from streamproc.errors import ConfigProblem

__all__ = [
    "Checker",
    "as_bool",
    "as_choice",
    "as_float",
    "as_int",
    "as_str",
    "as_url",
    "converter",
    "did_you_mean",
    "join_path",
    "kind_of",
    "read_key",
    "section",
    "show_number",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_T = TypeVar("_T")
_S = TypeVar("_S")
_LAST_SEGMENT = re.compile(r"(\.[^.\[\]()]*|\[\d+\]|\([^)]*\))$")
"""The last step of a key path: `.name`, `[3]` or `(preset name)`."""


class Checker:
    """Collects every problem of one file, so a user fixes them all in one go."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []
        self.order: dict[str, int] = {"": -1}
        """Key path -> its position in the file, so problems are reported top to bottom."""

    def sorted_problems(self) -> list[ConfigProblem]:
        """The problems in file order (a path not seen as written sorts by its nearest parent)."""

        def position(problem: ConfigProblem) -> int:
            path = problem.path
            while path not in self.order:
                shorter = _LAST_SEGMENT.sub("", path)
                if shorter == path:
                    return -1
                path = shorter
            return self.order[path]

        return sorted(self.problems, key=position)

    def add(self, path: str, message: str) -> None:
        """Record a problem at a key path; the file is refused at the end."""
        self.problems.append(ConfigProblem(self.source, path, message))

    def warn(self, path: str, message: str) -> None:
        """Record what the file allows but should not rely on; it is logged at start-up."""
        self.warnings.append(ConfigProblem(self.source, path, f"warning: {message}"))

    def mapping(self, value: Any, path: str, *, allow_none: bool = True) -> dict[str, Any] | None:
        """`value` as a mapping (absent: empty, if allowed); None, with the problem, when it is not one."""
        if value is None and allow_none:
            return {}
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping (key: value), got {kind_of(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.add(f"{path}.{key}" if path else str(key), "keys must be strings")
        return value

    def keys(self, data: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
        """Record every key of `data` that is not `allowed`, with the closest allowed one."""
        allowed = tuple(allowed)
        for key in data:
            if isinstance(key, str) and key not in allowed:
                self.add(join_path(path, key), f"unknown key{did_you_mean(key, allowed)}")


def join_path(path: str, key: str | int) -> str:
    """The path of `key` (a name, or a list index) under `path`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """A hint naming the closest option to a misspelt `word` (or the options, when few), else nothing."""
    options = list(options)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        lowered = {o.lower(): o for o in options}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    if close:
        return f"; did you mean {close[0]!r}?"
    if options and len(options) <= 12:
        return f"; expected one of: {', '.join(options)}"
    return ""


def kind_of(value: Any) -> str:
    """What the file gave, in words ('a list', 'null', ...)."""
    return kind_in_words(value, a_list="a list", a_mapping="a mapping")


def read_key(
    c: Checker,
    data: Mapping[str, Any],
    key: str,
    path: str,
    convert: Callable[[Any], _T],
    default: _T,
) -> _T:
    """`data[key]` converted, or `default` when it is absent or null, or when it is not valid (the
    problem recorded at the key's path)."""
    if key not in data or data[key] is None:
        return default
    try:
        return convert(data[key])
    except ValueError as exc:
        c.add(join_path(path, key), str(exc))
        return default


def as_int(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    """An integer within the bounds (or a string that is one, from the environment)."""

    def convert(value: Any) -> int:
        if isinstance(value, FromEnv):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"must be an integer, got {str(value)!r} from the environment") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {kind_of(value)}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value

    return convert


def as_float(
    minimum: float | None = 0.0, *, exclusive: bool = True, maximum: float | None = None
) -> Callable[[Any], float]:
    """A finite number above `minimum` (at least it, unless `exclusive`) and up to `maximum`."""

    def convert(value: Any) -> float:
        if isinstance(value, FromEnv):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"must be a number, got {str(value)!r} from the environment") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {kind_of(value)}")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        if minimum is not None and ((number <= minimum) if exclusive else (number < minimum)):
            raise ValueError(
                f"must be {'greater than' if exclusive else 'at least'} {show_number(minimum)}, got {value}"
            )
        if maximum is not None and number > maximum:
            raise ValueError(f"must be at most {show_number(maximum)}, got {value}")
        return number

    return convert


def show_number(value: float) -> str:
    """A bound as the user wrote it: 5 rather than 5.0."""
    return str(int(value)) if value == int(value) else str(value)


def as_bool(value: Any) -> bool:
    """true or false (or their usual words, from the environment)."""
    if isinstance(value, FromEnv):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"must be true or false, got {str(value)!r} from the environment")
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {kind_of(value)}")
    return value


def as_str(*, empty: bool = False) -> Callable[[Any], str]:
    """A string, not blank unless `empty`."""

    def convert(value: Any) -> str:
        if isinstance(value, bool):
            raise ValueError(
                "must be a string, got a boolean (YAML reads unquoted yes/no/on/off that way; quote it)"
            )
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {kind_of(value)}")
        if not empty and not value.strip():
            raise ValueError("must not be empty")
        return str(value)

    return convert


def as_choice(
    *options: str, lower: bool = False, aliases: Mapping[str, str] = _EMPTY
) -> Callable[[Any], str]:
    """One of `options` (compared in lower case if `lower`; `aliases` map other spellings)."""

    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be one of {', '.join(options)}; got {kind_of(value)}")
        text = value.lower() if lower else value
        text = aliases.get(text, text)
        if text not in options:
            raise ValueError(
                f"must be one of {', '.join(options)}; got {value!r}{did_you_mean(text, options)}"
            )
        return text

    return convert


_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")


def as_url(value: Any) -> str:
    """An http:// or https:// URL without its trailing slash."""
    if not isinstance(value, str) or not _URL.fullmatch(value.strip()):
        raise ValueError(
            "must be an http:// or https:// URL"
            + ("" if isinstance(value, str) else f", got {kind_of(value)}")
        )
    return value.strip().rstrip("/")


def converter(spec: KeySpec) -> Callable[[Any], Any]:
    """The check of one plain key, from its type and rule."""
    kind, rule = spec.type, spec.rule
    if get_origin(kind) in (Union, UnionType):
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    if kind is bool:
        return as_bool
    if kind is int:
        return as_int(
            None if rule.minimum is None else int(rule.minimum),
            None if rule.maximum is None else int(rule.maximum),
        )
    if kind is float:
        if rule.exclusive_minimum is not None:
            return as_float(rule.exclusive_minimum, exclusive=True, maximum=rule.maximum)
        return as_float(rule.minimum, exclusive=False, maximum=rule.maximum)
    if get_origin(kind) is Literal:
        return as_choice(*get_args(kind), lower=True, aliases=rule.aliases)
    if kind is str:
        return as_url if rule.url else as_str()
    raise TypeError(f"no check for key {spec.name!r} of type {kind!r}")


def section(c: Checker, value: Any, model: type[_S], path: str) -> _S:
    """Read a section whose keys are all plain values or nested sections: every key from its spec."""
    data = c.mapping(value, path)
    if data is None:
        return model()
    specs = key_specs(model)
    c.keys(data, [s.name for s in specs], path)
    values: dict[str, Any] = {}
    for spec in specs:
        if isinstance(spec.type, type) and dataclasses.is_dataclass(spec.type):
            values[spec.name] = section(c, data.get(spec.name), spec.type, join_path(path, spec.name))
        else:
            values[spec.name] = read_key(c, data, spec.name, path, converter(spec), spec.default)
    return model(**values)
