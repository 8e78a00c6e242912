"""Dead letters: one record per failed delivery (or undecodable message) on the dead-letter topic.

A dead letter keeps the consumed key and value bytes unchanged and the original headers first,
then adds `streamproc.*` headers that say what failed and where the message came from. An event
counts as finished only once its dead letters are acknowledged by the broker (idempotent
producer, acks=all); a dead letter that cannot be written stops the worker rather than let it
commit past it.

A dead letter larger than its topic takes (`max.message.bytes`, read at start) would stop the
partition for good, so it is cut to fit: its value is shortened (to nothing if need be) and
`streamproc.value_truncated` gives the original size; if the original headers alone are too large
they are left out (`streamproc.original.headers_dropped`). The original topic/partition/offset
headers always stay, so the original can be found on its topic while it is retained.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import confluent_kafka
import structlog

from streamproc.errors import KafkaError
from streamproc.kafka.admin import max_message_bytes
from streamproc.kafka.headers import renamed
from streamproc.kafka.settings import admin_settings, producer_settings
from streamproc.pii import sub_pii

__all__ = ["DLQ_VERSION", "DeadLetter", "DeadLetterProducer", "iso_utc", "scrub_pii"]

if TYPE_CHECKING:
    from streamproc.config import KafkaConfig

log = structlog.get_logger("streamproc.dlq")

DLQ_VERSION = "1"
BODY_LIMIT = 2048

BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1048588
"""Kafka's default `message.max.bytes` (the limit of a topic that does not set `max.message.bytes`)."""
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default `message.max.bytes` (a producer's limit when it is not set)."""
LIBRDKAFKA_MIN_MESSAGE_MAX_BYTES = 1000
RECORD_OVERHEAD = 512
"""Bytes kept free below a topic's limit for the record batch and record framing."""


def _marker(kind: str, _: str) -> str:
    return f"[{kind}]"


def scrub_pii(text: str) -> str:
    """Replace emails, IP addresses and phone numbers so a partner's echo of an event leaks nothing."""
    # A response body echoes user fields, so bare digit runs are taken for phone numbers too.
    return sub_pii(text, _marker, digit_runs=True)


def iso_utc(ts: float) -> str:
    """Unix seconds as ISO-8601 UTC with milliseconds, e.g. 2026-11-23T13:56:05.123Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be delivered somewhere, and why."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    original_headers: Sequence[tuple[str, bytes | None]]
    error_type: str
    error_message: str
    delivery_id: str | None = None
    destination: str | None = None
    action: str | None = None
    subscription: str | None = None
    http_status: int | None = None
    response_body: str | None = None
    attempts: int = 0
    first_attempt_at: float | None = None
    last_attempt_at: float | None = None
    next_attempt_at: float | None = None
    """Retry records only: not to be tried before this Unix time."""
    deadline_at: float | None = None
    """Retry records only: the Unix time at which the delivery's retry budget ends."""
    parks: int = 0
    """Retry records only: how many times the delivery has been parked, this one included."""
    parked_by: str | None = None
    """Retry records only: the worker run that wrote it (its per-key order bookkeeping)."""
    unreadable_headers: int = 0
    """Headers of the original message that could not be read (names that are not UTF-8)."""
    value_truncated: int | None = None
    """The value's size in bytes when `value` holds only its beginning (cut to fit the topic)."""
    dropped_headers: int = 0
    """Original headers left out because they alone did not fit the topic."""

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """Original headers first (their `streamproc.*` names renamed `original.streamproc.*`: only
        streamproc writes its own), then the `streamproc.*` ones (absent values are left out)."""
        out: list[tuple[str, str | bytes | None]] = list(renamed(self.original_headers))
        fields: list[tuple[str, Any]] = [
            ("streamproc.dlq.version", DLQ_VERSION),
            ("streamproc.delivery_id", self.delivery_id),
            ("streamproc.destination", self.destination),
            ("streamproc.action", self.action),
            ("streamproc.subscription", self.subscription),
            ("streamproc.error.type", self.error_type),
            ("streamproc.error.message", scrub_pii(self.error_message)[:BODY_LIMIT]),
            ("streamproc.http.status", self.http_status),
            (
                "streamproc.response.body",
                scrub_pii(self.response_body[:BODY_LIMIT]) if self.response_body else None,
            ),
            ("streamproc.attempts", self.attempts),
            (
                "streamproc.first_attempt_at",
                iso_utc(self.first_attempt_at) if self.first_attempt_at else None,
            ),
            ("streamproc.last_attempt_at", iso_utc(self.last_attempt_at) if self.last_attempt_at else None),
            ("streamproc.original.topic", self.topic),
            ("streamproc.original.partition", self.partition),
            ("streamproc.original.offset", self.offset),
            ("streamproc.original.headers_unreadable", self.unreadable_headers or None),
            ("streamproc.original.headers_dropped", self.dropped_headers or None),
            ("streamproc.value_truncated", self.value_truncated),
            (
                "streamproc.original.timestamp",
                iso_utc(self.timestamp_ms / 1000) if self.timestamp_ms is not None else None,
            ),
            (
                "streamproc.retry.next_attempt_at",
                iso_utc(self.next_attempt_at) if self.next_attempt_at else None,
            ),
            ("streamproc.retry.deadline", iso_utc(self.deadline_at) if self.deadline_at else None),
            ("streamproc.retry.parks", self.parks or None),
            ("streamproc.retry.parked_by", self.parked_by),
        ]
        for name, value in fields:
            if value is not None:
                out.append((name, str(value).encode("utf-8")))
        return out


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, Any]]) -> int:
    """The bytes a record takes before compression, as the producer counts them against
    `message.max.bytes` (framing aside: see RECORD_OVERHEAD)."""
    size = len(key or b"") + len(value or b"")
    for name, data in headers:
        size += len(name.encode("utf-8", "surrogatepass")) + len(data or b"") + 8
    return size


def fit(letter: DeadLetter, max_bytes: int) -> DeadLetter:
    """`letter` as it fits a topic of `max_bytes`: unchanged when it fits, else with its value cut
    (to nothing if need be) and, if that is not enough, without its original headers."""
    budget = max_bytes - RECORD_OVERHEAD
    if record_size(letter.key, letter.value, letter.headers()) <= budget:
        return letter
    original = letter.value_truncated if letter.value_truncated is not None else len(letter.value or b"")
    cut = dataclasses.replace(letter, value=b"", value_truncated=original)
    rest = record_size(cut.key, b"", cut.headers())
    if rest > budget and cut.original_headers:
        cut = dataclasses.replace(cut, original_headers=(), dropped_headers=len(cut.original_headers))
        rest = record_size(cut.key, b"", cut.headers())
    keep = max(0, budget - rest)
    return dataclasses.replace(cut, value=(letter.value or b"")[:keep])


def dead_letter_producer(
    kafka: KafkaConfig, topics: Sequence[str], what: str = "dead letter"
) -> DeadLetterProducer:
    """The producer of dead letters (or retry records) to `topics`, its records sized to the least
    `max.message.bytes` among them (described at start; blocking, so call it off the event loop)."""
    limit = max_message_bytes(
        kafka.bootstrap_servers, admin_settings(kafka), topics, fallback=BROKER_DEFAULT_MAX_MESSAGE_BYTES
    )
    config = producer_config(kafka.bootstrap_servers, producer_settings(kafka), limit)
    return DeadLetterProducer(kafka.dead_letter_topic, config, what=what)


def producer_config(
    bootstrap_servers: str, client: Mapping[str, Any], max_message_bytes: int | None = None
) -> dict[str, Any]:
    """librdkafka settings of the dead-letter producer: the user's settings (`producer_settings`),
    then the ones that make a dead letter durable and written once, and the largest record its
    topics take (`max_message_bytes`, their `max.message.bytes`)."""
    conf: dict[str, Any] = dict(client)
    if max_message_bytes is not None:
        # librdkafka takes no less; a topic that takes less gets every record cut, then refused.
        conf["message.max.bytes"] = max(LIBRDKAFKA_MIN_MESSAGE_MAX_BYTES, max_message_bytes)
    conf.update(
        {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "delivery.timeout.ms": 30000,
            "compression.type": "lz4",
        }
    )
    return conf


class DeadLetterProducer:
    """Writes dead letters and tells the caller when the broker has them.

    Delivery reports arrive on a polling thread and are handed to the event loop; `send` retries a
    failed write a few times (the producer already retries inside `delivery.timeout.ms`) and then
    raises KafkaError, which stops the worker without committing. A record the broker refuses as
    too large is written again at once without its value and original headers.
    """

    def __init__(
        self,
        topic: str,
        config: Mapping[str, Any],
        *,
        attempts: int = 3,
        backoff: float = 1.0,
        producer: Any = None,
        what: str = "dead letter",
    ) -> None:
        self.topic = topic
        self.what = what
        self._producer = producer if producer is not None else confluent_kafka.Producer(dict(config))
        self.max_record_bytes = int(config.get("message.max.bytes", LIBRDKAFKA_MESSAGE_MAX_BYTES))
        """The largest record its topics take (the producer's `message.max.bytes`)."""
        self._attempts = attempts
        self._backoff = backoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="dlq-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def send(
        self, letter: DeadLetter, *, topic: str | None = None, partition: int | None = None
    ) -> int:
        """Write one dead letter (to `topic`, default the dead-letter topic; to `partition`, default
        by key), cut to fit the topic, and wait for the broker's acknowledgement; returns its offset."""
        fitted = self.fitted(letter)
        where = f"{letter.topic}[{letter.partition}]@{letter.offset}"
        try:
            try:
                return await self._send(fitted, topic, partition)
            except RecordTooLarge:
                # The topic's limit is below what was read at start (changed since): the least there is.
                least = dataclasses.replace(
                    fitted,
                    value=b"",
                    value_truncated=fitted.value_truncated or len(letter.value or b""),
                    original_headers=(),
                    dropped_headers=len(letter.original_headers),
                )
                self._log_cut(least, topic)
                return await self._send(least, topic, partition)
        except RecordTooLarge as exc:
            raise KafkaError(
                f"the {self.what} of {where} is too large for topic {topic or self.topic!r} even without "
                f"its value ({exc}); raise the topic's max.message.bytes, then restart the worker"
            ) from None
        except KafkaError as exc:
            raise KafkaError(f"the {self.what} of {where}: {exc}") from None

    def fitted(self, letter: DeadLetter) -> DeadLetter:
        """The letter as written: cut to fit `max_record_bytes` when it does not (and logged)."""
        fitted = fit(letter, self.max_record_bytes)
        if fitted is not letter:
            self._log_cut(fitted, None)
        return fitted

    def fits(self, letter: DeadLetter) -> bool:
        """Whether the letter is written whole."""
        return fit(letter, self.max_record_bytes) is letter

    def _log_cut(self, letter: DeadLetter, topic: str | None) -> None:
        log.warning(
            "dead_letter_truncated",
            what=self.what,
            topic=topic or self.topic,
            original_topic=letter.topic,
            original_partition=letter.partition,
            original_offset=letter.offset,
            value_bytes=letter.value_truncated,
            kept_bytes=len(letter.value or b""),
            headers_dropped=letter.dropped_headers,
            max_record_bytes=self.max_record_bytes,
        )

    async def _send(self, letter: DeadLetter, topic: str | None, partition: int | None) -> int:
        return await self.write(
            value=letter.value, key=letter.key, headers=letter.headers(), topic=topic, partition=partition
        )

    async def write(
        self,
        *,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        partition: int | None = None,
        topic: str | None = None,
    ) -> int:
        """Write one record to the dead-letter topic (a dead letter, or a redrive marker; a retry
        record to its `topic`) and wait, without blocking the event loop, for the broker's
        acknowledgement; returns the record's offset."""
        loop = asyncio.get_running_loop()
        topic = topic or self.topic
        where: dict[str, Any] = {} if partition is None else {"partition": partition}
        error: Any = None
        for attempt in range(1, self._attempts + 1):
            future: asyncio.Future[Any] = loop.create_future()

            def on_delivery(err: Any, msg: Any, future: asyncio.Future[Any] = future) -> None:
                answer = err if err is not None else (msg.offset() if msg is not None else -1)
                loop.call_soon_threadsafe(_resolve, future, answer)

            try:
                while True:
                    try:
                        self._producer.produce(
                            topic,
                            value=value,
                            key=key,
                            headers=headers,
                            on_delivery=on_delivery,
                            **where,
                        )
                        break
                    except BufferError:
                        # The local queue is full because the broker is slow: wait for room.
                        await asyncio.sleep(0.05)
            except confluent_kafka.KafkaException as exc:
                error = exc.args[0] if exc.args else exc
            else:
                answer = await future
                if isinstance(answer, int):
                    return answer
                error = answer
            if isinstance(error, confluent_kafka.KafkaError) and error.code() in _TOO_LARGE:
                raise RecordTooLarge(error.str())
            log.warning("dead_letter_write_failed", topic=topic, attempt=attempt, error=str(error))
            if attempt < self._attempts:
                await asyncio.sleep(self._backoff * attempt)
        raise KafkaError(
            f"could not write a {self.what} to topic {topic!r} after {self._attempts} attempts "
            f"({error}); nothing past it was committed. Check that the topic exists, that this "
            "worker may write to it, and that the brokers are healthy, then restart the worker."
        )

    def close(self, timeout: float = 10.0) -> int:
        """Flush what is queued and stop polling; returns how many records were left unsent."""
        left: int = self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=1.0)
        return left


class RecordTooLarge(KafkaError):
    """The producer or the broker refused a record as larger than the topic takes."""


_TOO_LARGE = frozenset(
    {confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE, confluent_kafka.KafkaError.RECORD_LIST_TOO_LARGE}
)


def _resolve(future: asyncio.Future[Any], err: Any) -> None:
    if not future.done():
        future.set_result(err)
