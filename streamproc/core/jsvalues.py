"""JavaScript value helpers under their former module name; they live in streamproc.core.js."""

from streamproc.core.js import (
    UNDEFINED,
    Undefined,
    is_array_index,
    is_undefined,
    js_keys,
    json_quote,
    json_stringify,
    number_to_string,
    to_js_string,
    truthy,
    typeof,
)

__all__ = [
    "UNDEFINED",
    "Undefined",
    "is_array_index",
    "is_undefined",
    "js_keys",
    "json_quote",
    "json_stringify",
    "number_to_string",
    "to_js_string",
    "truthy",
    "typeof",
]
