"""Checks a destination's subscriptions: presets, triggers, actions, mappings and batching."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from streamproc.config.checker import (
    Checker,
    as_bool,
    as_float,
    as_int,
    as_str,
    did_you_mean,
    join_path,
    kind_of,
    read_key,
)
from streamproc.config.collaborators import Collaborators
from streamproc.config.interpolation import FromEnv, plain
from streamproc.config.models import BatchConfig, SubscriptionConfig, key_specs
from streamproc.core.fields import Field
from streamproc.destinations.base import Action, Destination
from streamproc.errors import FQLError, MappingError

__all__ = ["check_batching", "check_subscriptions"]


def check_subscriptions(
    c: Checker, data: Mapping[str, Any], path: str, destination: Destination, k: Collaborators
) -> list[SubscriptionConfig]:
    """The destination's subscriptions: its enabled presets (`presets:`), then the ones written out
    (one naming a preset takes that preset's place); names are unique."""
    preset_names = [p.name for p in destination.presets]
    presets_value = data.get("presets", destination.presets_enabled_by_default)
    enabled_presets: list[str] = []
    if isinstance(presets_value, FromEnv):
        try:
            presets_value = as_bool(presets_value)
        except ValueError as exc:
            c.add(join_path(path, "presets"), str(exc))
            presets_value = False
    if presets_value is True:
        enabled_presets = list(preset_names)
    elif presets_value in (False, None):
        enabled_presets = []
    elif isinstance(presets_value, list):
        for i, name in enumerate(presets_value):
            if isinstance(name, str) and name in preset_names:
                enabled_presets.append(name)
            else:
                c.add(
                    f"{join_path(path, 'presets')}[{i}]",
                    f"unknown preset {name!r} of {destination.type}{did_you_mean(str(name), preset_names)}",
                )
    else:
        c.add(join_path(path, "presets"), "must be true, false or a list of preset names")

    explicit: list[tuple[str, SubscriptionConfig]] = []
    raw_subs = data.get("subscriptions")
    if raw_subs is not None and not isinstance(raw_subs, list):
        c.add(join_path(path, "subscriptions"), f"must be a list, got {kind_of(raw_subs)}")
        raw_subs = []
    for i, raw in enumerate(raw_subs or []):
        sub_path = f"{join_path(path, 'subscriptions')}[{i}]"
        sub = _subscription(c, raw, sub_path, destination, k)
        if sub is not None:
            explicit.append((sub_path, sub))

    # A subscription naming a preset replaces that preset's automatic subscription in place.
    used: set[int] = set()
    result: list[tuple[str, SubscriptionConfig]] = []
    for name in enabled_presets:
        override = next(((p, s) for p, s in explicit if s.preset == name), None)
        if override is not None:
            result.append(override)
            used.add(id(override[1]))
            continue
        preset = destination.preset(name)
        assert preset is not None
        preset_path = f"{join_path(path, 'presets')}({name})"
        _check_trigger(c, preset.subscribe, preset_path, k)
        _check_mapping(c, preset.mapping, preset_path, k, destination.actions[preset.action])
        sub = SubscriptionConfig(
            name=preset.name,
            trigger=preset.subscribe,
            action=preset.action,
            mapping=MappingProxyType(dict(preset.mapping)),
            preset=preset.name,
        )
        result.append((preset_path, sub))
    result.extend((p, s) for p, s in explicit if id(s) not in used)

    names: dict[str, str] = {}
    for sub_path, sub in result:
        if sub.name in names:
            c.add(
                join_path(sub_path, "name"),
                f"duplicate subscription name {sub.name!r} in this destination (also {names[sub.name]});"
                " names identify deliveries and dead letters",
            )
        else:
            names[sub.name] = sub_path
    return [s for _, s in result]


def _batch(
    c: Checker, value: Any, path: str, base: BatchConfig | None, max_events: int
) -> BatchConfig | None:
    """`batch: true | false | {max_events, max_bytes, max_wait_ms}`; None when off or not valid (the
    problem recorded). Keys not given come from `base` (the destination's batch), else the defaults."""
    if isinstance(value, FromEnv):
        try:
            value = as_bool(value)
        except ValueError as exc:
            c.add(path, str(exc))
            return None
    if value is False or value is None:
        return None
    d = base or BatchConfig()
    if value is True:
        return d
    if not isinstance(value, dict):
        keys = "max_events, max_bytes, max_wait_ms"
        c.add(path, f"must be true, false or a mapping of {keys}; got {kind_of(value)}")
        return None
    data = value
    c.keys(data, BatchConfig.__dataclass_fields__, path)
    before = len(c.problems)
    config = BatchConfig(
        max_events=read_key(c, data, "max_events", path, as_int(1, max_events), d.max_events),
        max_bytes=read_key(c, data, "max_bytes", path, as_int(1024, 100_000_000), d.max_bytes),
        max_wait_ms=read_key(c, data, "max_wait_ms", path, as_float(0.0, maximum=60_000), d.max_wait_ms),
    )
    return None if len(c.problems) > before else config


def check_batching(
    c: Checker,
    data: Mapping[str, Any],
    path: str,
    destination: Destination,
    subscriptions: list[SubscriptionConfig],
) -> tuple[BatchConfig | None, list[SubscriptionConfig]]:
    """The destination's `batch` and each subscription's, checked against what its action can batch."""
    limits = {key: a.batching.max_events for key, a in destination.actions.items() if a.batching is not None}
    cap = max(limits.values(), default=0)
    dest_path = join_path(path, "batch")
    dest_batch: BatchConfig | None = None
    if data.get("batch") not in (None, False):
        if not limits:
            c.add(dest_path, f"{destination.type} sends one event per request; it has no batch endpoint")
        else:
            dest_batch = _batch(c, data.get("batch"), dest_path, None, cap)
    # The subscriptions the user wrote, by the name they end up with, for their own `batch` key.
    own: dict[str, tuple[str, Any]] = {}
    raw_subs = data.get("subscriptions")
    for i, raw in enumerate(raw_subs if isinstance(raw_subs, list) else []):
        if isinstance(raw, dict) and "batch" in raw:
            name = raw.get("name") or raw.get("preset")
            if isinstance(name, str):
                own[name] = (f"{join_path(path, 'subscriptions')}[{i}].batch", raw["batch"])
    result = []
    for sub in subscriptions:
        sub_cap = limits.get(sub.action)
        batch: BatchConfig | None = dest_batch if sub_cap is not None else None
        if sub.name in own:
            sub_path, value = own[sub.name]
            if sub_cap is None:
                if value not in (None, False):
                    c.add(sub_path, f"action {sub.action!r} of {destination.type} cannot batch")
                batch = None
            else:
                batch = _batch(c, value, sub_path, dest_batch, sub_cap)
        result.append(dataclasses.replace(sub, batch=batch) if batch is not None else sub)
    return dest_batch, result


def _check_trigger(c: Checker, trigger: str, path: str, k: Collaborators) -> None:
    """The trigger parses as FQL streamproc runs."""
    try:
        k.parse_trigger(trigger)
    except FQLError as exc:
        c.add(path, str(exc))


def _check_mapping(
    c: Checker, mapping: Mapping[str, Any], path: str, k: Collaborators, action: Action | None
) -> None:
    """The mapping compiles, names only the action's fields, and has no directive that fails
    whenever it runs (a disabled liquid tag or filter, a template that does not parse, ...)."""
    try:
        k.compile_mapping(mapping)
    except MappingError as exc:
        c.add(path, str(exc))
        return
    if action is not None:
        _check_field_names(c, mapping, path, action.key, action.fields)
    for where, message in k.mapping_problems(mapping):
        c.add(join_path(path, where) if where else path, message)


def _check_field_names(c: Checker, mapping: Any, path: str, action: str, fields: Mapping[str, Field]) -> None:
    """A key that is not a field is dropped from the payload without a word, so a misspelt field is
    simply missing; objects with their own fields (and the items of @arrayPath) are checked too."""
    from streamproc.core.mapping import ROOT_DIRECTIVE_KEY

    if not isinstance(mapping, dict) or any(key.startswith("@") for key in mapping):
        return
    for key, value in mapping.items():
        field = fields.get(key)
        if field is None:
            if key != ROOT_DIRECTIVE_KEY:
                c.add(join_path(path, key), f"not a field of action {action!r}{did_you_mean(key, fields)}")
            continue
        if field.properties is None or field.additional_properties:
            continue
        if isinstance(value, dict) and "@arrayPath" in value:
            option = value["@arrayPath"]
            if isinstance(option, list) and len(option) > 1:
                where = join_path(path, key) + ".@arrayPath[1]"
                _check_field_names(c, option[1], where, action, field.properties)
        else:
            _check_field_names(c, value, join_path(path, key), action, field.properties)


def _subscription(
    c: Checker, value: Any, path: str, destination: Destination, k: Collaborators
) -> SubscriptionConfig | None:
    """One written subscription, from a preset or from its own trigger, action and mapping (None
    when it cannot be used; the problems recorded)."""
    data = c.mapping(value, path, allow_none=False)
    if data is None:
        return None
    c.keys(data, [s.name for s in key_specs(SubscriptionConfig)], path)
    use_defaults = read_key(c, data, "defaults", path, as_bool, True)
    enabled = read_key(c, data, "enabled", path, as_bool, True)
    name = read_key(c, data, "name", path, as_str(), None)
    trigger = read_key(c, data, "trigger", path, as_str(), None)
    action = read_key(c, data, "action", path, as_str(), None)
    user_mapping = plain(c.mapping(data.get("mapping"), join_path(path, "mapping")))
    ok = user_mapping is not None

    preset_name = read_key(c, data, "preset", path, as_str(), None)
    base_mapping: Mapping[str, Any] = {}
    if preset_name is not None:
        preset = destination.preset(preset_name)
        if preset is None:
            names = [p.name for p in destination.presets]
            c.add(
                join_path(path, "preset"),
                f"unknown preset {preset_name!r} of {destination.type}{did_you_mean(preset_name, names)}",
            )
            return None
        if action is not None and action != preset.action:
            c.add(
                join_path(path, "action"),
                f"preset {preset.name!r} uses action {preset.action!r}, not {action!r}",
            )
            ok = False
        action, name = preset.action, name or preset.name
        trigger = trigger or preset.subscribe
        base_mapping = preset.mapping
    else:
        if name is None and data.get("name") is None:
            c.add(join_path(path, "name"), "is required (or name a preset with `preset:`)")
            ok = False
        if trigger is None and data.get("trigger") is None:
            c.add(join_path(path, "trigger"), 'is required: an FQL trigger such as event = "Order Completed"')
            ok = False
        if action is None and data.get("action") is None:
            c.add(join_path(path, "action"), f"is required: one of {', '.join(destination.actions)}")
            ok = False
        elif action is not None and action not in destination.actions:
            c.add(
                join_path(path, "action"),
                f"unknown action {action!r} of {destination.type}{did_you_mean(action, destination.actions)}",
            )
            ok = False
        elif action is not None:
            base_mapping = destination.default_mapping(action)

    if trigger is not None:
        _check_trigger(c, trigger, join_path(path, "trigger"), k)
    final_mapping: dict[str, Any] = {}
    if user_mapping is not None:
        final_mapping = {**base_mapping, **user_mapping} if use_defaults else dict(user_mapping)
        known = destination.actions.get(action) if action is not None else None
        _check_mapping(c, final_mapping, join_path(path, "mapping"), k, known)
    if not ok or name is None or trigger is None or action is None or action not in destination.actions:
        return None
    return SubscriptionConfig(
        name=name,
        trigger=trigger,
        action=action,
        mapping=MappingProxyType(final_mapping),
        enabled=enabled,
        preset=preset_name,
    )
