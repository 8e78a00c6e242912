"""Checks one destination instance: id, type, settings, endpoint, limits, gates and subscriptions."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from streamproc.config.checker import (
    Checker,
    as_float,
    as_str,
    as_url,
    converter,
    did_you_mean,
    join_path,
    kind_of,
    read_key,
)
from streamproc.config.collaborators import Collaborators
from streamproc.config.interpolation import plain
from streamproc.config.models import (
    CONSENT_CATEGORY,
    FIELD_PATH,
    ID_PATTERN,
    MAX_SUBSCRIPTIONS,
    BatchConfig,
    DestinationConfig,
    FilterConfig,
    SubscriptionConfig,
    key_spec,
    key_specs,
)
from streamproc.config.sections import check_destination_limits
from streamproc.config.subscription_checks import check_batching, check_subscriptions
from streamproc.destinations.base import Destination
from streamproc.errors import FQLError, PayloadValidationError, SettingsError

__all__ = ["check_destination"]


_ID = re.compile(ID_PATTERN)


def check_destination(
    c: Checker, value: Any, path: str, k: Collaborators, seen_ids: dict[str, str]
) -> DestinationConfig | None:
    """One item of `destinations:` (None when it is not a mapping); `seen_ids` maps each id already
    used to its path, so a repeated id names the first."""
    data = c.mapping(value, path, allow_none=False)
    if data is None:
        return None
    c.keys(data, [s.name for s in key_specs(DestinationConfig)], path)
    dest_id = data.get("id")
    if not isinstance(dest_id, str) or not _ID.fullmatch(dest_id):
        c.add(
            join_path(path, "id"), "is required: a unique id of letters, digits, '.', '_', '-' (at most 64)"
        )
        dest_id = f"<{path}>"
    elif dest_id in seen_ids:
        c.add(
            join_path(path, "id"), f"duplicate destination id {dest_id!r} (first used at {seen_ids[dest_id]})"
        )
    else:
        seen_ids[dest_id] = path
    dest_type = data.get("type")
    destination: Destination | None = None
    if not isinstance(dest_type, str) or not dest_type:
        c.add(join_path(path, "type"), f"is required: one of {', '.join(k.registry.all_types())}")
    else:
        try:
            destination = k.registry.get(dest_type)
        except KeyError:
            c.add(
                join_path(path, "type"),
                f"unknown destination type {dest_type!r}{did_you_mean(dest_type, k.registry.all_types())}",
            )
        except ImportError as exc:
            c.add(join_path(path, "type"), f"destination type {dest_type!r} cannot be loaded: {exc}")

    settings: dict[str, Any] = {}
    settings_path = join_path(path, "settings")
    raw_settings = c.mapping(data.get("settings"), settings_path)
    if destination is not None and raw_settings is not None:
        settings = _check_settings(c, raw_settings, settings_path, destination, k)

    default_endpoint = destination.endpoint if destination is not None else ""
    settings_endpoint = settings.get("endpoint")
    if isinstance(settings_endpoint, str) and settings_endpoint:
        default_endpoint = settings_endpoint.rstrip("/")
    endpoint = read_key(c, data, "endpoint", path, as_url, default_endpoint)
    ordering = read_key(c, data, "ordering", path, converter(key_spec(DestinationConfig, "ordering")), "none")
    limits = check_destination_limits(c, data.get("limits"), join_path(path, "limits"))

    subscriptions: list[SubscriptionConfig] = []
    batch: BatchConfig | None = None
    if destination is not None:
        subscriptions = check_subscriptions(c, data, path, destination, k)
        batch, subscriptions = check_batching(c, data, path, destination, subscriptions)
        if len(subscriptions) > MAX_SUBSCRIPTIONS:
            c.warn(
                join_path(path, "subscriptions"),
                f"{len(subscriptions)} subscriptions (presets included); Segment allows at most "
                f"{MAX_SUBSCRIPTIONS} per destination instance, so this one has no Segment equivalent",
            )
    integrations = read_key(
        c, data, "integrations", path, converter(key_spec(DestinationConfig, "integrations")), "apply"
    )
    names = _strings(c, data.get("integration_names"), join_path(path, "integration_names"), None)
    categories = _strings(
        c,
        data.get("consent_categories"),
        join_path(path, "consent_categories"),
        (
            CONSENT_CATEGORY,
            "is not a consent category id: letters, digits, '_', '-', '.', ':' as your consent tool "
            "sends them in context.consent.categoryPreferences (e.g. C0004 or Advertising)",
        ),
    )
    filters = _filters(c, data.get("filters"), join_path(path, "filters"), k)
    return DestinationConfig(
        id=dest_id,
        type=destination.type if destination is not None else str(dest_type),
        settings=MappingProxyType(settings),
        endpoint=endpoint,
        ordering=ordering,  # type: ignore[arg-type]
        limits=limits,
        subscriptions=tuple(subscriptions),
        batch=batch,
        integrations=integrations,  # type: ignore[arg-type]
        integration_names=names,
        consent_categories=categories,
        filters=filters,
    )


def _check_settings(
    c: Checker, raw: Mapping[str, Any], path: str, destination: Destination, k: Collaborators
) -> dict[str, Any]:
    """The settings as the destination type checks them (empty when they fail, the problem recorded
    at the setting it is about)."""
    # The settings check drops unknown keys, as Segment does; a typo here would go unnoticed.
    c.keys(raw, destination.settings, path)
    # A setting whose variable is missing is already reported; do not report it again as empty.
    unresolved = {p.path for p in c.problems if p.path.startswith(path + ".")}
    try:
        return dict(k.validate_settings(destination, plain(raw)))
    except PayloadValidationError as exc:  # the setting fields, checked as Segment checks them
        key, problem = exc.field, exc.message
    except SettingsError as exc:  # the destination's own check
        key, problem = exc.key, exc.problem
    except ValueError as exc:
        key, problem = None, str(exc)
    where = join_path(path, key) if key else path
    if where not in unresolved:
        c.add(where, problem)
    return {}


def _strings(c: Checker, value: Any, path: str, pattern: tuple[str, str] | None) -> tuple[str, ...]:
    """A list of distinct non-empty strings (each matching `pattern`'s regex, else its message)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        c.add(path, f"must be a list of strings, got {kind_of(value)}")
        return ()
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            c.add(f"{path}[{i}]", f"must be a non-empty string, got {kind_of(item)}")
        elif pattern is not None and not re.fullmatch(pattern[0], item):
            c.add(f"{path}[{i}]", f"{item!r} {pattern[1]}")
        elif item not in out:
            out.append(str(item))
    return tuple(out)


def _filters(c: Checker, value: Any, path: str, k: Collaborators) -> tuple[FilterConfig, ...]:
    """`filters:` a list of `{if: <FQL>, <action>}` with one action of drop, sample, drop_properties
    or allow_properties."""
    if value is None:
        return ()
    if not isinstance(value, list):
        c.add(path, f"must be a list of filters ({{if: <FQL>, drop: true}}, ...), got {kind_of(value)}")
        return ()
    actions = ("drop", "sample", "drop_properties", "allow_properties")
    out: list[FilterConfig] = []
    for i, raw in enumerate(value):
        fpath = f"{path}[{i}]"
        data = c.mapping(raw, fpath, allow_none=False)
        if data is None:
            continue
        c.keys(data, ("if", *actions), fpath)
        before = len(c.problems)
        condition = data.get("if")
        if not isinstance(condition, str) or not condition.strip():
            c.add(join_path(fpath, "if"), "is required: a condition in Segment's filter FQL, or all")
        else:
            try:
                k.parse_filter(condition)
            except FQLError as exc:
                c.add(join_path(fpath, "if"), str(exc))
        given = [a for a in actions if a in data]
        if len(given) != 1:
            c.add(
                fpath,
                f"needs exactly one of {', '.join(actions)}" + (f"; got {', '.join(given)}" if given else ""),
            )
            continue
        kind = given[0]
        apath = join_path(fpath, kind)
        action = data[kind]
        config = FilterConfig(condition=condition if isinstance(condition, str) else "", kind=kind)  # type: ignore[arg-type]
        if kind == "drop":
            if action is not True:
                c.add(apath, "must be true (remove the filter to keep the events)")
        elif kind == "sample":
            sample = c.mapping(action, apath, allow_none=False)
            if sample is not None:
                c.keys(sample, ("percent", "path"), apath)
                if "percent" not in sample:
                    c.add(apath, "needs percent: the share kept, a fraction 0..1 (0.1 keeps 10 %)")
                percent = read_key(
                    c, sample, "percent", apath, as_float(0.0, exclusive=False, maximum=1.0), 1.0
                )
                sample_path = read_key(c, sample, "path", apath, as_str(), None)
                if sample_path is not None and not re.fullmatch(FIELD_PATH, sample_path):
                    c.add(
                        join_path(apath, "path"),
                        f"{sample_path!r} is not a field path such as userId or properties.plan",
                    )
                config = dataclasses.replace(config, percent=percent, path=sample_path)
        else:
            fields = _strings(
                c, action, apath, (FIELD_PATH, "is not a field path such as properties.email or userId")
            )
            if not fields and isinstance(action, list) and len(c.problems) == before:
                c.add(apath, "must name at least one field path")
            config = dataclasses.replace(config, properties=fields)
        if len(c.problems) == before:
            out.append(config)
    return tuple(out)
