"""Public entry points of the mapping kit: compile a Mapping once, resolve it per event."""

from streamproc.core.mapping import DIRECTIVES, CompiledMapping, compile, problems, resolve, validate

__all__ = ["DIRECTIVES", "CompiledMapping", "compile", "problems", "resolve", "validate"]
