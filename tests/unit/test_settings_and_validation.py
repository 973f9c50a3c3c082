"""Settings from the environment and the contract's validation messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.schemas import (
    GrantRequest,
    OpenAccountRequest,
    PurchaseRequest,
    SpendRequest,
    ThresholdRequest,
    WebhookEndpointRequest,
)
from api.settings import Settings, SettingsError, unlisted_currency
from api.validation import ValidationFailed, decode_body


def test_defaults_follow_the_contract() -> None:
    settings = Settings.from_env({})

    assert settings.port == 8000
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.credit_unit_amount == 1
    assert settings.credit_currency == "usd"
    assert settings.default_monthly_allowance == 1000
    assert settings.uses_standin
    assert not settings.production


def test_development_data_is_the_checkouts_from_whatever_directory_a_command_starts_in(
    tmp_path: Path,
) -> None:
    """`make run` keeps its embedded PostgreSQL in the checkout's .data; a command run from
    a subdirectory (`../.venv/bin/ledger tokens create …`) made a new, empty one there,
    saying nothing, and the token it printed was refused by the running service."""
    checkout = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "DATABASE_"))}

    shown = subprocess.run(
        [sys.executable, "-m", "api.cli", "config", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert f"the embedded PostgreSQL under {checkout / '.data' / 'pg'}\n" in shown.stdout
    assert list(tmp_path.iterdir()) == []
    assert Settings.from_env({"LEDGER_DATA_DIR": "elsewhere"}).data_dir == Path("elsewhere")


def test_the_clock_skew_allowed_is_five_seconds_unless_set() -> None:
    assert Settings.from_env({}).max_clock_skew_seconds == 5
    assert Settings.from_env({"LEDGER_MAX_CLOCK_SKEW_SECONDS": "30"}).max_clock_skew_seconds == 30


def test_public_url_follows_the_port() -> None:
    assert Settings.from_env({"PORT": "9001"}).public_url == "http://127.0.0.1:9001"


@pytest.mark.parametrize(
    ("currency", "unit_amount"),
    [("usd", 1), ("EUR", 7), ("jpy", 1), ("krw", 3), ("isk", 100), ("kwd", 10), ("sle", 1)],
)
def test_currencies_stripe_takes_are_accepted(currency: str, unit_amount: int) -> None:
    """Zero-decimal ones (jpy, krw) too: the price is in their unit, nothing is divided."""
    settings = Settings.from_env(
        {"CREDIT_CURRENCY": currency, "CREDIT_UNIT_AMOUNT": str(unit_amount)}
    )
    assert (settings.credit_currency, settings.credit_unit_amount) == (
        currency.lower(),
        unit_amount,
    )


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"PORT": "eighty"}, "PORT must be a whole number"),
        ({"CREDIT_UNIT_AMOUNT": "0.5"}, "CREDIT_UNIT_AMOUNT must be a whole number"),
        ({"CREDIT_UNIT_AMOUNT": "0"}, "CREDIT_UNIT_AMOUNT must be at least 1"),
        # 10,000 credits would cost more than Stripe takes in one payment (99,999,999): such
        # purchases were 502 "please try again", every time.
        ({"CREDIT_UNIT_AMOUNT": "10000"}, "CREDIT_UNIT_AMOUNT must be at most 9999"),
        ({"CREDIT_CURRENCY": "dollars"}, "CREDIT_CURRENCY must be an ISO 4217 code"),
        ({"LEDGER_ENV": "staging"}, "LEDGER_ENV must be development or production"),
        # Each of these started `ledger serve` or every command, and failed later (a CLI review).
        ({"DEFAULT_MONTHLY_ALLOWANCE": "99999999999999999999"}, "must be at most 1000000000"),
        ({"PORT": "70000"}, "PORT must be at most 65535"),
        ({"STRIPE_STANDIN_PORT": "99999"}, "STRIPE_STANDIN_PORT must be at most 65535"),
        ({"PORT": "18751", "STRIPE_STANDIN_PORT": "18751"}, "STRIPE_STANDIN_PORT must differ"),
        ({"METRICS_PORT": "18752", "STRIPE_STANDIN_PORT": "18752"}, "must differ from PORT and"),
        ({"PORT": "١٢٣"}, "PORT must be a whole number"),
        ({"DEFAULT_MONTHLY_ALLOWANCE": "1_000"}, "must be a whole number"),
        ({"CREDIT_CURRENCY": "éur"}, "CREDIT_CURRENCY must be an ISO 4217 code"),
        # Stripe takes krónur whole (100 = 1 kr) and three-decimal amounts ending in 0.
        (
            {"CREDIT_CURRENCY": "isk", "CREDIT_UNIT_AMOUNT": "150"},
            "^CREDIT_UNIT_AMOUNT must be a multiple of 100 for isk, .* not 150$",
        ),
        (
            {"CREDIT_CURRENCY": "kwd", "CREDIT_UNIT_AMOUNT": "5"},
            "CREDIT_UNIT_AMOUNT must be a multiple of 10 for kwd",
        ),
        ({"DATABASE_READ_URL": "postgresql://p@127.0.0.1:abc/x"}, "DATABASE_READ_URL is not a"),
        ({"DATABASE_URL": "postgres:pw@127.0.0.1/x"}, "DATABASE_URL is not a URL"),
        # asyncpg's first connection refused these; `ledger serve` exited 3, as for a
        # database not up yet, which a supervisor retries (a newcomer's review).
        (
            {"DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/x"},
            "^DATABASE_URL must start with postgresql://, not postgresql\\+asyncpg://$",
        ),
        ({"DATABASE_READ_URL": "mysql://u@127.0.0.1/x"}, "DATABASE_READ_URL must start with"),
        # A host further off than this from the database's clock refuses commands: none
        # would turn the guard off for good, a day would let a broken clock through.
        (
            {"LEDGER_MAX_CLOCK_SKEW_SECONDS": "0"},
            "LEDGER_MAX_CLOCK_SKEW_SECONDS must be at least 1",
        ),
        ({"LEDGER_MAX_CLOCK_SKEW_SECONDS": "86400"}, "CLOCK_SKEW_SECONDS must be at most 300"),
        ({"LEDGER_MAX_CLOCK_SKEW_SECONDS": "2.5"}, "CLOCK_SKEW_SECONDS must be a whole number"),
        # Bytes the environment could not decode (\xff, as lone surrogates): the webhook
        # secret's was a traceback at start-up (exit 3), METRICS_TOKEN's a 500 a request.
        ({"STRIPE_WEBHOOK_SECRET": "whsec_\udcff"}, "^STRIPE_WEBHOOK_SECRET holds bytes that"),
        ({"STRIPE_SECRET_KEY": "sk_test_\udcff"}, "^STRIPE_SECRET_KEY holds bytes that are"),
        ({"METRICS_TOKEN": "s3cret\udcff"}, "^METRICS_TOKEN holds bytes that are not UTF-8$"),
        ({"LEDGER_PAGE_KEY": "k" * 40 + "\udcff"}, "^LEDGER_PAGE_KEY holds bytes that are not"),
        ({"LEDGER_CORS_ORIGINS": "https://\udcff"}, "^LEDGER_CORS_ORIGINS holds bytes that"),
        ({"LEDGER_ENV": "production"}, "needs STRIPE_SECRET_KEY"),
        (
            {"LEDGER_ENV": "production", "STRIPE_SECRET_KEY": "sk_live_x"},
            "needs STRIPE_WEBHOOK_SECRET",
        ),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "public_url",
    [
        "https://",  # Stripe refuses "https:///checkout/success": every purchase was a 502
        "https://credits.example.com?ref=ads",  # "…?ref=ads/checkout/success?…": the home page
        "https://credits.example.com/#top",
        "https://credits example.com",
        "https://credits.example.com:99999",
        "https://credits.example.com:443x",
        "HTTP://credits.example.com",  # lowercase, as the production check's "not https"
        "http://[::1",  # urlsplit's ValueError: "unexpected error: ValueError: Invalid IPv6 URL"
    ],
)
def test_a_public_url_the_checkout_links_cannot_be_built_on_is_refused(public_url: str) -> None:
    """The success and cancel links are the public URL and a path: each of these started the
    service, and its checkouts failed or sent the customer back elsewhere."""
    with pytest.raises(SettingsError, match="LEDGER_PUBLIC_URL must be"):
        Settings.from_env({"LEDGER_PUBLIC_URL": public_url})


@pytest.mark.parametrize(
    "public_url",
    ["https://credits.example.com/ledger/", "http://127.0.0.1:8000", "https://[::1]:8443"],
)
def test_a_public_url_with_a_path_a_port_or_an_ipv6_address_is_taken(public_url: str) -> None:
    assert Settings.from_env({"LEDGER_PUBLIC_URL": public_url}).public_url == public_url.rstrip("/")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # Every 422 wording the contract gives for ``credits``.
        (b"{}", "The credits field is required."),
        (b'{"credits": null}', "The credits field is required."),
        (b'{"credits": "1000"}', "The credits field must be an integer."),
        (b'{"credits": 1000.0}', "The credits field must be an integer."),
        (b'{"credits": 1000.5}', "The credits field must be an integer."),
        (b'{"credits": true}', "The credits field must be an integer."),
        (b'{"credits": 99}', "The credits must be at least 100."),
        (b'{"credits": -5}', "The credits must be at least 100."),
        (b'{"credits": 10001}', "The credits must not be greater than 10000."),
        (b'{"credits": 99999999999999999999999}', "The credits must not be greater than 10000."),
    ],
)
def test_every_credits_message_of_the_contract(body: bytes, message: str) -> None:
    with pytest.raises(ValidationFailed) as failed:
        decode_body(body, PurchaseRequest)

    assert failed.value.errors == {"credits": [message]}
    assert failed.value.message == message


def test_a_good_body_decodes_straight_into_its_struct() -> None:
    assert decode_body(b'{"credits": 1000, "other": 1}', PurchaseRequest) == PurchaseRequest(1000)


def test_several_bad_fields_are_reported_together() -> None:
    with pytest.raises(ValidationFailed) as failed:
        decode_body(b'{"account_id": 5, "monthly_allowance": "many"}', OpenAccountRequest)

    assert failed.value.errors == {
        "account_id": ["The account id field must be a string."],
        "monthly_allowance": ["The monthly allowance field must be an integer."],
    }
    assert failed.value.message == "The account id field must be a string. (and 1 more error)"


def test_strings_have_their_own_wording() -> None:
    too_long = b'{"amount": 1, "reason": "' + b"x" * 501 + b'"}'
    with pytest.raises(ValidationFailed) as long_reason:
        decode_body(too_long, SpendRequest)
    with pytest.raises(ValidationFailed) as not_utf8:
        decode_body(b'{"amount": 1, "reason": "\xff"}', SpendRequest)
    with pytest.raises(ValidationFailed) as nul_reason:
        decode_body(b'{"amount": 1, "reason": "a\\u0000b"}', SpendRequest)
    with pytest.raises(ValidationFailed) as bad_id:
        decode_body(b'{"account_id": "no spaces"}', OpenAccountRequest)
    with pytest.raises(ValidationFailed) as empty_id:
        decode_body(b'{"account_id": ""}', OpenAccountRequest)
    with pytest.raises(ValidationFailed) as bad_events:
        decode_body(
            b'{"url": "ftp://x", "events": ["credits.spent", "nope"]}', WebhookEndpointRequest
        )

    assert long_reason.value.errors == {
        "reason": ["The reason must not be greater than 500 characters."]
    }
    assert nul_reason.value.errors == {"reason": ["The reason must not contain a NUL character."]}
    assert not_utf8.value.errors == {"body": ["The request body must be valid JSON."]}
    assert bad_id.value.errors == {
        "account_id": [
            "The account id format is invalid. Use letters, digits and _ . : - (for example acct_123)."
        ]
    }
    assert empty_id.value.errors == {"account_id": ["The account id field is required."]}
    assert bad_events.value.errors == {
        "url": ["The url field must be a valid URL (http or https)."],
        "events.1": [
            "The selected events.1 is invalid. Choose from credits.purchased, credits.spent, "
            "credits.low_balance, credits.depleted, hold.expired, credits.granted, grant.expired."
        ],
    }


def test_a_bad_value_for_a_field_with_a_default_is_reported_on_that_field() -> None:
    # The contract's 422 has one entry per bad field; a bad priority was only "body".
    # (A null one counts as left out, as for every optional field: test_grants_api.py.)
    with pytest.raises(ValidationFailed) as text_priority:
        decode_body(b'{"amount": 10, "priority": "high"}', GrantRequest)

    assert text_priority.value.errors == {"priority": ["The priority field must be an integer."]}


@pytest.mark.parametrize("body", [b"", b"   ", b"\r\n"])
def test_an_empty_body_is_one_without_fields(body: bytes) -> None:
    with pytest.raises(ValidationFailed) as failed:
        decode_body(body, PurchaseRequest)

    assert failed.value.errors == {"credits": ["The credits field is required."]}


def test_a_null_threshold_is_a_value_and_a_missing_one_is_not() -> None:
    assert decode_body(b'{"threshold": null}', ThresholdRequest) == ThresholdRequest(None)
    with pytest.raises(ValidationFailed) as missing:
        decode_body(b"{}", ThresholdRequest)

    assert missing.value.errors == {"threshold": ["The threshold field must be present."]}


@pytest.mark.parametrize("body", [b"[]", b"null", b"{", b"\xff", b"1\xff"])
def test_only_a_json_object_is_a_body(body: bytes) -> None:
    with pytest.raises(ValidationFailed) as failed:
        decode_body(body, PurchaseRequest)

    assert list(failed.value.errors) == ["body"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STRIPE_TIMEOUT_SECONDS", "abc"),
        ("STRIPE_TIMEOUT_SECONDS", "nan"),
        ("LEDGER_RECONCILE_SECONDS", "nan"),
    ],
)
def test_every_command_refuses_a_bad_variable_read_outside_the_settings_in_one_line(
    variable: str, value: str
) -> None:
    """A traceback from every command (the Stripe client is made for each), or a
    reconciler that died after its first run (a CLI review)."""
    refused = subprocess.run(
        [sys.executable, "-m", "api.cli", "accounts", "list"],
        env={**os.environ, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode == 1
    assert refused.stderr.startswith(f"Error: {variable} must be")
    assert len(refused.stderr.strip().splitlines()) == 1


def test_several_problems_in_one_line_say_where_to_read_them_one_a_line() -> None:
    """LEDGER_ENV=production alone was five problems in one line of 500 characters."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "METRICS_"))}
    refused = subprocess.run(
        [sys.executable, "-m", "api.cli", "stripe", "reconcile"],
        env={**env, "LEDGER_ENV": "production", "DATABASE_URL": "", "LEDGER_PAGE_KEY": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    one = subprocess.run(
        [sys.executable, "-m", "api.cli", "tokens", "list"],
        env={**env, "LEDGER_ENV": "staging"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode == 2  # reconcile could not run (1: it found something)
    [line] = refused.stderr.splitlines()
    assert line.startswith("Error: LEDGER_ENV=production needs STRIPE_SECRET_KEY")
    assert line.endswith("(5 problems: `ledger config check` lists them)")
    assert one.stderr == "Error: LEDGER_ENV must be development or production, not 'staging'\n"


@pytest.mark.parametrize("port", ["99999", "0"])
def test_a_port_out_of_range_is_one_problem_not_also_the_public_url_made_of_it(port: str) -> None:
    """PORT=99999 was also "LEDGER_PUBLIC_URL must be an http(s) address …, not
    'http://127.0.0.1:99999'", a variable nobody had set."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"PORT": port})

    [problem] = refused.value.problems
    assert problem.startswith("PORT must be at ")


def test_config_check_names_a_web_concurrency_serve_would_refuse() -> None:
    """It said "configuration OK" to WEB_CONCURRENCY=abc, which `ledger serve` refuses."""
    from api.cli_config import check

    assert "WEB_CONCURRENCY must be a whole number from 1 to 64, not 'abc'" in (
        check({"WEB_CONCURRENCY": "abc"}).problems
    )
    assert check({"WEB_CONCURRENCY": "4"}).problems == []


@pytest.mark.parametrize("currency", ["xyz", "XTS"])
def test_a_currency_stripe_does_not_take_is_said_not_refused(currency: str) -> None:
    """Three letters not on Stripe's list (every purchase a 502 at checkout) are a warning of
    ``config check`` and of the service's start, not a refusal: a currency Stripe adds later
    must not stop a release that does not know it yet from starting."""
    from api.cli_config import check

    settings = Settings.from_env({"CREDIT_CURRENCY": currency})
    said = unlisted_currency(settings)
    assert said is not None
    assert said.startswith(f"CREDIT_CURRENCY {currency.lower()!r} is not a currency Stripe takes")
    report = check({"CREDIT_CURRENCY": currency})
    assert report.problems == []
    assert report.warnings == [said]
    assert unlisted_currency(Settings.from_env({"CREDIT_CURRENCY": "EUR"})) is None
    assert check({"CREDIT_CURRENCY": "jpy"}).warnings == []


def test_a_data_dir_that_is_a_file_is_said_as_such(tmp_path: Path) -> None:
    """It was "Error: File exists: …" once a command made the embedded server's folder."""
    file = tmp_path / "data"
    file.write_text("")

    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"LEDGER_DATA_DIR": str(file)})

    assert refused.value.problems == [f"LEDGER_DATA_DIR names {file}, which is not a folder"]


@pytest.mark.parametrize(
    ("host", "taken"),
    [
        ("[2001:db8::1]", True),
        ("[::ffff:192.0.2.1]", True),
        ("[1:2:3:4:5:6:7:8]", True),
        ("[C.]", False),  # what schemathesis made of a pattern that took any hex, ':' and '.'
        ("[1::2::3]", False),
        ("[192.0.2.1]", False),
        ("[::ffff:01.2.3.4]", False),
    ],
)
def test_a_webhook_urls_bracketed_host_is_an_ipv6_address_by_the_schema_itself(
    host: str, taken: bool
) -> None:
    # The document's pattern is the check: a URL it takes is never refused afterwards.
    body = f'{{"url": "HTTPS://{host}:8443/x", "events": ["credits.spent"]}}'.encode()
    if taken:
        assert decode_body(body, WebhookEndpointRequest).url == f"HTTPS://{host}:8443/x"
    else:
        with pytest.raises(ValidationFailed):
            decode_body(body, WebhookEndpointRequest)
