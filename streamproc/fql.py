"""Public FQL interface: parse a Segment trigger into a Trigger, and the list of deliberate differences."""

from streamproc.core.fql import (
    DELIBERATE_DIFFERENCES,
    DeliberateDifference,
    FQLSyntaxError,
    Trigger,
    parse,
)
from streamproc.errors import FQLError

__all__ = [
    "DELIBERATE_DIFFERENCES",
    "DeliberateDifference",
    "FQLError",
    "FQLSyntaxError",
    "Trigger",
    "parse",
]
