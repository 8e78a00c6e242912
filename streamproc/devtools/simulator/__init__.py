"""Partner simulator: StackAdapt, TikTok and Seg wire formats on one base URL, with recording and faults.

`server` serves the partners and the /_sim/ control API, one module per partner's wire format
(`stackadapt`, `tiktok`, `seg`), `faults` the outcomes and latencies injected, `recording` what
each request looked like, and `client` drives a simulator in another process.
"""

from streamproc.devtools.simulator.client import SimulatorClient
from streamproc.devtools.simulator.faults import Fault, Latency, Outcome
from streamproc.devtools.simulator.recording import RecordedRequest
from streamproc.devtools.simulator.server import PARTNERS, PartnerSimulator, canonical_partner, serve
from streamproc.devtools.simulator.tiktok import MAX_EVENTS as TIKTOK_MAX_EVENTS

__all__ = [
    "PARTNERS",
    "TIKTOK_MAX_EVENTS",
    "Fault",
    "Latency",
    "Outcome",
    "PartnerSimulator",
    "RecordedRequest",
    "SimulatorClient",
    "canonical_partner",
    "serve",
]
