"""`streamproc run` as a real process, killed with SIGKILL at 20 random moments over 100,000 events while
all three partners fail in bursts: every predicted request arrives, the offsets reach the end, and
every duplicate is a replay the kills allowed.

The bound on duplicates. At a kill, the events past the committed offsets are read again by the
restarted worker, and those the commit's metadata does not list as finished are processed again, so
the requests already delivered for them are sent again; the run counts them at each kill
(`replayable`). The only other duplicate a correct worker sends is a request it retried because it
did not see the partner's answer in time (its own timeout fired first): `resent`, counted as a
request accepted twice by one worker process. So duplicates <= replayable + resent, and no request
may be sent by a worker started after the commit said its event was finished. The in-flight limit
does not bound the replayable part by itself: it counts unfinished events, while the committed offset
also waits behind an unfinished event for the finished ones after it (the figures print the largest
such window beside the limit; the finished ones among them are not sent again).

The scenario lives in crash_chaos.py; bench/soak.py runs it longer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crash_chaos import PARTNERS, ChaosPlan, run_crash_chaos
from kafka_helpers import unique_name

pytestmark = pytest.mark.kafka


def test_sigkills_under_partner_faults_lose_nothing(kafka_bootstrap: str, topic: Any, tmp_path: Path) -> None:
    plan = ChaosPlan(events=100_000, kills=20)
    result = run_crash_chaos(
        kafka_bootstrap,
        src=topic("chaos", partitions=plan.partitions),
        dlq=topic("chaos-dlq", partitions=1),
        group=unique_name("g"),
        work=tmp_path,
        plan=plan,
    )
    print(result.figures())

    assert result.events == 100_000 and result.kills == 20
    assert result.problems() == []
    # The faults were real: every partner had bursts, and every kind of failure was answered.
    assert set(result.burst_partners) == set(PARTNERS)
    assert {"429", "reset", "timeout"} <= set(result.answers)
    assert any(status.startswith("5") for status in result.answers)
