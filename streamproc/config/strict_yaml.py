"""Reads configuration YAML strictly: a key given twice, and aliases that expand past a bound, are refused.

PyYAML keeps the last of two equal keys without a word (two `kafka:` blocks: the first is lost) and
shares an aliased node instead of copying it, so an "alias bomb" of a few lines loads at once and
only explodes when the configuration is walked. Both are checked on the composed node graph, before
anything is built: each node is visited once, so the check is linear in the size of the text.
"""

from __future__ import annotations

from typing import Any

import yaml

from streamproc.errors import ConfigError, ConfigProblem

__all__ = ["MAX_ALIAS_EXPANSION", "load_yaml"]

MAX_ALIAS_EXPANSION = 10_000
"""Values that aliases may add to the configuration as it is read (a `*name` repeats every value
under its anchor). Sharing a block of limits or a mapping between a few subscriptions stays far
below; an alias bomb reaches billions."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_yaml(text: str, source: str) -> Any:
    """The data of one YAML document; raises ConfigError for duplicate keys (with both lines), alias
    expansion past MAX_ALIAS_EXPANSION, or YAML that does not parse (with line and column)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems = _check(loader, node, source)
        if problems:
            raise ConfigError(problems)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(ConfigProblem(source, where, f"not valid YAML: {reason}")) from None
    except RecursionError:
        raise ConfigError(ConfigProblem(source, "", "not valid YAML: nested too deeply")) from None
    finally:
        loader.dispose()


def _check(loader: yaml.SafeLoader, root: yaml.Node, source: str) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    sizes: dict[int, int] = {}  # node id -> values under it with aliases expanded
    open_nodes: set[int] = set()

    def size(node: yaml.Node, path: str) -> int:
        """Values in `node` once aliases are expanded; reports duplicate keys on the first visit."""
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_nodes:
            raise _Refused(path, f"an alias refers to a node that contains it (line {_line(node)})")
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    total += size(value_node, path)
                    continue
                key = _key(loader, key_node)
                child = f"{path}.{key}" if path else str(key)
                if key is not _UNHASHABLE and key in seen:
                    problems.append(
                        ConfigProblem(
                            source,
                            child,
                            f"duplicate key (lines {_line(seen[key])} and {_line(key_node)}); YAML keeps"
                            " only the last, so remove or merge one",
                        )
                    )
                elif key is not _UNHASHABLE:
                    seen[key] = key_node
                total += size(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                total += size(item, f"{path}[{i}]")
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    try:
        expanded = size(root, "")
    except _Refused as refused:
        return [ConfigProblem(source, refused.path, refused.message)]
    added = expanded - len(sizes)
    if added > MAX_ALIAS_EXPANSION:
        return [
            ConfigProblem(
                source,
                "",
                f"YAML aliases expand to {expanded} values, {added} more than written (at most"
                f" {MAX_ALIAS_EXPANSION} are allowed); write the repeated parts out or use fewer aliases",
            )
        ]
    return problems


class _Refused(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


_UNHASHABLE = object()


def _key(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A scalar key as YAML reads it (`1` and `"1"` differ, `yes` and `true` do not); other keys
    (a mapping or a list as a key) are not compared."""
    if isinstance(node, yaml.ScalarNode):
        # Built now and kept by the loader, so the document reuses it.
        return loader.construct_object(node)
    return _UNHASHABLE


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1
