"""``ledger reset-month`` and ``ledger projections rebuild`` on a database of their own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from api.cli_accounts import reset_accounts, reset_every_account
from ledger.commands import OpenAccount, ResetMonth, SpendCredits
from projections.queries import Views
from projections.rebuild import REBUILD_LOCK
from tests.conftest import IsolatedDatabase
from tests.support.cli import ledger
from tests.support.events import caught_up
from tests.support.ledger import open_account


def spend(account_id: str, amount: int, key: str) -> SpendCredits:
    return SpendCredits(account_id=account_id, amount=amount, reason="work", idempotency_key=key)


async def test_reset_month_resets_every_account_once_and_is_safe_to_run_again(
    isolated_db: IsolatedDatabase,
) -> None:
    books = isolated_db.ledger()
    for n in range(3):
        await open_account(books, f"acct_{n}", 100 * (n + 1))
        await books.execute(spend(f"acct_{n}", 50, f"k{n}"))
    await books.execute(ResetMonth(account_id="acct_2", period="2999-07"))  # a later period

    first = await ledger(isolated_db.url, "reset-month", "--period", "2999-06")
    second = await ledger(isolated_db.url, "reset-month", "--period", "2999-06")
    bad = await ledger(isolated_db.url, "reset-month", "--period", "2999-6")

    assert first.returncode == 0, first.stderr
    assert "reset 2 accounts; 0 already reset for this period" in first.stdout
    assert "1 account was reset for a later period already and was left alone" in first.stderr
    assert "reset 0 accounts; 2 already reset for this period" in second.stdout
    assert bad.returncode == 2
    for n in range(2):
        account = await books.account(f"acct_{n}", fresh=True)
        assert (account.period, account.allowance_remaining) == ("2999-06", 100 * (n + 1))


async def test_a_period_far_ahead_is_warned_of_off_a_terminal_and_reset_all_the_same(
    isolated_db: IsolatedDatabase,
) -> None:
    """From cron nothing can answer a question: the contract's reset-month takes any period,
    so the run goes on, and says once that the accounts will refuse every earlier one."""
    books = isolated_db.ledger()
    await open_account(books, "acct_far", 100)
    await books.execute(spend("acct_far", 30, "k"))
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 + 3
    far = f"{index // 12:04d}-{index % 12 + 1:02d}"

    warned = await ledger(isolated_db.url, "reset-month", "--period", far)
    again = await ledger(isolated_db.url, "reset-month", "--period", far, "--yes")

    assert warned.returncode == 0, warned.stderr
    [warning] = warned.stderr.splitlines()
    assert warning.startswith(f"warning: --period {far} is ")
    assert warning.endswith("an account reset for it refuses every earlier period from then on")
    assert warned.stdout.strip() == "reset 1 account; 0 already reset for this period"
    assert (again.returncode, again.stderr) == (0, "")  # --yes: neither asked nor warned
    assert again.stdout.strip() == "reset 0 accounts; 1 already reset for this period"
    account = await books.account("acct_far", fresh=True)
    assert (account.period, account.allowance_remaining) == (far, 100)


async def test_a_reset_month_run_that_crosses_a_months_end_resets_every_account_for_one_period(
    isolated_db: IsolatedDatabase,
) -> None:
    """Without --period the run's month counts, not each account's moment: those reset after
    midnight got the next month's allowance, those before it not, and the run's summary
    counted both as one period."""
    end = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    moments = [end - timedelta(days=1)]  # each read takes the first; the last one stays
    books = isolated_db.ledger(clock=lambda: moments.pop(0) if moments[1:] else moments[0])
    for n in range(3):
        await books.execute(OpenAccount(account_id=f"acct_{n}", monthly_allowance=100))
        await books.execute(spend(f"acct_{n}", 40, f"k{n}"))
    moments[:] = [end, end + timedelta(microseconds=1)]  # the run begins at the last moment

    counts = await reset_accounts(books, ["acct_0", "acct_1", "acct_2"], None, lambda _: None)

    assert counts == (0, 3, [])
    for n in range(3):
        account = await books.account(f"acct_{n}", fresh=True)
        assert (account.period, account.allowance_remaining) == ("2026-12", 60)
    await books.uow.committer.stop()


async def test_an_account_whose_opening_commits_after_the_run_listed_the_accounts_is_reset_too(
    isolated_db: IsolatedDatabase,
) -> None:
    """An account opened just before midnight, committed just after the run read the list of
    accounts (a command in flight over it), kept last month's period and allowance until the
    next monthly run."""
    end = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    books = isolated_db.ledger()
    for n in range(2):
        await books.execute(OpenAccount(account_id=f"acct_{n}", monthly_allowance=100, at=end))
        await books.execute(spend(f"acct_{n}", 40, f"k{n}"))
    listing = books.all_account_ids

    async def listed_as_an_opening_commits() -> list[str]:
        found = await listing()
        if "acct_late" not in found:  # stamped before midnight, committed after the read
            await books.execute(OpenAccount(account_id="acct_late", monthly_allowance=100, at=end))
            await books.execute(spend("acct_late", 40, "late"))
        return found

    books.all_account_ids = listed_as_an_opening_commits  # type: ignore[method-assign]

    counts = await reset_every_account(books, "2027-01", lambda _: None)

    assert counts == (3, 0, [])
    for account_id in ("acct_0", "acct_1", "acct_late"):
        account = await books.account(account_id, fresh=True)
        assert (account.period, account.allowance_remaining) == ("2027-01", 100)
    await books.uow.committer.stop()


async def test_a_reset_month_run_ends_while_accounts_go_on_opening_in_the_new_month(
    isolated_db: IsolatedDatabase,
) -> None:
    """The run lists the accounts again after each pass until none is new: with accounts
    opening all the while (sign-ups, a few a second), a list with none new seldom came,
    and the run went on passing over the newest and reading every account's id again.
    Those opened in the month the run is for have its period already."""
    books = isolated_db.ledger()
    await books.execute(
        OpenAccount(
            account_id="acct_old", monthly_allowance=100, at=datetime(2026, 12, 31, tzinfo=UTC)
        )
    )
    listing = books.all_account_ids
    listed = 0

    async def listed_as_accounts_go_on_opening() -> list[str]:
        nonlocal listed
        listed += 1
        found = await listing()
        if listed < 50:  # enough: the run would not end while they go on
            at = datetime(2027, 1, 1, 0, 0, listed, tzinfo=UTC)
            await books.execute(
                OpenAccount(account_id=f"acct_new_{listed}", monthly_allowance=100, at=at)
            )
        return found

    books.all_account_ids = listed_as_accounts_go_on_opening  # type: ignore[method-assign]

    reset, _, refused = await reset_every_account(books, "2027-01", lambda _: None)

    assert (reset, refused) == (1, [])
    assert listed <= 3, listed
    await books.uow.committer.stop()


async def test_a_rebuilt_view_equals_the_live_one_and_reads_go_on_meanwhile(
    isolated_db: IsolatedDatabase,
) -> None:
    books = isolated_db.ledger()
    for n in range(20):
        await open_account(books, f"acct_{n}", 1000)
        for k in range(10):
            await books.execute(spend(f"acct_{n}", 1 + k, f"{n}-{k}"))
    await caught_up(isolated_db.store)
    views = Views(isolated_db.pool)
    before = {f"acct_{n}": await views.balance(f"acct_{n}") for n in range(20)}
    statement_before = await views.statement("acct_7", limit=100)
    reads_failed = 0
    rebuilding = asyncio.ensure_future(ledger(isolated_db.url, "projections", "rebuild"))

    while not rebuilding.done():
        try:
            balance = await views.balance("acct_3")
        except asyncpg.PostgresError:
            reads_failed += 1
        else:
            assert balance == before["acct_3"]
        await asyncio.sleep(0.005)
    rebuilt = await rebuilding

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt balances up to position" in rebuilt.stdout
    assert "rebuilt statement up to position" in rebuilt.stdout
    assert reads_failed == 0
    assert {a: await views.balance(a) for a in before} == before
    assert await views.statement("acct_7", limit=100) == statement_before
    tables = await isolated_db.pool.fetchval(
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%\\_\\_rebuild' OR tablename LIKE '%\\_\\_old'"
    )
    assert tables == 0


async def test_a_rebuild_while_another_runs_says_so_in_one_line(
    isolated_db: IsolatedDatabase,
) -> None:
    running = await asyncpg.connect(isolated_db.url)
    try:
        await running.execute("SELECT pg_advisory_lock($1)", REBUILD_LOCK)
        refused = await ledger(isolated_db.url, "projections", "rebuild")
    finally:
        await running.close()

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "Error: another `ledger projections rebuild` is running on this database: "
        "run this one when it has finished"
    ]
