"""A Checkout session's fields are read the same whatever their shape: the usual ones
(strings, ints, null) inline, any other by the helpers that judge a value
(ledger/adapters/stripe_webhooks.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.adapters import stripe_webhooks
from ledger.adapters.stripe_webhooks import (
    MARK_KEY,
    MARK_VALUE,
    InvalidWebhook,
    _checkout_event,
    _id,
    _integer,
    _StripeObject,
    _text,
)
from ledger.payment_events import CheckoutChange, CheckoutEvent


def read_by_the_helpers(obj: _StripeObject) -> CheckoutEvent:
    """Every field through ``_id``, ``_text`` or ``_integer``, as a delivery was read before."""
    session_id = _id(obj.id)
    if not session_id:
        raise InvalidWebhook("the checkout session has no id")
    metadata = obj.metadata if isinstance(obj.metadata, dict) else {}
    return CheckoutEvent(
        event_id="evt_1",
        change=CheckoutChange.COMPLETED,
        session_id=session_id,
        paid=obj.payment_status in ("paid", "no_payment_required"),
        payment_intent=_id(obj.payment_intent),
        amount_total=_integer(obj.amount_total),
        currency=_text(obj.currency),
        account_id=_text(metadata.get("account_id")),
        credits=_integer(metadata.get("credits")),
        checkout_url=_text(obj.url),
        expires_at=_integer(obj.expires_at),
        unit_amount=_integer(metadata.get("unit_amount")),
        price_currency=_text(metadata.get("currency")),
    )


def outcome(read: Any, obj: _StripeObject) -> CheckoutEvent | str:
    try:
        return read(obj)  # type: ignore[no-any-return]
    except InvalidWebhook as error:
        return str(error)


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=10**12),
    st.sampled_from(["", "cs_1", "usd", "100", "-3", "²", "\uff11\uff12", "x" * 255, "x" * 256]),
    st.text(max_size=5),
    st.fixed_dictionaries({"id": st.one_of(st.none(), st.sampled_from(["", "pi_1", "y" * 256]))}),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
)


@given(
    fields=st.fixed_dictionaries(
        {
            name: values
            for name in ("id", "payment_intent", "amount_total", "currency", "url", "expires_at")
        }
    ),
    metadata=st.one_of(
        values,
        st.fixed_dictionaries(
            {},
            optional={key: values for key in ("account_id", "credits", "unit_amount", "currency")},
        ),
    ),
)
def test_a_session_reads_the_same_inline_as_through_the_helpers(
    fields: dict[str, Any], metadata: Any
) -> None:
    obj = _StripeObject(**fields, metadata=metadata, payment_status="paid")
    read = outcome(lambda o: _checkout_event("evt_1", CheckoutChange.COMPLETED, o), obj)
    assert read == outcome(read_by_the_helpers, obj)


def test_a_usual_session_is_read_without_a_call_of_the_helpers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    for name in ("_id", "_text", "_integer"):
        monkeypatch.setattr(stripe_webhooks, name, lambda value: calls.append(value))
    obj = _StripeObject(
        id="cs_1",
        payment_status="paid",
        payment_intent="pi_1",
        amount_total=1000,
        currency="usd",
        metadata={"account_id": "acct_1", "credits": "1000", "currency": "usd"},
        url=None,
        expires_at=1764072000,
    )

    event = _checkout_event("evt_1", CheckoutChange.COMPLETED, obj)

    assert calls == []
    assert (event.session_id, event.payment_intent, event.credits) == ("cs_1", "pi_1", 1000)
    assert (event.amount_total, event.account_id, event.unit_amount) == (1000, "acct_1", None)


@pytest.mark.parametrize(
    ("metadata", "marked"),
    [
        ({"account_id": "acct_1", "credits": "10", MARK_KEY: MARK_VALUE}, True),
        ({"account_id": "acct_1", "credits": "10"}, False),
        ({"account_id": "acct_1", "credits": "10", MARK_KEY: "another-product"}, False),
        ({MARK_KEY: {"id": MARK_VALUE}}, False),
        (None, False),
    ],
)
def test_a_session_is_the_ledgers_only_with_its_mark_in_the_metadata(
    metadata: Any, marked: bool
) -> None:
    obj = _StripeObject(id="cs_1", payment_status="paid", metadata=metadata)

    assert _checkout_event("evt_1", CheckoutChange.COMPLETED, obj).marked is marked
