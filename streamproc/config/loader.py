"""Reads a config file (YAML or JSON), expands `${VAR}`, checks every section into a frozen `Config`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamproc.config.checker import Checker, join_path, kind_of, section
from streamproc.config.collaborators import Collaborators
from streamproc.config.destination_checks import check_destination
from streamproc.config.interpolation import interpolate
from streamproc.config.models import (
    Config,
    DestinationConfig,
    HttpConfig,
    LogConfig,
    MetricsConfig,
    key_specs,
)
from streamproc.config.sections import check_input, check_kafka, check_limits
from streamproc.config.strict_json import load_json
from streamproc.config.strict_yaml import load_yaml
from streamproc.errors import ConfigError, ConfigProblem

__all__ = ["load_config", "parse_config"]


def _interpolate_tree(c: Checker, value: Any, path: str, env: Mapping[str, str]) -> Any:
    """Expand every string of the tree, recording each key's position for the order of problems."""
    c.order.setdefault(path, len(c.order))
    if isinstance(value, str):
        text, problems = interpolate(value, env)
        for problem in problems:
            c.add(path, problem)
        return text
    if isinstance(value, dict):
        return {key: _interpolate_tree(c, val, join_path(path, str(key)), env) for key, val in value.items()}
    if isinstance(value, list):
        return [_interpolate_tree(c, val, f"{path}[{i}]", env) for i, val in enumerate(value)]
    return value


def parse_config(data: Any, source: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """Check already-parsed configuration data; raises ConfigError listing every problem."""
    if env is None:
        env = os.environ
    c = Checker(source)
    if data is None:
        raise ConfigError(ConfigProblem(source, "", "the configuration is empty"))
    root = c.mapping(data, "", allow_none=False)
    if root is None:
        raise ConfigError(c.problems)
    root = _interpolate_tree(c, root, "", env)
    c.keys(root, [s.name for s in key_specs(Config)], "")

    kafka = check_kafka(c, root["kafka"]) if root.get("kafka") is not None else None
    input_config = check_input(c, root.get("input"))
    limits = check_limits(c, root.get("limits"))
    metrics = section(c, root.get("metrics"), MetricsConfig, "metrics")
    log = section(c, root.get("log"), LogConfig, "log")
    http = section(c, root.get("http"), HttpConfig, "http")

    destinations: list[DestinationConfig] = []
    raw_destinations = root.get("destinations")
    if raw_destinations is None:
        raw_destinations = []
    if not isinstance(raw_destinations, list):
        c.add("destinations", f"must be a list, got {kind_of(raw_destinations)}")
        raw_destinations = []
    if raw_destinations:
        collaborators = Collaborators()
        seen: dict[str, str] = {}
        for i, raw in enumerate(raw_destinations):
            dest = check_destination(c, raw, f"destinations[{i}]", collaborators, seen)
            if dest is not None:
                destinations.append(dest)
    if c.problems:
        raise ConfigError(c.sorted_problems())
    return Config(
        source=source,
        kafka=kafka,
        input=input_config,
        limits=limits,
        metrics=metrics,
        log=log,
        destinations=tuple(destinations),
        http=http,
        warnings=tuple(c.warnings),
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read a YAML (or JSON) configuration file and check it; raises ConfigError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(ConfigProblem(source, "", f"cannot read the file: {exc.strerror or exc}")) from None
    data = load_json(text, source) if source.endswith(".json") else load_yaml(text, source)
    return parse_config(data, source, os.environ if env is None else env)
