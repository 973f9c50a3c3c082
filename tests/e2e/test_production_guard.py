"""LEDGER_ENV=production: what the settings refuse, and what a production start-up cleans up."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from api.access.tokens import Scope, TokenService
from api.app import create_app
from api.development import DEMO_ACCOUNT
from api.settings import Settings, SettingsError, serving_problems
from relay.runner import production_problems as relay_production_problems
from tests.conftest import IsolatedDatabase
from tests.e2e.test_startup_and_logs import run_serve, serve_env
from tests.support.cli import ledger
from tests.support.ledger import open_account

PRODUCTION = {
    "LEDGER_ENV": "production",
    "STRIPE_SECRET_KEY": "sk_live_51abc",
    "STRIPE_WEBHOOK_SECRET": "whsec_live",
    "LEDGER_PAGE_KEY": "k" * 32,
    "METRICS_PORT": "9100",
    "DATABASE_URL": "postgresql://ledger_service@db.internal/ledger",
    "LEDGER_PUBLIC_URL": "https://credits.example.com",
}


def test_a_complete_production_environment_is_accepted() -> None:
    settings = Settings.from_env(PRODUCTION)

    assert settings.production
    assert settings.metrics_port == 9100
    assert not settings.webhook_allow_private


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"STRIPE_SECRET_KEY": "sk_test_51abc"}, "refuses a Stripe test-mode key"),
        ({"STRIPE_SECRET_KEY": "rk_test_51abc"}, "refuses a Stripe test-mode key"),
        ({"STRIPE_API_BASE": "http://127.0.0.1:12111"}, "refuses STRIPE_API_BASE"),
        ({"LEDGER_PAGE_KEY": ""}, "needs LEDGER_PAGE_KEY"),
        ({"LEDGER_PAGE_KEY": "short"}, "LEDGER_PAGE_KEY must be at least 32 characters"),
        ({"METRICS_PORT": ""}, "needs METRICS_PORT .* or METRICS_TOKEN"),
        ({"METRICS_PORT": "8000"}, "METRICS_PORT must differ from PORT"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT must be at most 65535"),
        ({"STRIPE_ALLOW_TEST_KEYS": "maybe"}, "STRIPE_ALLOW_TEST_KEYS must be 1 or 0"),
        # What `config check` refused while `ledger serve` started (a CLI review).
        ({"DATABASE_URL": ""}, "needs DATABASE_URL: the embedded PostgreSQL is for development"),
        ({"STRIPE_SECRET_KEY": "notakey"}, "STRIPE_SECRET_KEY is not a Stripe secret key"),
        ({"STRIPE_WEBHOOK_SECRET": "notasecret"}, "STRIPE_WEBHOOK_SECRET is not a signing secret"),
        # A list of no secrets passed as set; "whsec_" alone is a key anyone can sign with.
        ({"STRIPE_WEBHOOK_SECRET": " , "}, "needs STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_WEBHOOK_SECRET": "whsec_"}, "STRIPE_WEBHOOK_SECRET is not a signing secret"),
        # The secrets this project publishes (docker-compose.yml, the API documentation),
        # and a metrics token one could guess: production took them (an operations review).
        ({"STRIPE_WEBHOOK_SECRET": "whsec_dev"}, "refuses STRIPE_WEBHOOK_SECRET whsec_dev"),
        ({"STRIPE_WEBHOOK_SECRET": "whsec_bench"}, "refuses STRIPE_WEBHOOK_SECRET whsec_bench"),
        (
            {"STRIPE_WEBHOOK_SECRET": "whsec_live, whsec_example"},
            "refuses STRIPE_WEBHOOK_SECRET whsec_example",
        ),
        ({"METRICS_TOKEN": "x"}, "needs a METRICS_TOKEN of at least 32 characters"),
        # Customers type their token into /account there, and their purchase's link comes
        # back to it: in plain text across a network (a security review).
        (
            {"LEDGER_PUBLIC_URL": "http://credits.example.com"},
            r"refuses an http:// LEDGER_PUBLIC_URL \(http://credits.example.com\)",
        ),
        ({"LEDGER_PUBLIC_URL": "http://10.0.0.7:8000"}, "refuses an http:// LEDGER_PUBLIC_URL"),
        # A name RFC 6761 reserves for loopback, which resolvers need not answer so.
        (
            {"LEDGER_PUBLIC_URL": "http://app.localhost:8000"},
            "refuses an http:// LEDGER_PUBLIC_URL",
        ),
        # No URL urlsplit reads: one problem among the others, not "unexpected error".
        ({"LEDGER_PUBLIC_URL": "http://[::1:8000"}, "LEDGER_PUBLIC_URL must be an http"),
        (
            {"STRIPE_WEBHOOK_SECRET": "whsec_live,whsec_"},
            r"STRIPE_WEBHOOK_SECRET \(number 2 of the list\) is not a signing secret",
        ),
    ],
)
def test_production_refuses_what_is_not_for_real_money(
    change: dict[str, str], complaint: str
) -> None:
    with pytest.raises(SettingsError, match=complaint) as refused:
        Settings.from_env({**PRODUCTION, **change})

    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "public_url",
    ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "https://x.example"],
)
def test_production_takes_an_http_public_url_on_this_machine_only(public_url: str) -> None:
    """A public URL on this machine (compose's default, through its proxy) crosses no
    network; any other is https."""
    assert Settings.from_env({**PRODUCTION, "LEDGER_PUBLIC_URL": public_url}).production


def test_a_test_key_passes_only_when_allowed_and_a_token_may_stand_for_the_port() -> None:
    staging = Settings.from_env(
        {
            **PRODUCTION,
            "STRIPE_SECRET_KEY": "sk_test_51abc",
            "STRIPE_ALLOW_TEST_KEYS": "1",
            "METRICS_PORT": "",
            "METRICS_TOKEN": "scrape-me" * 4,
        }
    )

    assert staging.stripe_allow_test_keys
    assert staging.metrics_port is None
    assert staging.metrics_token == "scrape-me" * 4


def test_development_allows_what_production_refuses() -> None:
    settings = Settings.from_env(
        {"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_API_BASE": "http://127.0.0.1:12111"}
    )

    assert settings.stripe_api_base == "http://127.0.0.1:12111"


def production_settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        ledger_env="production",
        stripe_secret_key="sk_live_guard",
        stripe_webhook_secret="whsec_guard",
        page_key="p" * 32,
        metrics_token="guard",
        data_dir=data_dir,
    )


async def test_a_production_start_revokes_the_demo_token_left_from_development(
    isolated_db: IsolatedDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = TokenService(isolated_db.pool)
    books = isolated_db.ledger()
    try:
        await open_account(books, DEMO_ACCOUNT, 1000)  # what `make run` left there
    finally:
        await books.uow.committer.stop()
    demo = await tokens.issue(Scope.CREDITS, account_id=DEMO_ACCOUNT, name="demo")
    named_otherwise = await tokens.issue(Scope.CREDITS, account_id=DEMO_ACCOUNT, name="support")
    caplog.set_level(logging.WARNING, logger="ledger")

    async with AsyncTestClient(create_app(production_settings(isolated_db.url, tmp_path))) as c:
        assert (await c.get("/healthz")).status_code == 200
    warnings = [r for r in caplog.records if "demo token" in r.getMessage()]
    async with AsyncTestClient(create_app(production_settings(isolated_db.url, tmp_path))):
        pass  # a second start finds nothing left to revoke

    assert await tokens.authenticate(demo.secret) is None
    assert await tokens.authenticate(named_otherwise.secret) is not None
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert demo.token_id in warnings[0].getMessage()
    assert len([r for r in caplog.records if "demo token" in r.getMessage()]) == 1
    assert not (tmp_path / "demo-token").exists()


async def test_a_production_start_opens_no_demo_account(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    async with AsyncTestClient(create_app(production_settings(isolated_db.url, tmp_path))) as c:
        assert (await c.get("/healthz")).status_code == 200

    books = isolated_db.ledger()
    try:
        assert not await books.account_exists(DEMO_ACCOUNT)
    finally:
        await books.uow.committer.stop()
    assert await isolated_db.pool.fetchval("SELECT count(*) FROM api_tokens") == 0


def test_serving_in_production_needs_the_public_url_and_the_projector_does_not(
    tmp_path: Path,
) -> None:
    """`ledger serve` started without it, which `config check` refused (a CLI review);
    the projector makes no links (docker-compose.yml gives it none)."""
    assert serving_problems({**PRODUCTION, "LEDGER_PUBLIC_URL": ""}) == [
        "LEDGER_ENV=production needs LEDGER_PUBLIC_URL: the address customers come back "
        "to from Stripe Checkout"
    ]
    assert serving_problems(PRODUCTION) == []
    assert Settings.from_env({**PRODUCTION, "LEDGER_PUBLIC_URL": ""}).production

    refused = run_serve(serve_env(tmp_path, **{**PRODUCTION, "LEDGER_PUBLIC_URL": ""}))

    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "Error: LEDGER_ENV=production needs LEDGER_PUBLIC_URL: the address customers come "
        "back to from Stripe Checkout"
    )


def test_serving_in_production_names_the_public_url_with_every_other_problem_at_once(
    tmp_path: Path,
) -> None:
    """docs/production.md: the service names every problem at once. `ledger serve` named
    the missing LEDGER_PUBLIC_URL only once the others were fixed, a second refusal."""
    env = {**PRODUCTION, "LEDGER_PUBLIC_URL": "", "LEDGER_PAGE_KEY": "", "METRICS_PORT": ""}

    refused = run_serve(serve_env(tmp_path, **env))

    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    for needed in ("LEDGER_PAGE_KEY", "METRICS_PORT", "LEDGER_PUBLIC_URL"):
        assert f"LEDGER_ENV=production needs {needed}" in line


@pytest.mark.parametrize(
    ("args", "env", "complaint"),
    [
        ((), {}, "needs LEDGER_RELAY_URL \\(or --to\\): the relay's default, nats://127.0.0.1"),
        (("--to", "nats://nats.internal:4222"), {}, "a NATS URL without credentials"),
        ((), {"LEDGER_RELAY_URL": "tls://nats.internal:4222"}, "without credentials"),
        (("--to", "tls://relay:@nats.internal:4222"), {}, "without credentials"),
        (("--to", "tls://:s3cret@nats.internal:4222"), {}, "without credentials"),
        (("--to", "nats://relay:s3cret@nats.internal:4222"), {}, "in plain text.*; use tls://$"),
        ((), {"LEDGER_RELAY_URL": "nats://t0ken@10.0.0.7:4222"}, "in plain text.*; use tls://$"),
    ],
)
async def test_production_refuses_a_relay_to_the_default_or_an_open_broker(
    args: tuple[str, ...], env: dict[str, str], complaint: str
) -> None:
    """The relay took production's settings and published to nats://127.0.0.1:4222 when
    told nothing, or to a broker anyone could publish into (a relay review), or sent its
    credentials in plain text (nats://) across the network."""
    refused = await ledger(
        PRODUCTION["DATABASE_URL"], "relay", *args, env={**PRODUCTION, **env}, seconds=60
    )

    assert refused.returncode == 1, refused.stderr
    assert re.search(complaint, refused.stderr), refused.stderr
    assert "s3cret" not in refused.stderr
    assert "t0ken" not in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


@pytest.mark.parametrize(
    "url",
    [
        "tls://relay:s3cret@nats.internal:4222",
        "tls://t0ken@nats.internal:4222",
        # Plain text that never leaves the machine
        "nats://u:p@127.0.0.1:4222",
        "nats://t0ken@localhost:4222",
        "nats://u:p@[::1]:4222,127.0.0.2:4223",
    ],
)
def test_production_takes_a_broker_url_with_credentials(url: str) -> None:
    assert relay_production_problems(url) == []


async def test_the_relay_needs_no_stripe_secret_in_production() -> None:
    """The relay reads the database and publishes: it asked for the Stripe key, the webhook
    secret and the page key as the API does, so its host had to hold them (a relay review)."""
    database_only = {
        "LEDGER_ENV": "production",
        **dict.fromkeys(
            ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "LEDGER_PAGE_KEY", "METRICS_PORT"), ""
        ),
    }
    refused = await ledger(PRODUCTION["DATABASE_URL"], "relay", env=database_only, seconds=60)

    assert refused.returncode == 1, refused.stderr
    assert "needs LEDGER_RELAY_URL" in refused.stderr
    assert "STRIPE" not in refused.stderr
    assert "LEDGER_PAGE_KEY" not in refused.stderr
