"""The composition root of `streamproc run`: builds the worker from a Config and runs it until stopped.

The worker is a consumer-group member: its `ConsumerLoop` hands each message to the shared
`EventProcessor` (decode → route → deliver → dead-letter, `streamproc.pipeline`), which completes
the message's offset once every delivery has settled; the loop commits up to the contiguous
watermark.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from streamproc.config import Config
from streamproc.decoding import make_decoder
from streamproc.dispatch import Dispatcher
from streamproc.errors import KafkaError, StreamprocError
from streamproc.http import OpsServer, Readiness
from streamproc.kafka.admin import check_topics
from streamproc.kafka.consumer import ConsumerLoop, consumer_config
from streamproc.kafka.dlq import DeadLetterProducer, producer_config
from streamproc.metrics import Metrics
from streamproc.pipeline import EventProcessor, kafka_section
from streamproc.router import Router

__all__ = ["Worker", "build_worker"]

log = structlog.get_logger("streamproc.worker")


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
        self.kafka = kafka_section(config, "run")
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self.router = router if router is not None else Router(config, now=now)
        self._check_topics = check_topics_at_start
        self._serve_http = config.metrics.enabled if serve_http is None else serve_http
        self.dispatcher = Dispatcher.from_config(
            ((cfg, dest.classify) for dest, cfg in self.router.destinations.values()), self.metrics
        )
        self.dlq: DeadLetterProducer | None = dead_letter_producer
        self.processor = EventProcessor(
            router=self.router,
            decode=make_decoder(config.input),
            dispatcher=self.dispatcher,
            dead_letters=dead_letter_producer,
            metrics=self.metrics,
            complete=ConsumerLoop.complete,
            halt=self._halt,
        )
        limits = config.limits
        self.consumer = ConsumerLoop(
            consumer_config(self.kafka.bootstrap_servers, self.kafka.group_id, self.kafka.client),
            self.kafka.topics,
            self.processor.process,
            metrics=self.metrics,
            poll_batch_size=limits.poll_batch_size,
            max_in_flight=limits.max_in_flight_events,
            resume_in_flight=limits.resume_in_flight_events,
            commit_interval=limits.commit_interval,
            revoke_timeout=limits.revoke_timeout,
            on_poll=self._on_poll,
            on_assignment=self._on_assignment,
            on_drain=self.dispatcher.flush,
        )
        self._stop: asyncio.Event | None = None
        self._readiness: Readiness | None = None
        self._server: OpsServer | None = None

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
        self.processor.dead_letters = self.dlq
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
