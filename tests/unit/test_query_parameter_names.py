"""Which query parameter a name the route does not take was meant to be (api/query_parameters.py)."""

from __future__ import annotations

import pytest

from api.query_parameters import meant

PAGE = frozenset({"limit", "after", "status"})


@pytest.mark.parametrize(
    ("name", "intended"),
    [
        ("LIMIT", "limit"),
        ("Status", "status"),
        ("limt", "limit"),  # left out
        ("afterr", "after"),  # added
        ("aftir", "after"),  # changed
        ("statsu", "status"),  # swapped
        ("sta-tus", "status"),
    ],
)
def test_a_near_miss_names_the_parameter_meant(name: str, intended: str) -> None:
    assert meant(name, PAGE) == intended


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("as_of", frozenset({"as_of"})),  # taken: no miss
        ("_", PAGE),
        ("t", PAGE),
        ("ts", frozenset({"as_of"})),
        ("cb", frozenset({"as_of"})),
        ("utm_source", PAGE),
        ("later", PAGE),  # two letters off
        ("state", PAGE),
    ],
)
def test_other_names_are_no_near_miss(name: str, taken: frozenset[str]) -> None:
    assert meant(name, taken) is None


def test_a_name_folded_to_one_taken_is_a_near_miss_however_short() -> None:
    assert meant("AS-OF", frozenset({"as_of"})) == "as_of"
    assert meant("ID", frozenset({"id"})) == "id"
