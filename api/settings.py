"""Configuration from the environment (see the contract's table)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


class SettingsError(ValueError):
    """An environment variable holds something unusable."""


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

    @property
    def production(self) -> bool:
        return self.ledger_env == "production"

    @property
    def uses_standin(self) -> bool:
        """No Stripe key: development runs the Stripe stand-in."""
        return not self.stripe_secret_key

    @property
    def webhook_secrets(self) -> list[str]:
        """``STRIPE_WEBHOOK_SECRET`` may list several, comma-separated, during a rollover."""
        raw = self.stripe_webhook_secret or ""
        return [secret.strip() for secret in raw.split(",") if secret.strip()]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check the environment; raise SettingsError naming every bad value."""
        env = os.environ if env is None else env
        problems: list[str] = []

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def integer(name: str, default: int, minimum: int) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name} must be a whole number, not {raw!r}")
                return default
            if value < minimum:
                problems.append(f"{name} must be at least {minimum}, not {value}")
            return value

        ledger_env = text("LEDGER_ENV") or "development"
        if ledger_env not in ("development", "production"):
            problems.append(f"LEDGER_ENV must be development or production, not {ledger_env!r}")
        port = integer("PORT", 8000, 1)
        currency = (text("CREDIT_CURRENCY") or "usd").lower()
        if len(currency) != 3 or not currency.isalpha():
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
            stripe_standin_port=integer("STRIPE_STANDIN_PORT", 12111, 0),
            credit_unit_amount=integer("CREDIT_UNIT_AMOUNT", 1, 1),
            credit_currency=currency,
            default_monthly_allowance=integer("DEFAULT_MONTHLY_ALLOWANCE", 1000, 0),
            ledger_env=ledger_env,
            data_dir=Path(text("LEDGER_DATA_DIR") or ".data"),
            cors_origins=tuple(o for o in origins if o),
        )
        if settings.production and settings.uses_standin:
            problems.append(
                "LEDGER_ENV=production needs STRIPE_SECRET_KEY: the Stripe stand-in is for development"
            )
        if settings.production and not settings.stripe_webhook_secret:
            problems.append("LEDGER_ENV=production needs STRIPE_WEBHOOK_SECRET")
        if problems:
            raise SettingsError("; ".join(problems))
        return settings
