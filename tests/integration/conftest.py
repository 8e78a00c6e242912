"""Fixtures shared by the integration tests: two partner simulators on this test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streamproc.devtools.simulator import PartnerSimulator


@pytest.fixture
async def sims() -> AsyncIterator[tuple[PartnerSimulator, PartnerSimulator]]:
    """Simulators for seg-a and seg-b of the operations config (`ops_helpers.write_config`)."""
    a, b = PartnerSimulator(seed=1), PartnerSimulator(seed=2)
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()
