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
