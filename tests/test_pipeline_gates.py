"""The pipeline and the gates: what each (event, instance) a gate withholds counts, in run, replay and
redrive alike, and what becomes of a dead letter the gates now withhold."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from test_pipeline import Lane, Msg, Noted

from streamproc.config import parse_config
from streamproc.handoff import DeliveryResult, Job, Origin, Redelivery
from streamproc.metrics import Metrics
from streamproc.pipeline import EventProcessor
from streamproc.router import Router
from streamproc.senders import marking
from streamproc.summary import Summary

GUID = "abc8fb18-7559-4324-9921-a4b5015b4a1c"


def seg(id: str, **extra: Any) -> dict[str, Any]:
    return {"id": id, "type": "seg", "settings": {"apiKey": GUID}, "presets": ["Identify"], **extra}


class Delivered:
    """A sender whose every delivery is delivered at once."""

    def send(self, delivery: Any, job: Job) -> None:
        job.start(delivery, _delivered())

    def unrouted(self, redelivery: Redelivery, lane: Any, event: Any) -> None:
        pass


async def _delivered() -> DeliveryResult:
    return DeliveryResult("delivered", attempts=1)


def _halt(exc: BaseException, _reason: str | None) -> None:
    raise exc


def processor(summary: Summary | None = None, **kw: Any) -> tuple[EventProcessor, Metrics, list[int]]:
    config = parse_config(
        {"destinations": [seg("open"), seg("consented", consent_categories=["C0004"])]}, "t.yaml", {}
    )
    metrics, completed = Metrics(), []
    proc = EventProcessor(
        router=Router(config),
        decode=orjson.loads,
        senders=kw.pop("senders", None),  # None: a dry run, routing and counting only
        metrics=metrics,
        complete=lambda _lane, offset: completed.append(offset),
        halt=_halt,
        summary=summary,
        **kw,
    )
    return proc, metrics, completed


def filtered(metrics: Metrics) -> dict[tuple[str, str], float]:
    family = metrics.events_filtered
    return {key: child.value for key, child in family._children.items()}  # type: ignore[attr-defined]


def identify(mid: str, **extra: Any) -> bytes:
    return orjson.dumps({"type": "identify", "messageId": mid, "userId": "u1", **extra})


def test_every_withheld_instance_counts_once_by_reason_and_the_event_completes() -> None:
    summary = Summary()
    proc, metrics, completed = processor(summary)
    declined = {"context": {"consent": {"categoryPreferences": {"C0004": False}}}}
    messages = [
        identify("m0"),
        identify("m1", **declined),
        identify("m2", integrations={"All": False}),
        orjson.dumps({"type": "track", "event": "X", "messageId": "m3"}),
    ]
    for offset, value in enumerate(messages):
        proc.process(Msg(offset, value), Lane())
    assert completed == [0, 1, 2, 3]
    assert filtered(metrics) == {
        ("consented", "consent"): 1,
        ("open", "integrations"): 1,
        ("consented", "integrations"): 1,
        ("open", "no_subscription"): 1,
        ("consented", "no_subscription"): 1,
    }
    assert summary.withheld == {"consent": 1, "integrations": 2}
    assert summary.unmatched == 2  # m2 and m3 reached no instance
    assert "withheld from destinations by their gates 3 times (consent 1, integrations 2)" in summary.render()
    assert summary.to_json()["withheld"] == {"consent": 1, "integrations": 2}


async def test_a_dead_letter_the_gates_now_withhold_is_not_sent_and_not_marked() -> None:
    """A dead letter written before the gate existed is routed through today's gates: withheld, it is
    counted, nothing is sent and no marker is written (another run with other settings may send it)."""
    marked: list[bool] = []
    senders = marking({"open": Delivered(), "consented": Delivered()}, Noted(marked))  # type: ignore[dict-item]
    proc, metrics, completed = processor(senders=senders)
    again = Redelivery("consented", "Identify", Origin("events", 0, 7, None, []))
    declined = {"context": {"consent": {"categoryPreferences": {"C0004": False}}}}
    lane = Lane()
    proc.process(Msg(0, identify("m0", **declined)), lane, again)
    await asyncio.gather(*lane.tasks)
    assert completed == [0] and marked == []
    assert filtered(metrics) == {("consented", "consent"): 1}
    proc.process(Msg(1, identify("m1")), lane, again)
    await asyncio.gather(*lane.tasks)
    assert completed == [0, 1] and marked == [True]
