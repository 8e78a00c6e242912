"""The per-event pipeline of worker, replay and redrive: decode → route → deliver → dead-letter → complete.

An `EventProcessor` takes one consumed message at a time (`process(msg, lane)`) and says when all
of its work is finished (`complete(lane, offset)`). Where messages come from and how finished
offsets are checkpointed belong to the caller: the worker's consumer loop commits its group
(`streamproc.runs.worker`), replay saves a state file and redrive commits its own group after writing its
markers (`streamproc.runs.replay`, `streamproc.runs.redrive`).

Outcomes: every delivery ends in one `DeliveryResult`, and `EventProcessor.settle` is the one
place that acts on it. It records the metrics (and the run's `Summary`, if any), dead-letters a
failed delivery, and finishes the event once its last delivery is settled. An outcome that needs
I/O before the event may finish (a dead letter waiting for the broker's acknowledgement) returns
that work as an awaitable; the others finish the event at once, with no await.

While an event has deliveries left, each one that finishes is recorded in its partition's
tracker (by `progress.delivery_key`), so a commit can say which are done; when a partition changes
hands, an event whose last owner had finished some of its deliveries sends only the others.

Messages that cannot be decoded (not JSON or Avro, not an object, a tombstone) are dead-lettered
with the reason (`undecodable="dead-letter"`, the worker and replay). Redrive passes
`undecodable="count"`: a record it cannot read is itself a dead letter and stays on the topic,
unmarked, so `dlq inspect` keeps showing it; writing it again would only add a copy. A routing bug
dead-letters the event too (`RoutingError`). A message whose schema the registry must give first
waits off the event loop, its lane's later messages behind it; a registry that cannot be reached
for the whole wait says nothing about the message, so it stops the run with the offset unfinished
and a reason naming the message. A dry run (no senders) shows each delivery and writes nothing,
dead letters included.

Sending: each delivery goes to the `Sender` of its destination (streamproc.handoff), chosen when
the run is built (streamproc.compose): direct, admitted, or parking. The sender starts the
delivery's task through its `Job` with the awaitable result; the task awaits it and settles it.
"Parked" (the worker's parking sender) is an outcome like the others, handed back once its retry
record is acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, cast

import structlog

from streamproc.config import Config, KafkaConfig
from streamproc.decoding import SchemaPending, SchemaRegistryUnavailable
from streamproc.errors import ConfigError, ConfigProblem, DecodeError, ErrorType, KafkaError, StreamprocError
from streamproc.gates import NO_SUBSCRIPTION, Withheld
from streamproc.handoff import DeliveryResult, Failure, Lane, Redelivery, Sender
from streamproc.kafka.dlq import DeadLetter, dead_letter
from streamproc.kafka.producer import AckedProducer
from streamproc.kafka.progress import delivery_key
from streamproc.metrics import Metrics
from streamproc.router import Delivery, Router
from streamproc.summary import Summary

__all__ = [
    "EventProcessor",
    "Undecodable",
    "kafka_section",
]

log = structlog.get_logger("streamproc.pipeline")


def kafka_section(config: Config, command: str) -> KafkaConfig:
    """The configuration's `kafka` section; a ConfigError naming the file and the key when it has none."""
    if config.kafka is None:
        raise ConfigError(
            ConfigProblem(
                config.source,
                "kafka",
                f"`streamproc {command}` needs this section (bootstrap_servers, topics, group_id, "
                "dead_letter_topic)",
            )
        )
    return config.kafka


# -- the processor -----------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Event:
    """One consumed message with deliveries still running: the `Job` its senders are given."""

    msg: Any
    lane: Lane
    offset: int
    remaining: int
    consumed_at: float
    redelivery: Redelivery | None
    processor: EventProcessor

    def letter(self, delivery: Delivery, failure: Failure) -> DeadLetter:
        return dead_letter(self.msg, failure, delivery, self.redelivery)

    def start(self, delivery: Delivery | None, sent: Awaitable[DeliveryResult]) -> asyncio.Task[None]:
        tasks = self.lane.tasks
        task = asyncio.get_running_loop().create_task(self.processor._run(self, delivery, sent))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task


class _Delivered:
    """The metric children a delivered delivery of one (destination, action) updates, looked up
    once (at its first delivery, so a destination that never delivers exports none of them)."""

    __slots__ = ("delivered", "e2e", "latency")

    def __init__(self, metrics: Metrics, destination: str, action: str) -> None:
        self.delivered = metrics.deliveries.labels(destination, action, "delivered")
        self.latency = metrics.delivery_latency.labels(destination)
        self.e2e = metrics.end_to_end_latency.labels(destination)


Undecodable = Literal["dead-letter", "count"]

Work = list[tuple[Delivery | None, Failure | None]]
"""The deliveries of one message, or one failure of the message itself (no delivery to make)."""


class EventProcessor:
    """Decodes, routes and delivers each message, dead-letters what fails, and completes its offset.

    `complete(lane, offset)` is called once every delivery of the message has settled (delivered,
    skipped, or dead-lettered and acknowledged). `halt(exc, reason)` is called instead when the
    run must stop with that offset unfinished (a dead letter that cannot be written, an
    unreachable schema registry, a bug); `reason` is a sentence for the health check, or None.
    """

    def __init__(
        self,
        *,
        router: Router,
        decode: Callable[[bytes], Mapping[str, Any]],
        senders: Mapping[str, Sender] | None,
        metrics: Metrics,
        complete: Callable[[Any, int], None],
        halt: Callable[[BaseException, str | None], None],
        dead_letters: AckedProducer | None = None,
        destinations: Collection[str] | None = None,
        subscriptions: Collection[tuple[str, str]] | None = None,
        summary: Summary | None = None,
        undecodable: Undecodable = "dead-letter",
        on_dry_run: Callable[[Any, Delivery], None] | None = None,
    ) -> None:
        self.router = router
        self.decode = decode
        self.dry_run = senders is None
        # Never used in a dry run; typed as present so the hot path needs no check.
        self._senders = cast(Mapping[str, Sender], senders)
        self.dead_letters = dead_letters
        """Set before the first message (the worker creates its producer once the topics are checked)."""
        self._complete = complete
        self._halt = halt
        self._route: Callable[[Mapping[str, Any]], tuple[list[Delivery], Withheld]] = (
            router.routed
            if destinations is None and subscriptions is None
            else partial(router.routed, destinations=destinations, subscriptions=subscriptions)
        )
        self._summary = summary
        self._dead_letter_undecodable = undecodable == "dead-letter"
        self._on_dry_run = on_dry_run
        # Their labels() are memoised and their updates plain additions (streamproc.metrics); the
        # three children a delivered delivery updates are looked up once per (destination, action).
        self._metrics = metrics
        self._m_delivered: dict[tuple[str, str], _Delivered] = {}
        self._m_matched = metrics.events_matched
        self._m_consumed = metrics.events_consumed
        self._m_undecodable = metrics.events_undecodable
        self._m_filtered = metrics.events_filtered
        self._m_outcome = metrics.deliveries
        self._m_dead = metrics.dead_letters
        self._m_finished_before = metrics.finished_before
        self._waiting: dict[Lane, deque[tuple[Any, Redelivery | None]]] = {}
        """Lanes whose messages wait for a schema from the registry, their messages in offset order."""

    # -- one message -------------------------------------------------------------------------------
    def process(self, msg: Any, lane: Lane, redelivery: Redelivery | None = None) -> None:
        """Start the work for one message (its deliveries run as tasks in `lane.tasks`, each made
        once the delivery has its turn and a concurrency slot).

        A message whose schema must be fetched first waits, and every later message of its lane
        waits behind it, so a lane's messages are always routed in offset order."""
        self._m_consumed.labels(lane.topic).inc()
        waiting = self._waiting.get(lane)
        if waiting is not None:
            waiting.append((msg, redelivery))
            return
        try:
            self._decoded(msg, lane, redelivery)
        except SchemaPending as pending:
            self._waiting[lane] = deque([(msg, redelivery)])
            task = asyncio.get_running_loop().create_task(self._wait_for_schemas(lane, pending))
            lane.tasks.add(task)
            task.add_done_callback(lane.tasks.discard)
        except SchemaRegistryUnavailable as exc:
            self._registry_down(msg, lane, exc)
        except Exception as exc:  # a bug on this message's path must not stop its partition
            self._crashed(msg, lane, redelivery, exc)

    def _registry_down(self, msg: Any, lane: Lane, exc: SchemaRegistryUnavailable) -> None:
        """Stop with `msg` unfinished: the registry's outage says nothing about the message."""
        log.error(
            "schema_registry_unavailable",
            topic=lane.topic,
            partition=lane.partition,
            offset=msg.offset(),
            error=str(exc),
        )
        where = f"{lane.topic}[{lane.partition}]@{msg.offset()}"
        halted = SchemaRegistryUnavailable(f"{where} waits for its schema: {exc}")
        self._halt(halted, str(halted))

    def _crashed(self, msg: Any, lane: Lane, redelivery: Redelivery | None, exc: Exception) -> None:
        offset = msg.offset()
        log.exception("process_crashed", topic=lane.topic, partition=lane.partition, offset=offset)
        self._reject(
            msg, lane, offset, Failure(ErrorType.ROUTING, f"{type(exc).__name__}: {exc}"), redelivery
        )

    async def _wait_for_schemas(self, lane: Lane, pending: SchemaPending) -> None:
        """Fetch the schema the lane's first waiting message needs, then take the waiting messages
        in order until the lane has none left (or one needs another schema: fetch that)."""
        queue = self._waiting[lane]
        try:
            while queue:
                msg, redelivery = queue[0]
                try:
                    await pending.fetch()
                except SchemaRegistryUnavailable as exc:
                    self._registry_down(msg, lane, exc)
                    return
                while queue and not lane.released:
                    msg, redelivery = queue[0]
                    try:
                        self._decoded(msg, lane, redelivery)
                    except SchemaPending as again:
                        pending = again
                        break
                    except SchemaRegistryUnavailable as exc:
                        self._registry_down(msg, lane, exc)
                        return
                    except Exception as exc:
                        self._crashed(msg, lane, redelivery, exc)
                    queue.popleft()
                if lane.released:
                    return
        finally:
            self._waiting.pop(lane, None)

    def _decoded(self, msg: Any, lane: Lane, redelivery: Redelivery | None) -> None:
        """Decode one message and start its work; raises SchemaPending (nothing started) when its
        schema must be fetched first."""
        topic = lane.topic
        offset = msg.offset()
        try:
            value = msg.value()
            if value is None:
                raise DecodeError("the message has no value (a tombstone), not a Segment event")
            event = self.decode(value)
        except DecodeError as exc:
            self._not_decoded(msg, lane, offset, exc, redelivery)
            return
        try:
            deliveries, withheld = (
                self._route(event) if redelivery is None else self._route_again(event, redelivery, lane)
            )
        except Exception as exc:  # a routing bug must not stop the partition: the event is parked
            log.error("route_failed", topic=topic, partition=lane.partition, offset=offset, error=repr(exc))
            failure = Failure(ErrorType.ROUTING, f"{type(exc).__name__}: {exc}")
            self._reject(msg, lane, offset, failure, redelivery)
            return
        summary = self._summary
        if withheld:
            # A withheld event is complete for that instance: counted by reason, never an error.
            filtered = self._m_filtered
            for dest, reason in withheld:
                filtered.labels(dest, reason).inc()
                if summary is not None and reason != NO_SUBSCRIPTION:
                    summary.withheld[reason] = summary.withheld.get(reason, 0) + 1
        if deliveries and (done := lane.tracker.finished_deliveries(offset)):
            deliveries = self._not_done(lane, deliveries, done)
            if not deliveries:
                self._complete(lane, offset)
                return
        if not deliveries:
            if summary is not None:
                summary.unmatched += 1
            self._complete(lane, offset)
            return
        matched = self._m_matched
        for d in deliveries:
            matched.labels(d.destination, d.action).inc()
            if summary is not None:
                summary.tally(d.destination).matched += 1
        if self.dry_run:
            self._show(msg, lane, offset, deliveries)
            return
        self._start(lane, msg, offset, [(d, None) for d in deliveries], redelivery)

    def _not_done(self, lane: Lane, deliveries: list[Delivery], done: set[int]) -> list[Delivery]:
        """The deliveries of an event that its partition's last owner did not finish."""
        left = [d for d in deliveries if delivery_key(d.destination, d.subscription) not in done]
        if len(left) < len(deliveries):
            self._m_finished_before.labels(lane.topic, "delivery").inc(len(deliveries) - len(left))
        return left

    def leave_out(self, msg: Any, lane: Lane) -> None:
        """Finish a message on purpose without processing it (redrive: a marker, a filtered record)."""
        self._complete(lane, msg.offset())

    def _route_again(
        self, event: Mapping[str, Any], again: Redelivery, lane: Lane
    ) -> tuple[list[Delivery], Withheld]:
        """The one delivery a dead letter or retry record names, through today's gates and trigger.
        A gate that withholds it now (a dead letter written before the gate existed, or a
        configuration changed since) sends nothing and writes no redrive marker, as when the
        trigger no longer matches: a later run with other settings may still send it."""
        wanted = (again.destination, again.subscription)
        deliveries, withheld = self.router.routed(event, subscriptions={wanted}, redelivery=True)
        found = [d for d in deliveries if (d.destination, d.subscription) == wanted]
        if not found:
            if not self.dry_run and again.destination in self._senders:
                self._senders[again.destination].unrouted(again, lane, event)
            gate = next((reason for _, reason in withheld if reason != NO_SUBSCRIPTION), None)
            log.warning(
                "redrive_withheld" if gate else "redrive_no_longer_matches",
                destination=again.destination,
                subscription=again.subscription,
                reason=gate,
                partition=again.origin.partition,
                offset=again.origin.offset,
            )
        return found, withheld

    def _not_decoded(
        self, msg: Any, lane: Lane, offset: int, exc: DecodeError, redelivery: Redelivery | None
    ) -> None:
        self._m_undecodable.labels(lane.topic).inc()
        if self._summary is not None:
            self._summary.undecodable += 1
        if self._dead_letter_undecodable:
            self._reject(msg, lane, offset, Failure(ErrorType.DECODE, str(exc)), redelivery)
            return
        log.warning("undecodable", topic=lane.topic, partition=lane.partition, offset=offset, error=str(exc))
        self._complete(lane, offset)

    def _reject(
        self, msg: Any, lane: Lane, offset: int, failure: Failure, redelivery: Redelivery | None
    ) -> None:
        """A message with no delivery to make: it is dead-lettered with the reason."""
        if self.dry_run:
            self._complete(lane, offset)
            return
        self._start(lane, msg, offset, [(None, failure)], redelivery)

    def _show(self, msg: Any, lane: Lane, offset: int, deliveries: list[Delivery]) -> None:
        """A dry run: show each delivery and count what it would do; nothing is sent or written."""
        summary = self._summary
        for d in deliveries:
            if self._on_dry_run is not None:
                self._on_dry_run(msg, d)
            if summary is None:
                continue
            tally = summary.tally(d.destination)
            if d.error is not None:
                tally.dead_lettered += 1
            elif d.skipped is not None or not d.requests:
                tally.skipped += 1
            else:
                tally.delivered += 1
        self._complete(lane, offset)

    def _start(self, lane: Lane, msg: Any, offset: int, work: Work, redelivery: Redelivery | None) -> None:
        ev = _Event(msg, lane, offset, len(work), time.monotonic(), redelivery, self)
        senders = self._senders
        for delivery, failure in work:
            # Each sender starts its deliveries' tasks (at once, or once they may go) in the order
            # it is given them, so per-key order is fixed in offset order.
            if delivery is not None:
                senders[delivery.destination].send(delivery, ev)
            else:
                ev.start(delivery, _failed(failure))

    async def _run(self, ev: _Event, delivery: Delivery | None, sent: Awaitable[DeliveryResult]) -> None:
        """The task of one delivery: await its result from the sender, then act on it (`settle`)."""
        try:
            follow_up = self.settle(ev, delivery, await sent)
            if follow_up is not None:
                await follow_up
        except asyncio.CancelledError:
            raise
        except KafkaError as exc:
            self._cannot_write(ev, exc)
        except Exception as exc:
            # A bug met by one delivery: halting would meet it again at every restart, so the
            # delivery is dead-lettered with the error (a redrive sends it once the bug is fixed).
            log.exception(
                "delivery_crashed",
                topic=ev.lane.topic,
                partition=ev.lane.partition,
                offset=ev.offset,
                destination=delivery.destination if delivery else None,
            )
            crash = Failure(ErrorType.DELIVERY, f"the delivery failed unexpectedly: {exc!r}")
            try:
                await self._dead_letter(ev, delivery, crash)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc2:
                self._cannot_write(ev, exc2)
            except Exception as exc2:
                where = f"{ev.lane.topic}[{ev.lane.partition}]@{ev.offset}"
                log.exception("dead_letter_crashed", topic=ev.lane.topic, partition=ev.lane.partition)
                halted = StreamprocError(
                    f"{where}: a delivery failed unexpectedly ({exc!r}) and so did its dead letter "
                    f"({exc2!r}); this is a bug: report it with this message, then restart the worker"
                )
                self._halt(halted, str(halted))

    def _cannot_write(self, ev: _Event, exc: KafkaError) -> None:
        """A dead letter or retry record of `ev` the broker did not take: stop, naming the message."""
        log.error(
            "dead_letter_failed",
            topic=ev.lane.topic,
            partition=ev.lane.partition,
            offset=ev.offset,
            error=str(exc),
        )
        self._halt(exc, f"dead letters or retry records cannot be written: {exc}")

    # -- one outcome ---------------------------------------------------------------------------------
    def settle(self, ev: _Event, delivery: Delivery | None, result: DeliveryResult) -> Awaitable[None] | None:
        """Act on the finished result of one delivery of `ev` (`delivery` None: the message itself
        failed): record it, dead-letter it if it failed, and finish the event after its last one.

        Returns the I/O still owed before the event may finish (a dead letter's write and
        acknowledgement), for the caller to await; None when the event's part is done already.
        A "parked" result has its retry record acknowledged already (it is written at the
        delivery's turn, so a key's parked deliveries keep their order): it finishes at once.
        """
        outcome = result.outcome
        if delivery is not None:
            dest = delivery.destination
            summary = self._summary
            if outcome == "delivered":
                m = self._m_delivered.get((dest, delivery.action))
                if m is None:
                    m = self._m_delivered[(dest, delivery.action)] = _Delivered(
                        self._metrics, dest, delivery.action
                    )
                m.delivered.inc()
                m.latency.observe(time.monotonic() - ev.consumed_at)
                kind, ts = ev.msg.timestamp()
                if kind and ts > 0:
                    m.e2e.observe(max(0.0, time.time() - ts / 1000))
                if summary is not None:
                    summary.tally(dest).delivered += 1
            else:
                self._m_outcome.labels(dest, delivery.action, outcome).inc()
                if outcome == "skipped" and summary is not None:
                    summary.tally(dest).skipped += 1
        if outcome == "dead_lettered":
            assert result.failure is not None
            return self._dead_letter(ev, delivery, result.failure)
        # Inline rather than `_finish`: this is once per delivery on the worker's hot path.
        ev.remaining -= 1
        if ev.remaining == 0:
            self._complete(ev.lane, ev.offset)
        elif delivery is not None:
            key = delivery_key(delivery.destination, delivery.subscription)
            ev.lane.tracker.finish_delivery(ev.offset, key)
        return None

    def _finish(self, ev: _Event, delivery: Delivery | None) -> None:
        """One delivery of `ev` is finished: the event is once it was the last; until then its
        partition's tracker keeps which ones are (for the commit, so a next owner skips them)."""
        ev.remaining -= 1
        if ev.remaining == 0:
            self._complete(ev.lane, ev.offset)
        elif delivery is not None:
            key = delivery_key(delivery.destination, delivery.subscription)
            ev.lane.tracker.finish_delivery(ev.offset, key)

    async def _dead_letter(self, ev: _Event, delivery: Delivery | None, failure: Failure) -> None:
        assert self.dead_letters is not None
        await self.dead_letters.send(dead_letter(ev.msg, failure, delivery, ev.redelivery))
        dest = delivery.destination if delivery else ""
        self._m_dead.labels(dest, failure.type).inc()
        if self._summary is not None and delivery is not None:
            self._summary.tally(dest).dead_lettered += 1
        log.info(
            "dead_lettered",
            destination=dest or None,
            error_type=failure.type,
            status=failure.status,
            topic=ev.lane.topic,
            partition=ev.lane.partition,
            offset=ev.offset,
        )
        self._finish(ev, delivery)


async def _failed(failure: Failure | None) -> DeliveryResult:
    """The result of a message that failed itself (no delivery to make): dead-lettered."""
    return DeliveryResult("dead_lettered", failure)
