"""The plain pages Stripe Checkout sends the customer back to."""

from __future__ import annotations

import html

from litestar import MediaType, Response, get
from litestar.params import FromQuery

from api.services import ServicesDependency

REFRESH_SECONDS = 2


def _page(title: str, body: str, *, refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8>{meta}"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )


@get("/checkout/success", media_type=MediaType.HTML, include_in_schema=False)
async def checkout_success(
    services: ServicesDependency, session_id: FromQuery[str | None] = None
) -> Response[str] | str:
    """Says the purchase is being confirmed, then shows the new balance once credited.

    A missing or unknown ``session_id`` is said as such (400, 404): it would never
    be confirmed, so the page does not refresh.
    """
    session = await services.ledger.session(session_id) if session_id else None
    if session is None:
        return Response(
            _not_found(session_id),
            status_code=404 if session_id else 400,
            media_type=MediaType.HTML,
        )
    if session.status in ("expired", "failed"):
        return _page(
            "Purchase not completed",
            f'<p id="status" data-status="{session.status}">This purchase '
            f"{'expired before it was paid' if session.status == 'expired' else 'payment failed'}"
            "; nothing was charged. You can start a new one any time.</p>",
        )
    if not session.paid:
        return _page(
            "Thank you",
            '<p id="status" data-status="confirming">Your purchase is being confirmed. '
            "This page refreshes by itself; your credits appear as soon as the payment "
            "is confirmed.</p>",
            refresh=True,
        )
    account = await services.ledger.account(session.account_id)
    return _page(
        "Credits added",
        f'<p id="status" data-status="credited">{session.credits:,} credits were added to '
        f"{html.escape(account.account_id)}.</p>"
        f'<p>Your balance is now <strong id="balance" data-balance="{account.balance}">'
        f"{account.balance:,}</strong> credits.</p>",
    )


def _not_found(session_id: str | None) -> str:
    what = (
        f"No purchase has the session id <code>{html.escape(session_id)}</code>."
        if session_id
        else "This link has no <code>session_id</code>, so it names no purchase."
    )
    return _page(
        "Purchase not found",
        f'<p id="status" data-status="{"unknown" if session_id else "missing"}">{what} '
        "Check the link you followed; your purchases and balance are in your account.</p>",
    )


@get("/checkout/cancel", media_type=MediaType.HTML, include_in_schema=False)
async def checkout_cancel() -> str:
    """Says that nothing was charged."""
    return _page("Purchase cancelled", "<p>Nothing was charged. You can start again any time.</p>")


ROUTES = [checkout_success, checkout_cancel]
