"""The views' writes of a batch as one statement (projections/writes.py)."""

from __future__ import annotations

from projections.writes import Write, together


def test_writes_become_with_queries_of_the_last_statement_their_parameters_renumbered() -> None:
    writes = [
        Write("INSERT INTO a SELECT * FROM unnest($1::a_row[])", (["a"],)),
        Write("SELECT pg_notify($1, '')", ("wake",), alone=True),
        Write("INSERT INTO b VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = $2", (1, 2)),
    ]

    statement, after = together(writes, Write("UPDATE p SET x = $1 WHERE y = $2", (3, 4)))

    assert statement.sql == (
        "WITH w0 AS (INSERT INTO a SELECT * FROM unnest($1::a_row[])), "
        "w1 AS (INSERT INTO b VALUES ($2, $3) ON CONFLICT (k) DO UPDATE SET v = $3)\n"
        "UPDATE p SET x = $4 WHERE y = $5"
    )
    assert statement.args == (["a"], 1, 2, 3, 4)
    assert after == [writes[1]]


def test_with_no_writes_the_last_statement_is_sent_as_it_is() -> None:
    last = Write("UPDATE p SET x = $1", (1,))

    assert together([], last) == (last, [])
