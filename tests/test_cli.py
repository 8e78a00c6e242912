"""The command line: every command is listed, and each loads only what it needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from streamproc.cli import build_parser, command_names

ROOT = Path(__file__).resolve().parent.parent

# Runs `streamproc run` with the worker's run() replaced by a print of the modules it loaded.
_MODULES_OF_RUN = """
import json, sys
from streamproc.runs import worker
worker.Worker.run = lambda self: print(json.dumps(sorted(sys.modules))) or 0
from streamproc.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def modules_of_run(config: Path) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _MODULES_OF_RUN, str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_help_lists_every_command() -> None:
    text = build_parser().format_help()
    for name in ("run", "check", "send", "replay", "dlq", "retry", "simulate", "demo"):
        assert name in command_names()
        assert f"    {name} " in text


def test_one_command_parses_alone() -> None:
    args = build_parser(only="run").parse_args(["run", "--config", "x.yaml"])
    assert args.command == "run" and args.config == "x.yaml"


def test_run_loads_neither_other_commands_nor_unused_libraries(tmp_path: Path) -> None:
    # A JSON input, no liquid mapping, no parking, metrics off: what the worker needs only
    # for those (and what the other commands need) stays unloaded.
    data = yaml.safe_load((ROOT / "examples" / "config.yaml").read_text())
    data["metrics"] = {"enabled": False}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    loaded = modules_of_run(config)
    assert "streamproc.runs.worker" in loaded and "streamproc.router" in loaded
    unused = {
        "streamproc.devtools.simulator",
        "streamproc.devtools.demo",
        "streamproc.commands.replay",
        "streamproc.commands.dlq",
        "streamproc.runs.replay",
        "streamproc.runs.redrive",
        "streamproc.kafka.retry",
        "streamproc.parking",
        "streamproc.ops_server",
        "streamproc.core.liquid",
        "aiohttp",
        "fastavro",
        "jsonschema",
        "liquid",
    }
    assert not unused & loaded


def test_run_loads_what_the_configuration_asks_for(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "examples" / "config.yaml").read_text())
    data["metrics"] = {"enabled": True, "port": 0}
    data["destinations"][0]["limits"]["retry"] = {"park_after_attempts": 2}
    data["destinations"][0]["subscriptions"] = [
        {
            "name": "Liquid",
            "trigger": 'type = "track"',
            "action": "forwardEvent",
            "mapping": {"event_type": {"@liquid": "{{ event.type }}"}},
        }
    ]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    loaded = modules_of_run(config)
    assert {"streamproc.parking", "streamproc.kafka.retry", "streamproc.core.liquid"} <= loaded


def test_serving_metrics_loads_no_web_framework() -> None:
    # The operations server is the standard library's: a worker with metrics on (the default)
    # does not pay aiohttp's memory for three GET routes.
    code = "import json, sys, streamproc.ops_server; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert "streamproc.ops_server" in loaded and "aiohttp" not in loaded


_MODULES_OF_PARSER = """
import json, sys
from streamproc.cli import build_parser
build_parser()
print(json.dumps(sorted(sys.modules)))
"""


def test_the_runtime_never_imports_the_dev_tools(tmp_path: Path) -> None:
    # The simulator, the demo and the local broker are shipped but are not the worker: neither
    # `streamproc run` (with every feature of the configuration on) nor the whole command line
    # loads them until `simulate` or `demo` runs.
    data = yaml.safe_load((ROOT / "examples" / "config.yaml").read_text())
    data["metrics"] = {"enabled": True, "port": 0}
    data["destinations"][0]["limits"]["retry"] = {"park_after_attempts": 2}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    parser = subprocess.run(
        [sys.executable, "-c", _MODULES_OF_PARSER], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert parser.returncode == 0, parser.stderr
    for loaded in (modules_of_run(config), set(json.loads(parser.stdout.strip().splitlines()[-1]))):
        assert "streamproc.cli" in loaded
        assert not {m for m in loaded if m == "streamproc.devtools" or m.startswith("streamproc.devtools.")}
