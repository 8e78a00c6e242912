"""Structured logging for every streamproc command: JSON lines or console, PII and secrets scrubbed.

`configure_logging(log_config)` sets up structlog and routes the standard library's loggers
(aiohttp, confluent-kafka callbacks) through the same processors, so nothing reaches the output
unscrubbed. Context such as topic/partition/offset/destination is bound with
`structlog.contextvars.bound_contextvars(...)` or a bound logger and appears on every line.

Scrubbing is streamproc.masking's, the same as every tool's output: values under secret-like keys
(token, secret, password, authorization, apiKey, accessToken, ...), every value registered with
`register_secrets`, bearer tokens, JWTs, `token=...` query parameters and URL passwords become
`<secret:hash>`; emails, phone numbers and IP addresses anywhere in a value, and every value under an
email/phone/IP key, become `<email:hash>` etc., so equal values can still be correlated across lines
without being readable.

Repeated identical warnings and errors are rate-limited: the first few per minute per
(level, message, error type) pass, the rest are counted and reported as one summary line.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Protocol, TextIO

import orjson
import structlog

from streamproc.masking import Masker, config_secrets

__all__ = [
    "RepeatLimiter",
    "Scrubber",
    "config_secrets",
    "configure_logging",
    "flush_suppressed",
    "get_logger",
    "librdkafka_logger",
    "register_secrets",
]

_MAX_DEPTH = 8


class LogSettings(Protocol):
    """What logging reads from `Config.log`."""

    @property
    def format(self) -> str: ...

    @property
    def level(self) -> str: ...


class Scrubber(Masker):
    """A structlog processor that masks secrets and raw PII in every value of a log event."""

    def __init__(self, hash_key: bytes | None = None) -> None:
        super().__init__(hash_key=hash_key)

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self.value(event_dict[key], key=key, max_depth=_MAX_DEPTH)
        return event_dict


class RepeatLimiter:
    """A structlog processor letting through the first `burst` identical warnings/errors per window.

    Identical means same level, same message and same `error_type` / exception class. Dropped lines
    are counted; the count is reported by `flush()` (one summary line per key) and on the first line
    of the key's next window (`suppressed_before`).
    """

    _LEVELS = frozenset({"warning", "warn", "error", "exception", "critical", "fatal"})

    def __init__(
        self, burst: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        self._state: dict[tuple[str, str, str], list[float]] = {}  # key -> [window start, seen, dropped]
        self._lock = threading.Lock()

    @staticmethod
    def _key(method: str, event_dict: MutableMapping[str, Any]) -> tuple[str, str, str]:
        err = event_dict.get("error_type")
        if err is None:
            exc = event_dict.get("exc_info")
            if isinstance(exc, BaseException):
                err = type(exc).__name__
            elif isinstance(exc, tuple) and exc and exc[0] is not None:
                err = exc[0].__name__
        return (method, str(event_dict.get("event", "")), str(err or ""))

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if method not in self._LEVELS:
            return event_dict
        key = self._key(method, event_dict)
        now = self._clock()
        with self._lock:
            st = self._state.get(key)
            if st is None or now - st[0] >= self.window:
                dropped = int(st[2]) if st is not None else 0
                self._state[key] = [now, 1, 0]
                if dropped:
                    event_dict["suppressed_before"] = dropped
                return event_dict
            st[1] += 1
            if st[1] <= self.burst:
                return event_dict
            st[2] += 1
        raise structlog.DropEvent

    def flush(self, *, force: bool = False) -> list[tuple[str, str, str, int]]:
        """Take the drop counts of windows that have ended (all of them when forced)."""
        now = self._clock()
        out: list[tuple[str, str, str, int]] = []
        with self._lock:
            for key, st in list(self._state.items()):
                if force or now - st[0] >= self.window:
                    if st[2]:
                        out.append((*key, int(st[2])))
                    del self._state[key]
        return out


_scrubber = Scrubber()
_limiter = RepeatLimiter()


def register_secrets(values: Iterable[str]) -> None:
    """Redact these exact values (destination credentials, SASL passwords) from every log line."""
    _scrubber.add_secrets(values)


def flush_suppressed(*, force: bool = False) -> int:
    """Log one summary line per rate-limited message whose window has ended; returns how many."""
    summaries = _limiter.flush(force=force)
    log = structlog.get_logger("streamproc.logging")
    for method, message, error_type, dropped in summaries:
        # Logged at info so the summary itself is never rate-limited.
        log.info(
            "repeated log lines suppressed",
            level_of_suppressed=method,
            message=message,
            error_type=error_type or None,
            suppressed=dropped,
        )
    return len(summaries)


def get_logger(name: str | None = None, **context: Any) -> Any:
    """A structlog logger, optionally bound to context (topic, partition, destination ...)."""
    return structlog.get_logger(name, **context)


class _LibrdkafkaLog:
    """What librdkafka logs (configuration warnings, broker connection errors) as structlog events
    `librdkafka` with its facility, the client's name and the message: JSON and scrubbed like every
    other line. confluent-kafka calls `log(level, "%s [%s] %s", facility, client, message)` on the
    object given as `logger` in a client's configuration."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("streamproc.librdkafka")

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if len(args) == 3:
            facility, client, message = (str(a) for a in args)
        else:
            facility, client, message = "", "", fmt % args if args else fmt
        self._log.log(level, "librdkafka", facility=facility, client=client, message=message)


_librdkafka_log = _LibrdkafkaLog()


def librdkafka_logger() -> Any:
    """The `logger` every librdkafka client of streamproc is configured with."""
    return _librdkafka_log


def _json_renderer(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> str:
    return orjson.dumps(event_dict, default=str).decode()


def configure_logging(
    log_config: LogSettings,
    *,
    stream: TextIO | None = None,
    limiter: RepeatLimiter | None = None,
    scrubber: Scrubber | None = None,
) -> None:
    """Set up structlog and the standard library's logging for one process (call once, at start).

    `format` "auto" means console when stderr is a terminal, JSON lines otherwise.
    """
    global _scrubber, _limiter
    out = stream if stream is not None else sys.stderr
    fmt = log_config.format
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    level = logging.getLevelNamesMapping().get(log_config.level.upper(), logging.INFO)
    if scrubber is not None:
        _scrubber = scrubber
    if limiter is not None:
        _limiter = limiter

    renderer: Any
    renderer = structlog.dev.ConsoleRenderer(colors=out.isatty()) if fmt == "console" else _json_renderer

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Any] = [
        _limiter,
        structlog.processors.format_exc_info,
        _scrubber,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.add_logger_name, *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )

    # The standard library's loggers (aiohttp access logs carry client IPs) get the same treatment.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
            processors=[*tail, structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_streamproc", False):
            root.removeHandler(h)
    handler._streamproc = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log duplicates what /metrics shows; keep it out unless debugging.
    logging.getLogger("aiohttp.access").setLevel(max(level, logging.WARNING))


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that remembers its name so add_logger_name can show it."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        name = args[0] if args and isinstance(args[0], str) else "streamproc"
        return _NamedPrintLogger(self._file, name)
