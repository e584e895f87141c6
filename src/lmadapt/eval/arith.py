"""A small, safe arithmetic evaluator for equation answers (SVAMP-style labels).

SVAMP labels are expressions such as `( ( 17.0 + 15.0 ) + 2.0 )`; two answers match when their
values agree (Hsieh et al., 2023 score SVAMP by value, not by string). The expression is parsed
with `ast` and only numbers, `+ - * /`, unary minus/plus and brackets are allowed: names, calls,
attributes, `**`, `%`, `//`, comparisons, lambdas and everything else are refused. Python's
`eval` is never used.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Sequence

from lmadapt.errors import LmadaptError

MAX_CHARS = 512  # longer "expressions" are refused before parsing
MAX_MAGNITUDE = 1e15  # literals and intermediate results must stay below this
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_ALLOWED_CHARS = set("0123456789.+-*/()eE \t\n")


class ArithError(LmadaptError):
    """The text is not an allowed arithmetic expression (or its value is not finite)."""


def _normalize(text: str) -> str:
    return text.replace("×", "*").replace("÷", "/").replace("−", "-").strip()


def _check(value: float) -> float:
    if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise ArithError(f"value {value!r} is out of range")
    return value


def _value(node: ast.AST) -> float:
    """Evaluate one allowed node (recursion depth is bounded by MAX_CHARS)."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        try:
            return _check(float(node.value))
        except OverflowError:  # an int literal too large for a float
            raise ArithError("number out of range") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(_UNARY[type(node.op)](_value(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ArithError("division by zero")
        return _check(_BINARY[type(node.op)](left, right))
    raise ArithError(f"{type(node).__name__} is not allowed; only numbers, + - * / and brackets")


def safe_eval(expression: str) -> float:
    """The value of an arithmetic expression; raises ArithError for anything else.

    >>> safe_eval("( ( 17.0 + 15.0 ) + 2.0 )")
    34.0
    """
    if not isinstance(expression, str):
        raise ArithError(f"expected a string, got {type(expression).__name__}")
    text = _normalize(expression)
    if not text or len(text) > MAX_CHARS:
        raise ArithError(f"expression is empty or longer than {MAX_CHARS} characters")
    if not set(text) <= _ALLOWED_CHARS or "**" in text or "//" in text:
        raise ArithError(f"{expression[:60]!r} holds characters other than numbers, + - * / and brackets")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        raise ArithError(f"{expression[:60]!r} is not an arithmetic expression") from None
    return _value(tree.body)


def try_eval(expression: str) -> float | None:
    """safe_eval, or None when the expression is refused."""
    try:
        return safe_eval(expression)
    except (ArithError, RecursionError):
        return None


def equation_match(prediction: str, gold: str, tolerance: float = 1e-4) -> bool:
    """True when both expressions evaluate and their values differ by at most `tolerance`."""
    pred_value, gold_value = try_eval(prediction), try_eval(gold)
    return pred_value is not None and gold_value is not None and abs(pred_value - gold_value) <= tolerance


def equation_accuracy(predictions: Sequence[str], golds: Sequence[str], tolerance: float = 1e-4) -> float:
    """Fraction of predictions whose value equals the gold expression's value."""
    pairs = list(zip(predictions, golds, strict=True))
    return sum(equation_match(p, g, tolerance) for p, g in pairs) / len(pairs) if pairs else 0.0
