"""The one list of places where streamproc's gates (destination filters, consent, the integrations
object) knowingly differ from Segment's published code: @segment/tsub 2.0.1, @segment/fql-ts 1.10.1
and analytics-next. Everything else answers exactly as that code does (tests/core/filters run the
differential corpus recorded from it).

Where tsub-js (the browser copy of Segment's engine) contradicts Segment's own FQL reference, the
reference wins: streamproc replaces Segment's cloud delivery, whose engine the reference documents.
A `FilterSyntaxError.category` names one of these entries (None when fql-ts refuses the text too).
"""

from __future__ import annotations

from typing import Final

from streamproc.core.fql import DeliberateDifference

__all__ = ["DELIBERATE_DIFFERENCES", "NAMES"]

DELIBERATE_DIFFERENCES: Final[tuple[DeliberateDifference, ...]] = (
    DeliberateDifference(
        "typeof-names",
        "typeof(properties.tags) = 'list'",
        "tsub-js answers JavaScript's names: object for a list and for null, boolean",
        "answers the FQL reference's names: string, number, bool, null, list (object for an object, "
        "undefined for a missing field)",
    ),
    DeliberateDifference(
        "length-bytes",
        "length(properties.name) > 10",
        "tsub-js counts a string's UTF-16 code units",
        "counts its UTF-8 bytes, as the FQL reference says (`ア` is 3)",
    ),
    DeliberateDifference(
        "in-event-list",
        "'dark-mode' in properties.features",
        "tsub-js reads each text item of the event's list as a field path, so the reference's own "
        "example is false",
        "compares the list's items as values (true, as the reference says)",
    ),
    DeliberateDifference(
        "list-literal",
        "properties.ids = [1, 2]",
        'tsub-js compares the event\'s list with the literal\'s IR ([{"value":1},{"value":2}]): never equal',
        "compares it with the literal's values",
    ),
    DeliberateDifference(
        "nested-call",
        "contains(lowercase(event), 'order')",
        "tsub-js evaluates a function call only as an operand of a comparison (elsewhere the call's IR "
        "is the value, so this is always false), and there also runs event lists shaped like a call "
        '(["length", "x"])',
        "evaluates a call wherever a value is expected, and never reads event data as a call",
    ),
    DeliberateDifference(
        "sample-path",
        "sample: {percent: 0.1, path: userId}",
        "tsub-js hashes the MD5 digest's hex text instead of its bytes, and with its ldexp dependency as "
        "npm installs it today the number is ~0: every event is kept for any percent between 0 and 1",
        "derives the number from the digest's bytes as Segment's sampler describes it (uniform in [0, 1)): "
        "0.1 keeps about 10 % of the distinct values, always the same ones",
    ),
    DeliberateDifference(
        "inherited-property",
        "typeof(properties.constructor) = 'function'",
        "tsub-js reaches JavaScript's inherited properties (constructor, toString, __proto__, ...), so "
        "this is true for every event",
        "reads only the event's own fields: missing unless the event has that field",
    ),
    DeliberateDifference(
        "array-hole",
        "drop_properties: [properties.rows.0] on rows: [[1, 2], [3]]",
        "tsub leaves a hole in each inner array that later conditions read as undefined (its JSON shows "
        "null)",
        "stores null there",
    ),
    DeliberateDifference(
        "mixed-and-or",
        "event = 'A' and type = 'track' or type = 'page'",
        "how Segment's server groups `and` and `or` without parentheses is not published",
        "refuses; add parentheses",
    ),
    DeliberateDifference(
        "negation-scope",
        "!properties.flag = true",
        "the reach of a `!` glued to a field before an operator is not published",
        "refuses; write !(properties.flag = true) or properties.flag != true",
    ),
    DeliberateDifference(
        "lost-text",
        "properties.x = nul",
        "fql-ts drops the end of a word starting like and/or/null at the end of the text (reads `x = n`)",
        "refuses",
    ),
    DeliberateDifference(
        "dotted-name",
        "properties.a\\.b = 1",
        "tsub splits field paths at every '.', so a field whose name holds a '.' cannot be reached",
        "refuses",
    ),
    DeliberateDifference(
        "consent-true",
        "categoryPreferences: {C0004: 'yes'}",
        "analytics-next's device-mode consent check takes any truthy preference as consent",
        "only the boolean true consents: for a legal gate, anything else withholds",
    ),
)

NAMES: Final = frozenset(d.name for d in DELIBERATE_DIFFERENCES)
