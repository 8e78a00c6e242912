"""Routing, pure Python against the same modules compiled with mypyc and with Cython (pure-Python mode).

    .venv/bin/python -m bench.compiled [--compilers mypyc,cython] [--events 10000] [--rounds 3]
                                       [--callgrind-events 2000] [--tests] [--keep DIR]

The hot, pure modules (streamproc/core/*, core/js/*, the router, the destinations' modules; not the
liquid modules, which mypyc refuses and which run only for `@liquid` mappings) are copied to a
temporary directory and compiled there from the same .py files: the source stays the fallback.
Cython needs nothing from them (`annotation_typing=False`: annotations stay hints, as in
Python). mypyc needs three changes it refuses to compile without, made to the copy only: lone
surrogates written as `chr()` instead of string escapes (4 places), a class attribute marked
`ClassVar`, and `fast_constructor` falling back to the class when its fields are not slots (a
compiled class has no slot descriptors to set).

Printed for each build: the time the compile took (wall and CPU), routing events per CPU-second
(bench/route.py's corpus and presets, each build in its own process, the builds interleaved
round by round: the machine may be shared, so the median and the range are shown), and, where
valgrind exists, the instructions per routed event counted by callgrind (the difference between
routing N events and none, so start-up cancels out; repeatable whatever the load). `--tests`
runs tests/core, tests/destinations and tests/test_router.py against each build.

Measured on the project's two-core machine (shared, so the rates are noisy; the instruction
counts are not), 20 modules, CPython 3.11, mypyc 2.4.1, Cython 3.3.1:

    compile            mypyc 145 s wall (94 s CPU)     Cython 287 s wall (236 s CPU)
    events/CPU-second  pure 10,591 (10,073-10,893)  mypyc 10,701 (x1.01)  Cython 10,375 (x0.98)
    instructions/event pure 282,706                 mypyc 299,733 (x0.94)  Cython 277,442 (x1.02)
    routing tests      all pass against both builds (8,058 tests)

Neither comes near the 1.3x that would pay for a compiler in every install and two builds in CI,
so the package stays pure Python. Routing time goes to dict and string work inside CPython and
orjson, to the mapping code generated at start (exec'd, so never compiled), and to code typed
`Any`, which mypyc runs through the same generic object calls the 3.11 interpreter specialises
for itself; mypyc's boxed arithmetic and checked casts at native boundaries cost more than its
direct calls save.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def hot_modules() -> list[str]:
    """The modules compiled: core (without liquid), core/js, the destinations, the router."""
    found = [
        *sorted((ROOT / "streamproc" / "core").glob("*.py")),
        *sorted((ROOT / "streamproc" / "core" / "js").glob("*.py")),
    ]
    found += [*sorted((ROOT / "streamproc" / "destinations").glob("*.py")), ROOT / "streamproc" / "router.py"]
    return [str(p.relative_to(ROOT)) for p in found if p.name != "__init__.py" and "liquid" not in p.name]


HOT = hot_modules()

# (file, pattern, replacement): what mypyc will not compile as written.
MYPYC_CHANGES = [
    ("streamproc/core/js/json.py", r'"\[\\ud800-\\udfff\]"', '"[" + chr(0xD800) + "-" + chr(0xDFFF) + "]"'),
    (
        "streamproc/core/js/values.py",
        r"_instance: Undefined \| None = None",
        "_instance: ClassVar[Undefined | None] = None",
    ),
    ("streamproc/core/js/values.py", r"from typing import ", "from typing import ClassVar, "),
    (
        "streamproc/destinations/base.py",
        r"(    if fields != names or hasattr\(cls, \"__post_init__\"\) or len\(names\) not in \(4, 8\):\n"
        r"        return cls\n)",
        r"\1    if not all(type(cls.__dict__.get(n)).__name__ == 'member_descriptor' for n in names):\n"
        r"        return cls\n",
    ),
]
# Any other lone surrogate written as a one-character string literal.
SURROGATE_LITERAL = (r'"\\u(d[89a-f][0-9a-f]{2})"', r"chr(0x\1)")

CYTHON_SETUP = """
import sys
from setuptools import setup
from Cython.Build import cythonize
modules = sys.argv.pop().split(",")
setup(
    name="streamproc-compiled",
    ext_modules=cythonize(
        modules,
        compiler_directives={"language_level": 3, "annotation_typing": False, "binding": True},
        nthreads=os.cpu_count() or 1,
        quiet=True,
    ),
)
"""

# Routes `n` events of bench/route.py's corpus after a warm-up; prints where streamproc came from.
ROUTE_CHILD = """
import sys, time
from datetime import UTC, datetime
from bench import route
import streamproc.router
from streamproc.config import parse_config
from streamproc.core.events import decode_json
from streamproc.router import Router
n = int(sys.argv[1])
router = Router(parse_config(route.CONFIG, "bench", {{}}), now=datetime(2026, 1, 1, tzinfo=UTC))
raw = route.corpus(max(n, 200))
for m in raw[:200]:
    router.route(decode_json(m))
cpu = time.process_time()
for m in raw[:n]:
    router.route(decode_json(m))
print(streamproc.router.__file__, time.process_time() - cpu)
"""


def copy_tree(dest: Path) -> Path:
    shutil.copytree(ROOT / "streamproc", dest / "streamproc", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build(compiler: str, dest: Path) -> tuple[float, float]:
    """Compile the hot modules in a copy of the package at `dest`; (wall, CPU) seconds."""
    copy_tree(dest)
    env = {**os.environ, "PYTHONPATH": ""}
    wall, cpu = time.perf_counter(), cpu_of_children()
    if compiler == "mypyc":
        for rel, pattern, replacement in MYPYC_CHANGES:
            path = dest / rel
            text, n = re.subn(pattern, replacement, path.read_text(), count=1)
            if n != 1:
                raise SystemExit(f"{rel}: the change for mypyc no longer applies ({pattern})")
            path.write_text(text)
        for rel in HOT:
            path = dest / rel
            path.write_text(re.sub(*SURROGATE_LITERAL, path.read_text()))
        mypyc = Path(sys.executable).with_name("mypyc")
        argv = [str(mypyc), *HOT]
    else:
        setup = dest / "setup_cython.py"
        setup.write_text("import os\n" + CYTHON_SETUP)
        argv = [sys.executable, str(setup), "build_ext", "--inplace", ",".join(HOT)]
    proc = subprocess.run(argv, cwd=dest, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{compiler} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - wall, cpu_of_children() - cpu


def child_path(source: Path | None) -> str:
    """The child's import path: a build's streamproc first, then the checkout (for `bench.route`)."""
    return os.pathsep.join([*([str(source)] if source else []), str(ROOT)])


def route_run(source: Path | None, n: int) -> tuple[str, float]:
    """(file the router came from, CPU seconds routing n events) in a fresh process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = child_path(source)
    code = ROUTE_CHILD.format()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(n)],
        cwd=tempfile.gettempdir(),
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    where, seconds = proc.stdout.split()
    return where, float(seconds)


def instructions(source: Path | None, n: int) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = child_path(source)
    code = ROUTE_CHILD.format()
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            code,
            str(n),
        ],
        cwd=tempfile.gettempdir(),
        env=env,
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(proc.stderr[-3000:])
    return int(found.group(1))


def run_tests(source: Path | None) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(source) if source else ""
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "tests/core",
        "tests/destinations",
        "tests/test_router.py",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if " passed" in line or " failed" in line]
    return lines[-1] if lines else proc.stdout[-500:]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compilers", default="mypyc,cython")
    parser.add_argument("--events", type=int, default=10000, help="events routed per timed run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callgrind-events", type=int, default=2000, help="0: no instruction counts")
    parser.add_argument("--tests", action="store_true", help="run the routing tests against each build")
    parser.add_argument("--keep", default=None, help="build into this directory and keep it")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="streamproc-compiled-"))
    work.mkdir(parents=True, exist_ok=True)
    builds: dict[str, Path | None] = {"pure Python": None}
    for compiler in [c.strip() for c in args.compilers.split(",") if c.strip()]:
        dest = work / compiler
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir()
        wall, cpu = build(compiler, dest)
        print(f"{compiler}: {len(HOT)} modules compiled in {wall:.0f} s ({cpu:.0f} s CPU)")
        builds[compiler] = dest

    times: dict[str, list[float]] = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, source in builds.items():
            where, seconds = route_run(source, args.events)
            expected = ".py" if source is None else ".so"
            if not where.endswith(expected):
                raise SystemExit(f"{name}: the router came from {where}")
            times[name].append(args.events / seconds)
    print(f"\nrouting, events per CPU-second ({args.rounds} rounds interleaved, {args.events} events each):")
    base = statistics.median(times["pure Python"])
    for name, rates in times.items():
        rates.sort()
        mid = statistics.median(rates)
        print(f"  {name:<12} {mid:>9,.0f}  ({rates[0]:,.0f}-{rates[-1]:,.0f})  x{mid / base:.2f}")

    if args.callgrind_events and shutil.which("valgrind"):
        n = args.callgrind_events
        print(f"\ncallgrind: instructions per routed event (routing {n} events minus routing none):")
        per: dict[str, float] = {}
        for name, source in builds.items():
            per[name] = (instructions(source, n) - instructions(source, 0)) / n
        for name, count in per.items():
            print(f"  {name:<12} {count:>9,.0f}  x{per['pure Python'] / count:.2f}")

    if args.tests:
        print("\ntests/core, tests/destinations, tests/test_router.py:")
        for name, source in builds.items():
            print(f"  {name:<12} {run_tests(source)}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
