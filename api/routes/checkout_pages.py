"""The plain pages Stripe Checkout sends the customer back to."""

from __future__ import annotations

import html

from litestar import MediaType, get
from litestar.params import FromQuery


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )


@get("/checkout/success", media_type=MediaType.HTML, include_in_schema=False)
async def checkout_success(session_id: FromQuery[str | None] = None) -> str:
    """Thanks the customer; the credits arrive when Stripe confirms the payment."""
    reference = f"<p>Reference: <code>{html.escape(session_id)}</code></p>" if session_id else ""
    return _page(
        "Thank you",
        "<p>Your purchase is being confirmed. Your credits appear on your balance "
        f"as soon as the payment is confirmed.</p>{reference}",
    )


@get("/checkout/cancel", media_type=MediaType.HTML, include_in_schema=False)
async def checkout_cancel() -> str:
    """Says that nothing was charged."""
    return _page("Purchase cancelled", "<p>Nothing was charged. You can start again any time.</p>")


ROUTES = [checkout_success, checkout_cancel]
