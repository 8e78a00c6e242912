"""`streamproc run`: the worker, built from a Config (streamproc.runs.compose) and run until stopped.

The worker is a consumer-group member: its `ConsumerLoop` hands each message to the shared
`EventProcessor` (decode → route → deliver → dead-letter, `streamproc.pipeline`), which completes
the message's offset once every delivery has settled; the loop commits up to the contiguous
watermark. Destinations with a retry share park deliveries in their retry topics; a second
`RetryConsumer` reads them back when due, on the input partitions this worker owns, through a
second processor over the same router, bulkheads and senders (kafka/retry.py, parking.py).

Stopping (SIGTERM) has one budget, `limits.shutdown_timeout`: the live and the retry consumer's
work drains together while the live consumer keeps serving the group; what still waits for a
retry at the end is given up for the partitions' next owners, and requests on the wire get the
last part of the budget (kafka/consumer.py and kafka/reader.py say how a partition is handed over).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

import structlog

from streamproc.config import Config
from streamproc.decoding import make_decoder
from streamproc.errors import KafkaError, StreamprocError
from streamproc.kafka.admin import check_topics
from streamproc.kafka.backpressure import prefetch_settings
from streamproc.kafka.consumer import ConsumerLoop, consumer_config
from streamproc.kafka.producer import AckedProducer, acked_producer
from streamproc.kafka.reader import Partition
from streamproc.kafka.settings import admin_settings, consumer_settings
from streamproc.metrics import Metrics
from streamproc.pipeline import EventProcessor, kafka_section
from streamproc.router import Router
from streamproc.runs.compose import build_dispatcher, build_senders

# Imported where they are used: the operations server only with metrics on, parking and the retry
# consumer only when a destination parks.
if TYPE_CHECKING:
    from streamproc.kafka.retry import RetryConsumer
    from streamproc.ops_server import OpsServer, Readiness
    from streamproc.parking import Parking
    from streamproc.runs.retry import RetryLane

__all__ = ["Worker"]

log = structlog.get_logger("streamproc.worker")


class _PollLimits(TypedDict):
    poll_batch_size: int
    max_in_flight_events: int
    resume_in_flight_events: int
    max_in_flight_bytes: int
    resume_in_flight_bytes: int
    commit_interval: float


class Worker:
    """A consumer-group member: consumes, routes, dispatches, dead-letters and commits."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        router: Router | None = None,
        now: datetime | Callable[[], datetime] | None = None,
        check_topics_at_start: bool = True,
        serve_http: bool | None = None,
        dead_letter_producer: AckedProducer | None = None,
        retry_producer: AckedProducer | None = None,
    ) -> None:
        self.kafka = kafka_section(config, "run")
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self.router = router if router is not None else Router(config, now=now)
        self._check_topics = check_topics_at_start
        self._serve_http = config.metrics.enabled if serve_http is None else serve_http
        self.dispatcher = build_dispatcher(config, self.router, self.metrics)
        self.dlq: AckedProducer | None = dead_letter_producer
        self.parking = self._parking()
        self.senders = build_senders(self.dispatcher, self.parking)
        self._decode = make_decoder(config.input)
        self.processor = self._processor(ConsumerLoop.complete, self._halt)
        self.consumer = ConsumerLoop(
            consumer_config(
                self.kafka.bootstrap_servers,
                self.kafka.group_id,
                self._consumer_settings(),
                group_instance_id=self.kafka.group_instance_id,
            ),
            self.kafka.topics,
            self.processor.process,
            metrics=self.metrics,
            revoke_timeout=config.limits.revoke_timeout,
            metadata_max_bytes=self.kafka.offset_metadata_max_bytes,
            waiting=self.dispatcher.waiting,
            **self._poll_limits(),
            on_poll=self._on_poll,
            on_assignment=self._on_assignment,
            on_drain=self.dispatcher.flush,
            on_assigned=self._on_live_assigned if self.parking and self.parking.ordered else None,
            on_release=self._on_live_release if self.parking else None,
        )
        self.lane = self._retry_lane(self.parking, retry_producer) if self.parking is not None else None
        self.retry: RetryConsumer | None = self.lane.consumer if self.lane is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._readiness: Readiness | None = None
        self._server: OpsServer | None = None

    # -- parking -------------------------------------------------------------------------------------
    def _parking(self) -> Parking | None:
        """A retry topic per destination that parks (one that sets a retry share), so a long outage
        of one partner never delays another's due retries; None when none parks."""
        parked = [
            d
            for d in self.config.destinations
            if d.limits.retry.park_after_attempts is not None or d.limits.retry.park_after_seconds is not None
        ]
        if not parked:
            return None
        from streamproc.parking import Parking

        return Parking(
            {d.id: self.kafka.retry_topic(d.id) for d in parked},
            frozenset(d.id for d in parked if d.ordering == "key"),
            dispatcher=self.dispatcher,
            metrics=self.metrics,
            run_id=uuid.uuid4().hex[:16],
        )

    def _processor(
        self, complete: Callable[[Partition, int], None], halt: Callable[[BaseException, str | None], None]
    ) -> EventProcessor:
        """An event processor over the worker's router, dispatcher, dead letters and parking; the
        live and the retry consumer each have one, completing and halting their own offsets."""
        return EventProcessor(
            router=self.router,
            decode=self._decode,
            senders=self.senders,
            dead_letters=self.dlq,
            metrics=self.metrics,
            complete=complete,
            halt=halt,
        )

    def _consumer_settings(self) -> dict[str, Any]:
        """The user's consumer settings over librdkafka's prefetch bounded by the bytes bound."""
        return {**prefetch_settings(self.config.limits.max_in_flight_bytes), **consumer_settings(self.kafka)}

    def _poll_limits(self) -> _PollLimits:
        """Batch size, in-flight bounds and commit interval, the same for the live and the retry
        consumer (a live backlog never starves due retries)."""
        limits = self.config.limits
        return {
            "poll_batch_size": limits.poll_batch_size,
            "max_in_flight_events": limits.max_in_flight_events,
            "resume_in_flight_events": limits.resume_in_flight_events,
            "max_in_flight_bytes": limits.max_in_flight_bytes,
            "resume_in_flight_bytes": limits.resume_in_flight_bytes,
            "commit_interval": limits.commit_interval,
        }

    def _retry_lane(self, parking: Parking, producer: AckedProducer | None) -> RetryLane:
        from streamproc.runs.retry import RetryLane

        return RetryLane(
            self.kafka,
            parking,
            consumer_settings=self._consumer_settings(),
            read_limits=self._poll_limits(),
            processor=self._processor,
            live_partitions=self._live_partitions,
            not_before=self.dispatcher.not_before,
            waiting=self.dispatcher.waiting,
            metrics=self.metrics,
            release_timeout=self.config.limits.revoke_timeout,
            halt=self._halt,
            producer=producer,
        )

    def _live_partitions(self) -> set[int]:
        return {p for _, p in list(self.consumer.partitions)}

    def _on_live_assigned(self, partitions: list[int]) -> None:
        # On the consumer's thread, inside the rebalance: the ordered keys' barriers go up, and the
        # retry partitions are assigned (which says how far the barriers reach), before the first
        # message of these partitions is handled; waiting here is what the revoke side does too.
        loop = self._loop
        if self.parking is None or loop is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._assign_retry(partitions), loop)
        try:
            future.result(60.0)
        except Exception as exc:  # the barriers stay up: those keys park behind until resolved
            log.warning("retry_assign_failed", error=repr(exc))

    async def _assign_retry(self, partitions: list[int]) -> None:
        if self.lane is not None:
            await self.lane.assign(partitions)

    async def _on_live_release(self, partitions: list[int], timeout: float) -> None:
        if self.lane is not None:
            await self.lane.release(partitions, timeout)

    def _in_flight(self) -> int:
        """Events of both consumers whose work is not finished."""
        return self.consumer.in_flight() + (self.lane.in_flight() if self.lane is not None else 0)

    def _idle(self) -> bool:
        return self._in_flight() == 0

    def _halt(self, exc: BaseException, health_reason: str | None) -> None:
        """Stop consuming without finishing the current offset; the health check reports why."""
        self.consumer.fail(exc)
        if isinstance(exc, KafkaError) and self._readiness is not None:
            self._readiness.set_dlq(False, str(exc))
        if health_reason is not None and self._server is not None:
            self._server.health.fail(health_reason)

    def _on_poll(self) -> None:
        if self._readiness is not None:
            self._readiness.polled()

    def _on_assignment(self, partitions: int) -> None:
        if self._readiness is not None:
            self._readiness.set_assignment(partitions)

    # -- lifecycle -----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to stop fetching, drain and exit (what SIGTERM does)."""
        self.consumer.request_stop()
        if self._readiness is not None:
            self._readiness.set_stopping()

    async def run_async(self) -> None:
        """Run until `stop()` (or a fatal error, which is raised after the offsets are committed)."""
        kafka = self.kafka
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self._check_topics:
            counts = await loop.run_in_executor(
                None,
                lambda: check_topics(
                    kafka.bootstrap_servers, admin_settings(kafka), [*kafka.topics, kafka.dead_letter_topic]
                ),
            )
            if self.lane is not None:
                await self.lane.ensure_topics(max(counts[t] for t in kafka.topics))
        if self.dlq is None:
            self.dlq = await loop.run_in_executor(None, acked_producer, kafka, [kafka.dead_letter_topic])
        self.processor.dead_letters = self.dlq
        if self.lane is not None:
            await self.lane.open(self.dlq)
        await self._start_http()
        limits = self.config.limits
        fatal: BaseException | None = None
        if self.lane is not None:
            self.lane.start(self.consumer.fail)
        try:
            try:
                await self.consumer.run()
            except (KafkaError, StreamprocError) as exc:
                fatal = exc
            # One budget for both consumers: their work drains together while the live consumer
            # keeps serving the group; what still waits for a retry at the end is given up.
            budget = 0.0 if fatal else limits.shutdown_timeout
            stop_at = time.monotonic() + budget
            if self.lane is not None:
                await self.lane.stop()
            log.info("draining", in_flight=self._in_flight(), seconds=budget)
            # The last part of the budget is for requests on the wire after the give-up.
            await self.consumer.drain(stop_at - min(limits.revoke_timeout, budget / 2), idle=self._idle)
            left = self._in_flight()
            if left:
                log.warning("shutdown_left_work", in_flight=left)
            await self.consumer.close(stop_at)
            if self.lane is not None:
                await self.lane.close(stop_at)
        finally:
            await self.dispatcher.close()
            if self.dlq is not None:
                await loop.run_in_executor(None, self.dlq.close)
            if self.lane is not None:
                await self.lane.close_producer()
            await self._stop_http()
        if fatal is not None:
            raise fatal
        log.info("stopped")

    async def _start_http(self) -> None:
        if not self._serve_http:
            return
        from streamproc.ops_server import OpsServer, Readiness

        self._readiness = Readiness(gauge=self.metrics.ready)
        self._server = OpsServer(self.config.metrics, self.metrics.registry, self._readiness)
        url = await self._server.start()
        log.info("ops_server_listening", url=url)

    async def _stop_http(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    def run(self) -> int:
        """Run on a fresh event loop (uvloop when installed) with SIGTERM/SIGINT → graceful stop."""
        tune_gc()
        try:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:
            runner = asyncio.Runner()
        with runner:
            return runner.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        await self.run_async()
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("stop_requested", signal=sig.name)
        self.stop()


GC_THRESHOLDS = (700, 10, 100)
"""The collector's thresholds in a worker process: full collections ten times rarer than Python's
default (700, 10, 10)."""


def tune_gc() -> None:
    """Set the cyclic garbage collector up for a worker process (`Worker.run`, not tests).

    A backlog keeps thousands of deliveries in flight for seconds each, so they outlive the young
    generations and every full collection walks all of them: with Python's defaults, full
    collections took about 15 % of the worker's CPU during a drain (bench/e2e.py). The hot path
    makes almost no cyclic garbage (reference counting frees it), so full collections can be
    rarer; the objects built at start (configuration, compiled routes) are moved out of the
    collector's sight for good."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
