"""The error vocabulary: the exception tree as drawn, and every dead-letter error type an ErrorType."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import streamproc
from streamproc import errors
from streamproc.commands.dlq import error_type
from streamproc.errors import DeliveryError, ErrorType, StreamprocError

PACKAGE = Path(streamproc.__file__).parent


def _defined_exceptions() -> set[str]:
    return {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, StreamprocError) and obj.__module__ == errors.__name__
    }


def test_the_docstring_tree_names_exactly_the_exceptions_defined() -> None:
    doc = errors.__doc__ or ""
    tree = doc.split("\n\n")[1]
    drawn = set(re.findall(r"^[\s│├└─]*([A-Z]\w+)\s", tree, re.M))
    assert drawn == _defined_exceptions()


def test_the_docstring_lists_exactly_the_error_types() -> None:
    doc = errors.__doc__ or ""
    listed = set(re.findall(r"^    ([A-Z]\w+) {2,}", doc.split("ErrorType` values")[1], re.M))
    assert listed == {member.value for member in ErrorType}


def test_every_delivery_error_class_writes_an_error_type_of_its_own_name() -> None:
    classes = [c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, DeliveryError)]
    for cls in classes:
        assert ErrorType.of(cls.__new__(cls)) == cls.__name__


def test_every_error_type_literal_in_the_package_is_a_member() -> None:
    # Failure(...) and _park/_failed take their type first: none may be a bare string any more.
    pattern = re.compile(r"(?:Failure|_park|_failed)\(\s*(?:share,\s*)?\"(\w+)\"")
    found = {m.group(1) for p in PACKAGE.rglob("*.py") for m in pattern.finditer(p.read_text())}
    assert found == set()


def test_redrive_filters_accept_exactly_the_written_types() -> None:
    assert error_type("RetryableError") == "RetryableError"
    with pytest.raises(Exception, match="unknown error type 'Retryable'; one of DecodeError"):
        error_type("Retryable")
