"""The event pipeline shared by the worker, replay and redrive: how outcomes finish an event, what a
dead letter keeps, and the one error every command gives for a missing `kafka` section."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streamproc.cli import main
from streamproc.handoff import DeliveryResult, Failure, Origin, Redelivery
from streamproc.kafka.offsets import OffsetTracker
from streamproc.metrics import Metrics
from streamproc.pipeline import EventProcessor, Undecodable
from streamproc.router import Delivery
from streamproc.runs.compose import build_senders
from streamproc.senders import marking, senders_for

REPO = Path(__file__).resolve().parent.parent


@dataclass(eq=False)
class Lane:
    topic: str = "events"
    partition: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    released: bool = False
    tracker: OffsetTracker = field(default_factory=lambda: OffsetTracker("events", 0))


class Msg:
    def __init__(self, offset: int, value: bytes | None) -> None:
        self._o, self._v = offset, value

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes | None:
        return self._v

    def key(self) -> bytes:
        return b"user-1"

    def headers(self) -> list[tuple[str, bytes]]:
        return [("trace", b"t1")]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


class TwoDestinations:
    """Every event goes to `ok` (delivered) and `bad` (rejected by the partner)."""

    def route(self, event: Any, **_filters: Any) -> list[Delivery]:
        mid = event["messageId"]
        return [
            Delivery(f"{mid}:ok:s", "ok", "s", "track", []),
            Delivery(f"{mid}:bad:s", "bad", "s", "track", []),
        ]

    def routed(self, event: Any, **filters: Any) -> tuple[list[Delivery], tuple[tuple[str, str], ...]]:
        return self.route(event, **filters), ()


class Partner:
    """Stands in for the dispatcher: every delivery goes through `deliver` (in a task)."""

    def admits(self, destination: str) -> bool:
        return False

    async def deliver(self, d: Delivery) -> DeliveryResult:
        if d.destination == "ok":
            return DeliveryResult("delivered", attempts=1)
        return DeliveryResult(
            "dead_lettered", Failure("PermanentError", "HTTP 400", 400, "no", 2, 10.0, 11.0)
        )


class Noted:
    """Stands in for redrive's markers: records that a delivery was routed again."""

    def __init__(self, routed: list[bool]) -> None:
        self.routed = routed

    def note(self, partition: int, offset: int) -> None:
        self.routed.append(True)


class HeldDeadLetters:
    """Takes dead letters and acknowledges them only when told to."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.ack = asyncio.Event()

    async def send(self, letter: Any) -> None:
        self.sent.append(letter)
        await self.ack.wait()


def processor_with(
    dlq: HeldDeadLetters, completed: list[int], metrics: Metrics, undecodable: Undecodable = "dead-letter"
) -> EventProcessor:
    return EventProcessor(
        router=TwoDestinations(),  # type: ignore[arg-type]
        decode=orjson.loads,
        senders=senders_for(Partner(), ["ok", "bad"]),  # type: ignore[arg-type]
        dead_letters=dlq,  # type: ignore[arg-type]
        metrics=metrics,
        complete=lambda _lane, offset: completed.append(offset),
        halt=lambda exc, _reason: pytest.fail(f"halted: {exc!r}"),
        undecodable=undecodable,
    )


async def test_an_event_completes_only_once_its_dead_letter_is_acknowledged() -> None:
    dlq, completed, metrics = HeldDeadLetters(), [], Metrics()
    processor = processor_with(dlq, completed, metrics)
    lane = Lane()
    processor.process(Msg(41, b'{"messageId": "m1"}'), lane)
    for _ in range(10):
        await asyncio.sleep(0)
    assert (
        metrics.registry.get_sample_value(
            "streamproc_deliveries_total", {"destination": "ok", "action": "track", "outcome": "delivered"}
        )
        == 1
    )
    assert len(dlq.sent) == 1 and completed == []  # the dead letter is not acknowledged yet
    dlq.ack.set()
    await asyncio.gather(*lane.tasks)
    assert completed == [41]
    assert (
        metrics.registry.get_sample_value(
            "streamproc_dead_letters_total", {"destination": "bad", "error_type": "PermanentError"}
        )
        == 1
    )
    (letter,) = dlq.sent
    assert (letter.destination, letter.delivery_id, letter.offset, letter.value) == (
        "bad",
        "m1:bad:s",
        41,
        b'{"messageId": "m1"}',
    )
    assert (letter.attempts, letter.first_attempt_at, list(letter.original_headers)) == (
        2,
        10.0,
        [("trace", b"t1")],
    )


async def test_a_redelivered_dead_letter_keeps_its_origin_and_history() -> None:
    dlq, completed = HeldDeadLetters(), []
    dlq.ack.set()
    processor = processor_with(dlq, completed, Metrics())
    routed: list[bool] = []
    first = Origin("events", 3, 900, 1_600_000_000_000, [("trace", b"first")])
    again = Redelivery("bad", "s", first, attempts=5, first_attempt_at=1.0)
    processor._senders = marking(processor._senders, Noted(routed))  # type: ignore[arg-type]
    lane = Lane(topic="events.dlq")
    processor.process(Msg(7, b'{"messageId": "m2"}'), lane, again)
    await asyncio.gather(*lane.tasks)
    assert completed == [7] and routed == [True]
    (letter,) = dlq.sent  # only the subscription the dead letter named was delivered again
    assert (letter.topic, letter.partition, letter.offset, letter.timestamp_ms) == (
        "events",
        3,
        900,
        1_600_000_000_000,
    )
    assert list(letter.original_headers) == [("trace", b"first")]
    assert (letter.attempts, letter.first_attempt_at) == (7, 1.0)


async def test_a_tombstone_is_dead_lettered_or_only_counted_as_asked() -> None:
    dlq, completed = HeldDeadLetters(), []
    dlq.ack.set()
    processor = processor_with(dlq, completed, Metrics())
    lane = Lane()
    processor.process(Msg(1, None), lane)
    await asyncio.gather(*lane.tasks)
    assert completed == [1] and [d.error_type for d in dlq.sent] == ["DecodeError"]

    counted, metrics = [], Metrics()
    counting = processor_with(HeldDeadLetters(), counted, metrics, undecodable="count")
    counting.process(Msg(2, None), lane)
    assert counted == [2] and not lane.tasks  # finished at once, nothing written
    assert metrics.registry.get_sample_value("streamproc_events_undecodable_total", {"topic": "events"}) == 1


@pytest.mark.parametrize("command", [["run"], ["replay"], ["dlq", "redrive"], ["dlq", "inspect"]])
def test_every_kafka_command_gives_the_same_error_without_a_kafka_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    # Logging set up on this test's captured stream would outlive it.
    monkeypatch.setattr("streamproc.logging.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr("streamproc.runs.compose.configure_logging", lambda *a, **k: None)
    data = yaml.safe_load((REPO / "examples" / "config.yaml").read_text())
    del data["kafka"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main([*command, "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: kafka: `streamproc {' '.join(command)}` needs this section" in err


class ParkingPartner:
    """`ok` delivers; `bad` has spent its share and parks (writing its retry record at its turn)."""

    def admits(self, destination: str) -> bool:
        return False

    def batches(self, d: Delivery) -> bool:
        return False

    async def deliver(self, d: Delivery) -> Any:
        return DeliveryResult("delivered", attempts=1)

    async def send(self, d: Delivery, share: Any = None) -> Any:
        if d.destination == "ok":
            return DeliveryResult("delivered", attempts=1)
        return DeliveryResult(
            "parked",
            Failure("RetryableError", "HTTP 503", 503, None, 2, 10.0, 11.0),
            attempts=2,
            next_attempt_at=1_700_000_100.0,
            deadline_at=1_700_000_300.0,
        )


class HeldRetryRecords:
    max_record_bytes = 1_000_000

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[Any, str | None, int | None]] = []
        self.ack = asyncio.Event()
        self.fail = fail

    def fits(self, letter: Any) -> bool:
        return True

    async def send(self, letter: Any, *, topic: str | None = None, partition: int | None = None) -> int:
        from streamproc.errors import KafkaError

        self.sent.append((letter, topic, partition))
        await self.ack.wait()
        if self.fail:
            raise KafkaError("could not write a retry record")
        return len(self.sent) - 1


def parking_processor(
    records: HeldRetryRecords, completed: list[int], halted: list[BaseException]
) -> EventProcessor:
    from streamproc.parking import Parking

    partner = ParkingPartner()
    metrics = Metrics()
    parking = Parking(
        {"bad": "g.retry.bad"},
        frozenset(),
        dispatcher=partner,
        metrics=metrics,
        run_id="run-1",  # type: ignore[arg-type]
    )
    parking.producer = records  # type: ignore[assignment]
    return EventProcessor(
        router=TwoDestinations(),  # type: ignore[arg-type]
        decode=orjson.loads,
        senders={**senders_for(partner, ["ok"]), "bad": parking.sender()},  # type: ignore[arg-type]
        dead_letters=HeldDeadLetters(),  # type: ignore[arg-type]
        metrics=metrics,
        complete=lambda _lane, offset: completed.append(offset),
        halt=lambda exc, _reason: halted.append(exc),
    )


async def test_a_parked_delivery_finishes_its_event_once_its_retry_record_is_acknowledged() -> None:
    records, completed, halted = HeldRetryRecords(), [], []
    processor = parking_processor(records, completed, halted)
    processor.process(Msg(41, b'{"messageId": "m1"}'), Lane(partition=3))
    for _ in range(10):
        await asyncio.sleep(0)
    assert completed == [] and len(records.sent) == 1
    letter, topic, partition = records.sent[0]
    assert (topic, partition) == ("g.retry.bad", 3)  # the destination's topic, the input's partition
    headers = dict(letter.headers())
    assert headers["streamproc.retry.parks"] == b"1" and headers["streamproc.retry.parked_by"] == b"run-1"
    assert headers["streamproc.retry.next_attempt_at"] == b"2023-11-14T22:15:00.000Z"
    assert headers["streamproc.original.offset"] == b"41" and letter.value == b'{"messageId": "m1"}'
    records.ack.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert completed == [41] and halted == []


async def test_a_retry_record_that_cannot_be_written_halts_with_the_event_unfinished() -> None:
    records, completed, halted = HeldRetryRecords(fail=True), [], []
    processor = parking_processor(records, completed, halted)
    processor.process(Msg(7, b'{"messageId": "m2"}'), Lane())
    records.ack.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert completed == [] and len(halted) == 1
    assert "retry record" in str(halted[0])


class HeldClient:
    """An HTTP client whose answers (200) wait until `go` is set; counts what was sent."""

    name = "held"

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.sent: list[str] = []

    async def send(self, request: Any, timeout: float) -> tuple[int, dict[str, str], bytes]:
        self.sent.append(request.url)
        await self.go.wait()
        return 200, {}, b""

    async def close(self) -> None:
        pass


async def test_deliveries_waiting_for_a_slot_are_given_up_when_their_partition_is_released() -> None:
    from streamproc.destinations.base import Request
    from streamproc.dispatch import Bulkhead, BulkheadPolicy, Dispatcher

    class OneEach:
        def route(self, event: Any, **_filters: Any) -> list[Delivery]:
            mid = event["messageId"]
            request = Request("POST", f"http://p/{mid}", {}, b"{}")
            return [Delivery(f"{mid}:p:s", "p", "s", "track", [request])]

        def routed(self, event: Any, **filters: Any) -> tuple[list[Delivery], tuple[tuple[str, str], ...]]:
            return self.route(event, **filters), ()

    client, completed = HeldClient(), []
    bulkhead = Bulkhead(BulkheadPolicy("p", concurrency=1), client=client)
    processor = EventProcessor(
        router=OneEach(),  # type: ignore[arg-type]
        decode=orjson.loads,
        senders=build_senders(Dispatcher([bulkhead])),
        metrics=Metrics(),
        complete=lambda _lane, offset: completed.append(offset),
        halt=lambda exc, _reason: pytest.fail(f"halted: {exc!r}"),
    )
    lane = Lane()
    for offset in range(3):
        processor.process(Msg(offset, f'{{"messageId": "m{offset}"}}'.encode()), lane)
    for _ in range(10):
        await asyncio.sleep(0)
    assert client.sent == ["http://p/m0"] and len(lane.tasks) == 1  # the others wait without a task
    lane.released = True  # what a revoke does once its wait is over: its tasks are cancelled
    for task in list(lane.tasks):
        task.cancel()
    for _ in range(10):
        await asyncio.sleep(0)
    assert client.sent == ["http://p/m0"] and completed == [] and not lane.tasks
    assert bulkhead.in_flight == 0 and bulkhead.limiter.in_use == 0


class CrashingPartner(Partner):
    """`bad` meets a bug in the delivery code instead of an answer."""

    async def deliver(self, d: Delivery) -> DeliveryResult:
        if d.destination == "bad":
            raise RuntimeError("bug in a destination")
        return await super().deliver(d)


class CrashingDeadLetters(HeldDeadLetters):
    async def send(self, letter: Any) -> None:
        raise ValueError("bug in the dead letter")


async def test_a_delivery_that_meets_a_bug_is_dead_lettered_with_the_error() -> None:
    dlq, completed, halted = HeldDeadLetters(), [], []
    dlq.ack.set()
    processor = processor_with(dlq, completed, Metrics())
    processor._senders = senders_for(CrashingPartner(), ["ok", "bad"])  # type: ignore[arg-type]
    processor._halt = lambda exc, reason: halted.append((exc, reason))
    lane = Lane()
    processor.process(Msg(5, b'{"messageId": "m5"}'), lane)
    await asyncio.gather(*lane.tasks)
    assert halted == [] and completed == [5]
    (letter,) = dlq.sent
    assert letter.destination == "bad" and letter.error_type == "DeliveryError"
    assert "RuntimeError('bug in a destination')" in letter.error_message


async def test_a_bug_in_the_dead_letter_too_halts_naming_the_message() -> None:
    completed: list[int] = []
    halted: list[tuple[BaseException, str | None]] = []
    processor = processor_with(CrashingDeadLetters(), completed, Metrics())
    processor._senders = senders_for(CrashingPartner(), ["ok", "bad"])  # type: ignore[arg-type]
    processor._halt = lambda exc, reason: halted.append((exc, reason))
    lane = Lane()
    processor.process(Msg(6, b'{"messageId": "m6"}'), lane)
    await asyncio.gather(*lane.tasks)
    assert completed == []
    (_exc, reason), *_ = halted
    assert reason is not None and reason.startswith("events[0]@6: a delivery failed unexpectedly")
    assert "restart the worker" in reason


async def test_a_message_whose_processing_meets_a_bug_is_dead_lettered() -> None:
    class Exploding:
        def send(self, delivery: Delivery, job: Any) -> None:
            raise KeyError(delivery.destination)

    dlq, completed = HeldDeadLetters(), []
    dlq.ack.set()
    processor = processor_with(dlq, completed, Metrics())
    processor._senders = {"ok": Exploding(), "bad": Exploding()}  # type: ignore[dict-item]
    lane = Lane()
    processor.process(Msg(8, b'{"messageId": "m8"}'), lane)
    await asyncio.gather(*lane.tasks)
    assert completed == [8]
    (letter,) = dlq.sent
    assert letter.error_type == "RoutingError" and "KeyError" in letter.error_message
