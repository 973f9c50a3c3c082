"""The statements that send a batch's rows field by field (``ledger.store.commit``)."""

from __future__ import annotations

import inspect

import asyncpg

from ledger.store.commit import ROWS_AS_PARAMETERS, _append_of, _padded


def test_a_batch_of_as_many_rows_as_go_as_parameters_stays_a_prepared_statement() -> None:
    """asyncpg prepares and keeps no statement longer than ``max_cacheable_statement_size``:
    one it does not keep is prepared again on every call, a round trip more."""
    kept = inspect.signature(asyncpg.connect).parameters["max_cacheable_statement_size"].default
    assert len(_append_of(_padded(ROWS_AS_PARAMETERS))) < kept


def test_rows_are_padded_to_a_power_of_two() -> None:
    assert [_padded(count) for count in (0, 1, 2, 3, 4, 5, 48, 64, 65, 128)] == [
        1,
        1,
        2,
        4,
        4,
        8,
        64,
        64,
        128,
        128,
    ]


def test_each_row_takes_its_fields_after_the_count_and_the_snapshots() -> None:
    statement = _append_of(2)
    assert "ROW($4, $5, $6, $7, $8, $9, $10, $11, $12)::public.append_row" in statement
    assert "ROW($13, $14, $15, $16, $17, $18, $19, $20, $21)::public.append_row" in statement
    assert "$22" not in statement
