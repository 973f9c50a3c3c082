"""What the Stripe gateway says when Stripe cannot be asked: one line."""

from __future__ import annotations

import pytest

from ledger.adapters.stripe_gateway import StripeGateway
from ledger.ports import PaymentGatewayError


async def test_stripe_out_of_reach_is_one_line() -> None:
    """Stripe's network error ran over four lines, and so did the line of its session in
    `ledger stripe reconcile` (an operations review)."""
    gateway = StripeGateway("sk_test_x", api_base="http://127.0.0.1:1", max_network_retries=0)
    try:
        with pytest.raises(PaymentGatewayError) as failed:
            await gateway.look_up_checkout("cs_test_nowhere")
    finally:
        await gateway.close()

    said = str(failed.value)
    assert "\n" not in said
    assert said.startswith("Unexpected error communicating with Stripe.")
    assert "(Network error: " in said
