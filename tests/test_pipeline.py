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
from streamproc.dispatch import DeliveryResult, Failure
from streamproc.metrics import Metrics
from streamproc.pipeline import EventProcessor, Origin, Redelivery, Undecodable
from streamproc.router import Delivery

REPO = Path(__file__).resolve().parent.parent


@dataclass(eq=False)
class Lane:
    topic: str = "events"
    partition: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


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


class Partner:
    async def deliver(self, d: Delivery) -> DeliveryResult:
        if d.destination == "ok":
            return DeliveryResult("delivered", attempts=1)
        return DeliveryResult(
            "dead_lettered", Failure("PermanentError", "HTTP 400", 400, "no", 2, 10.0, 11.0)
        )


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
        dispatcher=Partner(),  # type: ignore[arg-type]
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
    assert metrics.deliveries.labels("ok", "track", "delivered")._value.get() == 1
    assert len(dlq.sent) == 1 and completed == []  # the dead letter is not acknowledged yet
    dlq.ack.set()
    await asyncio.gather(*lane.tasks)
    assert completed == [41]
    assert metrics.dead_letters.labels("bad", "PermanentError")._value.get() == 1
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
    again = Redelivery(
        "bad", "s", first, attempts=5, first_attempt_at=1.0, on_routed=lambda: routed.append(True)
    )
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
    assert metrics.events_undecodable.labels("events")._value.get() == 1


@pytest.mark.parametrize("command", [["run"], ["replay"], ["dlq", "redrive"], ["dlq", "inspect"]])
def test_every_kafka_command_gives_the_same_error_without_a_kafka_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    # Logging set up on this test's captured stream would outlive it.
    monkeypatch.setattr("streamproc.logging.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr("streamproc.commands.replay.configure_logging", lambda *a, **k: None)
    data = yaml.safe_load((REPO / "examples" / "config.yaml").read_text())
    del data["kafka"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main([*command, "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: kafka: `streamproc {' '.join(command)}` needs this section" in err
