"""Three `streamproc run` workers in one group on the real broker, partners failing 3 % of requests
with 503/429, and a rolling restart of eight workers: after SIGTERMs nothing is sent twice, and
after SIGKILLs only what the kills left unfinished in the group's commits is (group_chaos.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from group_chaos import GroupPlan, run_group_chaos

pytestmark = pytest.mark.kafka


def _run(kafka_bootstrap: str, topic: Any, tmp_path: Path, plan: GroupPlan) -> None:
    result = run_group_chaos(
        kafka_bootstrap,
        topic=topic("group-chaos", partitions=plan.partitions),
        dlq=topic("group-chaos-dlq", partitions=1),
        work=tmp_path,
        plan=plan,
    )
    print(result.figures())
    assert result.restarts == plan.restarts >= 8
    assert result.problems() == []
    # The partners did fail (a 503 or 429 for about 3 % of requests), and partitions changed hands
    # with finished offsets past their commits.
    failed = sum(n for status, n in result.answers.items() if status in ("503", "429"))
    assert failed >= 0.02 * sum(result.answers.values())
    assert result.handed_over > 0


def test_a_rolling_restart_with_sigterms_sends_nothing_twice(
    kafka_bootstrap: str, topic: Any, tmp_path: Path
) -> None:
    _run(kafka_bootstrap, topic, tmp_path, GroupPlan(stop="TERM"))


def test_a_rolling_restart_with_sigkills_resends_only_what_the_commits_left_unfinished(
    kafka_bootstrap: str, topic: Any, tmp_path: Path
) -> None:
    _run(kafka_bootstrap, topic, tmp_path, GroupPlan(stop="KILL", seed=2))
