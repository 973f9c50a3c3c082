"""Helpers for tests of the Stripe stand-in: a webhook receiver, the real SDK, a top-up session."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import stripe
from litestar import Litestar, Request, Response, get, post
from litestar.enums import MediaType
from litestar.params import FromPath

from tests.support.servers import bind_free_port, serving

SECRET = "whsec_test_" + "a1b2c3d4" * 4
SUCCESS_URL = "https://app.example/topup/success?session_id={CHECKOUT_SESSION_ID}"
CANCEL_URL = "https://app.example/topup/cancel"


@dataclass(frozen=True)
class Received:
    """One request the receiver got, as raw as it came."""

    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def type(self) -> str:
        return str(self.event["type"])

    @property
    def object(self) -> dict[str, Any]:
        return dict(self.event["data"]["object"])


@dataclass
class Receiver:
    """Records every POST to ``/webhook``; answers ``fail_status`` to the next ``fail_count``.

    It also serves ``GET /shop/...`` pages, for a browser sent back to a shop's success URL.
    """

    base_url: str = ""
    url: str = ""
    received: list[Received] = field(default_factory=list)
    fail_count: int = 0
    fail_status: int = 500

    def bodies_for(self, event_id: str) -> list[Received]:
        return [item for item in self.received if item.event["id"] == event_id]

    def about(self, object_id: str, *types: str) -> list[Received]:
        """What arrived about one object (a session, charge or dispute id), in arrival order."""
        return [
            item
            for item in self.received
            if item.object.get("id") == object_id and (not types or item.type in types)
        ]

    async def wait_for(
        self, check: Callable[[], bool], seconds: float = 10, what: str = "deliveries"
    ) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not arrive within {seconds} s")
            await asyncio.sleep(0.02)

    def app(self) -> Litestar:
        @post("/webhook", status_code=200)
        async def webhook(request: Request[Any, Any, Any]) -> Response[bytes]:
            self.received.append(Received(dict(request.headers), await request.body()))
            if self.fail_count > 0:
                self.fail_count -= 1
                return Response(b"nope", status_code=self.fail_status)
            return Response(b'{"received": true}', status_code=200)

        @get("/shop/{page:str}", media_type=MediaType.HTML)
        async def shop(page: FromPath[str]) -> str:
            return f"<!doctype html><title>shop</title><p id=shop>{page}</p>"

        return Litestar(route_handlers=[webhook, shop], openapi_config=None, logging_config=None)


@asynccontextmanager
async def stripe_receiver() -> AsyncIterator[Receiver]:
    """A receiver of Stripe webhooks on a free loopback port, for the block's duration."""
    receiver = Receiver()
    async with serving(receiver.app(), bind_free_port()) as base_url:
        receiver.base_url = base_url
        receiver.url = f"{base_url}/webhook"
        yield receiver


def verify(item: Received, secret: str = SECRET) -> stripe.Event:
    """What a Stripe webhook handler does with the raw body and the signature header."""
    return stripe.Webhook.construct_event(
        item.body.decode(), item.headers["stripe-signature"], secret
    )


@asynccontextmanager
async def stripe_client(
    base_url: str, key: str = "sk_test_x"
) -> AsyncIterator[stripe.StripeClient]:
    """The real SDK pointed at a stand-in (one HTTPX client, of this event loop)."""
    http_client = stripe.HTTPXClient()
    try:
        yield stripe.StripeClient(
            key, http_client=http_client, max_network_retries=0, base_addresses={"api": base_url}
        )
    finally:
        await http_client.close_async()


def top_up(credits: int = 1000, account: str = "acct_1", **extra: Any) -> Any:
    """Parameters like the ledger's top-up: ``credits`` at one cent each.

    Typed ``Any`` because the tests also send what ``SessionCreateParams`` forbids.
    """
    return {
        "mode": "payment",
        "line_items": [
            {
                "quantity": credits,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 1,
                    "product_data": {"name": "Credits"},
                },
            }
        ],
        "metadata": {"account_id": account},
        "client_reference_id": account,
        "success_url": SUCCESS_URL,
        "cancel_url": CANCEL_URL,
        **extra,
    }
