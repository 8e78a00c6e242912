"""Benchmarks (not tests): each module is a script run from the checkout root as a module of this
package, e.g. `.venv/bin/python -m bench.route` (`--help` lists its options).

Benchmarks share code as modules of the package (`bench.gosink`, `bench.e2e`, `bench.route`), and
reuse the test suite's helpers and scenarios through `bench.suite` instead of copying them.
"""
