"""The checks the fence makes of aioquic's internals: attributes, signatures, logic digests."""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from typing import Any


class Mismatch(Exception):
    """An internal is not what the fence expects."""


def require(condition: object, what: str) -> None:
    if not condition:
        raise Mismatch(what)


def has(obj: object, *names: str) -> None:
    for name in names:
        require(hasattr(obj, name), f"{type(obj).__name__}.{name} is missing")


def params(function: Any, *names: str) -> None:
    # The parameters after `self` (for a method) must be exactly `names`.
    try:
        found = tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError) as exc:
        raise Mismatch(f"cannot read the signature of {function!r}") from exc
    require(
        found == names or found[1:] == names,
        f"{getattr(function, '__qualname__', function)} takes {found}, expected {names}",
    )


def logic_digest(function: Any) -> str:
    """Return a digest of a function's logic, blind to annotations, docstrings and layout.

    Args:
        function: A Python function or method.

    Returns:
        16 hex digits; two functions with the same parameters, statements and
        expressions share it whatever their names, type hints, docstrings,
        comments or formatting.
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    skipped = {"annotation", "returns", "type_comment", "type_params", "kind"}

    def walk(node: object) -> str:
        if isinstance(node, list):
            return "[" + ",".join(walk(item) for item in node) + "]"
        if not isinstance(node, ast.AST):
            return repr(node)
        if isinstance(node, ast.AnnAssign):
            declared = ast.Name(id="<declared>")  # `x: T` alone, no value
            node = ast.Assign(targets=[node.target], value=node.value or declared)
        fields = []
        for field in node._fields:
            value: Any = getattr(node, field, None)
            if field in skipped or (field == "name" and isinstance(node, ast.FunctionDef)):
                continue
            if field == "body" and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = value[0] if value else None
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    value = value[1:]
            fields.append(f"{field}={walk(value)}")
        return f"{type(node).__name__}({','.join(fields)})"

    return hashlib.sha256(walk(tree).encode()).hexdigest()[:16]
