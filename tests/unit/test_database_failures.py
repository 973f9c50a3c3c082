"""``database_failure``: the one line a command ends with on an error of the database's."""

from __future__ import annotations

import asyncpg
import pytest

from ledger.store.failures import database_failure


def raised_during(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer`` as raised while ``inner`` was being handled."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 (the chain is the point)
    except BaseException as error:
        return error


CLOSED = "cannot call Transaction.__aexit__(): the underlying connection is closed"


@pytest.mark.parametrize(
    ("inner", "said"),
    [
        (
            asyncpg.AdminShutdownError("terminating connection due to administrator command"),
            "terminating connection due to administrator command",
        ),
        (
            asyncpg.InterfaceError("cursor: the prepared statement is closed"),
            "cursor: the prepared statement is closed",
        ),
    ],
    ids=["the server's words first", "else the first of the driver's"],
)
def test_a_connection_lost_mid_command_is_said_by_its_first_words(
    inner: BaseException, said: str
) -> None:
    """The server's words come before the driver's about the connection it lost; without
    them, the first of the driver's errors is said."""
    ended = raised_during(asyncpg.InterfaceError(CLOSED), inner)

    assert database_failure(ended) == f"lost the connection to the database mid-command ({said})"


def test_a_statement_refused_or_timed_out_is_a_database_error_on_one_line() -> None:
    timed_out = asyncpg.QueryCanceledError("canceling statement due to statement timeout")
    refused = asyncpg.InsufficientPrivilegeError("permission denied\nfor table stored_events")

    assert database_failure(timed_out) == (
        "database error: canceling statement due to statement timeout"
    )
    said = database_failure(refused)
    assert said is not None
    assert said.startswith("database error: permission denied for table stored_events (")
    assert "\n" not in said


def test_any_other_error_is_not_the_databases() -> None:
    assert database_failure(ValueError("no")) is None
    assert database_failure(raised_during(KeyError("k"), asyncpg.AdminShutdownError("x"))) is None
