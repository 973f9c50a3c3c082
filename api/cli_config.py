"""``ledger config check``: every setting in effect, and every problem, one per line.

It checks what ``Settings.from_env`` checks, what production needs besides
(``DATABASE_URL``, ``LEDGER_PUBLIC_URL``, the Stripe keys), the shape of the
Stripe keys, the variables read outside ``Settings`` and ``ledger relay``'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import click
import msgspec

from api.cli_support import plural
from api.settings import (
    Settings,
    SettingsError,
    serving_problems,
    stripe_deliveries_refused,
    unlisted_currency,
    web_concurrency,
)
from ledger.urls import without_password

VARIABLES = {
    "ledger_env": "LEDGER_ENV",
    "database_url": "DATABASE_URL",
    "database_admin_url": "DATABASE_ADMIN_URL",
    "database_read_url": "DATABASE_READ_URL",
    "host": "HOST",
    "port": "PORT",
    "public_url": "LEDGER_PUBLIC_URL",
    "stripe_secret_key": "STRIPE_SECRET_KEY",
    "stripe_webhook_secret": "STRIPE_WEBHOOK_SECRET",
    "stripe_api_base": "STRIPE_API_BASE",
    "stripe_standin_port": "STRIPE_STANDIN_PORT",
    "credit_unit_amount": "CREDIT_UNIT_AMOUNT",
    "credit_currency": "CREDIT_CURRENCY",
    "default_monthly_allowance": "DEFAULT_MONTHLY_ALLOWANCE",
    "data_dir": "LEDGER_DATA_DIR",
    "cors_origins": "LEDGER_CORS_ORIGINS",
    "stripe_allow_test_keys": "STRIPE_ALLOW_TEST_KEYS",
    "page_key": "LEDGER_PAGE_KEY",
    "metrics_port": "METRICS_PORT",
    "metrics_token": "METRICS_TOKEN",
    "webhook_allow_private": "LEDGER_WEBHOOK_ALLOW_PRIVATE",
    "max_clock_skew_seconds": "LEDGER_MAX_CLOCK_SKEW_SECONDS",
}
"""Each setting and the variable it comes from, in the order they are shown."""


class Report(msgspec.Struct):
    """What ``config check`` prints: ``lines`` to stdout, the others to stderr."""

    lines: list[str]
    problems: list[str]
    warnings: list[str]


def _mode(key: str) -> str:
    return "live mode" if "_live_" in key else "test mode" if "_test_" in key else "mode unknown"


def _key(key: str) -> str:
    """A Stripe key as far as it is no secret: its kind and mode (``sk_test_…``); of a
    key in no shape Stripe gives, nothing."""
    shape = re.match(r"(sk|rk)_(live|test)_", key)
    return f"{shape.group(0)}…" if shape else "…"


PRODUCTION_NEEDS = ("database_url", "public_url", "stripe_secret_key", "stripe_webhook_secret")
"""Settings whose development default (the embedded server, the stand-in) production refuses."""


def _shown(settings: Settings, field: str, env: Mapping[str, str]) -> str:
    value = getattr(settings, field)
    variable = VARIABLES[field]
    given = bool(env.get(variable, "").strip())
    if settings.production and not given and field in (*PRODUCTION_NEEDS, "page_key"):
        return "(not set)"
    if settings.production and field == "stripe_api_base" and value is None:
        return "(not set) Stripe's own"
    if field == "database_url":
        if value is None:
            return f"(not set) the embedded PostgreSQL under {settings.data_dir / 'pg'}"
        return without_password(value) + " (password not shown)"
    if field == "database_admin_url":
        return "(not set)" if value is None else without_password(value) + " (password not shown)"
    if field == "database_read_url":
        if value is None:
            return "(not set) the views are read from DATABASE_URL"
        return without_password(value) + " (password not shown; the views are read there)"
    if field == "stripe_secret_key":
        if value is None:
            return f"(not set) the Stripe stand-in on 127.0.0.1:{settings.stripe_standin_port}"
        return f"{_key(value)} (set; {_mode(value)})"
    if field == "stripe_webhook_secret":
        if value is None and settings.stripe_itself:
            return "(not set) Stripe's deliveries are refused (400)"
        if value is None:
            return (
                f"(not set) the stand-in's, kept in {settings.data_dir / 'stripe-webhook-secret'}"
            )
        return f"whsec_… (set; {plural(len(settings.webhook_secrets), 'secret')})"
    if field == "stripe_api_base" and value is None:
        return "(not set) Stripe's own" if settings.stripe_secret_key else "(not set) the stand-in"
    if field == "public_url" and not given:
        return f"(not set) {value}"
    if field == "page_key":
        if value is None:
            return f"(not set) one generated into {settings.data_dir / 'page-key'}"
        return "(set)"
    if field == "metrics_token":
        return "(set)" if value else "(not set)"
    if field == "metrics_port" and value is None:
        return "(not set) /metrics on the API's port"
    if field == "cors_origins":
        return ", ".join(value) if value else "(not set) no cross-origin callers"
    return str(value)


def _extra_variables(env: Mapping[str, str]) -> list[tuple[str, str, Callable[[], Any]]]:
    """Variables read outside Settings: (name, default shown, check raising ValueError)."""
    from api.reconcile import reconcile_seconds_from_env
    from ledger.adapters.stripe_timeout import DEFAULT_TIMEOUT_SECONDS, timeout_from_env

    def log_format() -> None:
        value = env.get("LEDGER_LOG_FORMAT", "").strip().lower()
        if value not in ("", "auto", "text", "json"):
            raise ValueError(f"LEDGER_LOG_FORMAT must be auto, text or json, not {value!r}")

    return [
        ("STRIPE_TIMEOUT_SECONDS", f"{DEFAULT_TIMEOUT_SECONDS:g}", lambda: timeout_from_env(env)),
        ("LEDGER_RECONCILE_SECONDS", "off", lambda: reconcile_seconds_from_env(env)),
        ("LEDGER_LOG_FORMAT", "auto (text on a terminal, JSON otherwise)", log_format),
    ]


def extra_variable_problems(env: Mapping[str, str]) -> list[str]:
    """What is wrong with the variables read outside Settings, one line each."""
    problems = []
    for _, _, validate in _extra_variables(env):
        try:
            validate()
        except ValueError as error:
            problems.append(str(error))
    return problems


def _relay(env: Mapping[str, str], production: bool, report: Report) -> None:
    """``ledger relay``'s variables: shown, and refused as the relay would refuse them at its
    start (the URL, the scheme, the CA file, production's rules), without connecting. No URL
    is no problem here: a deployment need not run the relay, which says so when it starts."""
    from relay.runner import DEFAULT_URL, production_problems, relay_settings

    url, ca = _text(env, "LEDGER_RELAY_URL"), _text(env, "LEDGER_RELAY_TLS_CA")
    if url:
        report.lines.append(f"LEDGER_RELAY_URL = {without_password(url, hide_user=True)}")
    else:
        needs = "; ledger relay refuses to start without one" if production else ""
        report.lines.append(f"LEDGER_RELAY_URL = (not set) {DEFAULT_URL} (development{needs})")
    shown_ca = ca or "(not set) the system's CAs"
    report.lines.append(f"LEDGER_RELAY_TLS_CA = {shown_ca}")
    try:
        relay_settings(url=url or DEFAULT_URL)
    except ValueError as error:
        report.problems.append(f"LEDGER_RELAY_URL: {error}")
        return
    if ca:
        try:
            relay_settings(url=url or DEFAULT_URL, tls_ca=ca)
        except ValueError as error:
            report.problems.append(f"LEDGER_RELAY_TLS_CA: {error}")
    if production and url:
        report.problems += production_problems(url)


def _text(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _readable_in_production(env: Mapping[str, str]) -> Settings | None:
    """The settings production refused, when its own rules (a variable it needs, unset) were
    all it refused: each value is as given, so the operator still sees what is in effect."""
    try:
        settings = Settings.from_env({**env, "LEDGER_ENV": "development"})
    except SettingsError:  # a value no environment takes: its problem says which
        return None
    return msgspec.structs.replace(settings, ledger_env="production")


def check(env: Mapping[str, str] | None = None) -> Report:
    """Everything ``config check`` says about ``env`` (default: this process's)."""
    env = os.environ if env is None else env
    report = Report(lines=[], problems=[], warnings=[])
    production = _text(env, "LEDGER_ENV") == "production"
    try:
        settings: Settings | None = Settings.from_env(env)
    except SettingsError as error:
        report.problems += error.problems
        settings = _readable_in_production(env) if production else None
    report.problems += serving_problems(env)
    try:  # serve's, when no --workers is given
        web_concurrency(env)
    except ValueError as error:
        report.problems.append(str(error))
    if settings is not None:
        for field, variable in VARIABLES.items():
            if field in settings.__struct_fields__:
                report.lines.append(f"{variable} = {_shown(settings, field, env)}")
        for field in settings.__struct_fields__:
            if field not in VARIABLES:  # a setting this list does not know yet
                value = getattr(settings, field)
                secret = any(word in field for word in ("secret", "key", "token", "password"))
                report.lines.append(f"{field} = {'(set)' if secret and value else value}")
        if production and "_test_" in (settings.stripe_secret_key or ""):
            report.warnings.append(
                "LEDGER_ENV=production with a test-mode STRIPE_SECRET_KEY: no real payments"
            )
        if production and _text(env, "LEDGER_PUBLIC_URL").startswith("http://"):
            report.warnings.append("LEDGER_PUBLIC_URL is not https")
        if (unlisted := unlisted_currency(settings)) is not None:
            report.warnings.append(unlisted)
        if (refused := stripe_deliveries_refused(settings)) is not None:
            report.warnings.append(refused)
    _relay(env, production, report)
    for name, default, validate in _extra_variables(env):
        try:
            validate()
        except ValueError as error:
            report.problems.append(str(error))
        else:
            value = env.get(name, "").strip()
            report.lines.append(f"{name} = {value or f'(not set) {default}'}")
    return report


@click.group("config")
def config_group() -> None:
    """Check the configuration."""


@config_group.command("check")
def config_check() -> None:
    """Print the settings in effect (secrets never), then every problem, one per line.

    Covers what production needs: DATABASE_URL, LEDGER_PUBLIC_URL, STRIPE_SECRET_KEY,
    STRIPE_WEBHOOK_SECRET, LEDGER_PAGE_KEY, and METRICS_PORT or METRICS_TOKEN
    (docs/production.md), and ledger relay's LEDGER_RELAY_URL and LEDGER_RELAY_TLS_CA as the
    relay checks them (without connecting). Exits 1 if there is any problem.
    """
    report = check()
    for line in report.lines:
        click.echo(line)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if report.problems:
        click.echo(plural(len(report.problems), "problem"), err=True)
        raise SystemExit(1)
    click.echo("configuration OK")
