"""The exceptions streamproc raises, one tree for the whole project.

    StreamprocError
    ├── ConfigError                 bad configuration; start-up stops (file, key path, problem)
    ├── FQLError                    a trigger that cannot be parsed (position + suggested fix)
    ├── MappingError                a mapping that is not valid (path-prefixed message)
    ├── DecodeError                 an input message that is not a Segment event (poison → dead letter)
    ├── DeliveryError               one delivery failed; `retryable` says whether to try again
    │   ├── PayloadValidationError  the mapped payload fails the action's fields (400, permanent)
    │   ├── IntegrationError        an action refused the payload (message, code, status)
    │   └── PartnerError            the partner answered badly or not at all
    │       ├── RetryableError      network error, timeout, 408, 423, 429, 5xx but 501
    │       └── PermanentError      any other 4xx, 501
    └── KafkaError                  the broker or the dead-letter producer failed (what to do, in words)

A `DeliveryError` is an *outcome* of one delivery: it is dead-lettered, never raised out of the
worker. Everything else stops the command that met it, with a message that says what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "DecodeError",
    "DeliveryError",
    "FQLError",
    "IntegrationError",
    "KafkaError",
    "MappingError",
    "PartnerError",
    "PayloadValidationError",
    "PermanentError",
    "RetryableError",
    "StreamprocError",
    "is_retryable_status",
]


def is_retryable_status(status: int) -> bool:
    """408, 423, 429 and every 5xx except 501 are worth retrying; other statuses are not."""
    return status in (408, 423, 429) or (500 <= status <= 599 and status != 501)


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


class FQLError(StreamprocError):
    """A trigger that streamproc will not run: the message names the position and the fix."""

    def __init__(self, message: str, position: int | None = None, fql: str | None = None) -> None:
        self.position = position
        self.fql = fql
        super().__init__(message)


class MappingError(StreamprocError):
    """A mapping that is not valid, or a directive that failed while resolving."""


class DecodeError(StreamprocError):
    """An input message that is not a Segment event (not JSON, not an object, bad Avro, ...)."""


class DeliveryError(StreamprocError):
    """One delivery failed. `status` and `code` follow Segment's conventions."""

    retryable: bool = False
    kind: str = "delivery_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.body = body


class PayloadValidationError(DeliveryError):
    """The payload fails the action's field definitions (Segment's AggregateAjvError and
    PayloadValidationError). Permanent: the same event will always fail the same way."""

    kind = "validation"

    def __init__(self, message: str, *, code: str = "PAYLOAD_VALIDATION_FAILED") -> None:
        super().__init__(message, status=400, code=code)


class IntegrationError(DeliveryError):
    """An action refused the payload with its own message, code and status
    (retryable only when the status says so)."""

    kind = "integration"

    def __init__(self, message: str, code: str | None = None, status: int = 400) -> None:
        super().__init__(message, status=status, code=code)
        self.retryable = is_retryable_status(status)


class PartnerError(DeliveryError):
    """The partner's answer (or the lack of one) made the delivery fail."""

    kind = "partner"


class RetryableError(PartnerError):
    """Worth another attempt: network errors, timeouts, 408, 423, 429, 5xx except 501."""

    retryable = True
    kind = "retryable"


class PermanentError(PartnerError):
    """Not worth another attempt: the request itself is wrong (4xx, 501)."""

    kind = "permanent"


class KafkaError(StreamprocError):
    """The broker, a consumer or the dead-letter producer failed; the message says what to do."""
