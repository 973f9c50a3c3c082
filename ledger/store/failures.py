"""An error of the database's, as one line for an operator (the ``ledger`` commands)."""

from __future__ import annotations

import asyncpg


def database_failure(error: BaseException) -> str | None:
    """One line for an error of the database's that ended a command (a statement refused,
    the connection lost mid-command), or None for any other error.

    The server's own words come first, where it said anything (``terminating connection
    due to administrator command``): asyncpg's about the connection it lost meanwhile
    (``cannot call Transaction.__aexit__()``) are raised on top of them.
    """
    if not isinstance(error, _DRIVER_ERRORS):
        return None
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    said = next((e for e in chain if isinstance(e, asyncpg.PostgresError)), None)
    lost = isinstance(said, _CONNECTION_LOST) and not isinstance(said, asyncpg.QueryCanceledError)
    if said is None or lost:
        # The first of the driver's errors: the later ones are about the connection it lost.
        first = said or next(e for e in reversed(chain) if isinstance(e, _DRIVER_ERRORS))
        return f"lost the connection to the database mid-command ({_line(first)})"
    if isinstance(said, asyncpg.InsufficientPrivilegeError):
        return (
            f"database error: {_line(said)} (DATABASE_URL names ledger_service, or a role "
            "that may create roles; `ledger db setup` needs one that owns the schema, or a "
            "superuser)"
        )
    return f"database error: {_line(said)}"


def _line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
_CONNECTION_LOST = (asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError)
"""The server went away (stopped, restarting, the session terminated) rather than refuse
a statement; but ``QueryCanceledError``, an operator's intervention too, is a timeout."""
