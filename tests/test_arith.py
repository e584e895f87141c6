"""The safe arithmetic evaluator: numbers, + - * /, unary minus and brackets, nothing else."""

import pytest

from lmadapt.eval.arith import ArithError, equation_accuracy, equation_match, safe_eval, try_eval


@pytest.mark.parametrize(("text", "value"), [
    ("( 84.0 / 2.0 )", 42.0),
    ("( ( 17.0 + 15.0 ) + 2.0 )", 34.0),
    ("-(3 - 5) * 2", 4.0),
    ("+7", 7.0),
    ("1.5e2 / 3", 50.0),
    ("10 × 3 ÷ 5 − 1", 5.0),
    ("((((1))))", 1.0),
])
def test_allowed_expressions(text: str, value: float) -> None:
    assert safe_eval(text) == pytest.approx(value)


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')",  # calls, names, strings
    "os.getcwd()",  # attributes
    "abs(-1)",  # calls
    "x + 1",  # names
    "2 ** 10",  # power
    "9 ** 9 ** 9",  # huge power
    "10 % 3", "7 // 2",  # other operators
    "lambda: 1",
    "[1, 2]", "(1, 2)", "{1: 2}",  # containers
    "1 if 1 else 2", "1 < 2", "not 1", "~1",
    "'12'", "True", "None",
    "1e999", "1e308 * 10",  # overflow to inf
    "9" * 400,  # integer too large for a float
    "1 / 0",
    "", "   ", "(", "1 +", "1" * 600,
])
def test_refused(text: str) -> None:
    with pytest.raises(ArithError):
        safe_eval(text)
    assert try_eval(text) is None


def test_non_string_refused() -> None:
    with pytest.raises(ArithError):
        safe_eval(3)  # type: ignore[arg-type]


def test_deep_nesting_is_refused_not_crashing() -> None:
    assert try_eval("(" * 200 + "1" + ")" * 200) in (None, 1.0)


def test_match_by_value_with_tolerance() -> None:
    assert equation_match("(84 / 2)", "( 84.0 / 2.0 )")
    assert equation_match("42", "( 84.0 / 2.0 )")
    assert equation_match("1 / 3", "0.33333")
    assert not equation_match("1 / 3", "0.333")
    assert not equation_match("( 84 / 2", "42")  # unparsable prediction is wrong
    assert not equation_match("x", "x")
    assert equation_accuracy(["2 + 2", "5", "oops"], ["4", "4", "4"]) == pytest.approx(1 / 3)
    assert equation_accuracy([], []) == 0.0
