"""Loads and checks the configuration file (YAML or JSON, `${VAR}` from the environment) into frozen data.

models               the frozen dataclasses and the `Key` rule of each key of the file
loader               reads the file, expands `${VAR}` and checks every section
strict_yaml          YAML with repeated keys and alias bombs refused
strict_json          JSON with repeated keys refused
interpolation        `${VAR}`, `${VAR:-default}`, `${VAR-default}`
checker              problem collection by key path and the checks of plain values
sections             kafka, input, limits and a destination's limits
destination_checks   one destination instance: settings, endpoint, gates, filters
subscription_checks  presets, triggers, actions, mappings and batching
collaborators        FQL, the mapping kit and the settings check, for the two above
schema               the JSON Schema generated from the models (python -m streamproc.config.schema)
"""

from __future__ import annotations

from streamproc.config.interpolation import interpolate
from streamproc.config.loader import load_config, parse_config
from streamproc.config.models import (
    BatchConfig,
    BreakerPolicy,
    Config,
    DestinationConfig,
    DestinationLimits,
    FilterConfig,
    HttpConfig,
    InputConfig,
    KafkaConfig,
    Key,
    KeySpec,
    Limits,
    LogConfig,
    MetricsConfig,
    RetryPolicy,
    SubscriptionConfig,
    key_specs,
)

__all__ = [
    "BatchConfig",
    "BreakerPolicy",
    "Config",
    "DestinationConfig",
    "DestinationLimits",
    "FilterConfig",
    "HttpConfig",
    "InputConfig",
    "KafkaConfig",
    "Key",
    "KeySpec",
    "Limits",
    "LogConfig",
    "MetricsConfig",
    "RetryPolicy",
    "SubscriptionConfig",
    "interpolate",
    "key_specs",
    "load_config",
    "parse_config",
]
