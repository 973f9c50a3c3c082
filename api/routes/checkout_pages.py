"""The plain pages Stripe Checkout sends the customer back to.

The success page shows the purchase (its status, the credits, the account and its new
balance) only to the link Stripe was given for it: ``session_id`` with a valid ``t``
(api/access/page_tokens.py). Anyone else, with a session id alone, an expired link or
a ``t`` of another account, gets the same fixed page whatever the session is: it does
not look the session up, so it tells nothing, not even whether the session exists or
was paid. A link with no session id at all says that it names no purchase; a purchase
that expired or failed says so to its own link: no page refreshes forever.
"""

from __future__ import annotations

import html

from litestar import MediaType, Response, get
from litestar.params import FromQuery

from api.dependencies import ServicesDependency
from ledger.domain.checkout import MISMATCHED

REFRESH_SECONDS = 2

ACCOUNT_PAGE = "/account"
"""The customer's page (api/routes/account_page.py): every page here links back to it."""


def _page(title: str, body: str, *, refresh: bool = False, back: str = ACCOUNT_PAGE) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (
        # no-referrer: the link's ``t`` never leaves in a Referer header
        f'<!doctype html><html lang=en><head><meta charset=utf-8><meta name="referrer" '
        f'content="no-referrer">{meta}'
        f"<title>{html.escape(title)}</title></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}"
        f'<p><a id="account-link" href="{html.escape(back)}">Back to your account</a></p>'
        "</main></body></html>"
    )


RECEIVED = _page(
    "Thank you",
    '<p id="status" data-status="received">Payment received. '
    "Your credits appear in your account shortly.</p>",
)
"""What the success page says to a link that may not show the purchase."""

MISSING = _page(
    "Purchase not found",
    '<p id="status" data-status="missing">This link has no <code>session_id</code>, so it '
    "names no purchase. Check the link you followed; your purchases and balance are in "
    "your account.</p>",
)
"""A link without a session id: nothing to confirm, and nothing told about any purchase."""


@get("/checkout/success", media_type=MediaType.HTML, include_in_schema=False)
async def checkout_success(
    services: ServicesDependency,
    session_id: FromQuery[str | None] = None,
    t: FromQuery[str | None] = None,
) -> Response[str] | str:
    """Says the purchase is being confirmed, then shows the new balance once credited.

    Only with the signed ``t`` of this purchase's link; otherwise "payment received"
    (whether the session exists included). A link without any ``session_id`` names
    no purchase, and says so (400); a purchase that expired or failed says that,
    instead of refreshing forever.
    """
    if not session_id:
        return Response(MISSING, status_code=400, media_type=MediaType.HTML)
    if not t:
        return RECEIVED
    # From the store, not this process's memory: Stripe's webhook may have reached another
    # replica, and this page refreshes until it sees what that one recorded.
    session = await services.ledger.session(session_id, fresh=True)
    if session is None or not services.page_tokens.shows(t, session.account_id):
        return RECEIVED
    if session.status in ("expired", "failed"):
        return _page(
            "Purchase not completed",
            f'<p id="status" data-status="{session.status}">This purchase '
            f"{'expired before it was paid' if session.status == 'expired' else 'payment failed'}"
            "; nothing was charged. You can start a new one any time.</p>",
        )
    if session.status == MISMATCHED:
        return _page(
            "Purchase under review",
            '<p id="status" data-status="review">The payment Stripe reported is not what '
            "this purchase asked, so no credits were added: it is recorded for someone to "
            "look at. Your purchases and balance are in your account.</p>",
        )
    if not session.paid:
        return _page(
            "Thank you",
            '<p id="status" data-status="confirming">Your purchase is being confirmed. '
            "This page refreshes by itself; your credits appear as soon as the payment "
            "is confirmed.</p>",
            refresh=True,
        )
    account = await services.ledger.account_now(session.account_id)
    return _page(
        "Credits added",
        f'<p id="status" data-status="credited">{session.credits:,} credits were added to '
        f"{html.escape(account.account_id)}.</p>"
        f'<p>Your balance is now <strong id="balance" data-balance="{account.balance}">'
        f"{account.balance:,}</strong> credits.</p>",
    )


@get("/checkout/cancel", media_type=MediaType.HTML, include_in_schema=False)
async def checkout_cancel() -> str:
    """Says that nothing was charged."""
    return _page(
        "Purchase cancelled",
        "<p>Nothing was charged. You can start again any time.</p>",
        # tells the account page to stop watching for this purchase to be paid
        back=f"{ACCOUNT_PAGE}#cancelled",
    )


ROUTES = [checkout_success, checkout_cancel]
