# ruff: noqa: E501  (one template and its answer per line reads best)
"""liquidjs filters, property reads and operators as Segment runs them: every expected value here is
what Segment's actions-core (liquidjs 10.30) answered for the same template and event.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.core import mapping as mk
from streamproc.core.mapping import MappingError

RENDERED: list[tuple[str, dict[str, Any], str]] = [
    (
        "{{ s | capitalize }}|{{ t | capitalize }}|{{ u | capitalize }}",
        {"s": "ß", "t": "ﬁx", "u": "ΌΣ"},
        "SS|FIx|Όσ",
    ),
    ("{{ s | upcase }}|{{ s | downcase }}", {"s": "straße İ ΣΑΣ"}, "STRASSE İ ΣΑΣ|straße i̇ σας"),
    (
        "{{ s | size }}|{{ s.size }}|{{ s.length }}|{{ s | first }}{{ s | last }}|{{ s[0] }}|{{ s[-1] }}",
        {"s": "a😀b"},
        "4|4|4|ab|a|",
    ),
    (
        "{{ o | size }}|{{ o.size }}|{{ a[-1] }}|{{ a.first }}|{{ a.last }}|{{ a.length }}",
        {"o": {"x": 1, "y": 2}, "a": [1, 2, 3]},
        "0|2|3|1|3|3",
    ),
    (
        "{{ s | url_encode }}|{{ s | cgi_escape }}|{{ s | uri_escape }}",
        {"s": "a b*(c)'!~[d]?&é"},
        "a+b*(c)'!~%5Bd%5D%3F%26%C3%A9|a+b%2A%28c%29%27%21~%5Bd%5D%3F%26%C3%A9|a%20b*(c)'!~[d]?&%C3%A9",
    ),
    ("{{ s | url_decode }}", {"s": "%E2%82%AC+x%20y"}, "€ x y"),
    (
        "{{ s | escape }}|{{ s | escape_once }}|{{ s | xml_escape }}",
        {"s": "<b>&amp;'\"</b>"},
        "&lt;b&gt;&amp;amp;&#39;&#34;&lt;/b&gt;|&lt;b&gt;&amp;&#39;&#34;&lt;/b&gt;|&lt;b&gt;&amp;amp;&#39;&#34;&lt;/b&gt;",
    ),
    (
        "{{ s | split: '' | size }}|{{ s | split: ',' | size }}|{{ s | split: ',' | last }}",
        {"s": "a,b,,c,,"},
        "8|4|c",
    ),
    ("{{ s | split }}|{{ e | split: ',' | size }}", {"s": "abc", "e": ""}, "abc|0"),
    (
        "{{ s | truncate: 0 }}|{{ s | truncate: 5 }}|{{ s | truncate: '7' }}|{{ s | truncate: 3, '' }}|{{ s | truncate: 'x' }}",
        {"s": "Hello World"},
        "...|He...|Hell...|Hel|...",
    ),
    ("{{ s | truncate: 3 }}|{{ s | truncate: 4, '…' }}", {"s": "😀😀😀😀😀"}, "...|😀😀😀…"),
    (
        "{{ s | truncatewords: 2 }}|{{ s | truncatewords: 3 }}|{{ s | truncatewords: 0 }}|{{ s | truncatewords: 2, '' }}",
        {"s": " one two  three "},
        "one two...|one two three...|one...|one two",
    ),
    ("{{ e | truncatewords: 1 }}|{{ n | truncate: 1 }}", {"e": "", "n": 12345}, "...|..."),
    (
        "{{ s | slice: 0 }}|{{ s | slice: -1 }}|{{ s | slice: 1, 2 }}|{{ s | slice: -3, 2 }}|{{ s | slice: 10 }}|{{ s | slice: '1' }}",
        {"s": "a😀bcd"},
        "a|d|😀b|bc||😀",
    ),
    (
        "{{ a | slice: 1, 2 | join: ',' }}|{{ a | slice: -1 | join: ',' }}|{{ n | slice: 0 }}|{{ z | slice: 0 }}",
        {"a": [1, 2, 3, 4], "n": -0.0, "z": None},
        "2,3|4|0|",
    ),
    (
        "{{ s | replace: '', '-' }}|{{ s | replace_first: '', '-' }}|{{ s | replace_last: '', '-' }}",
        {"s": "abc"},
        "a-b-c|-abc|abc-",
    ),
    (
        "{{ s | replace: 'a', '$&' }}|{{ s | replace_first: 'a', '$&' }}|{{ s | replace_last: 'a', '$1' }}|{{ s | remove_first: 'a' }}|{{ s | remove_last: 'a' }}",
        {"s": "banana"},
        "b$&n$&n$&|b$&nana|banan$1|bnana|banan",
    ),
    (
        "{{ v | modulo: 2 }}|{{ w | modulo: 2 }}|{{ x | modulo: 0 }}|{{ y | modulo: 0.5 }}",
        {"v": -0.5, "w": 0.1, "x": 3, "y": 1.3},
        "1.5|0.10000000000000009|NaN|0.30000000000000004",
    ),
    (
        "{{ v | round: 2 }}|{{ w | round }}|{{ x | round }}|{{ y | round: 1.5 }}|{{ z | round: 2 }}",
        {"v": 1.005, "w": -2.5, "x": 2.5, "y": 1.005, "z": 1e21},
        "1.01|-3|3|1.005|1e+21",
    ),
    (
        "{{ v | floor }}|{{ v | ceil }}|{{ w | abs }}|{{ s | ceil }}",
        {"v": -0.5, "w": "-3", "s": "0x1F"},
        "-1|0|3|31",
    ),
    (
        "{{ v | at_least: 5 }}|{{ v | at_most: 5 }}|{{ t | at_least: 0 }}|{{ s | at_most: 'x' }}",
        {"v": "0x1F", "t": True, "s": "7"},
        "31|5|1|0",
    ),
    (
        "{{ v | divided_by: 0 }}|{{ v | divided_by: n }}|{{ z | divided_by: 0 }}|{{ v | divided_by: 4 }}|{{ v | divided_by: 4, 1 }}",
        {"v": "10", "n": -0.0, "z": 0},
        "Infinity|Infinity|NaN|2.5|2",
    ),
    (
        "{{ b | plus: 1 }}|{{ b | times: 3 }}|{{ s | plus: '2.5' }}|{{ s | plus }}|{{ s | minus: t }}",
        {"b": 9007199254740993, "s": "1", "t": True},
        "9007199254740992|27021597764222976|3.5|NaN|0",
    ),
    (
        "{{ a | plus: b }}|{{ a | times: b }}|{{ c }}",
        {"a": 0.1, "b": 0.2, "c": 1e21},
        "0.30000000000000004|0.020000000000000004|1e+21",
    ),
    (
        "{{ v | default: 'd' }}|{{ e | default: 'd' }}|{{ z | default: 'd' }}|{{ f | default: 'd' }}|{{ f | default: 'd', allow_false: true }}|{{ o | default: 'd' }}|{{ a | default: 'd' }}",
        {"v": 0, "e": "", "f": False, "o": {}, "a": []},
        "0|d|d|d|false|[object Object]|d",
    ),
    (
        "{{ v | json }}|{{ v | json: 2 }}|{{ m | json }}|{{ s | jsonify }}",
        {"v": {"a": [1, {"b": None}], "c": "é"}, "s": 'x"y'},
        '{"a":[1,{"b":null}],"c":"é"}|{\n  "a": [\n    1,\n    {\n      "b": null\n    }\n  ],\n  "c": "é"\n}||"x\\"y"',
    ),
    (
        "{{ v | to_integer }}|{{ w | to_integer }}|{{ m | to_integer }}",
        {"v": "12.5", "w": "x"},
        "12.5|NaN|NaN",
    ),
    (
        "{{ a | sum }}|{{ p | sum: 'price' }}|{{ a | compact | join: '-' }}|{{ a | push: 9 | join }}|{{ a | pop | join }}|{{ a | shift | join }}|{{ a | unshift: 0 | join }}",
        {"a": [1, "2", None, "x", 3.5], "p": [{"price": 2}, {"price": "3"}, {}]},
        "6.5|5|1-2-x-3.5|1 2  x 3.5 9|1 2  x|2  x 3.5|0 1 2  x 3.5",
    ),
    (
        "{{ p | where: 'ok' | size }}|{{ p | where: 'id', 2 | first | json }}",
        {"p": [{"id": 1, "ok": True}, {"id": 2, "ok": 0}, {"id": 3, "ok": False}, {"id": "2"}]},
        '2|{"id":2,"ok":0}',
    ),
    (
        "{{ s | squish }}|{{ s | normalize_whitespace }}|{{ s | number_of_words }}|{{ c | number_of_words: 'cjk' }}",
        {"s": "  a \t b\n\nc  ", "c": "你好 world"},
        "a b c| a b c |3|3",
    ),
    (
        "{{ s | slugify }}|{{ s | slugify: 'pretty' }}|{{ s | slugify: 'ascii' }}|{{ s | slugify: 'latin' }}|{{ s | slugify: 'raw', true }}",
        {"s": " Héllo, Wörld! ß-x_y "},
        "héllo-wörld-ß-x-y|héllo,-wörld!-ß-x_y|h-llo-w-rld-x-y|hello-world-ss-x-y|Héllo,-Wörld!-ß-x_y",
    ),
    (
        "{{ s | strip_html }}|{{ t | strip_html }}",
        {"s": "<p>a<script>x</script>b<!-- c -->d</p>", "t": "a<b"},
        "abd|a<b",
    ),
    ("{{ s | base64_encode }}|{{ e | base64_decode }}", {"s": "é😀", "e": "w6nwn5iA"}, "w6nwn5iA|é😀"),
    (
        "{{ s | sha256 }}|{{ s | hmac_sha256: 'k' }}",
        {"s": "é"},
        "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c|41b08e48379060d5566363083dabd4b2f9afd6e169af22d26522dbdc5e7a5134",
    ),
    (
        "{{ s | strip_newlines }}|{{ s | append: 1.5 }}|{{ n | prepend: true }}",
        {"s": "a\r\nb\nc", "n": None},
        "abc|a\r\nb\nc1.5|true",
    ),
    (
        "{{ t | date: '%Y-%m-%d %H:%M:%S.%L %z' }}|{{ t | date: '%a %A %b %B %e %-d %j %U %W %u %w %y %C %I %l %p %P %q %s %N %3N' }}",
        {"t": "2024-03-05T14:07:09.123Z"},
        "2024-03-05 14:07:09.123 +0000|Tue Tuesday Mar March  5 5 065 09 10 2 2 24 20 02  2 PM pm th 1709647629 123000000 123",
    ),
    (
        "{{ t | date: '%c|%x|%X|%Z|%:z|%^a|%#B|%10d|%_m|%0e|%-H|%G|%%' }}",
        {"t": "2024-03-05T04:07:09Z"},
        "3/5/2024, 4:07:09 AM|3/5/2024|4:07:09 AM|UTC|+00:00|TUE|MARCH|0000000005| 3|05|4|%G|%",
    ),
    (
        "{{ t | date }}|{{ t | date_to_xmlschema }}|{{ t | date_to_rfc822 }}|{{ t | date_to_string }}|{{ t | date_to_long_string: 'ordinal' }}|{{ t | date_to_string: 'ordinal', 'US' }}",
        {"t": "2024-03-22T14:07:09Z"},
        "Friday, March 22, 2024 at 2:07 pm +0000|2024-03-22T14:07:09+00:00|Fri, 22 Mar 2024 14:07:09 +0000|22 Mar 2024|22nd March 2024|Mar 22nd, 2024",
    ),
    (
        "{{ n | date: '%F %T' }}|{{ s | date: '%F %T' }}|{{ f | date: '%s %L' }}|{{ b | date: '%s' }}|{{ x | date: '%F' }}",
        {"n": 1710498600, "s": "1710498600", "f": 1.5, "b": "March 5, 2024 10:00", "x": "not a date"},
        "%F %T|%F %T|1 500|1709632800|not a date",
    ),
    (
        "{{ t | date: '%H:%M %z %Z', 'America/New_York' }}|{{ t | date: '%H:%M %z %Z', 'Asia/Kolkata' }}|{{ t | date: '%H:%M %z', 120 }}|{{ t | date: '%H:%M %z', -330 }}",
        {"t": "2024-07-05T14:07:09Z"},
        "10:07 -0400 America/New_York|19:37 +0530 Asia/Kolkata|12:07 -0200|19:37 +0530",
    ),
    (
        "{{ t | date: '%H:%M %z %Z', -60 }}|{{ t | date: '%H:%M %z', 90.5 }}|{{ t | date: '%z %Z', 'Europe/Paris' }}|{{ t | date: '%H', o }}",
        {"t": "1900-01-01T00:00:00Z", "o": {"a": 1}},
        "01:00 +0100 +0100|22:29 -0130.5|+009.35 Europe/Paris|1900-01-01T00:00:00Z",
    ),
    (
        "{{ t | date: '%Y %H:%M' }}|{{ t | date: '%Y', 60 }}",
        {"t": "+275760-09-13T00:00:00Z"},
        "275760 00:00|275760",
    ),
    (
        "{% if a < b %}T{% else %}F{% endif %}{% if a > c %}T{% else %}F{% endif %}{% if d >= e %}T{% else %}F{% endif %}{% if f <= g %}T{% else %}F{% endif %}{% if h > i %}T{% else %}F{% endif %}",
        {"a": 0, "b": "1", "c": None, "d": "01", "e": 1, "f": "10", "g": "9", "h": [2], "i": 1},
        "TFTTT",
    ),
    (
        "{% if a == b %}T{% else %}F{% endif %}{% if c == d %}T{% else %}F{% endif %}{% if e == f %}T{% else %}F{% endif %}{% if g == h %}T{% else %}F{% endif %}",
        {"a": 1, "b": True, "c": 1, "d": 1.0, "e": "1", "f": 1, "g": [1, "a"], "h": [1, "a"]},
        "FTFT",
    ),
    (
        "{% if s contains n %}T{% else %}F{% endif %}{% if s contains e %}T{% else %}F{% endif %}{% if a contains n %}T{% else %}F{% endif %}{% if a contains t %}T{% else %}F{% endif %}{% if o contains 'k' %}T{% else %}F{% endif %}",
        {"s": "a1b", "n": 1, "e": [], "a": ["1", 1], "t": True, "o": {"k": 1}},
        "TTTFF",
    ),
    (
        "{% if missing == nil %}T{% else %}F{% endif %}{% if z == nil %}T{% else %}F{% endif %}{% if e == empty %}T{% else %}F{% endif %}{% if w == blank %}T{% else %}F{% endif %}{% if o == empty %}T{% else %}F{% endif %}{% if n > empty %}T{% else %}F{% endif %}",
        {"z": None, "e": "", "w": " \t", "o": {}, "n": 1},
        "TTTTTF",
    ),
]


@pytest.mark.parametrize(("template", "event", "expected"), RENDERED)
def test_liquid_renders_as_segment_does(template: str, event: dict[str, Any], expected: str) -> None:
    assert mk.resolve({"a": {"@liquid": template}}, event) == {"a": expected}


FAILING: list[tuple[str, dict[str, Any], str]] = [
    ("{{ s | url_decode }}", {"s": "100%"}, "URI malformed, line:1, col:1"),
    ("{{ e | base64_decode }}", {"e": "abc!"}, "invalid base64 provided to base64_decode, line:1, col:1"),
    (
        "{{ t | date: '%F', 'Mars/Base' }}",
        {"t": "2024-07-05T14:07:09Z"},
        "Invalid time zone specified: Mars/Base, line:1, col:1",
    ),
    (
        "{{ t | date: '%F', z }}",
        {"t": "2024-07-05T14:07:09Z", "z": "été"},
        "Invalid time zone specified: Ã©tÃ©, line:1, col:1",
    ),
]


@pytest.mark.parametrize(("template", "event", "message"), FAILING)
def test_liquid_filter_errors_carry_segments_message(
    template: str, event: dict[str, Any], message: str
) -> None:
    with pytest.raises(MappingError) as caught:
        mk.resolve({"a": {"@liquid": template}}, event)
    assert str(caught.value) == message
