"""Helpers for tests that talk to a real Kafka broker: topics, producing, reading back, offsets, waiting."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamproc.kafka.admin import wait_until_served

T = TypeVar("T")

Header = tuple[str, bytes | None]
Payload = bytes | str | None


@dataclass(frozen=True)
class Record:
    """One message read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Header] = field(default_factory=list)
    timestamp: int = -1  # milliseconds since the epoch, -1 when the broker gave none

    def header(self, name: str) -> bytes | None:
        """The last value of header `name`, or None."""
        found = None
        for k, v in self.headers:
            if k == name:
                found = v
        return found


def unique_name(prefix: str = "t") -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 4,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create `name` and wait until every partition's leader serves it (so producing and reading
    offsets right away succeed)."""
    client = admin(bootstrap)
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=timeout,
    )
    futures[name].result(timeout)

    wait_until_served(client, [name], timeout)
    return name


def delete_topics(bootstrap: str, names: Sequence[str], timeout: float = 30.0) -> None:
    if not names:
        return
    client = admin(bootstrap)  # kept until the futures are answered: a collected client cancels them
    for future in client.delete_topics(list(names), operation_timeout=timeout).values():
        future.result(timeout)


def partitions(bootstrap: str, topic: str, timeout: float = 10.0) -> list[int]:
    md = admin(bootstrap).list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None:
        raise LookupError(f"topic {topic} not found: {md.error if md else 'no metadata'}")
    return sorted(md.partitions)


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[Payload],
    *,
    keys: Iterable[Payload] | None = None,
    headers: Iterable[Sequence[Header] | None] | None = None,
    partition: int | None = None,
    timestamps: Iterable[int] | None = None,
    timeout: float = 30.0,
    config: dict[str, Any] | None = None,
) -> int:
    """Produce the messages (keys/headers/record timestamps in ms zipped with values), wait for every
    ack; return the count.

    Raises if any message was not acknowledged.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 200000,
            "enable.idempotence": True,
            **(config or {}),
        }
    )
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    value_list = list(values)
    key_list = list(keys) if keys is not None else [None] * len(value_list)
    header_list = list(headers) if headers is not None else [None] * len(value_list)
    ts_list = list(timestamps) if timestamps is not None else [None] * len(value_list)
    if not len(key_list) == len(header_list) == len(ts_list) == len(value_list):
        raise ValueError("keys, headers and timestamps must have as many items as values")

    extra: dict[str, Any] = {} if partition is None else {"partition": partition}
    for value, key, hdrs, ts in zip(value_list, key_list, header_list, ts_list, strict=True):
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(hdrs) if hdrs else None,
                    on_delivery=on_delivery,
                    **extra,
                    **({} if ts is None else {"timestamp": ts}),
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining:
        raise TimeoutError(f"{remaining} messages to {topic} not acknowledged within {timeout}s")
    if failures:
        raise KafkaException(f"{len(failures)} messages to {topic} failed, first: {failures[0]}")
    return len(value_list)


def end_offsets(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """High watermark of every partition of `topic` that holds messages.

    Empty partitions are left out, as `committed_offsets` leaves out partitions without a commit: a
    consumer that read nothing from a partition commits nothing there, so `committed == ends` means
    "everything produced was consumed and committed" however keyless messages were spread."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("probe")})
    try:
        highs = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)[1]
            for p in partitions(bootstrap, topic, timeout)
        }
        return {p: high for p, high in highs.items() if high > 0}
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Record]:
    """Every message currently in `topic` (beginning to the end offsets), ordered by partition, offset.

    Uses partition assignment, not a consumer group, so it commits nothing.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("read-all"),
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        targets: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in partitions(bootstrap, topic):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            if high > low:
                targets[p] = high
                starts.append(TopicPartition(topic, p, low))
        records: list[Record] = []
        if not targets:
            return records
        consumer.assign(starts)
        deadline = time.monotonic() + timeout
        pending = dict(targets)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read_all({topic}): partitions {sorted(pending)} not read to the end")
            for msg in consumer.consume(num_messages=10000, timeout=0.2):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                p, off = msg.partition() or 0, msg.offset() or 0
                target = targets[p]
                if off >= target:
                    continue
                ts_type, ts = msg.timestamp()
                records.append(
                    Record(
                        topic=topic,
                        partition=p,
                        offset=off,
                        key=msg.key(),
                        value=msg.value(),
                        headers=list(msg.headers() or []),  # type: ignore[arg-type]
                        timestamp=ts if ts_type else -1,
                    )
                )
                if off + 1 >= target:
                    pending.pop(p, None)
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """Offsets `group` has committed for `topic`; partitions without a commit are left out.

    Retries while the group coordinator moves or loads (a fresh broker's first groups)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    deadline = time.monotonic() + timeout
    try:
        tps = [TopicPartition(topic, p) for p in partitions(bootstrap, topic)]
        while True:
            try:
                committed = consumer.committed(tps, timeout=max(1.0, deadline - time.monotonic()))
            except KafkaException as exc:
                if not exc.args[0].retriable() and exc.args[0].code() not in _COORDINATOR_ERRORS:
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            return {
                tp.partition: tp.offset for tp in committed if tp.offset != OFFSET_INVALID and tp.offset >= 0
            }
    finally:
        consumer.close()


_COORDINATOR_ERRORS = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
)


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout}s (last value: {result!r})")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | None = None,
) -> T:
    """`wait_until` for async tests: yields to the event loop between polls; predicate may be async."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout}s (last value: {result!r})")
        await asyncio.sleep(interval)


def produce_raw_headers(
    bootstrap: str,
    topic: str,
    value: bytes,
    headers: Sequence[tuple[bytes, bytes | None]],
    timeout: float = 30.0,
) -> None:
    """Produce one message whose header names are raw bytes (invalid UTF-8 included).

    confluent-kafka encodes header names from `str` and cannot write such a name, so this calls the
    librdkafka shipped inside its wheel directly (what a producer in another language can do)."""
    import ctypes
    import glob
    import os

    import confluent_kafka

    libs = os.path.join(os.path.dirname(confluent_kafka.__file__), os.pardir, "confluent_kafka.libs")
    found = glob.glob(os.path.join(libs, "librdkafka*.so*"))
    lib = ctypes.CDLL(found[0]) if found else ctypes.CDLL("librdkafka.so.1")
    ptr, size, text = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    lib.rd_kafka_conf_new.restype = ptr
    lib.rd_kafka_conf_set.argtypes = [ptr, text, text, text, size]
    lib.rd_kafka_new.restype = ptr
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ptr, text, size]
    lib.rd_kafka_headers_new.restype = ptr
    lib.rd_kafka_headers_new.argtypes = [size]
    lib.rd_kafka_header_add.argtypes = [ptr, text, ctypes.c_ssize_t, text, ctypes.c_ssize_t]
    lib.rd_kafka_flush.argtypes = [ptr, ctypes.c_int]
    lib.rd_kafka_outq_len.argtypes = [ptr]
    lib.rd_kafka_destroy.argtypes = [ptr]
    errstr = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    for name, setting in ((b"bootstrap.servers", bootstrap.encode()), (b"acks", b"all")):
        if lib.rd_kafka_conf_set(conf, name, setting, errstr, len(errstr)) != 0:
            raise RuntimeError(errstr.value.decode())
    rk = lib.rd_kafka_new(0, conf, errstr, len(errstr))  # 0: RD_KAFKA_PRODUCER
    if not rk:
        raise RuntimeError(errstr.value.decode())
    try:
        hdrs = lib.rd_kafka_headers_new(len(headers))
        for name, data in headers:
            lib.rd_kafka_header_add(hdrs, name, len(name), data, len(data) if data is not None else 0)
        # rd_kafka_producev(rk, RD_KAFKA_VTYPE_TOPIC, topic, VTYPE_VALUE, ptr, len, VTYPE_HEADERS, hdrs,
        # VTYPE_END); the headers belong to the message once it is accepted.
        err = lib.rd_kafka_producev(
            ptr(rk),
            ctypes.c_int(1),
            text(topic.encode()),
            ctypes.c_int(4),
            text(value),
            size(len(value)),
            ctypes.c_int(10),
            ptr(hdrs),
            ctypes.c_int(0),
        )
        if err:
            raise KafkaException(KafkaError(err))
        lib.rd_kafka_flush(rk, int(timeout * 1000))
        if lib.rd_kafka_outq_len(rk):
            raise TimeoutError(f"the message to {topic} was not acknowledged within {timeout}s")
    finally:
        lib.rd_kafka_destroy(rk)
