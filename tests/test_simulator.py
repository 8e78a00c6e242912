"""The partner simulator answers like the partners, records what it receives and injects faults on command."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from kafka_helpers import async_wait_until
from yarl import URL

from streamproc.devtools.simulator import Latency, Outcome, PartnerSimulator, SimulatorClient

TIKTOK = "/open_api/v1.3/event/track/"
SEG_TRACK = "/segment/abc8fb18-7559-4324-9921-a4b5015b4a1c/track"


@pytest.fixture
async def sim() -> AsyncIterator[PartnerSimulator]:
    simulator = PartnerSimulator(seed=7)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: bytes = b"{}", **kw: object) -> tuple[int, bytes]:
    async with http.post(url, data=body, headers={"content-type": "application/json"}, **kw) as r:  # type: ignore[arg-type]
        return r.status, await r.read()


# -- wire formats --------------------------------------------------------------------------------------


async def test_stackadapt_pixel_answers_200_and_keeps_the_raw_query(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    query = "segment_ss=1&event_type=&title=Shoes+%26+more&args=%7B%22a%22%3A1%7D&uid=px~1*"
    # encoded=True: yarl would otherwise re-normalise the query (%3A -> ":") before sending it.
    async with http.get(
        URL(f"{sim.base_url}/saq_pxl?{query}", encoded=True),
        headers={"User-Agent": "Mozilla/5.0", "X-Forwarded-For": "203.0.113.9"},
    ) as r:
        assert r.status == 200
        assert r.content_type == "image/gif"
        assert len(await r.read()) < 100

    [req] = sim.requests
    assert req.partner == "stackadapt"
    assert (req.method, req.path, req.query) == ("GET", "/saq_pxl", query)
    assert req.url == f"{sim.base_url}/saq_pxl?{query}"
    assert req.headers["user-agent"] == "Mozilla/5.0"
    assert req.headers["x-forwarded-for"] == "203.0.113.9"
    assert req.body == b""
    assert (req.status, req.outcome, req.attempt) == (200, "ok", 1)
    assert req.received_at > 0


async def test_tiktok_answers_its_json_envelope_and_records_the_exact_body(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    body = orjson.dumps(
        {"event_source": "offline", "event_source_id": "123", "partner_name": "Segment", "data": [{}]}
    )
    first = await post(http, f"{sim.base_url}{TIKTOK}", body)
    second = await post(http, f"{sim.base_url}{TIKTOK}", body + b" ")

    for status, raw in (first, second):
        envelope = orjson.loads(raw)
        assert status == 200
        assert envelope["code"] == 0 and envelope["message"] == "OK" and envelope["data"] == {}
        assert isinstance(envelope["request_id"], str) and envelope["request_id"]
    assert orjson.loads(first[1])["request_id"] != orjson.loads(second[1])["request_id"]
    assert sim.requests[0].body == body
    assert sim.requests[0].json()["event_source_id"] == "123"
    assert [r.partner for r in sim.requests] == ["tiktok", "tiktok"]


@pytest.mark.parametrize("operation", ["identify", "track", "page", "alias"])
async def test_seg_accepts_each_operation(
    sim: PartnerSimulator, http: aiohttp.ClientSession, operation: str
) -> None:
    status, _ = await post(http, f"{sim.base_url}/segment/abc8fb18-7559-4324-9921-a4b5015b4a1c/{operation}")
    assert 200 <= status < 300
    assert sim.requests[0].partner == "seg"
    assert sim.requests[0].path.endswith(f"/{operation}")


async def test_unknown_seg_operation_and_unknown_paths_are_404_and_recorded(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    assert (await post(http, f"{sim.base_url}/segment/abc/screen"))[0] == 404
    assert (await post(http, f"{sim.base_url}/v2/somewhere"))[0] == 404
    assert [(r.partner, r.status) for r in sim.requests] == [("seg", 404), ("unknown", 404)]


# -- recording -----------------------------------------------------------------------------------------


async def test_identical_requests_count_as_attempts_of_one_delivery(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        await post(http, f"{sim.base_url}{SEG_TRACK}", b'{"MessageId":"m1"}')
    await post(http, f"{sim.base_url}{SEG_TRACK}", b'{"MessageId":"m2"}')
    assert [r.attempt for r in sim.requests] == [1, 2, 3, 1]

    sim.clear()
    await post(http, f"{sim.base_url}{SEG_TRACK}", b'{"MessageId":"m1"}')
    assert [r.attempt for r in sim.requests] == [1]


# -- faults --------------------------------------------------------------------------------------------


async def test_status_sequence_then_normal_answers_with_retry_after(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.fault("seg", sequence=[503, 503, 503], retry_after=2)
    answers = []
    for _ in range(5):
        async with http.post(f"{sim.base_url}{SEG_TRACK}", data=b"{}") as r:
            answers.append((r.status, r.headers.get("Retry-After")))
    assert answers == [(503, "2"), (503, "2"), (503, "2"), (204, None), (204, None)]
    assert [r.attempt for r in sim.requests] == [1, 2, 3, 4, 5]
    assert sim.stats()["partners"]["seg"] == {"503": 3, "204": 2}


async def test_capacity_answers_429_to_requests_beyond_it_while_it_is_busy(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    # Each served request is held for its latency (long enough for all ten to arrive together).
    sim.fault("seg", capacity=4, latency=1000, retry_after=1)
    answers = await asyncio.gather(*(post(http, f"{sim.base_url}{SEG_TRACK}") for _ in range(10)))
    assert sorted(status for status, _ in answers) == [204] * 4 + [429] * 6
    assert sim.stats()["partners"]["seg"] == {"204": 4, "429": 6}
    assert (await post(http, f"{sim.base_url}{SEG_TRACK}"))[0] == 204  # free again once they are done
    assert sim.faults()["seg"]["capacity"] == 4


async def test_a_fraction_of_requests_is_answered_with_each_error_status(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.fault("seg", errors={503: 0.1, 429: 0.05}, retry_after=1)
    answers = [status for status, _ in [await post(http, f"{sim.base_url}{SEG_TRACK}") for _ in range(2000)]]
    # 200 and 100 expected; far outside these bounds the draw is not what was asked for.
    assert 140 < answers.count(503) < 260 and 60 < answers.count(429) < 140
    assert answers.count(204) == 2000 - answers.count(503) - answers.count(429)
    assert sim.faults()["seg"]["errors"] == {"503": 0.1, "429": 0.05}
    async with http.post(f"{sim.base_url}/_sim/faults", json={"partner": "seg", "errors": {"503": 1.5}}) as r:
        assert r.status == 400


async def test_faults_are_per_partner(sim: PartnerSimulator, http: aiohttp.ClientSession) -> None:
    sim.fault("tiktok-offline-conversions", down=True)
    assert (await post(http, f"{sim.base_url}{TIKTOK}"))[0] == 503
    assert (await post(http, f"{sim.base_url}{SEG_TRACK}"))[0] == 204
    async with http.get(f"{sim.base_url}/saq_pxl?uid=1") as r:
        assert r.status == 200


async def test_tiktok_errors_use_its_envelope_with_a_non_zero_code(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.fault(
        "tiktok",
        sequence=[429, 500, {"status": 200, "code": 40002, "message": "Invalid parameters"}],
        retry_after="Wed, 21 Oct 2026 07:28:00 GMT",
    )
    results = []
    for _ in range(3):
        async with http.post(f"{sim.base_url}{TIKTOK}", data=b"{}") as r:
            results.append((r.status, r.headers.get("Retry-After"), orjson.loads(await r.read())))

    (s1, ra1, e1), (s2, _, e2), (s3, ra3, e3) = results
    assert (s1, e1["code"]) == (429, 40100) and ra1 == "Wed, 21 Oct 2026 07:28:00 GMT"
    assert s2 == 500 and e2["code"] == 50000
    assert (s3, e3["code"], e3["message"], ra3) == (200, 40002, "Invalid parameters", None)
    for envelope in (e1, e2, e3):
        assert set(envelope) == {"code", "message", "request_id", "data"}


async def test_timeout_holds_the_request_past_the_client_timeout(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.fault("seg", sequence=["timeout"])
    with pytest.raises(asyncio.TimeoutError):
        await post(http, f"{sim.base_url}{SEG_TRACK}", timeout=aiohttp.ClientTimeout(total=0.3))
    assert (await post(http, f"{sim.base_url}{SEG_TRACK}"))[0] == 204
    assert [(r.outcome, r.status) for r in sim.requests] == [("timeout", None), ("ok", 204)]


async def test_stop_releases_requests_held_by_a_timeout(http: aiohttp.ClientSession) -> None:
    simulator = PartnerSimulator()
    base = await simulator.start()
    simulator.fault("seg", down="timeout", hang=3600)
    pending = asyncio.create_task(post(http, f"{base}{SEG_TRACK}"))
    while not simulator.requests:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(simulator.stop(), 10)
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(pending, 10)


async def test_reset_closes_the_connection_without_an_answer(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.fault("seg", sequence=["reset"])
    with pytest.raises(aiohttp.ClientError):
        await post(http, f"{sim.base_url}{SEG_TRACK}")
    assert (await post(http, f"{sim.base_url}{SEG_TRACK}"))[0] == 204
    assert [(r.outcome, r.attempt) for r in sim.requests] == [("reset", 1), ("ok", 2)]
    assert sim.stats()["partners"]["seg"] == {"reset": 1, "204": 1}


async def test_aiohttp_resends_a_reset_get_once_so_the_pixel_sees_two_attempts(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    # aiohttp's client silently repeats an idempotent request once after a reset; a StackAdapt
    # delivery therefore reaches the partner twice although the caller made one attempt.
    sim.fault("stackadapt", sequence=["reset"])
    async with http.get(f"{sim.base_url}/saq_pxl?uid=1") as r:
        assert r.status == 200
    assert [(r.outcome, r.attempt) for r in sim.requests] == [("reset", 1), ("ok", 2)]

    sim.fault("stackadapt", sequence=["reset", "reset"])
    with pytest.raises(aiohttp.ClientError):
        async with http.get(f"{sim.base_url}/saq_pxl?uid=2") as r:
            await r.read()


async def test_down_mode_fails_everything_until_cleared(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.fault("*", down=502)
    statuses = [(await post(http, f"{sim.base_url}{SEG_TRACK}"))[0] for _ in range(4)]
    assert statuses == [502] * 4
    assert (await post(http, f"{sim.base_url}{TIKTOK}"))[0] == 502
    sim.clear_faults()
    assert (await post(http, f"{sim.base_url}{SEG_TRACK}"))[0] == 204


async def test_latency_longer_than_the_client_timeout_times_the_client_out(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.fault("seg", latency=Latency.fixed(2000))
    with pytest.raises(asyncio.TimeoutError):
        await post(http, f"{sim.base_url}{SEG_TRACK}", timeout=aiohttp.ClientTimeout(total=0.2))
    await async_wait_until(lambda: sim.requests[0].outcome == "client_gone", timeout=5)
    assert sim.requests[0].status is None
    assert sim.stats()["partners"]["seg"] == {"client_gone": 1}


def test_latency_distributions_sample_within_their_bounds() -> None:
    rng = random.Random(1)
    assert Latency.parse(25).sample(rng) == 0.025
    uniform = Latency.parse({"kind": "uniform", "min_ms": 10, "max_ms": 20})
    samples = [uniform.sample(rng) for _ in range(500)]
    assert all(0.010 <= s <= 0.020 for s in samples) and len(set(samples)) > 100
    capped = Latency.parse({"kind": "exponential", "mean_ms": 50, "max_ms": 80})
    samples = [capped.sample(rng) for _ in range(2000)]
    assert all(0 <= s <= 0.080 for s in samples)
    assert 0.030 < sum(samples) / len(samples) < 0.050  # mean 50 ms pulled down by the cap
    with pytest.raises(ValueError):
        Latency.parse({"kind": "normal", "ms": 1})


def test_outcomes_parse_from_their_short_forms() -> None:
    assert Outcome.parse(503) == Outcome(kind="status", status=503)
    assert Outcome.parse("200") == Outcome(kind="ok", status=200)
    assert Outcome.parse("reset").kind == "reset"
    assert Outcome.parse({"status": 200, "code": 40100}).code == 40100
    for bad in ("explode", 99, True, {"status": 500, "colour": "red"}):
        with pytest.raises(ValueError):
            Outcome.parse(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PartnerSimulator().fault("linkedin", down=True)


# -- control API ---------------------------------------------------------------------------------------


async def test_control_api_drives_faults_and_reads_requests(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    api = f"{sim.base_url}/_sim"
    async with http.post(
        f"{api}/faults",
        json=[
            {"partner": "seg", "sequence": [503, "ok"], "retry_after": 1},
            {"partner": "tiktok", "latency": {"kind": "uniform", "min_ms": 0, "max_ms": 1}},
        ],
    ) as r:
        assert r.status == 200
        faults = await r.json()
    assert faults["seg"]["sequence"][0] == {"kind": "status", "status": 503}
    assert faults["tiktok"]["latency"] == {"kind": "uniform", "min_ms": 0.0, "max_ms": 1.0}

    assert (await post(http, f"{sim.base_url}{SEG_TRACK}", b'{"n":1}'))[0] == 503
    assert (await post(http, f"{sim.base_url}{SEG_TRACK}", b'{"n":1}'))[0] == 204
    assert (await post(http, f"{sim.base_url}{TIKTOK}", b"\xff\xfe"))[0] == 200

    async with http.get(f"{api}/requests") as r:
        listed = await r.json()
    assert [(x["partner"], x["status"], x["attempt"]) for x in listed] == [
        ("seg", 503, 1),
        ("seg", 204, 2),
        ("tiktok", 200, 1),
    ]
    assert listed[0]["body"] == '{"n":1}' and listed[0]["url"] == f"{sim.base_url}{SEG_TRACK}"
    assert listed[0]["headers"]["content-type"] == "application/json"
    assert listed[2]["body"] is None and listed[2]["body_base64"] == "//4="

    async with http.get(f"{api}/requests", params={"partner": "tiktok"}) as r:
        assert [x["partner"] for x in await r.json()] == ["tiktok"]
    async with http.get(f"{api}/requests", params={"since": str(listed[0]["seq"])}) as r:
        assert len(await r.json()) == 2

    async with http.get(f"{api}/stats") as r:
        assert await r.json() == {"total": 3, "partners": {"seg": {"503": 1, "204": 1}, "tiktok": {"200": 1}}}

    async with http.delete(f"{api}/requests") as r:
        assert r.status == 204
    async with http.delete(f"{api}/faults") as r:
        assert r.status == 204
    assert sim.requests == [] and sim.faults() == {}
    async with http.get(f"{api}/stats") as r:
        assert (await r.json())["total"] == 0


async def test_control_api_rejects_bad_faults(sim: PartnerSimulator, http: aiohttp.ClientSession) -> None:
    for bad in ({"sequence": [503]}, {"partner": "seg", "sequence": ["explode"]}, {"partner": "x"}):
        async with http.post(f"{sim.base_url}/_sim/faults", json=bad) as r:
            assert r.status == 400
            assert "error" in await r.json()
    assert sim.faults() == {}


async def test_simulator_client_drives_the_control_api(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    assert sim.base_url is not None
    async with SimulatorClient(sim.base_url) as client:
        await client.fault(
            "tiktok",
            sequence=[Outcome.parse(429), {"status": 200, "code": 40100}, "reset"],
            latency=Latency.uniform(0, 1),
            retry_after=3,
        )
        assert sim.faults()["tiktok"]["sequence"][1] == {"kind": "ok", "status": 200, "code": 40100}
        assert (await post(http, f"{sim.base_url}{TIKTOK}"))[0] == 429
        assert (await client.stats())["partners"] == {"tiktok": {"429": 1}}
        [recorded] = await client.requests(partner="tiktok")
        assert recorded["status"] == 429 and recorded["method"] == "POST"
        await client.clear()
        assert await client.requests() == [] and sim.faults() == {}
        with pytest.raises(ValueError, match="unknown partner"):
            await client.fault("linkedin", down=True)


def test_outcomes_survive_their_json_form() -> None:
    for spec in (503, "timeout", "reset", "ok", {"status": 200, "code": 40002, "message": "bad"}):
        outcome = Outcome.parse(spec)  # type: ignore[arg-type]
        assert Outcome.parse(outcome.to_json()) == outcome
    with pytest.raises(ValueError):
        Outcome.parse({"kind": "status"})


async def test_without_recording_only_statistics_are_kept(http: aiohttp.ClientSession) -> None:
    async with PartnerSimulator(record=False) as simulator:
        simulator.fault("seg", sequence=[500])
        for _ in range(3):
            await post(http, f"{simulator.base_url}{SEG_TRACK}")
        assert simulator.requests == []
        assert simulator.stats() == {"total": 3, "partners": {"seg": {"500": 1, "204": 2}}}


def test_simulate_command_serves_until_terminated() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "simulate", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")

        async def exercise() -> tuple[int, dict[str, object]]:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{base}/_sim/faults", json={"partner": "seg", "down": 500}) as r:
                    assert r.status == 200
                async with session.post(f"{base}{SEG_TRACK}", data=b"{}") as r:
                    status = r.status
                async with session.get(f"{base}/_sim/stats") as r:
                    return status, await r.json()

        status, stats = asyncio.run(exercise())
        assert status == 500
        assert stats == {"total": 1, "partners": {"seg": {"500": 1}}}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


# -- TikTok batches ------------------------------------------------------------------------------------


def _tiktok_batch(n: int, start: int = 0) -> bytes:
    events = [{"event": "Purchase", "event_id": f"e{start + i}"} for i in range(n)]
    return orjson.dumps({"event_source": "offline", "event_source_id": "7312", "data": events})


async def test_tiktok_batches_are_accepted_and_each_event_recorded(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    assert (await post(http, f"{sim.base_url}{TIKTOK}", _tiktok_batch(3)))[0] == 200
    assert (await post(http, f"{sim.base_url}{TIKTOK}", _tiktok_batch(1, start=3)))[0] == 200
    assert [len(r.events()) for r in sim.requests] == [3, 1]
    assert [e["event_id"] for r in sim.requests for e in r.events()] == ["e0", "e1", "e2", "e3"]
    assert sim.stats()["events"] == {"tiktok": 4}
    assert sim.stats()["total"] == 2


async def test_a_tiktok_fault_fails_the_whole_batch(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    sim.fault("tiktok", sequence=[503, {"status": 200, "code": 40100}])
    status, _ = await post(http, f"{sim.base_url}{TIKTOK}", _tiktok_batch(5))
    assert status == 503
    status, body = await post(http, f"{sim.base_url}{TIKTOK}", _tiktok_batch(5))
    assert (status, orjson.loads(body)["code"]) == (200, 40100)
    status, body = await post(http, f"{sim.base_url}{TIKTOK}", _tiktok_batch(5))
    assert (status, orjson.loads(body)["code"]) == (200, 0)


async def test_a_tiktok_batch_over_1000_events_is_refused_in_the_envelope(
    sim: PartnerSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, f"{sim.base_url}{TIKTOK}", _tiktok_batch(1001))
    envelope = orjson.loads(body)
    assert (status, envelope["code"]) == (200, 40002)
    assert "1000" in envelope["message"]
    status, body = await post(http, f"{sim.base_url}{TIKTOK}", _tiktok_batch(1000))
    assert (status, orjson.loads(body)["code"]) == (200, 0)
