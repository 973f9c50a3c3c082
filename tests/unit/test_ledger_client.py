"""The Python client (clients/python) on its own transport: retries, keys, errors, webhooks.

``httpx.MockTransport`` stands in for the network here, which is the client's own
boundary; the e2e tests use the client against the real service.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
from ledger_client import (
    OPERATIONS,
    AccountBalances,
    ApiError,
    Conflict,
    ConnectionFailed,
    CreditsGrantedNotification,
    CreditsSpentNotification,
    Forbidden,
    InsufficientCredits,
    InvalidNotification,
    InvalidSignature,
    LedgerClient,
    NotFound,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UnexpectedAnswer,
    UnknownNotification,
    ValidationError,
    construct_notification,
    parse_notification,
    verify_signature,
)
from ledger_client import retry as retry_rule
from ledger_client.errors import retry_after_seconds
from ledger_client.webhooks import NOTIFICATION_TYPES

from ledger.domain.events import (
    AccountOpened,
    CreditsGranted,
    CreditsPurchased,
    CreditsSpent,
    GrantExpired,
    HoldExpired,
    HoldPlaced,
)
from ledger.notifications import EVENT_TYPES
from ledger.notifications.signing import signature_header
from projections.notifications import Notification, NotifierState, fold
from tests.support.typed_events import made, projected_in_order

SPENT = {
    "account_id": "acct_1",
    "amount": 5,
    "from_allowance": 5,
    "from_topup": 0,
    "reason": "x",
    "balance": 95,
    "allowance_remaining": 95,
    "topup_balance": 0,
    "monthly_allowance": 100,
    "period": "2030-01",
    "held": 0,
    "available": 95,
    "from_grants": {},
    "granted": 0,
}
ACCOUNT = {
    "account_id": "acct_1",
    "balance": 100,
    "monthly_allowance": 100,
    "allowance_remaining": 100,
    "topup_balance": 0,
    "period": "2030-01",
    "held": 0,
    "available": 100,
    "granted": 0,
}

HOLD = {
    "hold_id": "hold_1",
    "account_id": "acct_1",
    "status": "held",
    "amount": 300,
    "captured": 0,
    "released": 0,
    "reason": "",
    "expires_at": "2030-01-01T00:15:00+00:00",
    "balance": 1000,
    "held": 300,
    "available": 700,
}

Answer = httpx.Response | Exception


class Script:
    """A transport that answers from a list, one item per request, and keeps the requests."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("Idempotency-Key") for r in self.requests]


def answer(status: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body if body is not None else {}, headers=headers)


def busy() -> httpx.Response:
    return answer(
        503,
        {"message": "The account is busy with other writes; please retry."},
        **{"Retry-After": "0"},
    )


def client(script: Script, *, retries: int = 3) -> tuple[LedgerClient, list[float]]:
    """A client on ``script`` that records its waits instead of sleeping them."""
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    ledger = LedgerClient(
        "http://ledger.test",
        "tok_123",
        transport=httpx.MockTransport(script),
        retries=retries,
        backoff=0.1,
        max_backoff=2.0,
    )
    ledger._sleep = no_sleep
    return ledger, waits


# --- the retry rule ------------------------------------------------------------------------


async def test_a_spend_retried_after_503s_sends_one_key_made_for_the_call() -> None:
    script = Script(busy(), busy(), answer(200, SPENT))
    ledger, waits = client(script)

    async with ledger:
        spent = await ledger.spend("acct_1", 5, reason="x")

    assert spent.balance == 95
    [key] = set(script.keys)
    assert key is not None
    assert len(key) == 32
    assert len(script.requests) == 3
    assert len(waits) == 2
    assert {r.content for r in script.requests} == {b'{"amount":5,"reason":"x"}'}


async def test_a_call_that_gets_no_answer_is_sent_again_with_the_callers_key() -> None:
    script = Script(
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("no answer"),
        httpx.RemoteProtocolError("dropped"),
        answer(201, HOLD),
    )
    ledger, _ = client(script)

    async with ledger:
        hold = await ledger.place_hold("acct_1", 300, idempotency_key="render-7")

    assert hold.hold_id == "hold_1"
    assert script.keys == ["render-7"] * 4


async def test_each_call_has_its_own_key_and_other_5xx_are_retried_for_keyed_writes() -> None:
    script = Script(
        answer(500, {"message": "Server Error."}), answer(200, SPENT), answer(200, SPENT)
    )
    ledger, _ = client(script)

    async with ledger:
        await ledger.spend("acct_1", 5)
        await ledger.spend("acct_1", 5)

    first, again, second = script.keys
    assert first == again != second


@pytest.mark.parametrize(
    ("status", "body", "raised"),
    [
        (401, {"message": "Unauthenticated."}, Unauthorized),
        (402, {"message": "Insufficient credits."}, InsufficientCredits),
        (403, {"message": "This action is unauthorized."}, Forbidden),
        (404, {"message": "Account not found."}, NotFound),
        (409, {"message": "The hold hold_1 was already captured."}, Conflict),
        (
            422,
            {
                "message": "The amount must be at least 1.",
                "errors": {"amount": ["The amount must be at least 1."]},
            },
            ValidationError,
        ),
        (413, {"message": "The request body is too large."}, ApiError),
    ],
)
async def test_a_4xx_is_never_retried_and_raises_its_type_with_the_body(
    status: int, body: dict[str, Any], raised: type[Exception]
) -> None:
    script = Script(answer(status, body, **{"X-Request-Id": "req_9"}))
    ledger, waits = client(script)

    async with ledger:
        with pytest.raises(raised) as caught:
            await ledger.spend("acct_1", 5)

    assert len(script.requests) == 1
    assert waits == []
    error = caught.value
    assert isinstance(error, ApiError)
    assert (error.status, error.body, error.request_id) == (status, body, "req_9")
    assert isinstance(error, Unauthorized) == (status in (401, 403))


async def test_the_last_503_is_raised_with_retry_after_once_the_retries_are_spent() -> None:
    script = Script(busy(), busy(), busy())
    ledger, waits = client(script, retries=2)

    async with ledger:
        with pytest.raises(ServiceUnavailable) as caught:
            await ledger.get_credits("acct_1")

    assert len(script.requests) == 3
    assert len(waits) == 2
    assert caught.value.retry_after == 0
    assert caught.value.message == "The account is busy with other writes; please retry."
    assert script.keys == [None] * 3  # reads take no key


def test_a_retry_after_given_as_an_http_date_is_the_seconds_until_then() -> None:
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)

    assert retry_after_seconds("Sun, 06 Dec 2026 09:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Sun, 06 Dec 2026 08:59:00 GMT", now=now) == 0.0  # past: now
    assert retry_after_seconds(" 7 ", now=now) == 7.0
    assert retry_after_seconds("soon", now=now) is None


async def test_a_retry_after_longer_than_the_longest_wait_goes_to_the_caller() -> None:
    script = Script(answer(503, {"message": "down"}, **{"Retry-After": "120"}))
    ledger, waits = client(script)

    async with ledger:
        with pytest.raises(ServiceUnavailable) as caught:
            await ledger.spend("acct_1", 5)

    assert (len(script.requests), waits, caught.value.retry_after) == (1, [], 120)


async def test_a_retry_after_is_waited_when_it_is_longer_than_the_backoff() -> None:
    script = Script(answer(503, {"message": "down"}, **{"Retry-After": "1"}), answer(200, SPENT))
    ledger, waits = client(script)

    async with ledger:
        await ledger.spend("acct_1", 5)

    assert waits == [1.0]


async def test_writes_the_service_cannot_deduplicate_are_resent_only_when_nothing_arrived() -> None:
    """Opening an account again after a lost answer would be 409; it is not resent."""
    for failure in (httpx.ReadTimeout("lost"), httpx.RemoteProtocolError("dropped")):
        script = Script(failure, answer(201, ACCOUNT))
        ledger, _ = client(script)
        async with ledger:
            with pytest.raises(ConnectionFailed):
                await ledger.open_account("acct_1", monthly_allowance=100)
        assert len(script.requests) == 1
    script = Script(answer(500, {"message": "Server Error."}))
    ledger, _ = client(script)
    async with ledger:
        with pytest.raises(ServerError):
            await ledger.open_account("acct_1", monthly_allowance=100)
    assert len(script.requests) == 1

    # Never connected (the service never saw it): sent again.
    script = Script(httpx.ConnectError("refused"), httpx.PoolTimeout("full"), answer(201, ACCOUNT))
    ledger, _ = client(script)
    async with ledger:
        opened = await ledger.open_account("acct_1", monthly_allowance=100)
    assert opened.balance == 100
    assert len(script.requests) == 3
    assert all("Idempotency-Key" not in r.headers for r in script.requests)


async def test_a_503_to_a_write_without_a_key_goes_to_the_caller() -> None:
    """A stopping server answers 503 to a command it cut off, whether or not it had
    committed (api/edge.py): sent again, the endpoint would be made twice."""
    stopping = answer(
        503, {"message": "The server is stopping; please retry."}, **{"Retry-After": "1"}
    )
    script = Script(stopping, busy(), answer(201, ACCOUNT))
    ledger, waits = client(script)
    async with ledger:
        with pytest.raises(ServiceUnavailable) as refused:
            await ledger.open_account("acct_1")
    assert len(script.requests) == 1
    assert (waits, refused.value.retry_after) == ([], 1.0)


async def test_a_webhook_endpoint_is_subscribed_under_one_key_however_often_it_is_sent() -> None:
    """Sent again after a lost answer, it made a second endpoint (each notification twice):
    the service answers a repeat of the key with the endpoint it made."""
    created = {
        "id": "we_1",
        "url": "https://hooks.example/x",
        "events": ["credits.spent"],
        "secret": "whsec_1",
        "created": "2026-12-05T00:00:00Z",
    }
    script = Script(httpx.ReadTimeout("lost"), answer(201, created))
    ledger, _ = client(script)
    async with ledger:
        endpoint = await ledger.create_webhook_endpoint(
            "https://hooks.example/x", ["credits.spent"]
        )

    assert endpoint.secret == "whsec_1"
    keys = {r.headers["Idempotency-Key"] for r in script.requests}
    assert len(script.requests) == 2
    assert len(keys) == 1


async def test_no_answer_after_the_retries_is_connection_failed() -> None:
    script = Script(*(httpx.ConnectError("refused") for _ in range(4)))
    ledger, waits = client(script)

    async with ledger:
        with pytest.raises(ConnectionFailed, match="4 attempts") as caught:
            await ledger.get_my_credits()

    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(waits) == 3


def test_waits_double_with_jitter_up_to_the_ceiling() -> None:
    rand = random.Random(7)
    waits = [retry_rule.delay(n, backoff=0.2, max_backoff=2.0, rand=rand) or 0.0 for n in range(8)]

    for n, wait in enumerate(waits):
        ceiling = min(2.0, 0.2 * 2**n)
        assert ceiling / 2 <= wait <= ceiling
    assert len({round(w, 6) for w in waits[4:]}) > 1  # jittered, not all the same
    assert retry_rule.delay(0, backoff=0.2, max_backoff=2.0, retry_after=1.5) == 1.5
    assert retry_rule.delay(0, backoff=0.2, max_backoff=2.0, retry_after=3) is None


async def test_every_call_sends_the_token_and_escapes_ids_in_the_path() -> None:
    script = Script(answer(200, HOLD))
    ledger, _ = client(script)

    async with ledger:
        await ledger.get_hold("acct:1", "hold/../x")

    [request] = script.requests
    assert request.headers["Authorization"] == "Bearer tok_123"
    assert request.url.raw_path == b"/v1/accounts/acct:1/holds/hold%2F..%2Fx"


async def test_an_id_of_dots_stays_one_segment_of_its_own_path() -> None:
    script = Script(answer(200, HOLD), answer(200, ACCOUNT), answer(200, HOLD))
    ledger, _ = client(script)

    async with ledger:
        await ledger.get_hold("acct_1", "..")
        await ledger.get_credits("..")
        await ledger.capture_hold("acct_1", ".", 1)

    assert [r.url.raw_path for r in script.requests] == [
        b"/v1/accounts/acct_1/holds/%2E%2E",
        b"/v1/accounts/%2E%2E/credits",
        b"/v1/accounts/acct_1/holds/%2E/capture",
    ]


async def test_optional_fields_left_out_are_not_sent_and_a_null_threshold_is() -> None:
    script = Script(
        answer(201, ACCOUNT),
        answer(200, {"account_id": "a", "threshold": None, "effective_threshold": 10}),
    )
    ledger, _ = client(script)

    async with ledger:
        await ledger.open_account("acct_1")
        await ledger.set_low_balance_threshold("acct_1", None)

    assert [r.content for r in script.requests] == [
        b'{"account_id":"acct_1"}',
        b'{"threshold":null}',
    ]


async def test_an_answer_that_is_not_the_documented_one_is_unexpected() -> None:
    script = Script(httpx.Response(200, text="<html>proxy</html>"), answer(200, {"balance": 1}))
    ledger, _ = client(script)

    async with ledger:
        for _ in range(2):
            with pytest.raises(UnexpectedAnswer):
                await ledger.get_my_credits()


def test_every_keyed_write_is_repeatable_and_the_unkeyed_writes_are_the_exceptions() -> None:
    not_repeatable = {op.operation_id for op in OPERATIONS.values() if not op.repeatable}
    assert not_repeatable == {"openAccount"}
    assert all(op.repeatable for op in OPERATIONS.values() if op.keyed)


# --- webhooks ------------------------------------------------------------------------------

SECRET = "whsec_client_tests"


def signed(body: str, *, at: int | None = None, secret: str = SECRET) -> str:
    """The header exactly as the service's dispatcher makes it."""
    return signature_header(body, secret, int(time.time()) if at is None else at)


def test_a_signature_made_by_the_service_verifies() -> None:
    body = '{"id":"evt_1_credits_spent","type":"credits.spent"}'
    header = signed(body)

    assert verify_signature(body.encode(), header, SECRET) == int(header[2:].split(",")[0])
    # A rotation: several v1, one of them good.
    assert verify_signature(body.encode(), f"{header},v1={'0' * 64}", SECRET)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda body, header: (body + b" ", header), "no signature matches"),
        (lambda body, header: (body, header.replace("t=", "t=1")), "no signature matches"),
        (lambda body, header: (body, signed(body.decode(), secret="whsec_other")), "matches"),
        (lambda body, header: (body, signed(body.decode(), at=int(time.time()) - 301)), "old"),
        (lambda body, header: (body, signed(body.decode(), at=int(time.time()) + 301)), "ahead"),
        (lambda body, header: (body, header.split(",")[1]), "no timestamp"),
        (lambda body, header: (body, header.split(",")[0]), "no v1"),
        (lambda body, header: (body, "t=soon,v1=00"), "not a number"),
    ],
)
def test_a_body_or_header_that_was_not_signed_so_is_refused(
    change: Callable[[bytes, str], tuple[bytes, str]], why: str
) -> None:
    body = b'{"id":"evt_1_credits_spent","type":"credits.spent"}'
    payload, header = change(body, signed(body.decode()))

    with pytest.raises(InvalidSignature, match=why):
        verify_signature(payload, header, SECRET)


def test_the_tolerance_can_be_widened_or_switched_off() -> None:
    body = b"{}"
    old = signed(body.decode(), at=int(time.time()) - 3600)

    assert verify_signature(body, old, SECRET, tolerance=None)
    assert verify_signature(body, old, SECRET, tolerance=4000)


def every_notification() -> list[Notification]:
    """One of each type, made by the service's own notifications view."""
    stream = uuid.uuid4()
    events = [
        made(AccountOpened, account_id="acct_n", monthly_allowance=1000, period="2030-01"),
        made(
            CreditsGranted,
            grant_id="grant_1",
            amount=500,
            priority=10,
            expires_at="2030-01-31T00:00:00+00:00",
            reason="welcome",
        ),
        made(CreditsPurchased, session_id="cs_1", credits=50),
        made(
            CreditsSpent,
            amount=1100,
            from_allowance=1000,
            from_topup=0,
            reason="render",
            from_grants={"grant_1": 100},
        ),
        made(GrantExpired, grant_id="grant_1", lapsed=400),
        made(
            HoldPlaced,
            hold_id="hold_1",
            amount=50,
            from_allowance=0,
            from_topup=50,
            reason="job",
            expires_at="2030-01-02T00:00:00+00:00",
        ),
        made(HoldExpired, hold_id="hold_1", released=50, lapsed=0),
    ]
    state: NotifierState | None = None
    sent: list[Notification] = []
    for event in projected_in_order(stream, events):
        state, notifications = fold(state, event)
        sent += notifications
    return sent


def test_every_notification_the_service_sends_parses_into_its_type_field_for_field() -> None:
    sent = every_notification()
    assert {n.type for n in sent} == set(EVENT_TYPES) == set(NOTIFICATION_TYPES)

    for notification in sent:
        body = msgspec.json.encode(notification)
        parsed = construct_notification(body, signed(body.decode()), SECRET)

        assert type(parsed) is NOTIFICATION_TYPES[notification.type]
        assert not isinstance(parsed, UnknownNotification)
        assert (parsed.id, parsed.type, parsed.created) == (
            notification.id,
            notification.type,
            notification.created,
        )
        # Nothing sent is dropped on the floor, and nothing the type promises is missing.
        assert set(type(parsed.data).__struct_fields__) == set(notification.data), notification.type
        assert isinstance(parsed.data, AccountBalances)
        assert parsed.data.account_id == "acct_n"
    parsed_all = [parse_notification(msgspec.json.encode(n)) for n in sent]
    [spent] = [n for n in parsed_all if isinstance(n, CreditsSpentNotification)]
    assert (spent.data.from_grants, spent.data.hold_id) == ({"grant_1": 100}, None)
    [granted] = [n for n in parsed_all if isinstance(n, CreditsGrantedNotification)]
    assert granted.data.expires_at == datetime(2030, 1, 31, tzinfo=UTC)


def test_a_type_this_client_does_not_know_is_kept_as_sent_and_a_bad_body_is_refused() -> None:
    unknown = parse_notification(
        b'{"id":"evt_9_x","type":"credits.new","created":1,"data":{"a":1}}'
    )

    assert unknown == UnknownNotification(
        id="evt_9_x", type="credits.new", created=1, data={"a": 1}
    )
    with pytest.raises(InvalidNotification):
        parse_notification(b'{"id":"evt_9","type":"credits.spent","created":1,"data":{}}')
    with pytest.raises(InvalidNotification):
        parse_notification(b"not json")
