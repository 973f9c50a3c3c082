"""Settings from the environment and the contract's validation messages."""

from __future__ import annotations

import pytest

from api.settings import Settings, SettingsError
from api.validation import Checker, ValidationFailed, json_object


def test_defaults_follow_the_contract() -> None:
    settings = Settings.from_env({})

    assert settings.port == 8000
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.credit_unit_amount == 1
    assert settings.credit_currency == "usd"
    assert settings.default_monthly_allowance == 1000
    assert settings.uses_standin
    assert not settings.production


def test_public_url_follows_the_port() -> None:
    assert Settings.from_env({"PORT": "9001"}).public_url == "http://127.0.0.1:9001"


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"PORT": "eighty"}, "PORT must be a whole number"),
        ({"CREDIT_UNIT_AMOUNT": "0.5"}, "CREDIT_UNIT_AMOUNT must be a whole number"),
        ({"CREDIT_UNIT_AMOUNT": "0"}, "CREDIT_UNIT_AMOUNT must be at least 1"),
        ({"CREDIT_CURRENCY": "dollars"}, "CREDIT_CURRENCY must be an ISO 4217 code"),
        ({"LEDGER_ENV": "staging"}, "LEDGER_ENV must be development or production"),
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


def test_several_bad_fields_are_reported_together() -> None:
    checker = Checker({"account_id": 5, "monthly_allowance": "many"})
    checker.string("account_id")
    checker.integer("monthly_allowance")

    with pytest.raises(ValidationFailed) as failed:
        checker.done()

    assert failed.value.errors == {
        "account_id": ["The account id field must be a string."],
        "monthly_allowance": ["The monthly allowance field must be an integer."],
    }
    assert failed.value.message == "The account id field must be a string. (and 1 more error)"


@pytest.mark.parametrize("body", [b"", b"   ", b"[]", b"null", b"{", b"\xff"])
def test_only_a_json_object_is_a_body(body: bytes) -> None:
    with pytest.raises(ValidationFailed):
        json_object(body)
