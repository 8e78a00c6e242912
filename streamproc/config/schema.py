"""Generates the JSON Schema of the configuration file from the config model (keys, types, bounds, defaults).

    python -m streamproc.config.schema            # print it
    python -m streamproc.config.schema --write    # update schemas/ and the packaged copy
    python -m streamproc.config.schema --check    # exit 1 when a committed copy is out of date

A key added to a model in streamproc.config.models (with its `Key` rule) is in the schema once this
runs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from streamproc.config.models import BatchConfig, Config, KeySpec, key_specs

__all__ = ["SCHEMA_FILES", "config_schema", "packaged_schema", "render"]

_PACKAGE = Path(__file__).resolve().parents[1]
_REPO = _PACKAGE.parent
SCHEMA_FILES = (
    _REPO / "schemas" / "config.schema.json",
    _PACKAGE / "schemas" / "config.schema.json",
)
"""The committed copies: the one documented for editors and CI, and the one shipped in the package."""

_ENV_STRING = {"$ref": "#/$defs/envString"}
_URL_PATTERN = r"^(https?://|\$\{)"


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the configuration file."""
    defs: dict[str, Any] = {
        "envString": {"type": "string", "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?-[^}]*)?\}$"},
    }
    root: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://streamproc.dev/schemas/config.schema.json",
        "title": "streamproc configuration",
        "description": (
            "One YAML or JSON file: Kafka input, limits, metrics, logging and the destinations with"
            " their subscriptions. Strings may contain ${VAR}, ${VAR:-default} or ${VAR-default}; a"
            " number or boolean may be given as a string that is wholly one ${VAR}. Generated from"
            " streamproc.config; see docs/configuration.md."
        ),
        **_object(Config, defs),
        "$defs": defs,
    }
    defs["batch"] = {
        "description": (
            "opt-in batching of single-event requests (TikTok only): true (the defaults), false, or"
            " limits; a batch goes out at whichever limit comes first"
        ),
        "anyOf": [{"type": "boolean"}, _ENV_STRING, _object(BatchConfig, defs)],
    }
    # Rules across keys, which the loader checks beyond each key's own type.
    defs["destination"]["allOf"] = _settings_rules()
    defs["subscription"]["anyOf"] = [{"required": ["preset"]}, {"required": ["name", "trigger", "action"]}]
    return root


def render(schema: Mapping[str, Any] | None = None) -> str:
    """The schema as committed: indented JSON, keys in model order, one trailing newline."""
    return json.dumps(config_schema() if schema is None else schema, indent=2, ensure_ascii=False) + "\n"


def packaged_schema() -> dict[str, Any]:
    """The schema shipped in the package (for `streamproc check` users and editors of installed copies)."""
    text = resources.files("streamproc").joinpath("schemas/config.schema.json").read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def _object(model: type, defs: dict[str, Any]) -> dict[str, Any]:
    specs = key_specs(model)
    out: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {spec.name: _key(spec, defs) for spec in specs},
    }
    required = [spec.name for spec in specs if spec.rule.required]
    if required:
        out["required"] = required
    return out


def _key(spec: KeySpec, defs: dict[str, Any]) -> dict[str, Any]:
    rule, kind = spec.rule, spec.type
    nullable = False
    if get_origin(kind) in (Union, UnionType):
        args = [arg for arg in get_args(kind) if arg is not type(None)]
        nullable, kind = len(args) < len(get_args(kind)), args[0]
    out: dict[str, Any] = {}
    if rule.description or rule.default_text:
        text = rule.description
        if rule.default_text:
            text = f"{text}; default: {rule.default_text}" if text else f"default: {rule.default_text}"
        out["description"] = text
    if rule.schema is not None:
        given = rule.schema() if callable(rule.schema) else rule.schema
        return {**out, **copy.deepcopy(dict(given))}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return {**out, **_object(kind, defs)}
    if get_origin(kind) is tuple:
        item = get_args(kind)[0]
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            name = item.__name__.removesuffix("Config").lower()
            if name not in defs:
                defs[name] = {}  # reserved first: the order of $defs follows the file
                defs[name] = _object(item, defs)
            return {**out, "type": "array", "items": {"$ref": f"#/$defs/{name}"}}
        return {**out, "type": "array", "items": {"type": "string"}}
    if get_origin(kind) is Literal:
        return {**out, "enum": [*get_args(kind), *rule.aliases], **_default(spec)}
    if kind is Any or get_origin(kind) in (Mapping, dict) or kind in (Mapping, dict):
        return {**out, "type": "object"}
    if kind is str:
        string: dict[str, Any] = {"type": "string"}
        string.update({"pattern": _URL_PATTERN} if rule.url else {"minLength": 1})
        return {**out, **_or_null(string, nullable), **_default(spec)}
    if kind in (bool, int, float):
        value: dict[str, Any] = {"type": {bool: "boolean", int: "integer", float: "number"}[kind]}
        for bound in ("minimum", "exclusive_minimum", "maximum"):
            limit = getattr(rule, bound)
            if limit is not None:
                value[_camel(bound)] = int(limit) if kind is int or limit == int(limit) else limit
        options = [value, *([{"type": "null"}] if nullable else []), _ENV_STRING]
        return {**out, "anyOf": options, **_default(spec)}
    raise TypeError(f"no JSON Schema for key {spec.name!r} of type {kind!r}")


def _or_null(schema: dict[str, Any], nullable: bool) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]} if nullable else schema


def _default(spec: KeySpec) -> dict[str, Any]:
    if spec.default is dataclasses.MISSING or spec.default is None or spec.rule.default_text:
        return {}
    return {"default": spec.default}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_SETTING_TYPES = {"number": "number", "integer": "integer", "boolean": "boolean", "object": "object"}


def _settings_rules() -> list[dict[str, Any]]:
    """Per destination type: its settings keys (no others) and the ones it requires."""
    from streamproc.destinations import registry

    rules = []
    for dest_type in registry.all_types():
        destination = registry.get(dest_type)
        properties: dict[str, Any] = {}
        required = [name for name, f in destination.settings.items() if f.required is True]
        either: list[list[str]] = []
        for name, f in destination.settings.items():
            kind = _SETTING_TYPES.get(f.type, "string")
            prop: dict[str, Any] = {"type": kind}
            if kind in ("number", "integer", "boolean"):
                prop = {"anyOf": [prop, _ENV_STRING]}
            properties[name] = {"description": f.description or f.label, **prop}
            alias_of = f.extra.get("aliasOf")
            if alias_of:
                # Either spelling gives the setting; the loader requires one.
                either.append([alias_of, name])
        settings: dict[str, Any] = {"properties": properties, "additionalProperties": False}
        if required:
            settings["required"] = required
        if either:
            settings["anyOf" if len(either) == 1 else "allOf"] = (
                [{"required": [key]} for key in either[0]]
                if len(either) == 1
                else [{"anyOf": [{"required": [key]} for key in pair]} for pair in either]
            )
        then: dict[str, Any] = {"properties": {"settings": settings}}
        if required or either:
            then = {"required": ["settings"], **then}
        rules.append(
            {"if": {"properties": {"type": {"const": dest_type}}, "required": ["type"]}, "then": then}
        )
    return rules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamproc.config.schema", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write the committed copies")
    group.add_argument("--check", action="store_true", help="exit 1 when a committed copy differs")
    args = parser.parse_args(argv)
    text = render()
    if not (args.write or args.check):
        sys.stdout.write(text)
        return 0
    stale = [path for path in SCHEMA_FILES if not path.is_file() or path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path}: out of date; run python -m streamproc.config.schema --write", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
