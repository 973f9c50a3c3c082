"""Configuration from the environment (see the contract's table)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from ledger.clock_skew import DEFAULT_MAX_SKEW_SECONDS
from ledger.domain.currencies import STRIPE_CURRENCIES, amount_step
from ledger.domain.limits import MAX_CREDIT_UNIT_AMOUNT, MAX_MONTHLY_ALLOWANCE
from ledger.text import is_utf8_text, is_whole_number
from ledger.urls import names_a_database, over_tls_or_here, readable


def default_data_dir() -> Path:
    """Where development data lives without ``LEDGER_DATA_DIR``: the ``.data`` of the
    checkout this code runs from (the one ``make run`` uses), from whatever directory a
    command is started; an installed copy (no checkout around it) uses the working
    directory's. From a subdirectory, ``.data`` was a new, empty embedded PostgreSQL
    there, silently: a token made in it was refused by the running service."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "Makefile").is_file():
        return root / ".data"
    return Path(".data")


class SettingsError(ValueError):
    """An environment variable holds something unusable; ``problems``: each, one line."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


_JUDGED_AS_URLS_OR_PATHS = frozenset(
    {
        "DATABASE_URL",
        "DATABASE_ADMIN_URL",
        "DATABASE_READ_URL",
        "LEDGER_PUBLIC_URL",
        "STRIPE_API_BASE",
        "LEDGER_DATA_DIR",
    }
)
"""Variables whose own checks refuse bytes that are not UTF-8 (not a URL), or that may hold
them (a folder's name is bytes)."""


def whole_number(
    env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    """``name`` of ``env`` as a whole number from ``minimum`` to ``maximum`` (``default``
    when unset), or SettingsError naming the variable and its value."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not is_whole_number(raw):
        raise SettingsError(f"{name} must be a whole number, not {raw!r}")
    value = int(raw)
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, not {value}")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

MAX_CLOCK_SKEW_LIMIT = 300
"""The largest ``LEDGER_MAX_CLOCK_SKEW_SECONDS``: five minutes (Kerberos's default). Further
apart, a host's clock is broken, and the expiries and periods it would judge are minutes off."""

MIN_PAGE_KEY_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 32
"""In production: a bearer token anyone may try against ``/metrics`` as often as they like."""

PUBLISHED_WEBHOOK_SECRETS = {
    "whsec_dev": "docker-compose.yml's, for the stand-in",
    "whsec_example": "the API documentation's example event's",
    "whsec_bench": "the benchmarks' (bench/service.py)",
}
"""Webhook secrets this project prints for development and its documentation: in production
anyone who read them could sign a payment."""

STRIPE_TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")
"""Secret and restricted keys of Stripe's test mode: no real money moves."""
STRIPE_LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service reads from its environment."""

    database_url: str | None = None
    database_admin_url: str | None = None
    database_read_url: str | None = None
    """A streaming standby for the view reads (api/read_side.py); None: the primary."""
    port: int = 8000
    host: str = "127.0.0.1"
    public_url: str = ""
    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None
    stripe_standin_port: int = 12111
    credit_unit_amount: int = 1
    credit_currency: str = "usd"
    default_monthly_allowance: int = 1000
    ledger_env: str = "development"
    data_dir: Path = Path(".data")
    cors_origins: tuple[str, ...] = ()
    stripe_allow_test_keys: bool = False
    """``STRIPE_ALLOW_TEST_KEYS=1``: production may use an ``sk_test_`` key (a staging copy)."""
    page_key: str | None = None
    """``LEDGER_PAGE_KEY``: signs the link Stripe sends a paying customer back with."""
    metrics_port: int | None = None
    """``METRICS_PORT``: serve ``/metrics`` there only (the API's port answers 404)."""
    metrics_token: str | None = None
    """``METRICS_TOKEN``: ``/metrics`` needs ``Authorization: Bearer <it>``."""
    webhook_allow_private: bool = False
    """``LEDGER_WEBHOOK_ALLOW_PRIVATE=1``: webhook endpoints may be on non-public addresses."""
    max_clock_skew_seconds: int = DEFAULT_MAX_SKEW_SECONDS
    """``LEDGER_MAX_CLOCK_SKEW_SECONDS``: how far this host's clock may be from the database's
    before its commands are refused (ledger/clock_guard.py)."""

    @property
    def production(self) -> bool:
        return self.ledger_env == "production"

    @property
    def uses_standin(self) -> bool:
        """No Stripe key: development runs the Stripe stand-in."""
        return not self.stripe_secret_key

    @property
    def stripe_itself(self) -> bool:
        """A Stripe key and no ``STRIPE_API_BASE``: calls go to Stripe itself, which signs its
        deliveries with the endpoint's secret only."""
        return bool(self.stripe_secret_key) and not self.stripe_api_base

    @property
    def stripe_livemode(self) -> bool:
        """Whether the Stripe key is a live-mode one (the stand-in is test mode)."""
        return (self.stripe_secret_key or "").startswith(STRIPE_LIVE_KEY_PREFIXES)

    @property
    def webhook_secrets(self) -> list[str]:
        """``STRIPE_WEBHOOK_SECRET`` may list several, comma-separated, during a rollover."""
        raw = self.stripe_webhook_secret or ""
        return [secret.strip() for secret in raw.split(",") if secret.strip()]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, service: bool = True) -> Settings:
        """Read and check the environment; raise SettingsError naming every bad value.

        ``service=False``: for a command that needs only the database (the audit's), so
        production asks it for no Stripe, page or metrics secret it would never use."""
        env = os.environ if env is None else env
        problems: list[str] = []

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            if name not in _JUDGED_AS_URLS_OR_PATHS and not is_utf8_text(value):
                # Bytes the environment could not decode (lone surrogates): a webhook secret
                # or METRICS_TOKEN holding one was a traceback at start-up or a 500 a request.
                problems.append(f"{name} holds bytes that are not UTF-8")
                return None
            return value or None

        def flag(name: str) -> bool:
            raw = (text(name) or "0").lower()
            if raw not in _TRUE + _FALSE:
                problems.append(f"{name} must be 1 or 0, not {raw!r}")
            return raw in _TRUE

        def integer(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
            try:
                return whole_number(env, name, default, minimum, maximum)
            except SettingsError as error:
                problems.extend(error.problems)
                return default  # nothing else is judged by a value refused

        ledger_env = text("LEDGER_ENV") or "development"
        if ledger_env not in ("development", "production"):
            problems.append(f"LEDGER_ENV must be development or production, not {ledger_env!r}")
        port = integer("PORT", 8000, 1, 65535)
        currency = (text("CREDIT_CURRENCY") or "usd").lower()
        if len(currency) != 3 or not (currency.isascii() and currency.isalpha()):
            problems.append(f"CREDIT_CURRENCY must be an ISO 4217 code, not {currency!r}")
        origins = [o.strip().rstrip("/") for o in (text("LEDGER_CORS_ORIGINS") or "").split(",")]
        for origin in origins:
            if origin and not origin.startswith(("http://", "https://")):
                problems.append(f"LEDGER_CORS_ORIGINS has {origin!r}, not an http(s) origin")
        settings = cls(
            database_url=text("DATABASE_URL"),
            database_admin_url=text("DATABASE_ADMIN_URL"),
            database_read_url=text("DATABASE_READ_URL"),
            port=port,
            host=text("HOST") or "127.0.0.1",
            public_url=(text("LEDGER_PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/"),
            stripe_secret_key=text("STRIPE_SECRET_KEY"),
            stripe_webhook_secret=text("STRIPE_WEBHOOK_SECRET"),
            stripe_api_base=text("STRIPE_API_BASE"),
            stripe_standin_port=integer("STRIPE_STANDIN_PORT", 12111, 0, 65535),
            credit_unit_amount=integer("CREDIT_UNIT_AMOUNT", 1, 1, MAX_CREDIT_UNIT_AMOUNT),
            credit_currency=currency,
            default_monthly_allowance=integer(
                "DEFAULT_MONTHLY_ALLOWANCE", 1000, 0, MAX_MONTHLY_ALLOWANCE
            ),
            ledger_env=ledger_env,
            data_dir=Path(text("LEDGER_DATA_DIR") or default_data_dir()),
            cors_origins=tuple(o for o in origins if o),
            stripe_allow_test_keys=flag("STRIPE_ALLOW_TEST_KEYS"),
            page_key=text("LEDGER_PAGE_KEY"),
            metrics_port=integer("METRICS_PORT", 0, 1, 65535) or None,
            metrics_token=text("METRICS_TOKEN"),
            webhook_allow_private=flag("LEDGER_WEBHOOK_ALLOW_PRIVATE"),
            max_clock_skew_seconds=integer(
                "LEDGER_MAX_CLOCK_SKEW_SECONDS", DEFAULT_MAX_SKEW_SECONDS, 1, MAX_CLOCK_SKEW_LIMIT
            ),
        )
        step = amount_step(settings.credit_currency)
        if settings.credit_unit_amount % step:
            # Stripe refuses such a checkout: a purchase of 101 credits would be a 502.
            problems.append(
                f"CREDIT_UNIT_AMOUNT must be a multiple of {step} for "
                f"{settings.credit_currency}, which Stripe takes only in such amounts, "
                f"not {settings.credit_unit_amount}"
            )
        if settings.page_key is not None and len(settings.page_key) < MIN_PAGE_KEY_LENGTH:
            problems.append(
                f"LEDGER_PAGE_KEY must be at least {MIN_PAGE_KEY_LENGTH} characters "
                "(for example `openssl rand -hex 32`)"
            )
        if settings.data_dir.exists() and not settings.data_dir.is_dir():
            # It was "File exists: …" once the embedded server's folder was made in it.
            problems.append(f"LEDGER_DATA_DIR names {settings.data_dir}, which is not a folder")
        if settings.metrics_port is not None and settings.metrics_port == settings.port:
            problems.append(f"METRICS_PORT must differ from PORT ({settings.port})")
        problems.extend(shape_problems(settings))
        if settings.stripe_secret_key is None and settings.stripe_standin_port in (
            settings.port,
            settings.metrics_port,
        ):
            problems.append(
                f"STRIPE_STANDIN_PORT must differ from PORT and METRICS_PORT "
                f"({settings.stripe_standin_port})"
            )
        if settings.production:
            problems.extend(
                production_problems(settings) if service else database_problems(settings)
            )
        if problems:
            raise SettingsError("; ".join(problems), problems)
        return settings


def production_problems(settings: Settings) -> list[str]:
    """What ``LEDGER_ENV=production`` refuses, one line each (see docs/production.md)."""
    problems = []
    key = settings.stripe_secret_key or ""
    if not key:
        problems.append(
            "LEDGER_ENV=production needs STRIPE_SECRET_KEY: the Stripe stand-in is for development"
        )
    elif key.startswith(STRIPE_TEST_KEY_PREFIXES) and not settings.stripe_allow_test_keys:
        problems.append(
            "LEDGER_ENV=production refuses a Stripe test-mode key in STRIPE_SECRET_KEY: use a "
            "live key, or set STRIPE_ALLOW_TEST_KEYS=1 for a staging copy that takes no money"
        )
    if not settings.webhook_secrets:  # "," is set, and names none
        problems.append("LEDGER_ENV=production needs STRIPE_WEBHOOK_SECRET")
    for secret in settings.webhook_secrets:
        if secret in PUBLISHED_WEBHOOK_SECRETS:
            problems.append(
                f"LEDGER_ENV=production refuses STRIPE_WEBHOOK_SECRET {secret}, "
                f"{PUBLISHED_WEBHOOK_SECRETS[secret]}: anyone could sign a payment with it; "
                "use the endpoint's own from Stripe"
            )
    if settings.stripe_api_base:
        problems.append(
            "LEDGER_ENV=production refuses STRIPE_API_BASE: payments go to Stripe's own API only"
        )
    if not settings.page_key:
        problems.append(
            "LEDGER_ENV=production needs LEDGER_PAGE_KEY (signs the checkout success links; "
            "for example `openssl rand -hex 32`)"
        )
    if settings.metrics_token and len(settings.metrics_token) < MIN_METRICS_TOKEN_LENGTH:
        problems.append(
            f"LEDGER_ENV=production needs a METRICS_TOKEN of at least {MIN_METRICS_TOKEN_LENGTH} "
            "characters (for example `openssl rand -hex 32`)"
        )
    if not over_tls_or_here(settings.public_url):
        problems.append(
            f"LEDGER_ENV=production refuses an http:// LEDGER_PUBLIC_URL ({settings.public_url}): "
            "customers sign in to its /account page with their token and come back from "
            "Checkout to a link that shows their purchase, in plain text; give the https:// "
            "address clients use (TLS at the proxy)"
        )
    if settings.metrics_port is None and not settings.metrics_token:
        problems.append(
            "LEDGER_ENV=production needs METRICS_PORT (serve /metrics on a port of its own) "
            "or METRICS_TOKEN (a bearer token for /metrics), or both"
        )
    return problems + database_problems(settings)


def database_problems(settings: Settings) -> list[str]:
    """What ``LEDGER_ENV=production`` refuses of a command that uses only the database."""
    if not settings.database_url:
        return [
            "LEDGER_ENV=production needs DATABASE_URL: the embedded PostgreSQL is for development"
        ]
    return []


MAX_WORKERS = 64
"""The most API processes ``serve`` forks, each with a pool of its own: WEB_CONCURRENCY=99999
forked until the machine ground to a halt."""


def web_concurrency(env: Mapping[str, str]) -> int:
    """``WEB_CONCURRENCY`` (the name uvicorn and gunicorn read), else 1; ValueError when it
    is no number of workers ``serve`` would fork."""
    raw = env.get("WEB_CONCURRENCY", "").strip()
    if not raw:
        return 1
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_WORKERS:
        raise ValueError(
            f"WEB_CONCURRENCY must be a whole number from 1 to {MAX_WORKERS}, not {raw!r}"
        )
    return int(raw)


def serving_problems(env: Mapping[str, str] | None = None) -> list[str]:
    """What ``ledger serve`` needs besides what every command does: in production, the
    address customers come back to (the projector and the CLI make no links)."""
    env = os.environ if env is None else env
    production = env.get("LEDGER_ENV", "").strip() == "production"
    if production and not env.get("LEDGER_PUBLIC_URL", "").strip():
        return [
            "LEDGER_ENV=production needs LEDGER_PUBLIC_URL: the address customers come back "
            "to from Stripe Checkout"
        ]
    return []


def shape_problems(settings: Settings) -> list[str]:
    """Values that cannot be what their variable names, in any environment."""
    problems = []
    key = settings.stripe_secret_key
    if key and not key.startswith(("sk_", "rk_")):
        problems.append("STRIPE_SECRET_KEY is not a Stripe secret key (sk_… or rk_…)")
    secrets = settings.webhook_secrets
    for n, secret in enumerate(secrets, 1):
        # "whsec_" alone is a key everyone knows: anyone could sign a payment.
        if not secret.startswith("whsec_") or len(secret) == len("whsec_"):
            which = f" (number {n} of the list)" if len(secrets) > 1 else ""
            problems.append(f"STRIPE_WEBHOOK_SECRET{which} is not a signing secret (whsec_…)")
    for variable, url in (
        ("DATABASE_URL", settings.database_url),
        ("DATABASE_ADMIN_URL", settings.database_admin_url),
        ("DATABASE_READ_URL", settings.database_read_url),
    ):
        if url and not readable(url):
            problems.append(f"{variable} is not a URL (postgresql://user@host:port/database)")
        elif url and (scheme := url.partition("://")[0]) not in ("postgresql", "postgres"):
            # asyncpg refused it only at the first connection: `ledger serve` had started
            # the stand-in and exited 3, which a supervisor retries, as for a database not up.
            problems.append(f"{variable} must start with postgresql://, not {scheme}://")
        elif url and not names_a_database(url) and not os.environ.get("PGDATABASE"):
            # PostgreSQL would take the user's name (api/database.py refuses it too).
            problems.append(
                f"{variable} names no database: end it with one, as in "
                "postgresql://user@host:5432/ledger"
            )
    if settings.stripe_api_base and not _link_base(settings.stripe_api_base):
        # Taken as it was, it failed every purchase (502) and no start-up check said why.
        problems.append(
            "STRIPE_API_BASE must be an http(s) address with a host and no query or fragment "
            f"(http://host:port), not {settings.stripe_api_base!r}"
        )
    if not _link_base(settings.public_url):
        problems.append(
            "LEDGER_PUBLIC_URL must be an http(s) address with a host and no query or "
            f"fragment (https://host[:port][/path]), not {settings.public_url!r}"
        )
    return problems


def _link_base(url: str) -> bool:
    """Whether Checkout's success and cancel links can be ``url`` and a path: a query or a
    fragment would swallow the path, and Stripe refuses a link with no host or a space."""
    try:
        parts = urlsplit(url)  # raises for an IPv6 address without its "]"
        parts.port  # noqa: B018  # raises for a port that is no number of 0-65535
    except ValueError:
        return False
    return (
        url.startswith(("http://", "https://"))
        and bool(parts.hostname)
        and "?" not in url
        and "#" not in url
        and not any(c.isspace() or not c.isprintable() for c in url)
    )


def unlisted_currency(settings: Settings) -> str | None:
    """A warning when ``CREDIT_CURRENCY`` is not one Stripe's list had when this release was
    made (ledger/domain/currencies.py), else None. Said, not refused: a currency Stripe adds
    later must not stop the service from starting; one it does not take makes every purchase
    a 502 at checkout."""
    if settings.credit_currency in STRIPE_CURRENCIES:
        return None
    return (
        f"CREDIT_CURRENCY {settings.credit_currency!r} is not a currency Stripe takes as this "
        "release knows them (docs.stripe.com/currencies): unless Stripe has added it since, "
        "every purchase will be refused at checkout (502)"
    )


def stripe_deliveries_refused(settings: Settings) -> str | None:
    """A warning when development talks to Stripe itself (``STRIPE_SECRET_KEY``, no
    ``STRIPE_API_BASE``) with no ``STRIPE_WEBHOOK_SECRET``, else None. Said, not refused: the
    contract lets development start so; but Stripe never signs with the stand-in's generated
    secret, so each of its deliveries would be refused unexplained."""
    if settings.webhook_secrets or settings.production or not settings.stripe_itself:
        return None
    return (
        "STRIPE_SECRET_KEY is set but STRIPE_WEBHOOK_SECRET is not: Stripe's deliveries "
        "are refused (400) until it is set to the endpoint's signing secret (whsec_…)"
    )
