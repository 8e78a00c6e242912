"""The test suite's helpers that benchmarks reuse: the example events, Kafka topic helpers, and the
crash-chaos and group-chaos scenarios that the long benchmarks run longer than CI does.

They live in tests/ and import one another by module name, as pytest's `pythonpath` setting
(pyproject.toml) lets them; this module puts the same two folders on the import path, once, so a
benchmark imports them from here and never keeps a copy of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

for _folder in (ROOT / "tests" / "integration", ROOT / "tests"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from crash_chaos import DESTINATION_OF, ChaosPlan, run_crash_chaos  # noqa: E402
from group_chaos import GroupPlan, run_group_chaos  # noqa: E402
from kafka_helpers import create_topic, delete_topics, unique_name  # noqa: E402
from test_worker_helpers import templates  # noqa: E402

__all__ = [
    "DESTINATION_OF",
    "ROOT",
    "ChaosPlan",
    "GroupPlan",
    "create_topic",
    "delete_topics",
    "run_crash_chaos",
    "run_group_chaos",
    "templates",
    "unique_name",
]
