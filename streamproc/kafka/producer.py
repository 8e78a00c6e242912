"""The producer of dead letters, retry records and redrive markers: each write is acknowledged.

An event counts as finished only once its dead letters (or retry records) are acknowledged by the
broker (idempotent producer, acks=all); a record that cannot be written stops the worker rather
than let it commit past it. A record larger than its topic takes is cut to fit first
(`streamproc.kafka.dlq.fit`), and written again without its value and original headers when the
broker still refuses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import confluent_kafka
import structlog

from streamproc.errors import KafkaError
from streamproc.kafka.admin import max_message_bytes
from streamproc.kafka.dlq import DeadLetter, fit
from streamproc.kafka.settings import admin_settings, producer_settings

__all__ = ["AckedProducer", "RecordTooLarge", "acked_producer", "producer_config"]

if TYPE_CHECKING:
    from streamproc.config import KafkaConfig

log = structlog.get_logger("streamproc.dlq")

BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1048588
"""Kafka's default `message.max.bytes` (the limit of a topic that does not set `max.message.bytes`)."""
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default `message.max.bytes` (a producer's limit when it is not set)."""
LIBRDKAFKA_MIN_MESSAGE_MAX_BYTES = 1000


def acked_producer(kafka: KafkaConfig, topics: Sequence[str], what: str = "dead letter") -> AckedProducer:
    """The producer of dead letters (or retry records) to `topics`, its records sized to the least
    `max.message.bytes` among them (described at start; blocking, so call it off the event loop)."""
    limit = max_message_bytes(
        kafka.bootstrap_servers, admin_settings(kafka), topics, fallback=BROKER_DEFAULT_MAX_MESSAGE_BYTES
    )
    config = producer_config(kafka.bootstrap_servers, producer_settings(kafka), limit)
    return AckedProducer(kafka.dead_letter_topic, config, what=what)


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


class AckedProducer:
    """Writes records in the dead-letter format (dead letters, retry records, redrive markers) and
    tells the caller when the broker has acknowledged each.

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
