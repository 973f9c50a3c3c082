"""``ledger grants create|list|void`` as an operator runs them, on a database of their own."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.conftest import IsolatedDatabase
from tests.support.cli import ledger
from tests.support.events import caught_up
from tests.support.ledger import open_account, save


async def open_account_for_the_commands(db: IsolatedDatabase) -> None:
    """``acct_cli``, with no allowance, opened by a ledger of the test's own that then
    stops writing (the commands run in processes of their own)."""
    books = db.ledger()
    await open_account(books, "acct_cli", 0)
    await books.uow.committer.stop()


async def test_grants_are_given_listed_and_voided_from_the_command_line(
    isolated_db: IsolatedDatabase,
) -> None:
    await open_account_for_the_commands(isolated_db)

    given = await ledger(
        isolated_db.url, "grants", "create", "acct_cli", "500", "--expires-at",
        "2099-01-31T00:00:00Z", "--priority", "10", "--reason", "welcome", "--key", "promo-1",
    )  # fmt: skip
    again = await ledger(isolated_db.url, "grants", "create", "acct_cli", "500",
                         "--expires-at", "2099-01-31T00:00:00Z", "--priority", "10",
                         "--reason", "welcome", "--key", "promo-1")  # fmt: skip
    other = await ledger(isolated_db.url, "grants", "create", "acct_cli", "70")
    reused = await ledger(isolated_db.url, "grants", "create", "acct_cli", "6", "--key", "promo-1")
    long_key = await ledger(
        isolated_db.url, "grants", "create", "acct_cli", "6", "--key", "k" * 256
    )
    grant_id = given.stdout.split()[1]
    voided = await ledger(isolated_db.url, "grants", "void", "acct_cli", grant_id)
    twice = await ledger(isolated_db.url, "grants", "void", "acct_cli", grant_id)
    await caught_up(isolated_db.store)
    listed = await ledger(isolated_db.url, "grants", "list", "acct_cli", "--json")
    active = await ledger(isolated_db.url, "grants", "list", "acct_cli", "--status", "active")
    past = await ledger(isolated_db.url, "grants", "create", "acct_cli", "5", "--expires-at",
                        "2020-01-01T00:00:00Z")  # fmt: skip
    nobody = await ledger(isolated_db.url, "grants", "list", "acct_nobody")

    assert given.returncode == 0, given.stderr
    assert given.stdout.startswith(f"granted {grant_id} to acct_cli: 500 credits, priority 10")
    assert "expires 2099-01-31T00:00:00+00:00 (key promo-1)" in given.stdout
    assert again.stdout.split()[1] == grant_id  # the same key: the same grant, once
    assert other.returncode == 0, other.stderr
    assert long_key.returncode == 2
    assert "must be 1 to 255 printable ASCII characters" in long_key.stderr
    assert (reused.returncode, reused.stderr.strip()) == (  # it was a traceback (a CLI review)
        1,
        "Error: The Idempotency-Key was already used with a different request.",
    )
    assert voided.stdout.startswith(f"voided {grant_id}: 500 credits lapsed")
    assert (twice.returncode, twice.stderr.strip()) == (
        1,
        f"Error: The grant {grant_id} has already expired or been voided.",
    )
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["status"], r["remaining"], r["amount"]) for r in rows] == [
        ("active", 70, 70),
        ("voided", 0, 500),
    ]
    assert len(active.stdout.splitlines()) == 1
    assert "active" in active.stdout
    assert "70 of 70" in active.stdout
    assert past.returncode == 2
    assert past.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--expires-at': 2020-01-01T00:00:00+00:00 is not in the future"
    )
    assert (nobody.returncode, nobody.stderr.strip()) == (
        1,
        "Error: account acct_nobody does not exist",
    )


NOTHING_LISTENS = "postgresql://nobody@127.0.0.1:1/nothing"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["void", "acct_cli", ""],
            "Invalid value for 'GRANT_ID': a grant id is 1 to 100 characters (grant_…, as "
            "`ledger grants list` shows it)",
        ),
        (
            ["void", "acct_cli", "g" * 101],
            "Invalid value for 'GRANT_ID': a grant id is 1 to 100 characters (grant_…, as "
            "`ledger grants list` shows it)",
        ),
        (
            ["void", "acct_cli", "grant_1", "--reason", "r" * 501],
            "Invalid value for '--reason': The reason must be at most 500 characters.",
        ),
        (
            ["create", "acct_cli", "5", "--reason", "r" * 501],
            "Invalid value for '--reason': The reason must be at most 500 characters.",
        ),
        (
            ["create", "acct_cli", "5", "--expires-at", "2020-01-01T00:00:00+01:00"],
            "Invalid value for '--expires-at': 2020-01-01T00:00:00+01:00 is not in the future",
        ),
        (
            ["create", "acct_cli", "5", "--expires-at", "9999-12-31T23:59:59.999999Z"],
            "Invalid value for '--expires-at': 9999-12-31T23:59:59.999999+00:00 is not within "
            "the years 1 to 9999 in UTC",
        ),
    ],
    ids=["empty grant id", "long grant id", "long void reason", "long reason", "past", "9999"],
)
async def test_bad_grant_arguments_are_usage_errors_that_name_the_argument(
    args: list[str], said: str
) -> None:
    """Each was the ledger's refusal once connected, exit 1 ("no grant  on that account" for
    an empty id): exit 2 is what the command line says of a bad argument."""
    refused = await ledger(NOTHING_LISTENS, "grants", *args)

    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines()[-1] == f"Error: {said}"


async def test_a_grants_totals_are_written_with_thousands_separators_as_its_amount_is(
    isolated_db: IsolatedDatabase,
) -> None:
    """A grant of "1,500 credits" left the account holding "1500 in grants, 1500 in all"."""
    await open_account_for_the_commands(isolated_db)

    given = await ledger(isolated_db.url, "grants", "create", "acct_cli", "1500")
    grant_id = given.stdout.split()[1]
    voided = await ledger(isolated_db.url, "grants", "void", "acct_cli", grant_id)

    assert given.returncode == 0, given.stderr
    assert given.stdout.rstrip().endswith("holds 1,500 in grants, 1,500 in all")
    assert voided.stdout.rstrip() == (
        f"voided {grant_id}: 1,500 credits lapsed; the account holds 0 in grants, 0 in all"
    )


async def test_an_expiry_whose_offset_has_seconds_is_refused_by_the_command_line(
    isolated_db: IsolatedDatabase,
) -> None:
    # fromisoformat takes "+05:30:15"; such a grant's snapshot moved its expiry 15 s later.
    await open_account_for_the_commands(isolated_db)

    odd = await ledger(isolated_db.url, "grants", "create", "acct_cli", "10", "--expires-at",
                       "2099-01-31T00:00:00+05:30:15")  # fmt: skip
    fine = await ledger(isolated_db.url, "grants", "create", "acct_cli", "10", "--expires-at",
                        "2099-01-31T00:00:00+05:30")  # fmt: skip

    assert odd.returncode == 2
    assert "has an offset with seconds; use whole minutes (+05:30)" in odd.stderr
    assert fine.returncode == 0, fine.stderr
    assert "expires 2099-01-31T00:00:00+05:30 " in fine.stdout


async def test_an_expiry_in_iso_8601_forms_rfc_3339_lacks_is_refused_by_the_command_line(
    isolated_db: IsolatedDatabase,
) -> None:
    # fromisoformat takes week dates ("2030-W01-1" is 2029-12-31) and basic forms, which
    # the API's expires_at refuses: an operator's typo became another expiry.
    await open_account_for_the_commands(isolated_db)

    week = await ledger(isolated_db.url, "grants", "create", "acct_cli", "10", "--expires-at",
                        "2099-W01-1T00:00:00Z")  # fmt: skip
    basic = await ledger(isolated_db.url, "grants", "create", "acct_cli", "10", "--expires-at",
                         "20990131T000000Z")  # fmt: skip

    assert (week.returncode, basic.returncode) == (2, 2)
    assert "is not an RFC 3339 time" in week.stderr
    assert "is not an RFC 3339 time" in basic.stderr


async def test_an_expiry_at_a_leap_second_is_read_by_the_command_line_as_the_api_reads_it(
    isolated_db: IsolatedDatabase,
) -> None:
    # RFC 3339's second 60 of 23:59 UTC on a month's last day: the API reads it as the
    # last microsecond before it; the command line said it was no RFC 3339 time.
    await open_account_for_the_commands(isolated_db)

    leap = await ledger(isolated_db.url, "grants", "create", "acct_cli", "10", "--expires-at",
                        "2099-06-30T23:59:60Z")  # fmt: skip
    not_leap = await ledger(isolated_db.url, "grants", "create", "acct_cli", "10",
                            "--expires-at", "2099-06-29T23:59:60Z")  # fmt: skip

    assert leap.returncode == 0, leap.stderr
    assert "expires 2099-06-30T23:59:59.999999+00:00 " in leap.stdout
    assert not_leap.returncode == 2
    assert "is not an RFC 3339 time" in not_leap.stderr


async def test_every_grant_is_listed_not_only_the_first_thousand(
    isolated_db: IsolatedDatabase,
) -> None:
    """The list read one page of 1,000 grants and said nothing of the rest."""
    books = isolated_db.ledger()
    account = await open_account(books, "acct_many", 0)
    for n in range(1001):
        account.grant(
            f"grant_{n}", 1, priority=50, expires_at=None, reason="", at=datetime.now(UTC)
        )
    await save(books, account)
    await books.uow.committer.stop()
    await caught_up(isolated_db.store)

    listed = await ledger(isolated_db.url, "grants", "list", "acct_many", "--json")

    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line)["grant_id"] for line in listed.stdout.splitlines()]
    assert rows == [f"grant_{n}" for n in reversed(range(1001))]
