"""`streamproc send`: a dry run printing the requests each matching subscription would make for each event."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson

from streamproc import masking
from streamproc.config import load_config
from streamproc.core.events import decode_json, message_id
from streamproc.core.js import parse_iso_time
from streamproc.errors import DecodeError, DeliveryError, StreamprocError
from streamproc.gates import NO_SUBSCRIPTION
from streamproc.masking import Masker
from streamproc.output import json_line
from streamproc.router import Delivery, Router


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "send",
        help="dry run: show the partner requests events would produce (nothing is sent)",
        description=(
            "Run events through routing, mapping and request building and print one JSON line per"
            " delivery, and one per destination instance whose gates (consent, the integrations"
            " object, destination filters) withhold the event. Nothing is sent."
        ),
    )
    p.add_argument(
        "--config", "-c", required=True, metavar="FILE", help="the YAML or JSON configuration file"
    )
    p.add_argument(
        "--events", "-e", required=True, metavar="FILE", help="one JSON event or JSON Lines; '-' reads stdin"
    )
    p.add_argument(
        "--format", choices=("json", "pretty"), default="json", help="json: one line each (default)"
    )
    p.add_argument(
        "--now",
        metavar="ISO-8601",
        type=_parse_now,
        help="freeze the clock actions read (e.g. 2026-01-01T00:00:00Z) for reproducible output",
    )
    p.add_argument(
        "--destination", "-d", action="append", metavar="ID", help="only these destination ids (repeatable)"
    )
    masking.add_arguments(p)
    p.set_defaults(handler=run)


def _parse_now(text: str) -> datetime:
    try:
        return parse_iso_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None


def read_events(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Events with their 0-based index: JSON Lines, read as they come (so a pipe works), or one JSON
    document spread over several lines. Blank lines are not events."""
    lines = iter(stream)
    first = b""
    for line in lines:
        if line.strip():
            first = line
            break
    if not first:
        return
    if first.lstrip().startswith(b"{") and not _is_object(first):
        rest = b"".join(lines)
        document = first + rest
        if _is_object(document):
            yield 0, document.strip()
            return
        yield from _numbered([first, *rest.splitlines()])
        return
    yield from _numbered(itertools.chain([first], lines))


def _is_object(raw: bytes) -> bool:
    try:
        return isinstance(orjson.loads(raw), dict)
    except orjson.JSONDecodeError:
        return False


def _numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    index = 0
    for line in lines:
        if line.strip():
            yield index, line
            index += 1


def _error_json(exc: DeliveryError | DecodeError | StreamprocError, masker: Masker) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": masker.text(str(getattr(exc, "message", None) or exc)),
        "status": getattr(exc, "status", None),
        # What the worker would do: an error met while the delivery is built never reaches the
        # partner, and the worker dead-letters it at once, whatever status the error carries.
        "retryable": False,
    }


def delivery_json(index: int, delivery: Delivery, mid: str | None, masker: Masker) -> dict[str, Any]:
    """The line `send` prints for one delivery, masked by `masker` (the end-to-end tests compare
    partners' records with it, unmasked)."""
    line: dict[str, Any] = {
        "index": index,
        "messageId": mid,
        "destination": delivery.destination,
        "subscription": delivery.subscription,
        "action": delivery.action,
    }
    if delivery.error is not None:
        line["error"] = _error_json(delivery.error, masker)
    elif delivery.skipped is not None:
        line["skipped"] = masker.text(delivery.skipped)
    else:
        line["requests"] = [masker.request(r.to_json()) for r in delivery.requests]
    return line


def run(args: argparse.Namespace, out: BinaryIO | None = None, stdin: BinaryIO | None = None) -> int:
    output = out or sys.stdout.buffer
    config = load_config(args.config)
    router = Router(config, now=args.now or datetime.now(UTC))
    masker = masking.for_config(config, args)
    destinations = set(args.destination) if args.destination else None
    if destinations is not None:
        unknown = sorted(destinations - set(router.destinations))
        if unknown:
            raise StreamprocError(f"unknown destination id(s): {', '.join(unknown)}")
    piped = args.events == "-"
    if piped:
        source: BinaryIO = stdin or sys.stdin.buffer
    else:
        try:
            source = open(args.events, "rb")  # noqa: SIM115 - closed below, after streaming
        except OSError as exc:
            raise StreamprocError(f"cannot read events from {args.events}: {exc.strerror or exc}") from None
    try:
        # Lines read from a pipe are answered at once; a file is written in one go.
        counts = _send(
            router,
            read_events(source),
            output,
            masker,
            destinations,
            pretty=args.format == "pretty",
            flush_each=piped,
        )
    finally:
        if not piped:
            source.close()
    events, undecodable, deliveries, failed, skipped, withheld = counts
    gated = f", {withheld} withheld by destination gates" if withheld else ""
    print(
        f"{events} events ({undecodable} not decodable), {deliveries} deliveries ({failed} failed,"
        f" {skipped} skipped){gated}; nothing was sent",
        file=sys.stderr,
    )
    return 0


def _send(
    router: Router,
    events_in: Iterable[tuple[int, bytes]],
    output: BinaryIO,
    masker: Masker,
    destinations: set[str] | None,
    *,
    pretty: bool,
    flush_each: bool,
) -> tuple[int, int, int, int, int, int]:
    events = undecodable = deliveries = failed = skipped = withheld = 0
    for index, line in events_in:
        events += 1
        try:
            event = decode_json(line)
        except DecodeError as exc:
            undecodable += 1
            bad = {
                "index": index,
                "messageId": None,
                "destination": None,
                "subscription": None,
                "action": None,
                "error": _error_json(exc, masker),
            }
            output.write(json_line(bad, pretty=pretty))
            continue
        mid = message_id(event)
        routed, gated = router.routed(event, destinations=destinations)
        for delivery in routed:
            deliveries += 1
            failed += delivery.error is not None
            skipped += delivery.skipped is not None
            output.write(json_line(delivery_json(index, delivery, mid, masker), pretty=pretty))
        for destination, reason in gated:
            if reason == NO_SUBSCRIPTION:  # not withheld: none of its triggers matches, as before
                continue
            withheld += 1
            shown = {"index": index, "messageId": mid, "destination": destination, "filtered": reason}
            output.write(json_line(shown, pretty=pretty))
        if flush_each:
            output.flush()
    output.flush()
    return events, undecodable, deliveries, failed, skipped, withheld
