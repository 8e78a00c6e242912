"""The exceptions streamproc raises, and the error types its dead letters carry.

    StreamprocError
    ├── ConfigError                 bad configuration; start-up stops (file, key path, problem)
    ├── SettingsError               a destination's own check refuses a setting (key + problem)
    ├── FQLError                    a trigger that cannot be parsed (position + suggested fix)
    ├── MappingError                a mapping that is not valid (path-prefixed message)
    ├── DecodeError                 an input message that is not a Segment event (poison → dead letter)
    ├── DeliveryError               one delivery failed while it was built
    │   ├── PayloadValidationError  the mapped payload fails the action's fields (400, permanent)
    │   ├── MappingFailed           the subscription's mapping failed for this event (permanent)
    │   └── BuildFailed             the action failed unexpectedly while building (permanent)
    └── KafkaError                  the broker or the dead-letter producer failed (what to do, in words)

A `DeliveryError` is an *outcome* of one delivery: it is dead-lettered, never raised out of the
worker. Everything else stops the command that met it, with a message that says what to fix.

What the partner answered is not an exception but a verdict; a delivery that ends without being
sent is dead-lettered with one of the `ErrorType` values (the `streamproc.error.type` header,
what `dlq redrive --error-type` filters on):

    DecodeError              the message is not a Segment event                  permanent
    RoutingError             routing the event failed unexpectedly              permanent
    MappingFailed            the subscription's mapping failed for this event   permanent
    PayloadValidationError   the payload fails the action's fields              permanent
    BuildFailed              the action failed unexpectedly while building      permanent
    DeliveryError            any other failure building or sending a request    permanent
    PermanentError           the partner refused it (4xx but 408/423/429, 501)  permanent
    RetryableError           retries or their budget ran out (network, 5xx, …)  retryable
    CircuitOpenError         the destination's circuit stayed open to the end   retryable
    ParkedBehind             parked behind its key's earlier parked delivery    retryable

A dead letter of a retryable type is worth a redrive once the partner is back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "RETRYABLE_4XX",
    "BuildFailed",
    "ConfigError",
    "ConfigProblem",
    "DecodeError",
    "DeliveryError",
    "ErrorType",
    "FQLError",
    "KafkaError",
    "MappingError",
    "MappingFailed",
    "PayloadValidationError",
    "SettingsError",
    "StreamprocError",
    "is_retryable_status",
]


RETRYABLE_4XX = frozenset({408, 423, 429})
"""The client-error statuses Segment retries (every 5xx but 501 is retried too)."""


def is_retryable_status(status: int, retryable_4xx: frozenset[int] = RETRYABLE_4XX) -> bool:
    """The statuses of `retryable_4xx` and every 5xx except 501 are worth retrying; others are not."""
    return status in retryable_4xx or (500 <= status <= 599 and status != 501)


class StreamprocError(Exception):
    """Base of every error streamproc raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration file: where it is and what is wrong."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(StreamprocError):
    """The configuration cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem] | ConfigProblem | str) -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem("<config>", "", problems)]
        elif isinstance(problems, ConfigProblem):
            problems = [problems]
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SettingsError(StreamprocError, ValueError):
    """A destination's own check of its settings refuses one: the setting's key (None: the settings
    as a whole) and the problem. Carrying the key lets the configuration point at
    `settings.<key>` without reading the message."""

    def __init__(self, key: str | None, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


class FQLError(StreamprocError):
    """A trigger that streamproc will not run: the message names the position and the fix."""

    def __init__(self, message: str, position: int | None = None, fql: str | None = None) -> None:
        self.position = position
        self.fql = fql
        super().__init__(message)


class MappingError(StreamprocError):
    """A mapping that is not valid, or a directive that failed while resolving. `messages` holds
    each of Segment's messages (validation reports several at once); `str()` is them joined."""

    def __init__(self, message: str, messages: list[str] | None = None) -> None:
        super().__init__(message)
        self.messages = messages if messages is not None else [message]


class DecodeError(StreamprocError):
    """An input message that is not a Segment event (not JSON, not an object, bad Avro, ...)."""


class DeliveryError(StreamprocError):
    """One delivery failed. `status` and `code` follow Segment's conventions."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body


class PayloadValidationError(DeliveryError):
    """The payload fails the action's field definitions (Segment's AggregateAjvError and
    PayloadValidationError). Permanent: the same event will always fail the same way.

    `field` is the top-level field the first problem is about, where the validator knows it (a
    destination's settings are reported at `settings.<field>`)."""

    def __init__(
        self, message: str, *, code: str = "PAYLOAD_VALIDATION_FAILED", field: str | None = None
    ) -> None:
        super().__init__(message, status=400, code=code)
        self.field = field


class MappingFailed(DeliveryError):
    """The subscription's mapping could not be resolved for this event (permanent, like a bad payload)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400, code="MAPPING_FAILED")


class BuildFailed(DeliveryError):
    """The action failed unexpectedly while building requests; the event is dead-lettered, never retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, code="BUILD_FAILED")


class KafkaError(StreamprocError):
    """The broker, a consumer or the dead-letter producer failed; the message says what to do."""


class ErrorType(StrEnum):
    """Why a delivery was dead-lettered: the value of a dead letter's `streamproc.error.type`."""

    DECODE = "DecodeError"
    ROUTING = "RoutingError"
    MAPPING_FAILED = "MappingFailed"
    BUILD_FAILED = "BuildFailed"
    PAYLOAD_VALIDATION = "PayloadValidationError"
    DELIVERY = "DeliveryError"
    PERMANENT = "PermanentError"
    RETRYABLE = "RetryableError"
    CIRCUIT_OPEN = "CircuitOpenError"
    PARKED_BEHIND = "ParkedBehind"

    @classmethod
    def of(cls, error: Exception) -> ErrorType:
        """The type of a failure raised while a delivery was built (its class, or the nearest
        listed base class)."""
        for klass in type(error).__mro__:
            try:
                return cls(klass.__name__)
            except ValueError:
                continue
        return cls.DELIVERY
