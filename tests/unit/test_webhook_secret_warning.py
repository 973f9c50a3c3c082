"""Development with Stripe's own key and no webhook secret starts (the contract lets it),
but says that Stripe's deliveries will be refused: they were refused 400 unexplained, the
stand-in's generated secret being one Stripe never signs with (a first-hour review)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from api.services import webhook_secrets
from api.settings import Settings

WARNING = (
    "STRIPE_SECRET_KEY is set but STRIPE_WEBHOOK_SECRET is not: Stripe's deliveries "
    "are refused (400) until it is set to the endpoint's signing secret (whsec_…)"
)


def warnings_of(settings: Settings, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ledger"):
        webhook_secrets(settings)
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_stripes_own_key_without_a_webhook_secret_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own_stripe = Settings(stripe_secret_key="sk_test_x", data_dir=tmp_path)
    a_stand_in_of_ones_own = Settings(
        stripe_secret_key="sk_test_x", stripe_api_base="http://127.0.0.1:9", data_dir=tmp_path
    )
    with_secret = Settings(
        stripe_secret_key="sk_test_x", stripe_webhook_secret="whsec_x", data_dir=tmp_path
    )

    assert warnings_of(own_stripe, caplog) == [WARNING]
    assert warnings_of(a_stand_in_of_ones_own, caplog) == []
    assert warnings_of(Settings(data_dir=tmp_path), caplog) == []
    assert warnings_of(with_secret, caplog) == []


def test_config_check_says_it_too(tmp_path: Path) -> None:
    """`config check` said "configuration OK", with STRIPE_WEBHOOK_SECRET "the stand-in's,
    kept in .data/stripe-webhook-secret": a stand-in that was not used, and a secret Stripe
    never signs with (a first-hour review)."""
    from api.cli_config import check

    data = {"LEDGER_DATA_DIR": str(tmp_path)}
    own_stripe = check({**data, "STRIPE_SECRET_KEY": "sk_test_x"})
    a_stand_in_of_ones_own = check(
        {**data, "STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_API_BASE": "http://127.0.0.1:9"}
    )

    assert own_stripe.problems == []
    assert own_stripe.warnings == [WARNING]
    assert "STRIPE_WEBHOOK_SECRET = (not set) Stripe's deliveries are refused (400)" in (
        own_stripe.lines
    )
    assert a_stand_in_of_ones_own.warnings == []
    assert check(data).warnings == []
    assert (
        check(
            {**data, "STRIPE_WEBHOOK_SECRET": "whsec_x", "STRIPE_SECRET_KEY": "sk_test_x"}
        ).warnings
        == []
    )
