"""`streamproc send` prints one line per delivery whatever the router returns: bodies nested past any
encoder's limit, lone surrogates, integers past 64 bits, bytes that are not UTF-8."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.cli import main
from streamproc.commands.send import _send
from streamproc.destinations.base import Request
from streamproc.errors import BuildFailed, DeliveryError, MappingFailed, PayloadValidationError
from streamproc.masking import Masker
from streamproc.router import Delivery

CONFIG = """
destinations:
  - id: seg
    type: seg
    settings: {apiKey: abc8fb18-7559-4324-9921-a4b5015b4a1c}
    presets: [Identify]
"""


def nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.fixture
def deep_recursion() -> Iterator[None]:
    # The standard library's parser (used to read the lines back) recurses once per level.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    yield
    sys.setrecursionlimit(limit)


# 251 to 253: the partner's body is built, but the printed line nests it four levels deeper.
@pytest.mark.parametrize("depth", [250, 251, 252, 253, 600, 1000])
def test_traits_nested_deep_are_printed(
    depth: int, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], deep_recursion: None
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    event = {"type": "identify", "userId": "u1", "messageId": "m1", "traits": nested(depth)}
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(event) + "\n" + json.dumps({**event, "messageId": "m2"}) + "\n")
    assert main(["send", "--config", str(config), "--events", str(events)]) == 0
    lines = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert [line["messageId"] for line in lines] == ["m1", "m2"]  # the rest of the file goes on
    if depth <= 253:
        assert lines[0]["requests"][0]["body"]["Traits"] == nested(depth)
    else:  # past what the partner's JSON encoder takes: the delivery fails (and would be dead-lettered)
        assert "error" in lines[0] or lines[0]["requests"][0]["body"]["Traits"] == nested(depth)


text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30)  # surrogates too
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "bytes", "json", "deep"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    value = draw(json_value)
    if kind == "deep":
        value = nested(draw(st.integers(min_value=200, max_value=1500)), value)
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, ensure_ascii=True).encode()


requests = st.builds(
    Request,
    method=st.sampled_from(["GET", "POST"]),
    url=text.map(lambda t: "https://partner.example/x?" + t),
    headers=st.dictionaries(text, text, max_size=3),
    body=bodies(),
)
errors = st.one_of(
    st.builds(MappingFailed, text),
    st.builds(BuildFailed, text),
    st.builds(PayloadValidationError, text),
    st.builds(DeliveryError, text, code=text, status=st.integers(min_value=100, max_value=599)),
)


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    outcome = draw(st.sampled_from(["requests", "error", "skipped"]))
    return Delivery(
        delivery_id=draw(text),
        destination=draw(text),
        subscription=draw(text),
        action=draw(text),
        requests=draw(st.lists(requests, max_size=2)) if outcome == "requests" else [],
        error=draw(errors) if outcome == "error" else None,
        skipped=draw(text) if outcome == "skipped" else None,
    )


class Returns:
    """A router whose answer is given."""

    def __init__(self, answer: list[Delivery]) -> None:
        self.answer = answer

    def route(self, event: Any, **_: Any) -> list[Delivery]:
        return self.answer

    def routed(self, event: Any, **_: Any) -> tuple[list[Delivery], tuple[tuple[str, str], ...]]:
        return self.answer, ()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=st.lists(deliveries(), max_size=4), pretty=st.booleans(), show=st.booleans())
def test_whatever_the_router_returns_send_prints_a_line_for_each(
    answer: list[Delivery], pretty: bool, show: bool
) -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        out = io.BytesIO()
        masker = Masker(show_secrets=show, show_pii=show)
        events = [(0, b'{"type": "track", "messageId": "m0"}'), (1, b'{"type": "track"}')]
        counts = _send(Returns(answer), events, out, masker, None, pretty=pretty, flush_each=False)  # type: ignore[arg-type]
        decoder = json.JSONDecoder()
        text_out = out.getvalue().decode("utf-8")
        docs, pos = [], 0
        while pos < len(text_out):
            doc, pos = decoder.raw_decode(text_out, pos)
            docs.append(doc)
            while pos < len(text_out) and text_out[pos].isspace():
                pos += 1
    finally:
        sys.setrecursionlimit(limit)
    assert [d["index"] for d in docs] == [0] * len(answer) + [1] * len(answer)
    assert counts[2] == 2 * len(answer)
    for doc, delivery in zip(docs, answer + answer, strict=True):
        assert sum(k in doc for k in ("requests", "error", "skipped")) == 1
        if delivery.requests:
            assert len(doc["requests"]) == len(delivery.requests)
