"""`streamproc check` refuses what would fail on every event, at the key that causes it.

A mapping that compiles but can never succeed (a disabled liquid tag or filter, a template that does
not parse, a field name the action does not have) and a YAML file with a key given twice are all
reported with file, key path and problem, and the worker refuses them at start-up the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.cli import main
from streamproc.config import load_config
from streamproc.errors import ConfigError

HEAD = """
destinations:
  - id: tiktok
    type: tiktok-offline-conversions
    settings: {accessToken: token-1, eventSetID: "7312"}
    subscriptions:
      - name: Orders
        trigger: event = "Order Completed"
        action: reportOfflineEvent
        mapping:
"""
WHERE = "destinations[0].subscriptions[0].mapping"


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["check", "--config", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    prefix = f"{path}: "
    assert lines and all(line.startswith(prefix) for line in lines)
    with pytest.raises(ConfigError):  # the worker loads the file the same way and refuses it
        load_config(path)
    return [line[len(prefix) :] for line in lines]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"@liquid": "{% for p in properties.products %}{{ p.sku }}{% endfor %}"}', 'tag "for" is disabled'),
        ('{"@liquid": "{% tablerow x in y %}{% endtablerow %}"}', 'tag "tablerow" is disabled'),
        ('{"@liquid": "{{ properties.tags | sort | join: \\",\\" }}"}', 'filter "sort" is disabled'),
        ('{"@liquid": "{{ properties.name | upcase"}', "expected"),
        ('{"@liquid": "{% if properties.vip %}"}', "if"),
        ('{"@liquid": "{% sparkle %}"}', 'tag "sparkle" not found'),
    ],
)
def test_liquid_that_fails_on_every_event_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, problem: str
) -> None:
    (line,) = check(tmp_path, HEAD + f"          event: {value}\n", capsys)
    assert line.startswith(f"{WHERE}.event: ")
    assert problem in line


def test_a_disabled_filter_in_a_branch_is_refused_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value = '{"@if": {"exists": {"@path": "$.properties.x"}, "then": {"@liquid": "{{ a | uniq }}"}}}'
    (line,) = check(tmp_path, HEAD + f"          event: {value}\n", capsys)
    assert line == f'{WHERE}.event.@if.then: filter "uniq" is disabled, line:1, col:1'


def test_misspelt_field_names_are_refused_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD + (
        "          event: CompletePayment\n"
        "          emial_addresses: {'@path': '$.context.traits.email'}\n"
        "          contents:\n"
        "            '@arrayPath':\n"
        "              - $.properties.products\n"
        "              - {price: {'@path': $.price}, contnet_id: {'@path': $.product_id}}\n"
    )
    lines = check(tmp_path, text, capsys)
    assert lines == [
        f"{WHERE}.emial_addresses: not a field of action 'reportOfflineEvent';"
        " did you mean 'email_addresses'?",
        f"{WHERE}.contents.@arrayPath[1].contnet_id: not a field of action 'reportOfflineEvent';"
        " did you mean 'content_id'?",
    ]


def test_the_same_mapping_spelt_right_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD + (
        "          event: {'@liquid': '{{ event | downcase | replace: \" \", \"_\" }}'}\n"
        "          email_addresses: {'@path': '$.context.traits.email'}\n"
        "          contents:\n"
        "            '@arrayPath':\n"
        "              - $.properties.products\n"
        "              - {price: {'@path': $.price}, content_id: {'@path': $.product_id}}\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().out


def test_a_key_given_twice_is_refused_with_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "kafka:\n"  # line 1
        "  bootstrap_servers: a:9092\n"
        "  topics: [events]\n"
        "destinations: []\n"
        "kafka:\n"  # line 5
        "  bootstrap_servers: b:9092\n"
        "  topics: [events]\n"
        "  topics: [other]\n"  # line 8
    )
    lines = check(tmp_path, text, capsys)
    assert lines == [
        "kafka: duplicate key (lines 1 and 5); YAML keeps only the last, so remove or merge one",
        "kafka.topics: duplicate key (lines 7 and 8); YAML keeps only the last, so remove or merge one",
    ]
