"""URLs as logs and errors show them (ledger/urls.py): never a password."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from api.cli_config import _key
from ledger.urls import UNREADABLE, over_tls_or_here, without_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/ledger", "postgresql://app@db:5432/ledger"),
        ("postgresql://app@db/ledger", "postgresql://app@db/ledger"),
        ("postgresql://db/ledger", "postgresql://db/ledger"),
        # Found by a review: libpq's query form, and a URL with no scheme.
        (
            "postgresql://127.0.0.1:1/x?user=postgres&password=s3cret&sslmode=require",
            "postgresql://127.0.0.1:1/x?user=postgres&sslmode=require",
        ),
        ("postgres:s3cret@127.0.0.1/ledger", UNREADABLE),
        ("postgresql://postgres@127.0.0.1:abc/x", UNREADABLE),
        ("postgresql://postgres@[::1/x", UNREADABLE),
        ("nats://user:s3cret@127.0.0.1:4222", "nats://user@127.0.0.1:4222"),
        # A review: a list of hosts is a URL PostgreSQL takes; the client key's passphrase.
        ("postgresql://app:s3cret@h1:5432,h2:5433/db", "postgresql://app@h1:5432,h2:5433/db"),
        ("postgresql:///db?host=/tmp&sslpassword=s3cret", "postgresql:///db?host=/tmp"),
        ("postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db"),
        ("postgresql://h:70000/db", UNREADABLE),
        ("s3cret", UNREADABLE),
        # A security review: a password's '/' not written %2F ends the address there for
        # the clients, so the rest of the password was shown as the start of the path.
        ("postgresql://app:2024/s3cret@db:5432/ledger", UNREADABLE),
        ("postgresql://app:1/s3cret@db/ledger?sslmode=require", UNREADABLE),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert without_password(url) == shown
    assert "s3cret" not in without_password(url)


def test_a_nats_token_in_the_user_part_is_hidden_where_asked() -> None:
    """NATS takes a token as the URL's user (a review)."""
    assert without_password("nats://s3cret@nats:4222", hide_user=True) == "nats://…@nats:4222"


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("sk_live_51abcdef", "sk_live_…"),
        ("rk_test_51abcdef", "rk_test_…"),
        ("sk_4eC39HqLyjWDarjtT1zdp7dc", "…"),
        ("MYSECRETKEY123", "…"),
    ],
)
def test_a_stripe_key_is_shown_as_its_kind_and_mode_only(key: str, shown: str) -> None:
    assert _key(key) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://127.0.0.1:1/x?user=postgres&password=s3cret",
        "postgres:s3cret@127.0.0.1/x",
        "postgresql://postgres:s3cret@127.0.0.1:abc/x",
        "postgresql://postgres:5432/s3cret@127.0.0.1/x",
    ],
)
def test_a_command_that_cannot_connect_says_so_in_one_line_without_the_password(
    url: str,
) -> None:
    failed = subprocess.run(
        [sys.executable, "-m", "api.cli", "accounts", "list"],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert failed.returncode == 1
    assert failed.stderr.startswith(
        ("Error: cannot connect to ", "Error: DATABASE_URL is not a URL (postgresql://")
    )
    assert len(failed.stderr.strip().splitlines()) == 1
    assert "s3cret" not in failed.stdout + failed.stderr


@pytest.mark.parametrize(
    "url",
    [
        "nats://127.0.0.1:99999",
        "nats://s3cret@127.0.0.1:0",
        "nats://[::1",
        "bogus",
        # Bytes that are not UTF-8 (argv's \xff): it went on, and every log line naming the
        # URL was a "--- Logging error ---" traceback.
        "nats://s3cret@\udcff:4222",
    ],
)
def test_the_relay_refuses_a_url_with_no_port_nats_listens_on(url: str) -> None:
    """Such URLs had the relay retry for ever; a refused one now names no password."""
    from relay.runner import relay_settings

    with pytest.raises(ValueError, match="is not a NATS URL") as refused:
        relay_settings(url=url)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("given", "named"),
    [({"LEDGER_RELAY_URL": "s3cret"}, "LEDGER_RELAY_URL"), ({}, "'--to'")],
    ids=["variable", "option"],
)
def test_the_relays_url_refused_names_where_it_came_from(given: dict[str, str], named: str) -> None:
    """ "the URL given", whatever gave it: a newcomer who set LEDGER_RELAY_URL in a file
    long ago did not know which (a newcomer's review)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_RELAY_")}
    refused = subprocess.run(  # noqa: S603 (the arguments are this test's own)
        [sys.executable, "-m", "api.cli", "relay", *([] if given else ["--to", "s3cret"])],
        env={**env, **given},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        f"Error: Invalid value for {named}: the URL given is not a NATS URL "
        "(nats://host:port or tls://host:port, a port of 1 to 65535)"
    )


@pytest.mark.parametrize("window", ["nan", "inf", "1e12", "0"])
def test_the_relays_duplicate_window_is_whole_seconds_up_to_a_week(window: str) -> None:
    refused = subprocess.run(  # noqa: S603 (the arguments are this test's own)
        [sys.executable, "-m", "api.cli", "relay", "--duplicate-window", window],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode == 2
    assert "Invalid value for '--duplicate-window'" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_a_server_that_never_answers_is_given_up_on_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It waited asyncpg's 60 s, then said nothing of why (a CLI review)."""
    from api import database

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    monkeypatch.setattr(database, "CONNECT_TIMEOUT", 0.5)
    try:
        with pytest.raises(database.DatabaseUnreachable, match=r"\(no answer in 0.5 s\)"):
            await database._first_connection(
                f"postgresql://nobody@127.0.0.1:{silent.getsockname()[1]}/x"
            )
    finally:
        silent.close()


@pytest.mark.parametrize(
    ("arguments", "env", "said"),
    [
        ([], {"DATABASE_URL": "s3cret"}, "DATABASE_URL"),
        ([], {"DATABASE_ADMIN_URL": "s3cret"}, "DATABASE_ADMIN_URL"),
        (["--admin-url", "s3cret"], {}, "--admin-url"),
    ],
)
def test_db_setup_says_a_url_that_is_none_as_every_other_command_does(
    arguments: list[str], env: dict[str, str], said: str
) -> None:
    """It said "cannot connect to (a URL that cannot be read: scheme://…)" where the other
    commands say which variable is not a URL."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_ADMIN_URL")
    }
    failed = subprocess.run(  # noqa: S603 (the arguments are this test's own)
        [sys.executable, "-m", "api.cli", "db", "setup", *arguments],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert failed.returncode == 1
    assert failed.stderr == f"Error: {said} is not a URL (postgresql://user@host:port/database)\n"
    assert "s3cret" not in failed.stdout


@pytest.mark.parametrize(
    ("arguments", "env", "said"),
    [
        (
            ["accounts", "list"],
            {"DATABASE_URL": "postgresql://u:s3cret@127.0.0.1/x\udcff"},
            "DATABASE_URL",
        ),
        (
            ["db", "setup", "--admin-url", "postgresql://u:s3cret@127.0.0.1/x\udcff"],
            {},
            "--admin-url",
        ),
    ],
    ids=["DATABASE_URL", "--admin-url"],
)
def test_a_database_url_that_is_not_utf8_is_no_url(
    arguments: list[str], env: dict[str, str], said: str
) -> None:
    """Its bytes that are not UTF-8 reach Python as lone surrogates, which asyncpg failed
    on: "unexpected error: AttributeError: 'Protocol' object has no attribute '_on_error'"."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_ADMIN_URL")
    }
    failed = subprocess.run(  # noqa: S603 (the arguments are this test's own)
        [sys.executable, "-m", "api.cli", *arguments],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert failed.returncode == 1
    assert failed.stderr == f"Error: {said} is not a URL (postgresql://user@host:port/database)\n"
    assert "s3cret" not in failed.stdout


@pytest.mark.parametrize(
    ("url", "taken"),
    [
        ("https://credits.example.com", True),
        ("http://127.0.0.1:8000", True),
        ("http://localhost:8000", True),
        ("http://LOCALHOST./hooks", True),
        ("http://[::1]:8000", True),
        ("http://credits.example.com", False),
        ("http://10.0.0.7:8000", False),
        ("http://localhost@evil.example/", False),
        ("http://[::1", False),
        # The public URL's check took these, the webhook endpoint's did not: glibc (files,
        # then DNS, as here) asks DNS for them, search domains appended.
        ("http://app.localhost:8000", False),
        ("http://hooks.localhost./x", False),
    ],
)
def test_plain_http_is_taken_only_on_this_machine(url: str, taken: bool) -> None:
    assert over_tls_or_here(url) is taken
