"""The per-event pipeline of worker, replay and redrive: decode → route → deliver → dead-letter → complete.

An `EventProcessor` takes one consumed message at a time (`process(msg, lane)`) and says when all
of its work is finished (`complete(lane, offset)`). Where messages come from and how finished
offsets are checkpointed belong to the caller: the worker's consumer loop commits its group
(`streamproc.app`), replay saves a state file and redrive commits its own group after writing its
markers (`streamproc.kafka.replay`, `streamproc.kafka.redrive`).

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
and a reason naming the message. A dry run (no dispatcher)
shows each delivery and writes nothing, dead letters included.

With `parking` (the worker, when a destination sets a retry share), deliveries of destinations
that park go through `Parking.deliver`: "parked" is then an outcome like the others, settled once
its retry record is acknowledged; a retry record read back when due is processed as a
`Redelivery` whose `parked` says what it has spent (kafka/parking.py, kafka/retry.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import structlog

from streamproc.config import Config, KafkaConfig
from streamproc.decoding import SchemaPending, SchemaRegistryUnavailable
from streamproc.dispatch import Admission, Dispatcher
from streamproc.errors import ConfigError, ConfigProblem, DecodeError, ErrorType, KafkaError, StreamprocError
from streamproc.gates import NO_SUBSCRIPTION, Withheld
from streamproc.handoff import DeliveryResult, Failure, Origin, Redelivery
from streamproc.kafka.dlq import DeadLetter
from streamproc.kafka.headers import read_headers
from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.producer import DeadLetterProducer
from streamproc.kafka.progress import delivery_key
from streamproc.metrics import Metrics
from streamproc.router import Delivery, Router

if TYPE_CHECKING:
    from streamproc.kafka.parking import Parking

__all__ = [
    "EventProcessor",
    "Lane",
    "Summary",
    "Tally",
    "Undecodable",
    "dead_letter",
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


class Lane(Protocol):
    """Where a message was read: its topic and partition, the set holding the tasks of its
    deliveries (drained on revoke and at the end), and its offsets' tracker, which also keeps the
    deliveries of an unfinished event that are finished (and those its partition's last owner
    finished: they are not sent again). The consumer loop's `Partition` is one.

    A delivery waiting for its turn or a concurrency slot has no task yet (`dispatch.Admission`);
    once `released` is true, such a delivery is given up instead of started."""

    topic: str
    partition: int
    tasks: set[asyncio.Task[Any]]
    tracker: OffsetTracker

    @property
    def released(self) -> bool: ...


# -- dead letters ------------------------------------------------------------------------------------


def dead_letter(
    msg: Any, failure: Failure, delivery: Delivery | None = None, redelivery: Redelivery | None = None
) -> DeadLetter:
    """The dead letter of a failed delivery of `msg`, or of `msg` itself when it had no delivery
    (undecodable, routing failed): the key and value unchanged, where the message came from, and
    why it failed. A dead letter redelivered (`redelivery`) keeps its first origin and first
    attempt, with the attempts added up."""
    if redelivery is None:
        kind, ts = msg.timestamp()
        headers, unreadable = read_headers(msg)
        origin = Origin(
            msg.topic(), msg.partition(), msg.offset(), ts if kind and ts >= 0 else None, headers, unreadable
        )
        attempts, first = failure.attempts, failure.first_attempt_at
    else:
        origin = redelivery.origin
        attempts = failure.attempts + redelivery.attempts
        first = redelivery.first_attempt_at or failure.first_attempt_at
    return DeadLetter(
        topic=origin.topic,
        partition=origin.partition,
        offset=origin.offset,
        timestamp_ms=origin.timestamp_ms,
        key=msg.key(),
        value=msg.value(),
        original_headers=origin.headers,
        unreadable_headers=origin.unreadable_headers,
        error_type=failure.type,
        error_message=failure.message,
        delivery_id=delivery.delivery_id if delivery else None,
        destination=delivery.destination if delivery else None,
        action=delivery.action if delivery else None,
        subscription=delivery.subscription if delivery else None,
        http_status=failure.status,
        response_body=failure.response_body,
        attempts=attempts,
        first_attempt_at=first,
        last_attempt_at=failure.last_attempt_at,
    )


def _letter_of(ev: _Event, delivery: Delivery, failure: Failure) -> DeadLetter:
    return dead_letter(ev.msg, failure, delivery, ev.redelivery)


# -- summary of a run --------------------------------------------------------------------------------


@dataclass
class Tally:
    """What happened to the deliveries of one destination."""

    matched: int = 0
    delivered: int = 0
    skipped: int = 0
    dead_lettered: int = 0


@dataclass
class Summary:
    """Counts for the final report of a replay or redrive."""

    read: int = 0
    undecodable: int = 0
    unmatched: int = 0
    filtered: int = 0
    withheld: dict[str, int] = field(default_factory=dict)
    """(event, instance) pairs a gate withheld, by reason (consent, integrations, filter_*)."""
    not_redrivable: int = 0
    truncated: int = 0
    """Dead letters whose value was cut to fit the dead-letter topic (redrive cannot send them)."""
    already_redriven: int = 0
    markers: int = 0
    destinations: dict[str, Tally] = field(default_factory=dict)

    def tally(self, destination: str) -> Tally:
        t = self.destinations.get(destination)
        if t is None:
            t = self.destinations[destination] = Tally()
        return t

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "undecodable": self.undecodable,
            "unmatched": self.unmatched,
            "filtered": self.filtered,
            "withheld": dict(sorted(self.withheld.items())),
            "not_redrivable": self.not_redrivable,
            "truncated": self.truncated,
            "already_redriven": self.already_redriven,
            "markers": self.markers,
            "destinations": {k: vars(v) for k, v in sorted(self.destinations.items())},
        }

    def render(self, dry_run: bool = False) -> str:
        first = f"read {self.read} messages, {self.undecodable} undecodable, {self.unmatched} matched nothing"
        if self.filtered:
            first += f", {self.filtered} left out by the filters"
        if self.withheld:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.withheld.items()))
            first += (
                f", withheld from destinations by their gates {sum(self.withheld.values())} times ({reasons})"
            )
        if self.markers:
            first += f" ({self.markers} of them redrive markers)"
        if self.already_redriven:
            first += f", {self.already_redriven} redriven before"
        if self.not_redrivable:
            first += f", {self.not_redrivable} without a delivery to redrive"
        lines = [first]
        if self.truncated:
            lines.append(
                f"{self.truncated} dead letters were cut to fit the dead-letter topic and are not sent: "
                "replay each from the original topic/partition/offset its headers name (streamproc "
                "replay --topic T --from P:O --to P:O+1 --subscription D/S) while that topic holds it"
            )
        if not self.destinations:
            lines.append("no deliveries")
            return "\n".join(lines)
        head = (
            "destination",
            "matched",
            "would send" if dry_run else "delivered",
            "skipped",
            "dead-lettered",
        )
        rows = [head] + [
            (d, str(t.matched), str(t.delivered), str(t.skipped), str(t.dead_lettered))
            for d, t in sorted(self.destinations.items())
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        for r in rows:
            lines.append(
                "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
            )
        return "\n".join(lines)


# -- the processor -----------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Event:
    """One consumed message with deliveries still running."""

    msg: Any
    lane: Lane
    offset: int
    remaining: int
    consumed_at: float
    redelivery: Redelivery | None


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
        dispatcher: Dispatcher | None,
        metrics: Metrics,
        complete: Callable[[Any, int], None],
        halt: Callable[[BaseException, str | None], None],
        dead_letters: DeadLetterProducer | None = None,
        destinations: Collection[str] | None = None,
        subscriptions: Collection[tuple[str, str]] | None = None,
        summary: Summary | None = None,
        undecodable: Undecodable = "dead-letter",
        on_dry_run: Callable[[Any, Delivery], None] | None = None,
        parking: Parking | None = None,
    ) -> None:
        self.router = router
        self.parking = parking
        self.decode = decode
        self.dry_run = dispatcher is None
        # Never used in a dry run; typed as present so the hot path needs no check.
        self._dispatcher = cast(Dispatcher, dispatcher)
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
                self._route(event) if redelivery is None else self._route_again(event, redelivery)
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

    def _route_again(self, event: Mapping[str, Any], again: Redelivery) -> tuple[list[Delivery], Withheld]:
        """The one delivery a dead letter or retry record names, through today's gates and trigger.
        A gate that withholds it now (a dead letter written before the gate existed, or a
        configuration changed since) sends nothing and writes no redrive marker, as when the
        trigger no longer matches: a later run with other settings may still send it."""
        wanted = (again.destination, again.subscription)
        deliveries, withheld = self.router.routed(event, subscriptions={wanted}, redelivery=True)
        found = [d for d in deliveries if (d.destination, d.subscription) == wanted]
        if not found and again.parked is not None and self.parking is not None:
            self.parking.unmatched(again, again.origin.partition, event)
        if not found:
            gate = next((reason for _, reason in withheld if reason != NO_SUBSCRIPTION), None)
            log.warning(
                "redrive_withheld" if gate else "redrive_no_longer_matches",
                destination=again.destination,
                subscription=again.subscription,
                reason=gate,
                partition=again.origin.partition,
                offset=again.origin.offset,
            )
        elif again.on_routed is not None:
            again.on_routed()
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
        ev = _Event(msg, lane, offset, len(work), time.monotonic(), redelivery)
        loop = asyncio.get_running_loop()
        tasks = lane.tasks
        dispatcher = self._dispatcher
        parking = self.parking
        for delivery, failure in work:
            # Admissions take their turn now and tasks at their start, both in creation order, so
            # per-key order is fixed in offset order (a destination's deliveries all go one way).
            if (
                delivery is not None
                and dispatcher.admits(delivery.destination)
                and (parking is None or not parking.parks(delivery.destination))
                and dispatcher.admit(delivery, partial(self._admitted, ev, delivery))
            ):
                continue
            task = loop.create_task(self._run(ev, delivery, failure))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def _admitted(self, ev: _Event, delivery: Delivery, admission: Admission) -> bool:
        """Start an admitted delivery's task (False: its partition was released, it is given up)."""
        lane = ev.lane
        if lane.released:
            return False
        task = asyncio.get_running_loop().create_task(self._run(ev, delivery, None, admission))
        lane.tasks.add(task)
        task.add_done_callback(lane.tasks.discard)
        task.add_done_callback(admission.finish)
        return True

    async def _run(
        self,
        ev: _Event,
        delivery: Delivery | None,
        failure: Failure | None,
        admission: Admission | None = None,
    ) -> None:
        try:
            parking = self.parking
            if admission is not None:
                result = await admission.send()
            elif delivery is None:
                result = DeliveryResult("dead_lettered", failure)
            elif parking is not None and parking.parks(delivery.destination):
                letter = partial(_letter_of, ev, delivery)
                result = await parking.deliver(ev.lane.partition, delivery, ev.redelivery, letter)
            else:
                result = await self._dispatcher.deliver(delivery)
            follow_up = self.settle(ev, delivery, result)
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
        if delivery is not None and ev.redelivery is not None and ev.redelivery.parked is not None:
            assert self.parking is not None
            self.parking.settled(ev.lane.partition, delivery, ev.redelivery, outcome)
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
