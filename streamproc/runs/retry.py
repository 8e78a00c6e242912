"""The worker's retry lane: reads the deliveries its destinations parked back when they are due.

A `RetryConsumer` (kafka/retry.py) assigns the retry partitions of the input partitions the
worker's live consumer owns, and hands each due retry record to a processor of its own over the
worker's router and senders; the record's delivery is sent by the parking sender (parking.py) with
what it has spent, and delivered, parked again or dead-lettered. The lane follows the live
consumer: assigned input partitions raise the barriers of ordered keys and assign their retry
partitions before their first message; released ones are finished and committed first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from streamproc.config import KafkaConfig
from streamproc.errors import KafkaError, StreamprocError
from streamproc.kafka.admin import ensure_retry_topics
from streamproc.kafka.consumer import consumer_config
from streamproc.kafka.dlq import RetryView
from streamproc.kafka.producer import AckedProducer, acked_producer
from streamproc.kafka.reader import Partition
from streamproc.kafka.retry import RetryConsumer, retry_group
from streamproc.kafka.settings import admin_settings
from streamproc.parking import Parking
from streamproc.pipeline import EventProcessor

__all__ = ["RetryLane"]

log = structlog.get_logger("streamproc.worker")

Halt = Callable[[BaseException, str | None], None]


class RetryLane:
    """The retry consumer of a worker whose destinations park, with its processor and producer."""

    def __init__(
        self,
        kafka: KafkaConfig,
        parking: Parking,
        *,
        consumer_settings: Mapping[str, Any],
        read_limits: Mapping[str, Any],
        processor: Callable[[Callable[[Partition, int], None], Halt], EventProcessor],
        live_partitions: Callable[[], set[int]],
        not_before: Callable[[str], float],
        waiting: Any,
        metrics: Any,
        release_timeout: float,
        halt: Halt,
        producer: AckedProducer | None = None,
    ) -> None:
        self.kafka = kafka
        self.parking = parking
        self.consumer = RetryConsumer(
            consumer_config(kafka.bootstrap_servers, retry_group(kafka.group_id), consumer_settings),
            parking.topics,
            self._on_record,
            live_partitions=live_partitions,
            metrics=metrics,
            parked_keys=parking.keys,
            ordered=parking.ordered,
            not_before=not_before,
            release_timeout=release_timeout,
            metadata_max_bytes=kafka.offset_metadata_max_bytes,
            waiting=waiting,
            **read_limits,
        )
        self._halt_worker = halt
        self.processor = processor(self.consumer.complete, self._halt)
        self.producer = producer
        self._task: asyncio.Task[None] | None = None

    def _on_record(self, msg: Any, part: Partition, view: RetryView) -> None:
        redelivery = self.parking.redelivery(view)
        if redelivery is None:
            log.warning("retry_record_without_delivery", partition=msg.partition(), offset=msg.offset())
            self.consumer.complete(part, msg.offset())
            return
        self.processor.process(msg, part, redelivery)

    def _halt(self, exc: BaseException, health_reason: str | None) -> None:
        self.consumer.fail(exc)
        self._halt_worker(exc, health_reason)

    # -- following the live consumer -----------------------------------------------------------------
    async def assign(self, partitions: list[int]) -> None:
        """Input partitions newly owned: their ordered keys' barriers, then their retry partitions."""
        self.parking.assigned(partitions)
        await self.consumer.assign_live(partitions)

    async def release(self, partitions: list[int], timeout: float) -> None:
        await self.consumer.release_live(partitions, timeout)

    def in_flight(self) -> int:
        return self.consumer.in_flight()

    # -- lifecycle -----------------------------------------------------------------------------------
    async def ensure_topics(self, partitions: int) -> None:
        """A retry topic per destination that parks, with as many partitions as the input topics."""
        kafka, topics = self.kafka, list(self.parking.topics.values())
        created = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: ensure_retry_topics(
                kafka.bootstrap_servers,
                admin_settings(kafka),
                topics,
                partitions,
                create=kafka.create_retry_topics,
            ),
        )
        if created:
            log.info("retry_topics_created", topics=created, partitions=partitions)

    async def open(self, dead_letters: AckedProducer) -> None:
        """The producer of retry records (every record names its own topic), and the dead letters."""
        if self.producer is None:
            topics = list(self.parking.topics.values())
            self.producer = await asyncio.get_running_loop().run_in_executor(
                None, acked_producer, self.kafka, topics, "retry record"
            )
        self.parking.producer = self.producer
        self.processor.dead_letters = dead_letters

    def start(self, on_failed: Callable[[BaseException], None]) -> None:
        """Run the retry consumer; `on_failed` gets what ended it, if not a stop."""
        self._task = asyncio.create_task(self.consumer.run())

        def ended(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                log.error("retry_consumer_failed", error=repr(exc))
                on_failed(exc if isinstance(exc, StreamprocError) else StreamprocError(repr(exc)))

        self._task.add_done_callback(ended)

    async def stop(self) -> None:
        """Stop reading retry records (their work goes on draining with the live consumer's)."""
        self.consumer.request_stop()
        if self._task is not None:
            with contextlib.suppress(KafkaError, StreamprocError):
                await self._task

    async def close(self, until: float) -> None:
        await self.consumer.close(until)

    async def close_producer(self) -> None:
        if self.producer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.producer.close)
