"""What a database lacks, as a start-up or a command says it: one line a person reads."""

from __future__ import annotations

from api.database import _lacking
from ledger.store.migrate import available_migrations

NAMES = [name for _, name, _ in available_migrations()]


def test_a_database_never_set_up_is_said_so_not_listed() -> None:
    said = _lacking(NAMES)
    assert said == "the database was never set up (it has none of the ledger's tables)"


def test_many_lacking_are_counted_with_the_first_and_last_named() -> None:
    pending = NAMES[-5:]
    assert _lacking(pending) == f"the database lacks 5 migrations, {pending[0]} to {pending[-1]}"


def test_a_few_lacking_are_named() -> None:
    pending = NAMES[-2:]
    assert _lacking(pending) == f"the database lacks migrations {pending[0]}, {pending[1]}"
