"""Records what Segment's destination-filter engine answers for a generated corpus of cases.

    .venv/bin/python tests/data/filter_answers.py [--oracle DIR] [--seed 13]

The oracle is `segment-filter-oracle` (Node; @segment/tsub 2.0.1 and @segment/fql-ts 1.10.1 with
`npm ci` done), by default `../shared/tools/segment-filter-oracle` beside the repository. Writes
`filter-corpus.jsonl`, one case a line with the oracle's answer:

- `{"kind": "match", "ir", "event", "answer": true | false | "error"}`: tsub's `matches()` for a
  random condition (every operator and function tsub knows, nested, with lists, calls, odd types)
  on a random event (nested objects and arrays, nulls, unicode, big numbers, call-shaped arrays);
- `{"kind": "transform", "transformers", "event", "answer": event | null | "error"}`: tsub's
  `transform()` with drop, drop_properties, allow_properties and sample_event (with a path; without
  one only at percents where it is not random);
- `{"kind": "lex", "fql", "tokens" | "error", "ast" | "ast_error"}`: fql-ts's tokens (or its
  refusal) for the documented examples and generated texts, and its (subset) parser's answer.

The suite (tests/core/filters/test_differential.py) runs every case without Node. Field names that
JavaScript objects inherit (`constructor`, `toString`, ...) are never generated: streamproc does not
reach them (the deliberate difference "inherited-property").
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "filter-corpus.jsonl"
DEFAULT_ORACLE = HERE.parents[2] / "shared" / "tools" / "segment-filter-oracle"

MATCH_CASES = 2000
TRANSFORM_CASES = 600
LEX_GENERATED = 900

STRINGS = [
    "", "a", "A", "abc", "ABC", "Order Completed", "order completed", "ORDER", "Order", "track",
    "identify", "page", "screen", "Button Clicked", "dark-mode", "discounts", "x.y", "1.2.3", "2.0",
    "1.10.0", " 1 .2", "1.0", "2", "v1.2", "1.a.0", "1.2.3.4", "-1.0", "+1.2", "ア", "アイウ", "😀",
    "a😀b", "İ", "ΑΣ", "Straße", "\ud800", "test@test.com", "a@segment.com", "a*b", "a/c/b", "*", "?",
    "]", "[", "true", "null", "0", "10", "length", "lowercase", "event", "properties.name", "type",
]  # fmt: skip
NUMBERS: list[Any] = [0, 1, -1, 2, 3, 10, 100, 1.5, -2.5, 0.1, 1e21, 2**53, 2**53 + 1, -0.0, 1e-7, 3.0, 7]
TYPE_NAMES = ["string", "number", "boolean", "bool", "object", "list", "null", "undefined"]
PATTERNS = [
    "*", "", "a*", "*d", "a*d", "a??d", "ab\\*d", "ab[cC]d", "ab[a-z]d", "ab[A-Z]d", "Order *", "*Completed",
    "*@segment.com", "1.*", "2.*", "a[", "[", "[^", "[]a]", "[\\]a]", "[-]", "[x-]", "[a-b-c]", "\\", "a\\",
    "?", "??", "*?*", "[^a]*", "😀", "?😀", "a*b*c", "*[a-ζ]", "[ア-ン]*", "a/*", "*.com", "[!a]*",
]  # fmt: skip
VERSIONS = [
    "1.0.0",
    "1.0",
    "1",
    "2.0.0",
    "1.10.0",
    "1.9.9",
    "0.9.9",
    "1.2.3.4",
    "1.a.0",
    "",
    " 1 . 2 ",
    "01.2",
    "v1",
]
SEMVER_OPS = ["=", "!=", ">", ">=", "<", "<=", "~=", ""]
KEYS = ["a", "b", "name", "price", "email", "tags", "items", "value", "0", "1", "sku", "id", "x-y", "ア", ""]
OPS = ["=", "!=", "<", "<=", ">", ">="]
CALL_SHAPED = [["length", "abc"], ["lowercase", "event"], ["typeof", "x"], ["contains", "a", "b"]]
FORBIDDEN_KEYS = {"constructor", "toString", "__proto__", "hasOwnProperty", "valueOf", "isPrototypeOf"}


class Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    # -- values and events --------------------------------------------------------------------------
    def scalar(self) -> Any:
        x = self.r.random()
        if x < 0.5:
            return self.r.choice(STRINGS)
        if x < 0.8:
            return self.r.choice(NUMBERS)
        if x < 0.92:
            return self.r.random() < 0.5
        return None

    def value(self, depth: int = 0) -> Any:
        x = self.r.random()
        if depth >= 3 or x < 0.5:
            return self.scalar()
        if x < 0.6:
            return list(self.r.choice(CALL_SHAPED))
        if x < 0.8:
            return [self.value(depth + 1) for _ in range(self.r.randint(0, 4))]
        return {self.r.choice(KEYS): self.value(depth + 1) for _ in range(self.r.randint(0, 4))}

    def event(self) -> dict[str, Any]:
        r = self.r
        fields: dict[str, Any] = {
            "revenue": lambda: r.choice([10, 99.5, 100, 1000, "100", None, -1, 2**53 + 1]),
            "name": lambda: r.choice(STRINGS),
            "tags": lambda: [r.choice(STRINGS) for _ in range(r.randint(0, 3))],
            "items": lambda: [
                {"sku": r.choice(["a", 1]), "price": r.choice(NUMBERS)} for _ in range(r.randint(0, 2))
            ],
            "email": lambda: r.choice(["a@segment.com", "b@example.com", "", None]),
            "flag": lambda: r.choice([True, False, "true", None, 1]),
            "features": lambda: r.choice([["discounts", "dark-mode"], ["dark-mode"], [], "dark-mode", None]),
        }
        props = {k: make() for k, make in fields.items() if r.random() < 0.55}
        for _ in range(r.randint(0, 2)):
            props[r.choice(KEYS)] = self.value(1)
        event: dict[str, Any] = {
            "type": r.choice(["track", "identify", "page", "screen", "group", "alias", "Track", 1, None]),
            "event": r.choice([*STRINGS, None, 5, True, ["Order Completed"]]),
            "userId": r.choice(["u1", "", None, 42, "user-ア"]),
            "messageId": f"m{r.randint(0, 10**6)}",
            "properties": props,
        }
        if r.random() < 0.5:
            event["context"] = {
                "library": {
                    "name": r.choice(["analytics.js", "analytics-ios", ""]),
                    "version": r.choice(VERSIONS),
                },
                "app": {"version": r.choice(VERSIONS)},
            }
        if r.random() < 0.3:
            event["traits"] = {r.choice(KEYS): self.value(1) for _ in range(r.randint(0, 2))}
        for key in list(event):
            if key != "messageId" and r.random() < 0.08:
                if r.random() < 0.5:
                    del event[key]
                else:
                    event[key] = self.value(1)
        if r.random() < 0.1:
            event[r.choice(KEYS)] = self.value(1)
        return event

    def paths(self, value: Any, prefix: str = "", depth: int = 0) -> list[str]:
        out: list[str] = []
        if depth > 4:
            return out
        if isinstance(value, dict):
            for k, v in value.items():
                if "." in k or k in FORBIDDEN_KEYS:
                    continue
                p = f"{prefix}.{k}" if prefix else k
                out.append(p)
                out.extend(self.paths(v, p, depth + 1))
        elif isinstance(value, list):
            out.append(f"{prefix}.length")
            for i, v in enumerate(value):
                p = f"{prefix}.{i}"
                out.append(p)
                out.extend(self.paths(v, p, depth + 1))
        elif isinstance(value, str) and value and prefix:
            out.extend([f"{prefix}.length", f"{prefix}.0"])
        return out

    def path(self, event: Any) -> str:
        if self.r.random() < 0.15:
            return self.r.choice(
                ["nope", "properties.missing", "properties.name.first", "context.x.y", "", "0"]
            )
        return self.r.choice(self.paths(event) or ["type"])

    # -- conditions (tsub IR) -----------------------------------------------------------------------
    def literal(self, near: Any = None) -> Any:
        x = self.r.random()
        if near is not None and x < 0.5 and not isinstance(near, dict | list):
            return near
        if x < 0.45:
            return self.r.choice(TYPE_NAMES)
        return self.scalar()

    def operand(self, event: Any, depth: int) -> Any:
        x = self.r.random()
        if x < 0.45:
            return self.path(event)
        if x < 0.75 or depth >= 2:
            return {"value": self.literal()}
        if x < 0.87:
            return {"value": [self.operand(event, depth + 1) for _ in range(self.r.randint(0, 3))]}
        return self.call(event, depth + 1)

    def call(self, event: Any, depth: int) -> list[Any]:
        r = self.r
        name = r.choice(["lowercase", "typeof", "length", "contains", "match", "semver"])
        if name in ("lowercase", "typeof", "length"):
            return [name, self.operand(event, depth)]
        if name == "contains":
            return [
                name,
                self.operand(event, depth),
                {"value": r.choice(STRINGS)} if r.random() < 0.7 else self.operand(event, depth),
            ]
        if name == "match":
            pattern = {"value": r.choice(PATTERNS)} if r.random() < 0.8 else self.operand(event, depth)
            return [name, self.operand(event, depth), pattern]
        version = {"value": r.choice(VERSIONS)}
        return [
            name,
            self.operand(event, depth) if r.random() < 0.6 else version,
            {"value": r.choice(SEMVER_OPS)},
            {"value": r.choice(VERSIONS)},
        ]

    def comparison(self, event: Any, depth: int) -> list[Any]:
        r = self.r
        op = r.choice(OPS)
        x = r.random()
        if x < 0.35:
            path = self.path(event)
            from_event = _lookup(event, path)
            return [op, path, {"value": self.literal(from_event)}]
        if x < 0.5:
            fn = r.choice(["typeof", "length", "lowercase"])
            path = self.path(event)
            inner = [fn, path if r.random() < 0.8 else self.operand(event, depth + 1)]
            target: Any = (
                r.choice(TYPE_NAMES)
                if fn == "typeof"
                else r.choice([0, 1, 2, 3, 5, "abc", "order completed"])
            )
            if fn == "length" and r.random() < 0.5:
                value = _lookup(event, path)
                if isinstance(value, str | list):
                    target = len(value)
            pair = [inner, {"value": target}]
            r.shuffle(pair)
            return [op, *pair]
        if x < 0.6:
            path = self.path(event)
            return [op, path, {"value": [{"value": self.literal()} for _ in range(r.randint(0, 2))]}]
        return [op, self.operand(event, depth), self.operand(event, depth)]

    def condition(self, event: Any, depth: int = 0) -> Any:
        r = self.r
        x = r.random()
        if depth >= 3 or x < 0.35:
            return self.comparison(event, depth)
        if x < 0.47:
            right: Any
            y = r.random()
            if y < 0.5:
                right = {"value": [self.operand(event, depth + 1) for _ in range(r.randint(0, 4))]}
            elif y < 0.8:
                right = self.path(event)
            else:
                right = {"value": [{"value": s} for s in r.sample(STRINGS, 3)]}
            return [
                "in",
                self.operand(event, depth + 1) if r.random() < 0.6 else {"value": r.choice(STRINGS)},
                right,
            ]
        if x < 0.62:
            return self.call(event, depth + 1)
        if x < 0.7:
            return ["!", self.condition(event, depth + 1)]
        if x < 0.92:
            op = r.choice(["and", "or"])
            return [op] + [self.condition(event, depth + 1) for _ in range(r.randint(0, 3))]
        return r.choice([self.path(event), {"value": r.choice([True, False, "true", 1])}])

    # -- transformers ---------------------------------------------------------------------------------
    def objects(self, event: Any) -> list[str]:
        return [""] + [p for p in self.paths(event) if isinstance(_lookup(event, p), dict | list)]

    def property_rules(self, event: Any) -> dict[str, list[str]]:
        rules: dict[str, list[str]] = {}
        for _ in range(self.r.randint(1, 2)):
            parent = self.r.choice([*self.objects(event), "properties.missing", "properties.name", "userId"])
            target = event if parent == "" else _lookup(event, parent)
            keys: list[str] = []
            if isinstance(target, dict):
                keys = list(target)
            elif isinstance(target, list):
                keys = [str(i) for i in range(len(target))]
                for item in target:
                    if isinstance(item, dict):
                        keys.extend(item)
            names = self.r.sample(keys, min(len(keys), self.r.randint(0, 3))) if keys else []
            if self.r.random() < 0.3:
                names.append(self.r.choice(["missing", "0", "length", "name"]))
            rules[parent] = [n for n in names if n not in FORBIDDEN_KEYS]
        return rules

    def transformers(self, event: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _ in range(self.r.randint(1, 3)):
            x = self.r.random()
            if x < 0.35:
                out.append({"type": "drop_properties", "config": {"drop": self.property_rules(event)}})
            elif x < 0.7:
                out.append({"type": "allow_properties", "config": {"allow": self.property_rules(event)}})
            elif x < 0.93:
                if self.r.random() < 0.6:
                    percent = self.r.choice([0, -0.5, 1, 1.5, 0.5, 0.001, 0.25, 0.999])
                    sample = {
                        "percent": percent,
                        "path": self.r.choice(["userId", "properties.name", "nope", "properties"]),
                    }
                else:
                    sample = {"percent": self.r.choice([0, -1, 1, 2])}
                out.append({"type": "sample_event", "config": {"sample": sample}})
            else:
                out.append({"type": "drop"})
        return out


def _lookup(event: Any, path: str) -> Any:
    value = event
    for key in path.split("."):
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


# -- FQL texts -------------------------------------------------------------------------------------------

DOCUMENTED = [
    # Segment's FQL reference (Destination Filter Query Language)
    "event = 'Button Clicked'",
    "event = 'Screen Tapped'",
    "context.path.path = '/login'",
    "type = 'identify' or type = 'track'",
    "event = 'Button Clicked' and type = 'track'",
    "match( context.library.version, '1.*' )",
    "match( context.library.version, '2.*' )",
    "type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )",
    "!contains( context.library.name, 'js' )",
    "'dark-mode' in properties.features",
    "'blink' in properties.features",
    "properties.product\\ 1.price = '19.99'",
    "type = 'track' and ( event = 'Click' or match( 'Button *', event ) )",
    "( type = 'track' or type = 'identify' ) and "
    "( properties.enabled or match( traits.email, '*@company.com' ) )",
    "!( type in ['track', 'identify'] )",
    "length( userId ) > 0",
    "typeof( userId ) = 'string' and length( userId ) > 0",
    "contains( null, 'a' )",
    "length( null ) = 0",
    "lowercase( null ) = null",
    "typeof( null ) = 'null'",
    "match( null, 'a' )",
    "match( 'abcd', 'a*d' )",
    "match( '', '*' )",
    "match( 'abc', 'ab' )",
    "match( 'abcd', 'a??d' )",
    "match( 'abcd', '*d' )",
    "match( 'ab*d', 'ab\\*d' )",
    "match( 'abCd', 'ab[cC]d' )",
    "match( 'abcd', 'ab[a-z]d' )",
    "match( 'abcd', 'ab[A-Z]d' )",
    'userId = oops"',
    "message.event > 30",
    "message.event > 30.30.30",
    # the destination filters guide
    "length( userId ) < 1 or typeof( userId ) != 'string'",
    "all",
    # tsub's own tests (their FQL comments)
    "trueValue",
    "true",
    "false",
    'match("test@test.com", "*.com")',
    'contains(email, ".com")',
    '"test" = lowercase("TEST")',
    '4 = length("TEST")',
    '"boolean" = typeof(true)',
    'semver("1.0.1", ">=", "1.0.0")',
    'semver(app_version, ">=", "1.0.0")',
    'semver(null, ">=", "1.0.0")',
    "[] = []",
    "[1, 2] = [2, 1]",
    "0 = 0",
    "5 != 6",
    "5 <= 6",
    "7 >= 6",
    "true and true and false",
    "false or false or true",
    '"event" in ["event", "str"]',
    'event in ["Clicked", "Viewed"]',
    "(false or true) and true",
    # triggers as Segment's docs write them (double quotes)
    'type = "track" and event = "Order Completed"',
    'event = "Order Completed" and properties.revenue > 100',
    '!(event = "CP VOD - Start video" or event = "CP VOD - Track video")',
    # texts fql-ts lexes oddly or refuses
    "an", "o", "n", "nul", "x = nul", "a!=b", "a != b", "x <=5", "x<5", "x=5", "a = 'b'c", "a = \"b\"\"",
    "a\r= 1", "a & b", "a || b", "x = 1.", "x = .5", "x = -", "x = +5", "x = 007", "\\", "a\\", "!a", "! a",
    "!!a", "a = 'x", "properties.items.0.price > 5", "properties.items.\\0.price > 5", "x = 1.2.3",
    "lowercase(event) in ['a', 'b']", "contains(lowercase(event), 'order')", "properties.a\\.b = 1",
    "a and b or c", "!a = 1", "a = b = c", "()", "(a", "a)", "foo(x)", "contains(a)", "x in [1,]", "x in []",
    "typeof(properties.tags) = 'list'", "ア = 1", "x = 'ア'", "x = '😀'", "\\😀 = 1", "a\tand\nb",
    "in = 1", "x in y", "null = null", "properties.2fa = 1", "properties.\\2fa = 1", "x = -5", "x = -0",
]  # fmt: skip

FRAGMENTS = [
    "a", "x", "type", "event", "properties", ".", "name", "0", "1.5", "-", "+", "=", "!=", "<", "<=", ">",
    ">=", "!", "and", "or", "null", "true", "in", "'a'", '"b"', "'", '"', "(", ")", "[", "]", ",", "contains",
    "match", "lowercase", "length", "typeof", "semver", "\\", "\\ ", "_", "ア", "😀", "\r", "\t", "\n", "*",
    "&", "an", "nul", "o", "12", "3.", ".4", "'x y'",
]  # fmt: skip


def fql_texts(gen: Gen) -> list[str]:
    r = gen.r
    out = list(DOCUMENTED)
    seen = set(out)
    while len(out) < len(DOCUMENTED) + LEX_GENERATED:
        parts = [r.choice(FRAGMENTS) for _ in range(r.randint(1, 7))]
        joiner = [r.choice(["", " ", " ", "  "]) for _ in parts]
        text = "".join(p + j for p, j in zip(parts, joiner, strict=True))
        if r.random() < 0.3:
            text = text.rstrip()
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


# -- running the oracle -------------------------------------------------------------------------------------


def ask(oracle: Path, cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if not (oracle / "node_modules").is_dir():
        sys.exit(f"{oracle}: run `npm ci` there first (or pass --oracle DIR)")
    # ASCII JSON: lone surrogates travel as \\uXXXX escapes, which JSON.parse turns back into them
    text = "\n".join(json.dumps(c) for c in cases) + "\n"
    done = subprocess.run(
        ["node", "run.mjs"], cwd=oracle, input=text.encode(), capture_output=True, check=True
    )
    answers = {}
    for line in done.stdout.decode("utf-8").splitlines():
        answer = json.loads(line)
        answers[answer["id"]] = answer
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", type=Path, default=DEFAULT_ORACLE)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    gen = Gen(args.seed)
    questions: list[dict[str, Any]] = []
    records: dict[str, dict[str, Any]] = {}
    for i in range(MATCH_CASES):
        event = gen.event()
        ir = gen.condition(event)
        case_id = f"match-{i:04d}"
        records[case_id] = {"id": case_id, "kind": "match", "ir": ir, "event": event}
        questions.append({"id": case_id, "ir": json.dumps(ir), "event": event})
    for i in range(TRANSFORM_CASES):
        event = gen.event()
        transformers = gen.transformers(event)
        case_id = f"transform-{i:04d}"
        records[case_id] = {"id": case_id, "kind": "transform", "transformers": transformers, "event": event}
        questions.append({"id": case_id, "transformers": transformers, "event": event})
    for i, text in enumerate(fql_texts(gen)):
        case_id = f"lex-{i:04d}"
        records[case_id] = {"id": case_id, "kind": "lex", "fql": text}
        questions.append({"id": case_id, "fql": text})
    answers = ask(args.oracle, questions)
    with OUT.open("w", encoding="utf-8") as out:
        for case_id, record in records.items():
            answer = answers[case_id]
            if record["kind"] == "match":
                record["answer"] = "error" if "error" in answer else answer["match"]
            elif record["kind"] == "transform":
                record["answer"] = "error" if "error" in answer else answer["event"]
            else:
                for key in ("tokens", "error", "ast", "ast_error"):
                    if key in answer:
                        record[key] = answer[key]
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
    counts = {k: sum(1 for r in records.values() if r["kind"] == k) for k in ("match", "transform", "lex")}
    print(f"wrote {OUT.name}: {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
