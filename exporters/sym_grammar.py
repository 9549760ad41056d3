"""The strict grammar a dynamic ``.pt2``'s symbolic strings must match before torch sees them.

``torch.export.load`` hands every symbolic-shape expression (``expr_str``) to ``sympy.sympify``, which
``eval``s it, and ``ExportedProgram.module()`` ``exec``s the ``guards_code`` strings. A dynamic
detrtool program holds both, so :mod:`exporters.pt2_safety` parses each string with :func:`ast.parse`
(which runs nothing) and accepts only these trees:

- ``expr_str``: calls of the sympy constructors in :data:`SYMPY_CALLS` (``Add``, ``Mul``, ``FloorDiv``,
  ``Mod``, ``Min``, ``Max``, comparisons ...) whose arguments are again such calls, ``Integer(n)``
  with an integer literal, or ``Symbol('s12', positive=True, integer=True)`` (a name of letters and
  digits, boolean assumption keywords only);
- ``guards_code``: integer arithmetic (``+ - * // %``, unary ``-``), comparisons, ``and``/``or``/``not``
  over integer literals and input sizes ``L['images'].size()[2]``.

Anything else (another name, an attribute, a string, a lambda, a subscript of something else, an
integer beyond 64 bits, a string over :data:`MAX_LENGTH` characters) is refused.
"""

from __future__ import annotations

import ast
import re

MAX_LENGTH = 4000
MAX_INT = 2 ** 63
SYMPY_CALLS = frozenset({
    "Add", "Mul", "FloorDiv", "Mod", "PythonMod", "Min", "Max", "Integer", "Symbol", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality",
    "And", "Or", "Not", "CleanDiv", "IntTrueDiv", "CeilToInt", "FloorToInt",
})
SYMBOL_NAME = re.compile(r"[a-z]{1,8}\d{1,9}")
SYMBOL_ASSUMPTIONS = frozenset({"positive", "integer", "nonnegative", "real", "finite", "negative"})
INPUT_NAME = re.compile(r"[A-Za-z_]\w{0,63}")
_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)
_COMPARE = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


class GrammarError(ValueError):
    """A symbolic string outside the grammar; the message says what was found."""


def _parse(text: str) -> ast.expr:
    if not isinstance(text, str) or len(text) > MAX_LENGTH or "\n" in text or "\\" in text:
        raise GrammarError("is not a one-line string of at most 4000 characters")
    try:
        return ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise GrammarError(f"does not parse ({type(exc).__name__})") from None


def _int_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < MAX_INT


def check_sym_expr(text: str) -> None:
    """:class:`GrammarError` unless ``text`` is a sympy expression of the grammar (module doc)."""
    _check_sympy(_parse(text))


def _check_sympy(node: ast.AST) -> None:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SYMPY_CALLS):
        raise GrammarError(f"has {_describe(node)}, not a call of an allowed sympy constructor")
    name = node.func.id
    if name == "Symbol":
        return _check_symbol(node)
    if name == "Integer":
        if len(node.args) != 1 or node.keywords or not _int_literal(node.args[0]):
            raise GrammarError("has Integer(...) of something other than one integer literal")
        return None
    if node.keywords or not node.args:
        raise GrammarError(f"has {name}(...) with keywords or without arguments")
    for arg in node.args:
        _check_sympy(arg)
    return None


def _check_symbol(node: ast.Call) -> None:
    args = node.args
    if len(args) != 1 or not isinstance(args[0], ast.Constant) or not isinstance(args[0].value, str) \
            or not SYMBOL_NAME.fullmatch(args[0].value):
        raise GrammarError("has a Symbol(...) whose name is not letters followed by digits")
    for keyword in node.keywords:
        if keyword.arg not in SYMBOL_ASSUMPTIONS or not isinstance(keyword.value, ast.Constant) \
                or type(keyword.value.value) is not bool:
            raise GrammarError(f"has a Symbol(...) keyword {keyword.arg!r} that is not a boolean assumption")


def check_guard(text: str) -> None:
    """:class:`GrammarError` unless ``text`` is a guard of the grammar (module doc)."""
    _check_guard(_parse(text))


def _check_guard(node: ast.AST) -> None:
    if isinstance(node, ast.BoolOp):
        return _each(node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        return _check_guard(node.operand)
    if isinstance(node, ast.Compare) and all(isinstance(op, _COMPARE) for op in node.ops):
        return _each([node.left, *node.comparators])
    if isinstance(node, ast.BinOp) and isinstance(node.op, _ARITH):
        return _each([node.left, node.right])
    if _int_literal(node) or _input_size(node):
        return None
    raise GrammarError(f"has {_describe(node)}, not integer arithmetic over input sizes")


def _each(nodes: list[ast.AST]) -> None:
    for node in nodes:
        _check_guard(node)


def _input_size(node: ast.AST) -> bool:
    """``L['name'].size()[i]``: a dimension of an input, nothing else."""
    if not (isinstance(node, ast.Subscript) and _int_literal(node.slice)):
        return False
    call = node.value
    if not (isinstance(call, ast.Call) and not call.args and not call.keywords
            and isinstance(call.func, ast.Attribute) and call.func.attr == "size"):
        return False
    source = call.func.value
    return (isinstance(source, ast.Subscript) and isinstance(source.value, ast.Name) and source.value.id == "L"
            and isinstance(source.slice, ast.Constant) and isinstance(source.slice.value, str)
            and bool(INPUT_NAME.fullmatch(source.slice.value)))


def check_range(name: str, bounds: object) -> None:
    """A ``range_constraints`` entry: a symbol name and integer (or null) bounds."""
    if not SYMBOL_NAME.fullmatch(str(name)):
        raise GrammarError(f"has a range for {str(name)[:40]!r}, not a symbol name")
    values = bounds.values() if isinstance(bounds, dict) else [bounds]
    if not isinstance(bounds, dict) or set(bounds) - {"min_val", "max_val"} or \
            any(v is not None and type(v) is not int for v in values):
        raise GrammarError(f"has a range for {name} that is not integer bounds")


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return f"a call of {node.func.id[:30]!r}"
    return f"a {type(node).__name__} node"
