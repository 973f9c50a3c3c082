"""What operators and front ends rely on: configuration, CORS, the OpenAPI document."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import jsonschema_rs
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.access.tokens import Scope
from api.app import create_app
from api.log_context import ContextFilter, JsonFormatter
from api.services import Services
from api.settings import Settings, SettingsError
from stripe_standin import RunningStandin
from tests.conftest import fresh_database
from tests.e2e.conftest import Customer, served_api
from tests.support.stripe_events import checkout_session, event_body, signature


def test_every_bad_setting_is_named_in_one_error() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(
            {"PORT": "eighty", "CREDIT_CURRENCY": "dollars", "LEDGER_CORS_ORIGINS": "example.com"}
        )

    message = str(refused.value)
    assert "PORT must be a whole number" in message
    assert "CREDIT_CURRENCY must be an ISO 4217 code" in message
    assert "LEDGER_CORS_ORIGINS has 'example.com'" in message


def config_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "LEDGER_"))}
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "config", "check"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_check_prints_the_settings_with_secrets_masked() -> None:
    checked = config_check(
        {
            "STRIPE_SECRET_KEY": "sk_test_very_secret",
            "STRIPE_WEBHOOK_SECRET": "whsec_also_secret",
            "DATABASE_URL": "postgresql://ledger:hunter2@db.internal:5432/ledger",
            "PORT": "9001",
        }
    )
    development = config_check({})

    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert "PORT = 9001" in lines
    assert "STRIPE_SECRET_KEY = sk_test_… (set; test mode)" in lines
    assert "STRIPE_WEBHOOK_SECRET = whsec_… (set; 1 secret)" in lines
    assert (
        "DATABASE_URL = postgresql://ledger@db.internal:5432/ledger (password not shown)" in lines
    )
    assert lines[-1] == "configuration OK"
    for secret in ("very_secret", "also_secret", "hunter2"):
        assert secret not in checked.stdout + checked.stderr
    assert development.returncode == 0, development.stderr
    assert "LEDGER_MAX_CLOCK_SKEW_SECONDS = 5" in development.stdout.splitlines()
    checkout_data = Path(__file__).resolve().parents[2] / ".data"
    assert f"DATABASE_URL = (not set) the embedded PostgreSQL under {checkout_data}/pg" in (
        development.stdout
    )
    assert "STRIPE_SECRET_KEY = (not set) the Stripe stand-in on 127.0.0.1:12111" in (
        development.stdout
    )
    assert "None" not in development.stdout


def test_config_check_lists_every_problem_one_per_line() -> None:
    refused = config_check({"PORT": "x", "LEDGER_ENV": "staging", "LEDGER_RECONCILE_SECONDS": "-"})
    production = config_check({"LEDGER_ENV": "production"})
    wrong_keys = config_check(
        {"STRIPE_SECRET_KEY": "pk_test_publishable", "STRIPE_WEBHOOK_SECRET": "whsec_a,secret"}
    )

    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "problem: LEDGER_ENV must be development or production, not 'staging'",
        "problem: PORT must be a whole number, not 'x'",
        "problem: LEDGER_RECONCILE_SECONDS must be a number of seconds, 1 to 31,622,400 "
        "(0: never), not '-'",
        "3 problems",
    ]
    # Every requirement of production, at once.
    assert production.returncode == 1
    assert production.stderr.splitlines() == [
        "problem: LEDGER_ENV=production needs STRIPE_SECRET_KEY: the Stripe stand-in is for "
        "development",
        "problem: LEDGER_ENV=production needs STRIPE_WEBHOOK_SECRET",
        "problem: LEDGER_ENV=production needs LEDGER_PAGE_KEY (signs the checkout success "
        "links; for example `openssl rand -hex 32`)",
        "problem: LEDGER_ENV=production needs METRICS_PORT (serve /metrics on a port of its "
        "own) or METRICS_TOKEN (a bearer token for /metrics), or both",
        "problem: LEDGER_ENV=production needs DATABASE_URL: the embedded PostgreSQL is for "
        "development",
        "problem: LEDGER_ENV=production needs LEDGER_PUBLIC_URL: the address customers come "
        "back to from Stripe Checkout",
        "6 problems",
    ]
    assert wrong_keys.returncode == 1
    assert wrong_keys.stderr.splitlines() == [
        "problem: STRIPE_SECRET_KEY is not a Stripe secret key (sk_… or rk_…)",
        "problem: STRIPE_WEBHOOK_SECRET (number 2 of the list) is not a signing secret (whsec_…)",
        "2 problems",
    ]


@pytest.mark.parametrize(
    ("env", "problems"),
    [
        (
            {"LEDGER_RELAY_URL": "http://nats.internal:4222"},
            ["LEDGER_RELAY_URL: http://nats.internal:4222 is not a NATS URL (nats://host:port"],
        ),
        (
            {"LEDGER_RELAY_URL": "nats://relay:s3cret@nats.internal:99999"},
            ["LEDGER_RELAY_URL: the URL given is not a NATS URL"],
        ),
        (
            {"LEDGER_RELAY_URL": "tls://relay:s3cret@nats.internal:4222"}
            | {"LEDGER_RELAY_TLS_CA": "/nowhere/ca.pem"},
            ["LEDGER_RELAY_TLS_CA: the TLS CA file /nowhere/ca.pem cannot be read"],
        ),
        (
            {"LEDGER_ENV": "production", "LEDGER_RELAY_URL": "nats://relay:s3cret@10.0.0.7:4222"},
            [
                "LEDGER_ENV=production refuses nats://…@10.0.0.7:4222: nats:// sends its "
                "credentials in plain text to a host other than this machine; use tls://"
            ],
        ),
        (
            {"LEDGER_ENV": "production", "LEDGER_RELAY_URL": "tls://nats.internal:4222"},
            [
                "LEDGER_ENV=production refuses tls://nats.internal:4222: a NATS URL without "
                "credentials"
            ],
        ),
    ],
)
def test_config_check_refuses_the_relays_settings_as_the_relay_would(
    env: dict[str, str], problems: list[str]
) -> None:
    """config check knew nothing of LEDGER_RELAY_URL: a URL the relay refuses at its start
    (or, in production, one that sends credentials in plain text) was "configuration OK".
    It checks without connecting: nothing answers at these addresses."""
    checked = config_check(env)

    relay_problems = [
        line.removeprefix("problem: ")
        for line in checked.stderr.splitlines()
        if "RELAY" in line or "NATS" in line or "nats" in line
    ]
    assert checked.returncode == 1
    assert len(relay_problems) == len(problems), checked.stderr
    for shown, expected in zip(relay_problems, problems, strict=True):
        assert shown.startswith(expected), shown
    assert "s3cret" not in checked.stdout + checked.stderr


def test_config_check_in_production_shows_the_settings_beside_what_it_lacks() -> None:
    """With a variable production needs unset, config check printed only the relay's and
    three other variables: LEDGER_ENV, DATABASE_URL and the rest, the settings in effect it
    says it prints, were left out (a newcomer's review)."""
    lacking = config_check({"LEDGER_ENV": "production", "PORT": "9001"})

    assert lacking.returncode == 1
    lines = lacking.stdout.splitlines()
    assert lines[0] == "LEDGER_ENV = production"
    assert "PORT = 9001" in lines
    # Not the development defaults production refuses: they are not in effect there.
    for variable in ("DATABASE_URL", "LEDGER_PUBLIC_URL", "STRIPE_SECRET_KEY", "LEDGER_PAGE_KEY"):
        assert f"{variable} = (not set)" in lines, variable
    assert "STRIPE_API_BASE = (not set) Stripe's own" in lines
    assert "problem: LEDGER_ENV=production needs DATABASE_URL" in lacking.stderr
    # An unset LEDGER_PUBLIC_URL is a problem, not an http:// address to warn of.
    assert "warning" not in lacking.stderr


def test_config_check_shows_the_relays_settings_and_takes_good_ones() -> None:
    unset = config_check({})
    loopback = config_check({"LEDGER_RELAY_URL": "nats://relay:s3cret@127.0.0.1:4222"})

    assert unset.returncode == 0, unset.stderr
    assert "LEDGER_RELAY_URL = (not set) nats://127.0.0.1:4222 (development)" in unset.stdout
    assert "LEDGER_RELAY_TLS_CA = (not set) the system's CAs" in unset.stdout
    assert loopback.returncode == 0, loopback.stderr
    assert "LEDGER_RELAY_URL = nats://…@127.0.0.1:4222" in loopback.stdout.splitlines()
    assert "s3cret" not in loopback.stdout + loopback.stderr


def test_config_check_help_names_every_variable_production_needs() -> None:
    production = config_check({"LEDGER_ENV": "production"})
    helped = subprocess.run(
        [sys.executable, "-m", "api.cli", "config", "check", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    needed = re.findall(r"needs (\w+)|or (\w+) \(", production.stderr)
    named = {name for pair in needed for name in pair if name}
    assert {"LEDGER_PAGE_KEY", "METRICS_PORT", "METRICS_TOKEN", "DATABASE_URL"} <= named
    for name in named:
        assert name in " ".join(helped.stdout.split()), name


async def test_configured_origins_may_call_the_purchase_endpoint(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url,
        stripe_secret_key="sk_test_cors",
        stripe_api_base="http://127.0.0.1:9",
        stripe_webhook_secret="whsec_cors",
        data_dir=tmp_path,
        cors_origins=("https://app.example.com",),
    )
    async with AsyncTestClient(create_app(settings)) as client:
        allowed = await client.options(
            "/v1/credits/purchase",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        other = await client.options(
            "/v1/credits/purchase",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )

    assert allowed.status_code in (200, 204)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in other.headers


async def test_every_public_route_is_in_the_openapi_document(
    ledger_app: Litestar, http: httpx.AsyncClient
) -> None:
    schema = (await http.get("/schema/openapi.json")).json()
    documented = {(path, method.upper()) for path, ops in schema["paths"].items() for method in ops}

    missing = []
    for route in ledger_app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not handler.include_in_schema or route.path.startswith("/schema"):
                continue
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
            missing.extend(
                (path, method)
                for method in handler.http_methods
                if method not in ("HEAD", "OPTIONS") and (path, method) not in documented
            )

    assert missing == []


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def _valid(schema: dict[str, Any], document: dict[str, Any], value: Any) -> bool:
    # The document's components ride along so that its $refs resolve.
    return jsonschema_rs.is_valid({**schema, "components": document["components"]}, value)


async def test_every_operation_documents_its_body_answers_and_errors(
    ledger_app: Litestar, http: httpx.AsyncClient
) -> None:
    schema = (await http.get("/schema/openapi.json")).json()
    reads_body = {
        (route.path.replace("{account_id:str}", "{account_id}").replace(":str}", "}"), method)
        for route in ledger_app.routes
        for handler in getattr(route, "route_handlers", [])
        if handler.include_in_schema
        and {"request", "data"} & set(handler.parsed_fn_signature.parameters)
        for method in handler.http_methods
        if method in ("POST", "PUT", "PATCH")
    }

    problems = []
    for method, path, operation in _operations(schema):
        label = f"{method} {path}"
        responses = operation.get("responses", {})
        answers = [r for status, r in responses.items() if status.startswith("2")]
        if not any(media.get("schema") for r in answers for media in r.get("content", {}).values()):
            problems.append(f"{label}: no 2xx answer with a schema")
        for status, response in responses.items():
            if not status.startswith("2") and not response.get("content"):
                problems.append(f"{label}: answer {status} has no schema")
            if status == "400" and "status_code" in json.dumps(response):
                problems.append(f"{label}: Litestar's 400 (this API answers 422)")
        if operation.get("security") and "401" not in responses:
            problems.append(f"{label}: takes a token but documents no 401")
        if (path, method) in reads_body:
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if not body.get("schema"):
                problems.append(f"{label}: reads a body but documents none")
            # Examples sit in the body's schema (JSON Schema 2020-12, as OpenAPI 3.1 has it).
            examples = body.get("schema", {}).get("examples", [])
            if not examples:
                problems.append(f"{label}: no example of its body")
            for example in examples:
                if not _valid(body["schema"], schema, example):
                    problems.append(f"{label}: body example {example!r} does not fit its schema")
        for status, response in responses.items():
            for media in response.get("content", {}).values():
                for name, example in (media.get("examples") or {}).items():
                    if media.get("schema") and not _valid(
                        media["schema"], schema, example["value"]
                    ):
                        problems.append(f"{label}: {status} example {name!r} does not fit")

    assert problems == [], "\n".join(problems)


async def test_log_lines_carry_the_request_id_and_the_stripe_event_id(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO)
    body = event_body("customer.created", {"id": "cus_1", "object": "customer"}, "evt_log_test")

    echoed = await http.get("/healthz", headers={"X-Request-Id": "req-from-caller-1"})
    made = await http.get("/healthz", headers={"X-Request-Id": "not sane; <script>"})
    rejected = await http.post(
        "/v1/stripe/webhook",
        content=body,
        headers={"Stripe-Signature": "t=1,v1=00", "X-Request-Id": "req-webhook-1"},
    )

    assert echoed.headers["x-request-id"] == "req-from-caller-1"
    assert len(made.headers["x-request-id"]) == 32
    assert rejected.status_code == 400
    [record] = [r for r in caplog.records if "rejected a Stripe webhook" in r.getMessage()]
    assert record.request_id == "req-webhook-1"  # type: ignore[attr-defined]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-webhook-1"
    assert line["level"] == "warning"


async def test_a_handled_webhook_logs_with_its_stripe_event_id(
    http: httpx.AsyncClient, customer: Customer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO)
    body = event_body(
        "checkout.session.expired",
        checkout_session("cs_test_never_seen_log", account_id=customer.account_id, credits=100),
        "evt_log_test_2",
    )

    response = await http.post(
        "/v1/stripe/webhook", content=body, headers={"Stripe-Signature": signature(body)}
    )

    assert response.status_code == 200
    [record] = [r for r in caplog.records if "cs_test_never_seen_log" in r.getMessage()]
    assert record.stripe_event_id == "evt_log_test_2"  # type: ignore[attr-defined]


async def test_a_database_that_refuses_the_connection_is_a_503_not_a_500(
    postgres_server_url: str, standin: RunningStandin
) -> None:
    """A pool that cannot connect because the database is gone (or its role may no longer
    log in) is the database being unavailable, as a server that is down is: it answered
    500 "Server Error." with a traceback per request."""
    async with fresh_database(postgres_server_url) as url, served_api(url, standin) as app:
        services: Services = app.state.services
        writer = await services.tokens.issue(Scope.LEDGER_WRITE, name="ops")
        headers = {"Authorization": f"Bearer {writer.secret}"}
        admin = await asyncpg.connect(postgres_server_url)
        try:
            # The path names the database (an embedded server's URL ends with ?host=/…/pg).
            await admin.execute(f'DROP DATABASE "{urlsplit(url).path[1:]}" WITH (FORCE)')
        finally:
            await admin.close()

        async with httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http:
            read = await http.get("/v1/accounts/acct_gone/credits", headers=headers)
            ready = await http.get("/readyz")

    assert ready.status_code == 503
    assert read.status_code == 503, read.text
    assert read.json() == {"message": "The ledger's database is unavailable; please retry."}
    assert read.headers["Retry-After"] == "1"


async def test_a_database_that_accepts_no_connections_is_a_503_not_a_500(
    postgres_server_url: str, standin: RunningStandin
) -> None:
    """An operator's ``ALTER DATABASE … ALLOW_CONNECTIONS false`` (maintenance, a restore)
    makes PostgreSQL refuse new connections to it with SQLSTATE 55000, which no handler
    took: every request answered 500 "Server Error." with a traceback until it was lifted."""
    async with fresh_database(postgres_server_url) as url, served_api(url, standin) as app:
        services: Services = app.state.services
        writer = await services.tokens.issue(Scope.LEDGER_WRITE, name="ops")
        headers = {"Authorization": f"Bearer {writer.secret}"}
        name = urlsplit(url).path[1:]
        admin = await asyncpg.connect(postgres_server_url)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            async with httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http:
                # The first request may meet a pooled connection the server cut off; the
                # second one has to connect anew, and is refused.
                reads = [
                    await http.get("/v1/accounts/acct_closed/credits", headers=headers)
                    for _ in range(2)
                ]
                ready = await http.get("/readyz")
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            await admin.close()

    assert ready.status_code == 503
    for read in reads:
        assert read.status_code == 503, read.text
        assert read.json() == {"message": "The ledger's database is unavailable; please retry."}
        assert read.headers["Retry-After"] == "1"
