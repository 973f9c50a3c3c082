"""``LedgerClient``: the credit ledger's HTTP API as typed async methods."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from ledger_client import retry
from ledger_client.errors import ConnectionFailed, ServiceUnavailable, UnexpectedAnswer, error_for
from ledger_client.types import (
    AccountCredits,
    AccountPlan,
    CaptureHoldRequest,
    ChangePlanRequest,
    CheckoutStarted,
    CreatedEndpoint,
    EventType,
    GrantAnswer,
    GrantClosedAnswer,
    GrantRequest,
    Grants,
    GrantStatus,
    Hold,
    LowBalanceThreshold,
    MonthlyResetRequest,
    OpenAccountRequest,
    PlaceHoldRequest,
    PurchaseRequest,
    SpendRequest,
    Spent,
    ThresholdRequest,
    VoidGrantRequest,
    WebhookEndpoint,
    WebhookEndpointRequest,
    WebhookEndpoints,
)

__version__ = "0.1.0"

A = TypeVar("A", bound=msgspec.Struct)


@dataclass(frozen=True)
class Operation:
    """One operation of the service's OpenAPI document, as the client calls it.

    The main project's tests check each against the document: its method, path,
    success status, body, answer and whether it takes an ``Idempotency-Key``.
    """

    operation_id: str
    method: str
    path: str
    status: int
    answer: type[msgspec.Struct]
    body: type[msgspec.Struct] | None = None
    keyed: bool = False
    """Takes an ``Idempotency-Key``: the caller's (or a made one) on every attempt of a call."""
    makes_key: bool = True
    """Of a keyed operation: without the caller's key, one is made for the call. False when
    the service settles a repeat of the same request itself (a hold's capture or release,
    by the hold's id): a key made anew for each call would turn a repeat into a 409."""
    repeatable: bool = True
    """Safe to send again after a lost answer or a 5xx (see ledger_client.retry)."""
    query: tuple[str, ...] = ()
    """The query parameters it takes."""


OPERATIONS: dict[str, Operation] = {
    op.operation_id: op
    for op in (
        # internal services (ledger:write)
        Operation(
            "openAccount",
            "POST",
            "/v1/accounts",
            201,
            AccountCredits,
            OpenAccountRequest,
            repeatable=False,  # a second attempt after a lost answer would be 409
        ),
        Operation(
            "getAccountCredits",
            "GET",
            "/v1/accounts/{account_id}/credits",
            200,
            AccountCredits,
            query=("as_of",),
        ),
        Operation(
            "spendCredits",
            "POST",
            "/v1/accounts/{account_id}/spend",
            200,
            Spent,
            SpendRequest,
            keyed=True,
        ),
        Operation(
            "resetMonth",
            "POST",
            "/v1/accounts/{account_id}/monthly-reset",
            200,
            AccountCredits,
            MonthlyResetRequest,
            keyed=True,
        ),
        Operation(
            "changePlan", "PATCH", "/v1/accounts/{account_id}", 200, AccountPlan, ChangePlanRequest
        ),
        Operation(
            "placeHold",
            "POST",
            "/v1/accounts/{account_id}/holds",
            201,
            Hold,
            PlaceHoldRequest,
            keyed=True,
        ),
        Operation(
            "captureHold",
            "POST",
            "/v1/accounts/{account_id}/holds/{hold_id}/capture",
            200,
            Hold,
            CaptureHoldRequest,
            keyed=True,
            makes_key=False,
        ),
        Operation(
            "releaseHold",
            "POST",
            "/v1/accounts/{account_id}/holds/{hold_id}/release",
            200,
            Hold,
            keyed=True,
            makes_key=False,
        ),
        Operation("getHold", "GET", "/v1/accounts/{account_id}/holds/{hold_id}", 200, Hold),
        Operation(
            "grantCredits",
            "POST",
            "/v1/accounts/{account_id}/grants",
            201,
            GrantAnswer,
            GrantRequest,
            keyed=True,
        ),
        Operation(
            "listGrants",
            "GET",
            "/v1/accounts/{account_id}/grants",
            200,
            Grants,
            query=("status", "limit", "after"),
        ),
        Operation(
            "voidGrant",
            "POST",
            "/v1/accounts/{account_id}/grants/{grant_id}/void",
            200,
            GrantClosedAnswer,
            VoidGrantRequest,
            keyed=True,  # a second attempt after a lost answer gets the first answer, not 409
        ),
        Operation(
            "setLowBalanceThreshold",
            "PUT",
            "/v1/accounts/{account_id}/low-balance-threshold",
            200,
            LowBalanceThreshold,
            ThresholdRequest,
        ),
        Operation(
            "createWebhookEndpoint",
            "POST",
            "/v1/webhook-endpoints",
            201,
            CreatedEndpoint,
            WebhookEndpointRequest,
            keyed=True,
        ),
        Operation(
            "listWebhookEndpoints",
            "GET",
            "/v1/webhook-endpoints",
            200,
            WebhookEndpoints,
            query=("limit", "after"),
        ),
        Operation(
            "disableWebhookEndpoint",
            "DELETE",
            "/v1/webhook-endpoints/{endpoint_id}",
            200,
            WebhookEndpoint,
        ),
        # customers (credits)
        Operation(
            "purchaseCredits",
            "POST",
            "/v1/credits/purchase",
            200,
            CheckoutStarted,
            PurchaseRequest,
            keyed=True,
        ),
        Operation("getCredits", "GET", "/v1/credits", 200, AccountCredits, query=("as_of",)),
    )
}


def _segment(value: str) -> str:
    # Ids are letters, digits and ``_ . : -``; anything else is escaped, never a new segment.
    # So are the dots of "." and "..": sent bare, URL resolution takes them for "here" and
    # "up", and the request goes to another path ("/v1/accounts/../credits" is /v1/credits).
    escaped = quote(value, safe="-._~:")
    return escaped.replace(".", "%2E") if escaped in (".", "..") else escaped


class LedgerClient:
    """The ledger's API for one token: internal services (``ledger:write``) or a customer.

    ::

        async with LedgerClient("https://ledger.internal", token) as ledger:
            spent = await ledger.spend("acct_42", 25, reason="image generation")

    Error answers raise the exceptions of ``ledger_client.errors``. A call that gets
    no answer, a 503 or another 5xx is sent again up to ``retries`` times, waiting
    ``backoff`` seconds, then twice as long each time (with jitter, at most
    ``max_backoff``); see ``ledger_client.retry`` for which calls are safe to repeat.
    Writes that take an ``Idempotency-Key`` send the caller's or one made for the
    call, the same on every attempt, so a retried spend is recorded once.

    ``transport`` replaces the network (``httpx.ASGITransport(app)``, ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
        self.position: int | None = None
        """The highest ``Ledger-Position`` of the answers this client got (None before any):
        pass it as a balance read's ``min_position`` to see its writes, also where the
        service reads from a standby (docs/scaling.md)."""
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=transport,
            timeout=timeout,
            headers={
                **(headers or {}),
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": f"credit-ledger-client/{__version__}",
            },
            # Proxies come from the environment like any httpx client; redirects are not
            # followed: the API answers none, and one would be a misconfiguration to see.
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (``async with`` does it)."""
        await self._http.aclose()

    # --- accounts (ledger:write; reads also ledger:audit) ----------------------------------

    async def open_account(
        self, account_id: str, *, monthly_allowance: int | None = None
    ) -> AccountCredits:
        """Open an account (its full allowance available at once); Conflict if it exists.

        ``monthly_allowance`` left out: the service's default.
        """
        body = OpenAccountRequest(account_id=account_id, monthly_allowance=monthly_allowance)
        return await self._call("openAccount", AccountCredits, body=body)

    async def get_credits(
        self,
        account_id: str,
        *,
        as_of: datetime | None = None,
        min_position: int | None = None,
    ) -> AccountCredits:
        """An account's balances; ``as_of`` (with a timezone) replays them as they stood then.

        ``min_position`` (``self.position`` after a write): an answer that reflects the store
        at least that far (``Ledger-Min-Position``).
        """
        params = None if as_of is None else {"as_of": as_of.isoformat()}
        return await self._call(
            "getAccountCredits",
            AccountCredits,
            path={"account_id": account_id},
            params=params,
            min_position=min_position,
        )

    async def spend(
        self,
        account_id: str,
        amount: int,
        *,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Spent:
        """Spend credits (allowance, then grants, then top-ups); InsufficientCredits when short.

        The same ``idempotency_key`` again returns the first answer and records nothing.
        """
        return await self._call(
            "spendCredits",
            Spent,
            path={"account_id": account_id},
            body=SpendRequest(amount=amount, reason=reason),
            idempotency_key=idempotency_key,
        )

    async def monthly_reset(
        self, account_id: str, period: str | None = None, *, idempotency_key: str | None = None
    ) -> AccountCredits:
        """Reset the allowance for ``period`` (``YYYY-MM``; default: this UTC month), once.

        A period before the account's last reset is Conflict. The same ``idempotency_key``
        again returns the first answer.
        """
        return await self._call(
            "resetMonth",
            AccountCredits,
            path={"account_id": account_id},
            body=MonthlyResetRequest(period=period),
            idempotency_key=idempotency_key,
        )

    async def change_plan(self, account_id: str, monthly_allowance: int) -> AccountPlan:
        """The monthly allowance from the next reset on."""
        return await self._call(
            "changePlan",
            AccountPlan,
            path={"account_id": account_id},
            body=ChangePlanRequest(monthly_allowance=monthly_allowance),
        )

    async def set_low_balance_threshold(
        self, account_id: str, threshold: int | None
    ) -> LowBalanceThreshold:
        """When ``credits.low_balance`` fires; None goes back to 10 % of the allowance."""
        return await self._call(
            "setLowBalanceThreshold",
            LowBalanceThreshold,
            path={"account_id": account_id},
            body=ThresholdRequest(threshold=threshold),
        )

    # --- holds -----------------------------------------------------------------------------

    async def place_hold(
        self,
        account_id: str,
        amount: int,
        *,
        expires_in_seconds: int | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Hold:
        """Reserve credits until captured, released or expired; InsufficientCredits when short."""
        return await self._call(
            "placeHold",
            Hold,
            path={"account_id": account_id},
            body=PlaceHoldRequest(
                amount=amount, expires_in_seconds=expires_in_seconds, reason=reason
            ),
            idempotency_key=idempotency_key,
        )

    async def capture_hold(
        self, account_id: str, hold_id: str, amount: int, *, idempotency_key: str | None = None
    ) -> Hold:
        """Spend up to what the hold holds; the rest goes back.

        The same capture again returns the first answer (no key needed: the hold is settled
        once; with ``idempotency_key``, only under the same key). ValidationError for more
        than held; Conflict if it expired or was settled otherwise.
        """
        return await self._call(
            "captureHold",
            Hold,
            path={"account_id": account_id, "hold_id": hold_id},
            body=CaptureHoldRequest(amount=amount),
            idempotency_key=idempotency_key,
        )

    async def release_hold(
        self, account_id: str, hold_id: str, *, idempotency_key: str | None = None
    ) -> Hold:
        """Give a hold's credits back; again, the first answer; Conflict if it was captured."""
        return await self._call(
            "releaseHold",
            Hold,
            path={"account_id": account_id, "hold_id": hold_id},
            idempotency_key=idempotency_key,
        )

    async def get_hold(self, account_id: str, hold_id: str) -> Hold:
        """A hold as it stands: held, or how it ended."""
        return await self._call(
            "getHold", Hold, path={"account_id": account_id, "hold_id": hold_id}
        )

    # --- grants ----------------------------------------------------------------------------

    async def grant(
        self,
        account_id: str,
        amount: int,
        *,
        expires_at: datetime | None = None,
        priority: int = 50,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> GrantAnswer:
        """Give credits that are not bought (lower ``priority`` burns first; no expiry: never)."""
        return await self._call(
            "grantCredits",
            GrantAnswer,
            path={"account_id": account_id},
            body=GrantRequest(
                amount=amount, expires_at=expires_at, priority=priority, reason=reason
            ),
            idempotency_key=idempotency_key,
        )

    async def list_grants(
        self,
        account_id: str,
        *,
        status: GrantStatus | None = None,
        limit: int | None = None,
        after: int | None = None,
    ) -> Grants:
        """One page of the account's grants, newest first (``next_after`` for the next)."""
        params = _query(status=status, limit=limit, after=after)
        return await self._call(
            "listGrants", Grants, path={"account_id": account_id}, params=params
        )

    async def void_grant(
        self,
        account_id: str,
        grant_id: str,
        *,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> GrantClosedAnswer:
        """Withdraw a grant: what remains lapses now; Conflict if expired or voided already
        (but the same ``idempotency_key`` again returns the first answer)."""
        return await self._call(
            "voidGrant",
            GrantClosedAnswer,
            path={"account_id": account_id, "grant_id": grant_id},
            body=VoidGrantRequest(reason=reason),
            idempotency_key=idempotency_key,
        )

    # --- webhook endpoints -----------------------------------------------------------------

    async def create_webhook_endpoint(
        self, url: str, events: list[EventType], *, idempotency_key: str | None = None
    ) -> CreatedEndpoint:
        """Subscribe ``url``; keep the answer's ``secret`` to verify deliveries. It is shown
        once, and again only to a repeat under the same ``idempotency_key`` (every attempt of
        a call sends one: a retry after a lost answer makes no second endpoint)."""
        return await self._call(
            "createWebhookEndpoint",
            CreatedEndpoint,
            body=WebhookEndpointRequest(url=url, events=events),
            idempotency_key=idempotency_key,
        )

    async def list_webhook_endpoints(
        self, *, limit: int | None = None, after: int | None = None
    ) -> WebhookEndpoints:
        """One page of the live endpoints, oldest first, without their secrets
        (``next_after`` for the next)."""
        params = _query(limit=limit, after=after)
        return await self._call("listWebhookEndpoints", WebhookEndpoints, params=params)

    async def delete_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        """Stop delivering to an endpoint (the service keeps it on record as disabled)."""
        return await self._call(
            "disableWebhookEndpoint", WebhookEndpoint, path={"endpoint_id": endpoint_id}
        )

    # --- customers (a credits token) -------------------------------------------------------

    async def purchase_credits(
        self, credits: int, *, idempotency_key: str | None = None
    ) -> CheckoutStarted:
        """Start a Checkout for 100 to 10,000 credits; the same key returns the same session."""
        return await self._call(
            "purchaseCredits",
            CheckoutStarted,
            body=PurchaseRequest(credits=credits),
            idempotency_key=idempotency_key,
        )

    async def get_my_credits(
        self, *, as_of: datetime | None = None, min_position: int | None = None
    ) -> AccountCredits:
        """The balances of the account the token is bound to (``as_of``, ``min_position``: as
        in ``get_credits``)."""
        params = None if as_of is None else {"as_of": as_of.isoformat()}
        return await self._call(
            "getCredits", AccountCredits, params=params, min_position=min_position
        )

    # --- the one road ----------------------------------------------------------------------

    async def _call(
        self,
        operation_id: str,
        answer: type[A],
        *,
        path: Mapping[str, str] | None = None,
        body: msgspec.Struct | None = None,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        min_position: int | None = None,
    ) -> A:
        op = OPERATIONS[operation_id]
        if params and not set(params) <= set(op.query):
            raise TypeError(f"{operation_id} takes no {sorted(set(params) - set(op.query))}")
        if answer is not op.answer:
            raise TypeError(f"{operation_id} answers {op.answer.__name__}, not {answer.__name__}")
        url = op.path.format_map({name: _segment(v) for name, v in (path or {}).items()})
        headers = {}
        if op.keyed:
            # Made once per call, before the first attempt: every retry sends the same.
            # An empty key is the caller's too (the service refuses it): made up in its
            # place, it would differ on each of the caller's own retries.
            key = idempotency_key
            if key is None and op.makes_key:
                key = uuid.uuid4().hex
            if key is not None:
                headers["Idempotency-Key"] = key
        elif idempotency_key is not None:
            raise TypeError(f"{operation_id} takes no Idempotency-Key")
        if min_position is not None:
            headers["Ledger-Min-Position"] = str(min_position)
        content = None
        if body is not None:
            content = msgspec.json.encode(body)
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            wait: float | None
            try:
                response = await self._http.request(
                    op.method, url, content=content, params=params, headers=headers
                )
            except httpx.TransportError as failure:
                wait = self._wait(attempt)
                if wait is None or not retry.retries_failure(failure, repeatable=op.repeatable):
                    lost = ConnectionFailed(
                        f"{op.method} {url}: {type(failure).__name__}: {failure}"
                        f" (after {attempt + 1} attempt{'s' if attempt else ''})"
                    )
                    lost.idempotency_key = headers.get("Idempotency-Key")
                    raise lost from failure
            else:
                if response.status_code < 400:
                    self._note_position(response)
                    return _decode(response, answer, op)
                error = error_for(response)
                retry_after = error.retry_after if isinstance(error, ServiceUnavailable) else None
                wait = self._wait(attempt, retry_after)
                if wait is None or not retry.retries_status(
                    response.status_code, repeatable=op.repeatable
                ):
                    error.idempotency_key = headers.get("Idempotency-Key")
                    raise error
            await self._sleep(wait)
            attempt += 1

    def _note_position(self, response: httpx.Response) -> None:
        given = response.headers.get("Ledger-Position", "")
        if given.isascii() and given.isdigit():
            self.position = max(self.position or 0, int(given))

    def _wait(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds before the next attempt; None when there is none."""
        if attempt >= self.retries:
            return None
        return retry.delay(
            attempt, backoff=self.backoff, max_backoff=self.max_backoff, retry_after=retry_after
        )


def _decode(response: httpx.Response, answer: type[A], op: Operation) -> A:
    try:
        return msgspec.json.decode(response.content, type=answer)
    except msgspec.DecodeError as wrong:  # ValidationError is a DecodeError
        raise UnexpectedAnswer(
            f"{op.method} {op.path} answered {response.status_code} with a body that is not"
            f" {answer.__name__}: {wrong}"
        ) from wrong


def _query(**values: object) -> dict[str, str]:
    """The query parameters given (None: left out), as text."""
    return {name: str(value) for name, value in values.items() if value is not None}
