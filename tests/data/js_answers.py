"""Records what JavaScript (Node.js, V8) answers for the edge cases in tests/core/test_js.py.

    TZ=UTC node --version && .venv/bin/python tests/data/js_answers.py

Writes `js-answers.json`: for each question (Number(), String(), trim(), length, TextEncoder,
JSON.stringify, Date.parse, URLSearchParams, new URL().searchParams.get) the inputs and Node's
answers. Numbers come back as `String(n)` ("-0" for negative zero) so that NaN and the infinities
survive JSON. The suite reads the recorded file and never runs Node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "js-answers.json"

NUMBER_INPUTS: list[object] = [
    " 0x10 ",
    "1_000",
    "infinity",
    "Infinity",
    "+Infinity",
    "-Infinity",
    "INFINITY",
    "",
    "   ",
    "\ufeff12\u3000",
    "\u200b1",
    "\x1c1",
    "1\x85",
    "\u0661\u0662",
    "\uff11",
    "0b101",
    "0o17",
    "0X1f",
    "-0x10",
    "+0x10",
    "0x",
    "0x1g",
    "0b2",
    "0o8",
    "1e3",
    "1E+3",
    "1e",
    ".5",
    "5.",
    ".",
    "+.5",
    "-.5e-2",
    "-0",
    "+0",
    "00012",
    "012.50",
    "1e400",
    "-1e400",
    "1e-400",
    "0x" + "f" * 300,
    "12px",
    "NaN",
    "1,000",
    "1 000",
    "\t\n\v\f\r 7 \u2028\u2029",
    "\u00a08\u1680",
    "\u180e9",
    "0.1e-6",
    "+-1",
    "--1",
    "null",
    "true",
    "0.0000001",
    "123456789012345678901234567890",
    "9007199254740993",
    " 1e1000 ",
    "e5",
    True,
    False,
    None,
    [],
    [5],
    [" 0x10 "],
    [1, 2],
    [[3]],
    [None],
    ["1,2"],
    [True],
    {},
    2**60,
    1.5,
]
STRING_INPUTS: list[object] = [
    1e21,
    1e20,
    1e-7,
    1e-6,
    1.5e-6,
    0.1,
    0.30000000000000004,
    -0.0,
    123456789012345680000,
    2**53 + 1,
    5e-324,
    1.7976931348623157e308,
    -1234.5678,
    100,
    [1, [2, 3]],
    [None, "a", [None]],
    [],
    [[]],
    {},
    {"a": 1},
    True,
    False,
    None,
    "x",
]
LENGTH_INPUTS = ["", "abc", "é", "a\U0001f600", "\ud800", "\U0001f600\U0001f600", "\u20ac"]
UTF8_INPUTS = ["a", "é", "\U0001f600", "\ud800", "a\udc00b", "\udbff\udfff", "\udc00\ud800"]
STRINGIFY_INPUTS: list[object] = [
    {"b": 1, "1": 2, "a": [1.5e-6, 1e21, -0.0, 0.1, 2**53 + 1]},
    {"10": 1, "9": 2, "4294967295": 3, "4294967294": 4, "01": 5, "-1": 6, "1.5": 7},
    ["\ud800", "\udc00x", "\U0001f600", "\u2028\u2029", "\x00\x1f\x7f", '"\\/', "é"],
    {"é": {"\ud83d": "lone high"}},
    [1e-7, 1e16, 123e-20, 5e-324, 1.7976931348623157e308],
    "plain",
    12,
    None,
]
DATE_INPUTS = [
    "2024-03-15T10:30:00.000Z",
    "2024-03-15T10:30:00Z",
    "2024-03-15T10:30:00.1Z",
    "2024-03-15T10:30:00.123456Z",
    "2024-03-15",
    "2024-03",
    "2024",
    "2024-03-15T10:30",
    "2024-03-15T10:30Z",
    "2024-03-15T24:00:00Z",
    "2024-03-15T24:00:01Z",
    "2024-02-31T00:00:00.000Z",
    "2023-02-29T00:00:00.000Z",
    "0000-01-01T00:00:00.000Z",
    "9999-12-31T23:59:59.999Z",
    "2024-03-15T10:30:00+05:30",
    "2024-03-15T10:30:00-23:59",
    "2024-03-15T10:30:00+24:00",
    "2024-03-15T10:30:00.000+0530",
    "2024-03-15 10:30:00",
    "2024-03-15 10:30:00Z",
    "Mar 15 2024",
    "15 March 2024 10:30 PM",
    "Fri, 15 Mar 2024 10:30:00 GMT",
    "2024/03/15",
    "3/15/2024",
    "+002024-03-15T00:00:00Z",
    "-000001-01-01T00:00:00Z",
    "-000000-01-01T00:00:00Z",
    "2024-3-5",
    "",
    "garbage",
    "2024-03-15T10:30:00.000z",
    "2024-03-15t10:30:00Z",
    "1710498600",
    "2024-13-01",
    "2024-00-10",
    "2024-03-32",
    "2024-03-15T10:60:00Z",
    "2024-03-15T10:30:60Z",
    "\u30002024-03-15",
    "2024-03-15T10:30:00.000Z ",
    "Thu, 01 Jan 1970 00:00:00 GMT+0100",
    "12:30 2024-03-15",
    "2024-03-15T10:30:00 PST",
    "june 1 2020 (comment) 12:00",
    "+275760-09-13T00:00:00.000Z",
    "+275760-09-13T00:00:00.001Z",
    "2024-03-15T10:30:00.000+05",
    "0001-01-00",
    "2024-01-00",
    "0049-12-00",
    "0050-02-30",
]
FORM_INPUTS = [
    [["a b", "~*-._!'()"]],
    [["\u00e9\U0001f600", "\ud800"], ["x", "%&=+"]],
    [["segment_ss", "1"], ["args", '{"action":"","user_id":"u1"}']],
    [["k", "\u20ac\r\n\t"], ["", ""]],
]
SEARCH_PARAM_INPUTS = [
    ["https://shop.example/?ttclid=abc", "ttclid"],
    ["https://shop.example/p?a=1&ttclid=x%20y+z", "ttclid"],
    ["not a url?ttclid=1", "ttclid"],
    ["https://exa mple.com/?ttclid=1", "ttclid"],
    ["https://example.com:99999/?ttclid=1", "ttclid"],
    ["https://example.com:65535/?ttclid=1", "ttclid"],
    ["HTTPS://EX.com#frag?ttclid=1", "ttclid"],
    ["  https://ex.com/?ttclid=%zz", "ttclid"],
    ["mailto:a@b?ttclid=5", "ttclid"],
    ["https://ex.com/?ttclid=%E2%82%AC", "ttclid"],
    ["https://ex.com/?ttclid=%FF", "ttclid"],
    ["https://ex.com/?ttclid", "ttclid"],
    ["https://ex.com/?ttclid=1&ttclid=2", "ttclid"],
    ["https://[::1]/?ttclid=v6", "ttclid"],
    ["file:///x?ttclid=f", "ttclid"],
    ["https://ex.com/?tt%63lid=enc", "ttclid"],
    ["https://ex.com/?a=1#ttclid=2", "ttclid"],
    ["https:\\\\ex.com\\p?ttclid=back", "ttclid"],
    ["https://u:p@ex.com/?ttclid=cred", "ttclid"],
    ["https://ex.com/\u00e9?ttclid=\u00e9", "ttclid"],
    ["https://ex.com/?ttclid=\ud800", "ttclid"],
    ["https://ex.com/?ttclid=a%F0%9F\ud83d", "ttclid"],
]

PROGRAM = r"""
const q = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const num = (n) => (Object.is(n, -0) ? '-0' : String(n));
const hex = (s) => Buffer.from(new TextEncoder().encode(s)).toString('hex');
const param = ([u, n]) => { try { return new URL(u).searchParams.get(n); } catch { return null; } };
const spaces = [];
for (let c = 0; c < 0x10000; c++) if (String.fromCharCode(c).trim() === '') spaces.push(c);
const answer = (inputs, fn) => inputs.map(fn);
process.stdout.write(JSON.stringify({
  node: process.version,
  number: answer(q.number, (v) => num(Number(v))),
  string: answer(q.string, (v) => String(v)),
  length: answer(q.length, (v) => v.length),
  utf8: answer(q.utf8, hex),
  stringify: answer(q.stringify, (v) => JSON.stringify(v)),
  date_parse: answer(q.date_parse, (v) => num(Date.parse(v))),
  form: answer(q.form, (v) => new URLSearchParams(v).toString()),
  search_param: answer(q.search_param, param),
  whitespace: spaces,
}));
"""


def main() -> int:
    questions = {
        "number": NUMBER_INPUTS,
        "string": STRING_INPUTS,
        "length": LENGTH_INPUTS,
        "utf8": UTF8_INPUTS,
        "stringify": STRINGIFY_INPUTS,
        "date_parse": DATE_INPUTS,
        "form": FORM_INPUTS,
        "search_param": SEARCH_PARAM_INPUTS,
    }
    # Node reads JSON, so every input is sent as JSON text; lone surrogates travel as \u escapes.
    done = subprocess.run(
        ["node", "-e", PROGRAM],
        input=json.dumps(questions),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    )
    answers = json.loads(done.stdout)
    # The inputs are written from this side: Node would print objects in its own key order.
    for name, inputs in questions.items():
        answers[name] = [[q, a] for q, a in zip(inputs, answers[name], strict=True)]
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in answers.items()]
    OUT.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(HERE.parent.parent)} ({answers['node']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
