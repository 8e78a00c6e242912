"""JavaScript semantics the partner specs depend on, in one place: undefined and truthiness,
Number() and String(), strings as UTF-16, JSON.stringify / JSON.parse, Date.parse and URL encoding.

Each answer is pinned against Node.js in tests/core/test_js.py. Where a function has a shortcut for
the usual input, an `*_exact` twin without it gives the same answers (tests/core/test_fast_paths.py).
"""

from streamproc.core.js.convert import number_to_string, string_to_number, to_js_string, to_number
from streamproc.core.js.dates import date_parse, date_parse_exact, parse_iso_time
from streamproc.core.js.json import (
    is_array_index,
    js_keys,
    json_bytes,
    json_bytes_exact,
    json_parse,
    json_quote,
    json_stringify,
)
from streamproc.core.js.strings import (
    WHITESPACE,
    WHITESPACE_SET,
    code_units,
    join_code_units,
    trim,
    utf8,
    utf16_length,
    well_formed,
)
from streamproc.core.js.url import (
    FormTemplate,
    form_bytes,
    form_component,
    form_decode,
    form_encode,
    form_encode_exact,
    url_query_param,
    url_query_param_exact,
)
from streamproc.core.js.values import UNDEFINED, Undefined, is_undefined, present, truthy, typeof

__all__ = [
    "UNDEFINED",
    "WHITESPACE",
    "WHITESPACE_SET",
    "FormTemplate",
    "Undefined",
    "code_units",
    "date_parse",
    "date_parse_exact",
    "form_bytes",
    "form_component",
    "form_decode",
    "form_encode",
    "form_encode_exact",
    "is_array_index",
    "is_undefined",
    "join_code_units",
    "js_keys",
    "json_bytes",
    "json_bytes_exact",
    "json_parse",
    "json_quote",
    "json_stringify",
    "number_to_string",
    "parse_iso_time",
    "present",
    "string_to_number",
    "to_js_string",
    "to_number",
    "trim",
    "truthy",
    "typeof",
    "url_query_param",
    "url_query_param_exact",
    "utf8",
    "utf16_length",
    "well_formed",
]
