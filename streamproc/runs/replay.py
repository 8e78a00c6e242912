"""Replays a time or offset range of a topic through the live routing, without touching the live group.

The replay consumer *assigns* partitions (no group membership, no commit), so the workers'
committed offsets never move. Each message is decoded, routed (optionally only some destinations
or subscriptions), delivered through the same per-destination bulkheads as the worker, and failed
deliveries are dead-lettered like the worker's. Progress is the per-partition contiguous
watermark (an `OffsetTracker` per partition, as in the worker), saved to a state file now and then
and at exit (or to a progress group in Kafka, `streamproc.kafka.replay_progress`); a rerun with the
same state file or group continues from there, re-sending at most the events that were in flight when
it stopped.

Each message goes through the same `EventProcessor` as in the worker (`streamproc.pipeline`);
what is replay's own is where messages come from and how progress is kept. It shares with
`dlq redrive` the `RangeReader` (streamproc.kafka.ranges: reads assigned partitions up to fixed end
offsets) and the feed (streamproc.runs.feed: a bound on the events in flight, an optional rate, a
watermark per partition and checkpoints).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from streamproc.errors import StreamprocError
from streamproc.kafka.ranges import (
    RangeReader,
    deleted_from,
    parse_position,
    range_consumer_config,
    resolve_ranges,
)
from streamproc.logging import flush_suppressed
from streamproc.progress import Progress
from streamproc.runs.compose import build_stack, close_run, load, route_filters, start_run
from streamproc.runs.feed import MessageHandler, RangeFeed, run_ranges
from streamproc.runs.replay_progress import GroupProgress, ReplayState
from streamproc.summary import Summary

__all__ = ["replay", "run_replay"]

log = structlog.get_logger("streamproc.replay")


async def run_replay(
    reader: RangeReader,
    state: ReplayState,
    feed: RangeFeed,
    handle: MessageHandler,
    *,
    save_every: float = 2.0,
    shutdown_timeout: float = 30.0,
    on_progress: Callable[[int], Any] | None = None,
    store: Callable[[ReplayState], Awaitable[None]] | None = None,
) -> None:
    """Read the state's remaining ranges into `handle`, saving progress as it goes (to the state's
    file, or with `store`: the progress group's commits)."""

    async def save(watermarks: dict[int, int], _final: bool) -> None:
        state.next.update(watermarks)
        if store is not None:
            await store(state)
        else:
            state.save()

    await run_ranges(
        reader,
        state.remaining(),
        feed,
        handle,
        save,
        every=save_every,
        shutdown_timeout=shutdown_timeout,
        on_progress=on_progress,
    )


async def replay(args: argparse.Namespace, out: Any = None, err: Any = None) -> tuple[int, Summary]:
    """The whole command, callable from tests; returns the exit code and the summary."""
    out = out if out is not None else sys.stdout.buffer
    err = err if err is not None else sys.stderr
    config, kafka = load(args.config, "replay")
    topic = args.topic
    if topic is None:
        if len(kafka.topics) != 1:
            raise StreamprocError(
                f"the configuration has topics {', '.join(kafka.topics)}; choose one with --topic"
            )
        topic = kafka.topics[0]
    stack = build_stack(config, kafka, dry_run=args.dry_run)
    dests, subs = route_filters(stack.router, args.destination, args.subscription)

    state_path: Path | None = None if args.dry_run else args.state
    progress_group: str | None = None if args.dry_run else args.progress_group
    if progress_group is not None and progress_group == kafka.group_id:
        raise StreamprocError(f"--progress-group must not be the workers' group ({kafka.group_id})")
    state = ReplayState.load(state_path) if state_path is not None else None
    group = progress_group or f"{kafka.group_id}.replay.{uuid.uuid4().hex[:8]}"

    def deleted(p: int, first: int, low: int) -> None:
        # Said, not skipped in silence: these events can no longer be replayed from this topic.
        print(
            f"{topic}[{p}]: {low - first} events of the range (offsets {first}-{low - 1}) were deleted by"
            f" the topic's retention before this replay read them; the replay goes on from offset {low}",
            file=err,
        )

    reader = RangeReader(range_consumer_config(kafka, group), topic, on_deleted=deleted)
    in_kafka = GroupProgress(reader, group) if progress_group is not None else None
    saved_in = f"consumer group {progress_group}" if in_kafka is not None else str(state_path)
    summary = Summary()
    feed, processor = start_run(stack, topic, summary, args, out, destinations=dests, subscriptions=subs)
    progress: Progress | None = None
    try:
        consumer = await reader.open()
        if in_kafka is not None:
            state = await in_kafka.load(topic)
        if state is not None:
            if state.topic != topic or (args.start, args.end) not in ((state.start, state.end), (None, None)):
                where = "another state file" if in_kafka is None else "another --progress-group"
                raise StreamprocError(
                    f"{saved_in} belongs to a replay of {state.topic} --from {state.start} --to"
                    f" {state.end}; use {where} for a different range"
                )
            print(f"resuming from {saved_in}: {state.total_left()} events left", file=err)
        else:
            start = parse_position(args.start, edge="beginning")
            end = parse_position(args.end, edge="end")
            ranges = await reader.call(resolve_ranges, consumer, topic, start, end)
            state = ReplayState(
                state_path, topic, args.start, args.end, ranges, {p: s for p, (s, _e) in ranges.items()}
            )
            # Saved before any delivery, so a rerun replays the same ranges even when --to was "now".
            if in_kafka is not None:
                await in_kafka.save(state)
            else:
                state.save()
        gone = await reader.call(deleted_from, consumer, topic, state.remaining())
        for p, (first, low) in sorted(gone.items()):
            deleted(p, first, low)
            log.warning(
                "replay_range_deleted", topic=topic, partition=p, first=first, low=low, events=low - first
            )
        reader.told(gone)
        progress = Progress(state.total_left(), stream=err)
        await run_replay(
            reader,
            state,
            feed,
            processor.process,
            shutdown_timeout=config.limits.shutdown_timeout,
            on_progress=progress.update,
            store=in_kafka.save if in_kafka is not None else None,
        )
    finally:
        await close_run(progress, reader, stack)
    out.flush()
    flush_suppressed(force=True)
    interrupted = feed.stop.is_set() and state.total_left() > 0
    print(summary.render(dry_run=args.dry_run), file=err)
    if interrupted:
        again = f"--progress-group {progress_group}" if in_kafka is not None else f"--state {state_path}"
        print(f"interrupted: {state.total_left()} events left; rerun with {again} to resume", file=err)
        return 130, summary
    if args.dry_run:
        print("dry run: nothing was sent", file=err)
    return 0, summary
