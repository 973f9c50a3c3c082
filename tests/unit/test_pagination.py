"""``limit`` and ``after``: each refusal says what is wrong with the value given."""

from __future__ import annotations

import pytest

from api.pagination import Page, page
from api.validation import ValidationFailed

NOT_INTEGER = "The limit field must be an integer."
OUT_OF_RANGE = "The limit must be between 1 and 1000."


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("-1", OUT_OF_RANGE),  # was "must be an integer" (a contract review)
        ("-5000", OUT_OF_RANGE),
        ("0", OUT_OF_RANGE),
        ("1001", OUT_OF_RANGE),
        ("99999999999999999999", OUT_OF_RANGE),
        ("abc", NOT_INTEGER),
        ("1.5", NOT_INTEGER),
        ("-", NOT_INTEGER),
        ("--1", NOT_INTEGER),
        ("²", NOT_INTEGER),
    ],
)
def test_a_limit_is_refused_with_what_is_wrong_with_it(limit: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        page(limit, None)

    assert refused.value.errors == {"limit": [message]}


def test_a_limit_in_range_and_a_cursor_are_taken() -> None:
    assert page("1000", "42") == Page(limit=1000, after=42)
    assert page(None, None) == Page(limit=100, after=None)


@pytest.mark.parametrize(
    ("limit", "after", "read"),
    [
        ("0000000001", None, Page(limit=1, after=None)),  # was 422 "between 1 and 1000"
        ("0" * 5000 + "7", None, Page(limit=7, after=None)),  # int() refuses 4,301 digits
        ("01000", "0" * 30 + "42", Page(limit=1000, after=42)),
        (None, "0" * 20, Page(limit=100, after=0)),
    ],
)
def test_zeros_leading_a_number_are_read_as_its_value(
    limit: str | None, after: str | None, read: Page
) -> None:
    """As the variables (``whole_number``) and the command line (``WholeNumber``) read them:
    ``?limit=0000000001`` was refused as out of range, 1 counted as ten digits."""
    assert page(limit, after) == read


@pytest.mark.parametrize("limit", ["0" * 9 + "1001", "-0001", "0000000000"])
def test_a_limit_with_leading_zeros_out_of_range_says_so(limit: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        page(limit, None)

    assert refused.value.errors == {"limit": [OUT_OF_RANGE]}


@pytest.mark.parametrize(
    "after", ["-1", "-0", "-" + "0" * 30, "1" + "0" * 19, "0" * 5000 + "9" * 20, "²", ""]
)
def test_a_cursor_that_is_no_position_is_refused(after: str) -> None:
    """No page gives a cursor with a minus: ``-0`` was 422 until zeros that lead a number
    were read as nothing, and then the first page (as Ledger-Min-Position: -0 stays 422)."""
    with pytest.raises(ValidationFailed) as refused:
        page(None, after)

    assert refused.value.errors == {
        "after": ["The after field must be a position from an earlier page."]
    }
