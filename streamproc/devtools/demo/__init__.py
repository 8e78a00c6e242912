"""The one-command demo (`streamproc demo`): a broker, the partner simulator, generated events, a worker.

`events` generates the Segment traffic, `run` starts everything and drives it, `display` draws the
progress line, `report` sums up the run, `command` is the command line's side of it.
"""

from streamproc.devtools.demo.events import POISON_KINDS, EventGenerator
from streamproc.devtools.demo.report import DemoSummary, format_summary, what_next
from streamproc.devtools.demo.run import DemoOptions, run_demo

__all__ = [
    "POISON_KINDS",
    "DemoOptions",
    "DemoSummary",
    "EventGenerator",
    "format_summary",
    "run_demo",
    "what_next",
]
