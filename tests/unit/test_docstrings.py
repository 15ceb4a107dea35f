"""Every public constant, error code, event type and state is documented for the API reference.

mkdocstrings renders attribute docstrings (the string right under an assignment); names
without one would appear bare or not at all. Codepoints written in hex in the source
repeat their hex value at the start of the docstring, since the rendered value is decimal.
"""

from __future__ import annotations

import ast
import inspect
import itertools
from enum import Enum
from types import ModuleType

import pytest

from pywebtransport.shared import constants, types


def attribute_docstrings(
    node: ast.Module | ast.ClassDef, source: str
) -> dict[str, tuple[str, str]]:
    """Name -> (source of the assigned value, docstring) for documented assignments."""
    found: dict[str, tuple[str, str]] = {}
    body = node.body
    for statement, following in itertools.pairwise(body):
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            segment = ast.get_source_segment(source, value) or ""
            found[target.id] = (segment, following.value.value)
    return found


def class_node(module: ModuleType, name: str) -> tuple[ast.ClassDef, str]:
    source = inspect.getsource(module)
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node, source
    raise AssertionError(f"{name} not found")


def test_every_public_constant_is_documented() -> None:
    source = inspect.getsource(constants)
    documented = attribute_docstrings(ast.parse(source), source)
    names = [name for name in constants.__all__ if name != "ErrorCodes"]
    assert sorted(set(names) - set(documented)) == []


@pytest.mark.parametrize(
    ("module", "enum"),
    [
        (constants, constants.ErrorCodes),
        (types, types.EventType),
        (types, types.ConnectionState),
        (types, types.SessionState),
        (types, types.StreamState),
        (types, types.StreamDirection),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_every_enum_member_is_documented(module: ModuleType, enum: type[Enum]) -> None:
    node, source = class_node(module, enum.__name__)
    documented = attribute_docstrings(node, source)
    assert sorted(set(enum.__members__) - set(documented)) == []


def test_hex_values_are_repeated_in_their_docstrings() -> None:
    source = inspect.getsource(constants)
    module = ast.parse(source)
    node, _ = class_node(constants, "ErrorCodes")
    checked = 0
    for scope in (module, node):
        for name, (value, doc) in attribute_docstrings(scope, source).items():
            if value.lower().startswith("0x"):
                assert doc.startswith(f"`{value}`: "), name
                checked += 1
    assert checked > 60


def test_event_types_name_their_data_keys_or_say_they_are_not_emitted() -> None:
    node, source = class_node(types, "EventType")
    for name, (_, doc) in attribute_docstrings(node, source).items():
        assert "Data keys:" in doc or doc == "Not emitted yet.", name
