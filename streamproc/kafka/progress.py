"""What a partition's owner finished past its committed offset, carried in the commit's metadata.

The committed offset is the contiguous watermark: the first offset whose work is not finished.
Work finishes out of order, so at a commit some offsets past the watermark are finished too, and
some events have finished a few of their deliveries but not all. A `Progress` says both; it travels
as the metadata string of the offset commit (one `TopicPartition(..., metadata=...)` per
partition, so the offset and what lies past it are committed together), and the partition's next
owner reads it back with `Consumer.committed()` and finishes those offsets and deliveries without
sending them again (as Confluent Parallel Consumer does with its offset map).

Text (format version 1): `sp1` + `r` (raw) or `z` (zlib) + the body in unpadded base64url.
Body, in unsigned LEB128 varints unless said otherwise:

    watermark            the committed offset it was written for (another one: ignored)
    span                 the body speaks of offsets [watermark, watermark + span)
    kind (1 byte)        how the finished offsets of the span are listed, the shorter of:
      R  runs            n, then n pairs (unfinished run length, finished run length)
      B  bitset          ceil(span / 8) bytes, bit i (LSB first) set: watermark + i finished
    k, k × 8 bytes       the table of delivery keys (`delivery_key`: 64 bits of BLAKE2b of the
                         destination id and the subscription name)
    m                    partly finished offsets, ascending, each as (offset - previous one or
                         the watermark, bitmask over the table of its finished deliveries)

An offset outside the span, or inside it and not listed, is unfinished: its next owner processes
it. So every way the metadata can fall short errs towards sending again, never towards losing:

- Bound: the broker refuses metadata longer than `offset.metadata.max.bytes` (4096 by default;
  `kafka.offset_metadata_max_bytes`). A longer encoding has its span cut at the largest length that
  fits (a binary search); offsets past the cut are sent again by the next owner.
- A delivery is known by its destination id and subscription name, whatever the rest of the
  configuration: an owner with another configuration skips the deliveries it still has under those
  names and sends the others; a renamed one is sent again. No configuration fingerprint is
  needed, and a rollout that changes the configuration does not re-send everything.
- Metadata that is not ours, of another version, or for another offset is ignored (re-sent).
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Progress", "decode", "delivery_key", "encode"]

PREFIX = "sp1"
_RAW, _ZLIB = "r", "z"
_RUNS, _BITS = ord("R"), ord("B")
_KEY_BYTES = 8
_ANY_STOP = 1 << 63


@functools.lru_cache(maxsize=4096)
def delivery_key(destination: str, subscription: str) -> int:
    """The stable name of one delivery of an event: the same under every owner and configuration
    that has this destination id and subscription name."""
    h = hashlib.blake2b(f"{destination}\0{subscription}".encode(), digest_size=_KEY_BYTES)
    return int.from_bytes(h.digest(), "big")


@dataclass(frozen=True, slots=True)
class Progress:
    """Finished work of one partition at or past `watermark` (the first unfinished offset).

    `finished`: sorted, disjoint [start, stop) ranges of finished offsets, all past the watermark.
    `parts`: unfinished offsets -> the `delivery_key`s of their deliveries that are finished."""

    watermark: int
    finished: tuple[tuple[int, int], ...] = ()
    parts: Mapping[int, frozenset[int]] = field(default_factory=dict)

    @property
    def end(self) -> int:
        """One past the last offset this progress says anything about."""
        end = self.finished[-1][1] if self.finished else self.watermark
        if self.parts:
            end = max(end, max(self.parts) + 1)
        return end

    def is_finished(self, offset: int) -> bool:
        """Whether `offset`, past the watermark, is finished (a binary search of the ranges)."""
        i = bisect.bisect_right(self.finished, (offset, _ANY_STOP)) - 1
        return i >= 0 and offset < self.finished[i][1]

    def cut(self, end: int) -> Progress:
        """The same, saying nothing about offsets from `end` on."""
        finished = tuple((s, min(e, end)) for s, e in self.finished if s < end)
        parts = {o: keys for o, keys in self.parts.items() if o < end}
        return Progress(self.watermark, finished, parts)


def encode(progress: Progress, max_bytes: int = 4096) -> str:
    """The metadata text of `progress`, at most `max_bytes` long; "" when there is nothing to say."""
    if not progress.finished and not progress.parts:
        return ""
    text = _text(progress)
    if len(text) <= max_bytes:
        return text
    # Cut the span: the largest end whose text still fits (finished runs and parts past it go).
    lo, hi = progress.watermark, progress.end
    best = ""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = _text(progress.cut(mid))
        if len(candidate) <= max_bytes:
            lo, best = mid, candidate
        else:
            hi = mid
    return best


def decode(text: str | None, watermark: int) -> Progress | None:
    """The progress in a commit's metadata written for `watermark`; None when there is none, or it
    is not ours, or it cannot be read (then nothing past the watermark counts as finished)."""
    if not text or not text.startswith(PREFIX) or len(text) < len(PREFIX) + 1:
        return None
    mode, payload = text[len(PREFIX)], text[len(PREFIX) + 1 :]
    try:
        body = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        if mode == _ZLIB:
            body = zlib.decompress(body)
        elif mode != _RAW:
            return None
        return _parse(body, watermark)
    except (ValueError, IndexError, zlib.error):
        return None


# -- the body ---------------------------------------------------------------------------------------


def _text(progress: Progress) -> str:
    body = _body(progress)
    packed = zlib.compress(body, 9)
    mode, data = (_ZLIB, packed) if len(packed) < len(body) else (_RAW, body)
    return PREFIX + mode + base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _body(progress: Progress) -> bytes:
    w = progress.watermark
    span = progress.end - w
    out = bytearray()
    _varint(out, w)
    _varint(out, span)
    runs = bytearray()
    _varint(runs, len(progress.finished))
    cursor = w
    for start, stop in progress.finished:
        _varint(runs, start - cursor)
        _varint(runs, stop - start)
        cursor = stop
    bits_len = (span + 7) // 8
    if len(runs) <= bits_len:
        out.append(_RUNS)
        out += runs
    else:
        bits = bytearray(bits_len)
        for start, stop in progress.finished:
            for o in range(start - w, stop - w):
                bits[o >> 3] |= 1 << (o & 7)
        out.append(_BITS)
        out += bits
    table: dict[int, int] = {}
    for keys in progress.parts.values():
        for key in sorted(keys):
            table.setdefault(key, len(table))
    _varint(out, len(table))
    for key in table:
        out += key.to_bytes(_KEY_BYTES, "big")
    _varint(out, len(progress.parts))
    previous = w
    for offset in sorted(progress.parts):
        _varint(out, offset - previous)
        previous = offset
        mask = 0
        for key in progress.parts[offset]:
            mask |= 1 << table[key]
        _varint(out, mask)
    return bytes(out)


def _parse(body: bytes, watermark: int) -> Progress | None:
    reader = _Reader(body)
    if reader.varint() != watermark:
        return None  # written for another committed offset (reset or rewritten by a tool)
    span = reader.varint()
    kind = reader.byte()
    finished: list[tuple[int, int]] = []
    if kind == _RUNS:
        cursor = watermark
        for _ in range(reader.varint()):
            start = cursor + reader.varint()
            cursor = start + reader.varint()
            if cursor > start:
                finished.append((start, cursor))
    elif kind == _BITS:
        finished = list(_ranges_of_bits(reader.take((span + 7) // 8), watermark, span))
    else:
        return None
    table = [int.from_bytes(reader.take(_KEY_BYTES), "big") for _ in range(reader.varint())]
    parts: dict[int, frozenset[int]] = {}
    offset = watermark
    for _ in range(reader.varint()):
        offset += reader.varint()
        mask = reader.varint()
        parts[offset] = frozenset(key for i, key in enumerate(table) if mask >> i & 1)
    if not reader.done() or (finished and finished[-1][1] > watermark + span):
        return None
    return Progress(watermark, tuple(finished), parts)


def _ranges_of_bits(bits: bytes, base: int, span: int) -> Iterable[tuple[int, int]]:
    start = None
    for i in range(span):
        if bits[i >> 3] >> (i & 7) & 1:
            if start is None:
                start = i
        elif start is not None:
            yield base + start, base + i
            start = None
    if start is not None:
        yield base + start, base + span


def _varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"varint of a negative number: {value}")
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


class _Reader:
    __slots__ = ("_at", "_data")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def byte(self) -> int:
        b = self._data[self._at]
        self._at += 1
        return b

    def take(self, n: int) -> bytes:
        chunk = self._data[self._at : self._at + n]
        if len(chunk) != n:
            raise ValueError("truncated")
        self._at += n
        return chunk

    def varint(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
            if shift > 70:
                raise ValueError("varint too long")

    def done(self) -> bool:
        return self._at == len(self._data)
