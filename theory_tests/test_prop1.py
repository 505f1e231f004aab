"""Proposition 1 (section 3.2.1): for y = theta1 theta2 x with 0 < theta1 < theta2 and x > 0,

    theta2 (theta1 - delta1) x - theta1 theta2 x <= theta1 (theta2 - delta2) x - theta1 theta2 x

'for any admissible delta_i', where admissible means 0 < delta_i << theta_i.

Read literally, delta1 and delta2 are independent, and the statement is false:
the inequality is equivalent to delta1 theta2 >= delta2 theta1, i.e. delta1 / theta1 >= delta2 / theta2.
The suite formalises '<<' as delta_i <= theta_i / 100, lets Hypothesis find and
shrink a counterexample in exact rational arithmetic (no tolerance needed), and
then verifies the corrected statement: the inequality holds exactly when the
relative step on theta1 is at least that on theta2, which covers equal absolute
steps and gradient steps with one learning rate, while equal relative steps
tie. Both sides are changes of y that are exact, not first-order: y is linear in each theta_i.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from theory_tests import evidence
from theory_tests.profiles import examples

SMALL_STEP = Fraction(1, 100)  # "delta_i << theta_i" read as delta_i <= theta_i / 100
POSITIVE = st.fractions(min_value=Fraction(1, 1000), max_value=1000, max_denominator=1000)


def change_via_theta1(theta1: Fraction, theta2: Fraction, x: Fraction, delta1: Fraction) -> Fraction:
    return theta2 * (theta1 - delta1) * x - theta1 * theta2 * x


def change_via_theta2(theta1: Fraction, theta2: Fraction, x: Fraction, delta2: Fraction) -> Fraction:
    return theta1 * (theta2 - delta2) * x - theta1 * theta2 * x


@st.composite
def admissible(draw) -> tuple[Fraction, Fraction, Fraction, Fraction, Fraction]:
    """Draw theta1 < theta2, x > 0 and independent steps 0 < delta_i <= theta_i / 100."""
    theta1 = draw(POSITIVE)
    theta2 = theta1 + draw(POSITIVE)
    x = draw(POSITIVE)
    delta1 = theta1 * SMALL_STEP * draw(st.fractions(min_value=Fraction(1, 1000), max_value=1, max_denominator=1000))
    delta2 = theta2 * SMALL_STEP * draw(st.fractions(min_value=Fraction(1, 1000), max_value=1, max_denominator=1000))
    return theta1, theta2, x, delta1, delta2


def violates(case: tuple[Fraction, ...]) -> bool:
    theta1, theta2, x, delta1, delta2 = case
    return change_via_theta1(theta1, theta2, x, delta1) > change_via_theta2(theta1, theta2, x, delta2)


@pytest.mark.claim("prop1", role="refutes")
def test_literal_statement_has_counterexample() -> None:
    """Hypothesis finds (and shrinks) admissible steps where updating theta1 reduces y LESS."""
    case = find(admissible(), violates, settings=settings(max_examples=2000, database=None, derandomize=True))
    theta1, theta2, x, delta1, delta2 = case
    left = change_via_theta1(theta1, theta2, x, delta1)
    right = change_via_theta2(theta1, theta2, x, delta2)
    evidence.note("prop1", "counterexample", {
        "theta1": str(theta1), "theta2": str(theta2), "x": str(x), "delta1": str(delta1), "delta2": str(delta2),
        "change_via_theta1": str(left), "change_via_theta2": str(right),
    })
    evidence.note("prop1", "admissible_means", "0 < delta_i <= theta_i / 100")
    assert 0 < theta1 < theta2
    assert 0 < delta1 <= theta1 * SMALL_STEP
    assert 0 < delta2 <= theta2 * SMALL_STEP
    assert left > right


@pytest.mark.claim("prop1", role="corrected")
@settings(max_examples=examples(500))
@given(admissible())
def test_holds_iff_relative_step_larger(case: tuple[Fraction, ...]) -> None:
    """Corrected: the inequality holds if and only if delta1 / theta1 >= delta2 / theta2 (exact arithmetic)."""
    theta1, theta2, x, delta1, delta2 = case
    holds = change_via_theta1(theta1, theta2, x, delta1) <= change_via_theta2(theta1, theta2, x, delta2)
    evidence.count("prop1")
    evidence.note("prop1", "corrected_statement",
                  "holds iff delta1/theta1 >= delta2/theta2; so for equal absolute steps (strictly) and for "
                  "gradient steps delta_i = lr * dy/dtheta_i (strictly), with equality for equal relative steps")
    assert holds == (delta1 / theta1 >= delta2 / theta2)


@pytest.mark.claim("prop1", role="corrected")
@settings(max_examples=examples(300))
@given(admissible(), st.fractions(min_value=Fraction(1, 10**6), max_value=Fraction(1, 1000), max_denominator=10**6))
def test_equal_steps_and_gradient_steps(case: tuple[Fraction, ...], rate: Fraction) -> None:
    """Equal absolute steps and equal-learning-rate gradient steps favour theta1 strictly; equal relative steps tie."""
    theta1, theta2, x, delta, _ = case
    assert change_via_theta1(theta1, theta2, x, delta) < change_via_theta2(theta1, theta2, x, delta)
    gradient1, gradient2 = theta2 * x, theta1 * x  # dy/dtheta1, dy/dtheta2
    assert (change_via_theta1(theta1, theta2, x, rate * gradient1)
            < change_via_theta2(theta1, theta2, x, rate * gradient2))
    assert change_via_theta1(theta1, theta2, x, rate * theta1) == change_via_theta2(theta1, theta2, x, rate * theta2)


@pytest.mark.claim("prop1", role="refutes")
def test_pinned_counterexample() -> None:
    """The counterexample Hypothesis shrank to, pinned so it is checked even if the search changes."""
    theta1, theta2, x = Fraction(1, 1000), Fraction(1, 500), Fraction(1, 1000)
    delta1, delta2 = Fraction(1, 10**8), Fraction(1, 25 * 10**6)
    assert delta1 <= theta1 * SMALL_STEP
    assert delta2 <= theta2 * SMALL_STEP
    assert violates((theta1, theta2, x, delta1, delta2))
