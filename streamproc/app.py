"""The composition root of `streamproc run`: builds the worker from a Config and runs it until stopped.

Per message: decode → route → one task per delivery (dispatch, then dead-letter if it failed)
→ when every delivery of the message is finished, its offset is complete and the consumer loop
may commit past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from streamproc.config import Config
from streamproc.decoding import SchemaRegistryUnavailable, make_decoder
from streamproc.dispatch import DeliveryResult, Dispatcher, Failure
from streamproc.errors import ConfigError, ConfigProblem, DecodeError, KafkaError, StreamprocError
from streamproc.http import OpsServer, Readiness
from streamproc.kafka.admin import check_topics
from streamproc.kafka.consumer import ConsumerLoop, Partition, consumer_config
from streamproc.kafka.dlq import DeadLetter, DeadLetterProducer, producer_config
from streamproc.metrics import Metrics
from streamproc.router import Delivery, Router

__all__ = ["Worker", "build_worker"]

log = structlog.get_logger("streamproc.worker")


@dataclass(eq=False, slots=True)
class _EventWork:
    """One consumed message with deliveries still running."""

    msg: Any
    part: Partition
    offset: int
    remaining: int
    consumed_at: float


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
        dead_letter_producer: DeadLetterProducer | None = None,
    ) -> None:
        if config.kafka is None:
            raise ConfigError(
                ConfigProblem(
                    config.source,
                    "kafka",
                    "`streamproc run` needs this section (bootstrap_servers, topics, group_id, "
                    "dead_letter_topic)",
                )
            )
        self.config = config
        self.kafka = config.kafka
        self.metrics = metrics if metrics is not None else Metrics()
        self.router = router if router is not None else Router(config, now=now)
        self.decode = make_decoder(config.input)
        self._check_topics = check_topics_at_start
        self._serve_http = config.metrics.enabled if serve_http is None else serve_http
        self.dispatcher = Dispatcher.from_config(
            ((cfg, dest.classify) for dest, cfg in self.router.destinations.values()), self.metrics
        )
        limits = config.limits
        self.consumer = ConsumerLoop(
            consumer_config(self.kafka.bootstrap_servers, self.kafka.group_id, self.kafka.client),
            self.kafka.topics,
            self._on_message,
            metrics=self.metrics,
            poll_batch_size=limits.poll_batch_size,
            max_in_flight=limits.max_in_flight_events,
            resume_in_flight=limits.resume_in_flight_events,
            commit_interval=limits.commit_interval,
            revoke_timeout=limits.revoke_timeout,
            on_poll=self._on_poll,
            on_assignment=self._on_assignment,
        )
        self.dlq: DeadLetterProducer | None = dead_letter_producer
        self._stop: asyncio.Event | None = None
        self._readiness: Readiness | None = None
        self._server: OpsServer | None = None
        m = self.metrics
        self._m_consumed: dict[str, Any] = {}
        self._m_undecodable: dict[str, Any] = {}
        self._m_matched: dict[tuple[str, str], Any] = {}
        self._m_outcome: dict[tuple[str, str, str], Any] = {}
        self._m_dead: dict[tuple[str, str], Any] = {}
        self._m_latency: dict[str, Any] = {}
        self._m_e2e: dict[str, Any] = {}
        self._metrics = m

    # -- hot path ----------------------------------------------------------------------------------
    def _on_message(self, msg: Any, part: Partition) -> None:
        topic = part.topic
        counter = self._m_consumed.get(topic)
        if counter is None:
            counter = self._m_consumed[topic] = self._metrics.events_consumed.labels(topic)
        counter.inc()
        offset = msg.offset()
        try:
            value = msg.value()
            if value is None:
                raise DecodeError("the message has no value (a tombstone), not a Segment event")
            event = self.decode(value)
        except DecodeError as exc:
            self._count_undecodable(topic)
            self._start(part, msg, offset, [(None, Failure("DecodeError", str(exc)))])
            return
        except SchemaRegistryUnavailable as exc:
            # Says nothing about the message: stop with its offset unfinished instead of parking it.
            log.error(
                "schema_registry_unavailable",
                topic=topic,
                partition=part.partition,
                offset=offset,
                error=str(exc),
            )
            self._halt(exc, f"the schema registry cannot be reached: {exc}")
            return
        try:
            deliveries = self.router.route(event)
        except Exception as exc:  # a routing bug must not stop the partition: the event is parked
            log.error("route_failed", topic=topic, partition=part.partition, offset=offset, error=repr(exc))
            self._start(part, msg, offset, [(None, Failure("RoutingError", f"{type(exc).__name__}: {exc}"))])
            return
        if not deliveries:
            self.consumer.complete(part, offset)
            return
        for d in deliveries:
            key = (d.destination, d.action)
            c = self._m_matched.get(key)
            if c is None:
                c = self._m_matched[key] = self._metrics.events_matched.labels(*key)
            c.inc()
        self._start(part, msg, offset, [(d, None) for d in deliveries])

    def _count_undecodable(self, topic: str) -> None:
        c = self._m_undecodable.get(topic)
        if c is None:
            c = self._m_undecodable[topic] = self._metrics.events_undecodable.labels(topic)
        c.inc()

    def _start(
        self, part: Partition, msg: Any, offset: int, work: list[tuple[Delivery | None, Failure | None]]
    ) -> None:
        ev = _EventWork(msg, part, offset, len(work), time.monotonic())
        loop = asyncio.get_running_loop()
        tasks = part.tasks
        for delivery, failure in work:
            # Tasks start in creation order, so per-key order is fixed in offset order.
            task = loop.create_task(self._settle(ev, delivery, failure))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _settle(self, ev: _EventWork, delivery: Delivery | None, failure: Failure | None) -> None:
        try:
            if delivery is not None:
                result = await self.dispatcher.deliver(delivery)
            else:
                result = DeliveryResult("dead_lettered", failure)
            if result.outcome == "dead_lettered":
                assert result.failure is not None
                await self._dead_letter(ev, delivery, result.failure)
        except asyncio.CancelledError:
            raise
        except KafkaError as exc:
            log.error("dead_letter_failed", error=str(exc))
            if self._readiness is not None:
                self._readiness.set_dlq(False, str(exc))
            self._halt(exc, f"dead letters cannot be written: {exc}")
            return
        except Exception as exc:  # a bug in one delivery: stop loudly rather than skip the event
            log.exception("delivery_crashed", error=repr(exc))
            self.consumer.fail(StreamprocError(f"a delivery failed unexpectedly: {exc!r}"))
            return
        self._record(ev, delivery, result)
        ev.remaining -= 1
        if ev.remaining == 0:
            self.consumer.complete(ev.part, ev.offset)

    def _halt(self, exc: StreamprocError, health_reason: str) -> None:
        """Stop consuming without finishing the current offset; the health check reports why."""
        self.consumer.fail(exc)
        if self._server is not None:
            self._server.health.fail(health_reason)

    def _record(self, ev: _EventWork, delivery: Delivery | None, result: DeliveryResult) -> None:
        if delivery is None:
            return
        dest = delivery.destination
        key = (dest, delivery.action, result.outcome)
        c = self._m_outcome.get(key)
        if c is None:
            c = self._m_outcome[key] = self._metrics.deliveries.labels(*key)
        c.inc()
        if result.outcome != "delivered":
            return
        h = self._m_latency.get(dest)
        if h is None:
            h = self._m_latency[dest] = self._metrics.delivery_latency.labels(dest)
            self._m_e2e[dest] = self._metrics.end_to_end_latency.labels(dest)
        h.observe(time.monotonic() - ev.consumed_at)
        kind, ts = ev.msg.timestamp()
        if kind and ts > 0:
            self._m_e2e[dest].observe(max(0.0, time.time() - ts / 1000))

    async def _dead_letter(self, ev: _EventWork, delivery: Delivery | None, failure: Failure) -> None:
        msg = ev.msg
        kind, ts = msg.timestamp()
        letter = DeadLetter(
            topic=ev.part.topic,
            partition=ev.part.partition,
            offset=ev.offset,
            timestamp_ms=ts if kind and ts >= 0 else None,
            key=msg.key(),
            value=msg.value(),
            original_headers=msg.headers() or [],
            error_type=failure.type,
            error_message=failure.message,
            delivery_id=delivery.delivery_id if delivery else None,
            destination=delivery.destination if delivery else None,
            action=delivery.action if delivery else None,
            subscription=delivery.subscription if delivery else None,
            http_status=failure.status,
            response_body=failure.response_body,
            attempts=failure.attempts,
            first_attempt_at=failure.first_attempt_at,
            last_attempt_at=failure.last_attempt_at,
        )
        assert self.dlq is not None
        await self.dlq.send(letter)
        dest = delivery.destination if delivery else ""
        key = (dest, failure.type)
        c = self._m_dead.get(key)
        if c is None:
            c = self._m_dead[key] = self._metrics.dead_letters.labels(*key)
        c.inc()
        log.info(
            "dead_lettered",
            destination=dest or None,
            error_type=failure.type,
            status=failure.status,
            topic=ev.part.topic,
            partition=ev.part.partition,
            offset=ev.offset,
        )

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
        if self._check_topics:
            await loop.run_in_executor(
                None,
                lambda: check_topics(
                    kafka.bootstrap_servers, kafka.client, [*kafka.topics, kafka.dead_letter_topic]
                ),
            )
        if self.dlq is None:
            self.dlq = DeadLetterProducer(
                kafka.dead_letter_topic, producer_config(kafka.bootstrap_servers, kafka.client)
            )
        await self._start_http()
        limits = self.config.limits
        fatal: BaseException | None = None
        try:
            try:
                await self.consumer.run()
            except (KafkaError, StreamprocError) as exc:
                fatal = exc
            log.info("draining", in_flight=self.consumer.in_flight())
            left = await self.consumer.drain(0.0 if fatal else limits.shutdown_timeout)
            if left:
                log.warning("shutdown_left_work", in_flight=left)
            await self.consumer.close()
        finally:
            await self.dispatcher.close()
            if self.dlq is not None:
                await loop.run_in_executor(None, self.dlq.close)
            await self._stop_http()
        if fatal is not None:
            raise fatal
        log.info("stopped")

    async def _start_http(self) -> None:
        if not self._serve_http:
            return
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


def build_worker(config: Config, **options: Any) -> Worker:
    """The worker for a loaded Config (raises ConfigError when it has no `kafka` section)."""
    return Worker(config, **options)
