"""What the Stripe gateway says when Stripe cannot be asked: one line."""

from __future__ import annotations

import pytest
from litestar import Litestar, Response, route
from litestar.enums import MediaType
from litestar.params import FromPath

from ledger.adapters.stripe_gateway import StripeGateway
from ledger.ports import CheckoutRequest, PaymentGatewayError
from tests.support.servers import bind_free_port, serving

CHECKOUT = CheckoutRequest(
    account_id="acct_x",
    credits=500,
    unit_amount=1,
    currency="usd",
    success_url="https://credits.example.com/checkout/success",
    cancel_url="https://credits.example.com/checkout/cancel",
    expires_at=2_000_000_000,
    idempotency_key="ledger-purchase-x",
)


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


def answering(body: bytes, status: int = 200) -> Litestar:
    """A "Stripe" that answers every call ``status`` with ``body`` (a proxy gone wrong)."""

    @route("/{path:path}", http_method=["GET", "POST"])
    async def answer(path: FromPath[str]) -> Response[bytes]:
        return Response(body, status_code=status, media_type=MediaType.JSON)

    return Litestar([answer])


@pytest.mark.parametrize(
    "body",
    [b"{}", b"[]", b"null", b'{"id": "cs_test_x", "object": "checkout.session"}'],
    ids=["empty", "list", "null", "no-url"],
)
async def test_a_session_answer_without_its_fields_is_a_gateway_error_not_a_crash(
    body: bytes,
) -> None:
    """A 200 lacking ``url`` raised AttributeError (the purchase a 500), where a field
    present as null was a PaymentGatewayError (502, nothing recorded)."""
    async with serving(answering(body), bind_free_port()) as base_url:
        gateway = StripeGateway("sk_test_x", api_base=base_url, max_network_retries=0)
        try:
            with pytest.raises(PaymentGatewayError, match="incomplete"):
                await gateway.create_checkout(CHECKOUT)
        finally:
            await gateway.close()


@pytest.mark.parametrize("status", [200, 502])
async def test_an_answer_that_is_not_utf_8_is_a_gateway_error_not_a_crash(status: int) -> None:
    """A proxy's error page in Latin-1 raised UnicodeDecodeError from the SDK's debug log
    line, at any log level: the purchase was a 500, the reconciliation run ended."""
    async with serving(
        answering(b"<p>Passerelle \xe9chou\xe9e</p>", status), bind_free_port()
    ) as base:
        gateway = StripeGateway("sk_test_x", api_base=base, max_network_retries=0)
        try:
            with pytest.raises(PaymentGatewayError, match="UTF-8"):
                await gateway.create_checkout(CHECKOUT)
            with pytest.raises(PaymentGatewayError, match="UTF-8"):
                await gateway.look_up_checkout("cs_test_x")
        finally:
            await gateway.close()
