"""Schemathesis against the service's own OpenAPI document, over real HTTP.

Every operation gets requests generated from its documented parameters and body,
schema-valid ones and schema-breaking ones, sent with a token of the scope it
takes. Each answer must be no 5xx, have a documented status, content type and
headers, and match the documented schema; valid data must not be refused for its
shape and invalid data must not be accepted. Bounded: a few examples per
operation, derandomized, no shrinking, so the run takes seconds and is the same
every time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import hypothesis
import requests
import schemathesis
from hypothesis import strategies as st
from litestar import Litestar
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from api.access.tokens import Scope
from api.services import Services
from tests.e2e.conftest import Customer
from tests.support.stripe_events import signature

EXAMPLES_PER_MODE = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "12"))
"""Per operation and mode; raise it for a deeper run (``SCHEMATHESIS_EXAMPLES=200``)."""

# Refusals the ledger's rules make of well-formed requests: a short balance (402), an
# account that exists or a period already passed (409). Everything else that is
# schema-valid must be accepted (or 401/403/404 for a token or an id the caller lacks).
ACCEPTED_FOR_VALID_DATA = ["2xx", "401", "402", "403", "404", "409"]

CONFIG = {
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ACCEPTED_FOR_VALID_DATA},
        # A 5xx for any request, valid or not, is a failure.
        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx"]},
    },
}


class Report:
    """What the run covered and what it found."""

    def __init__(self) -> None:
        self.operations: list[str] = []
        self.requests = 0
        self.failures: dict[str, str] = {}
        self.without_negative_cases: list[str] = []

    def fail(self, label: str, message: str) -> None:
        title = next(
            (line for line in message.splitlines() if line.startswith("- ")), message[:200]
        )
        self.failures.setdefault(f"{label}: {title}", message[:3000])


def _run(
    document: dict[str, Any],
    base_url: str,
    headers_for: Callable[[list[str]], dict[str, str]],
    account_id: str,
) -> Report:
    schema = schemathesis.openapi.from_dict(document, config=SchemathesisConfig.from_dict(CONFIG))
    report = Report()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations.append(operation.label)
        headers = headers_for(operation.definition.raw.get("tags", []))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run_operation(operation, mode, base_url, session, headers, account_id, report)
    session.close()
    return report


def _run_operation(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    account_id: str,
    report: Report,
) -> None:
    # The token goes in as a fixed header: schemathesis then neither drops nor garbles it
    # (its ignored_auth check still sends requests without it and expects 401).
    strategy = operation.as_strategy(generation_mode=mode, headers=headers)
    signed = operation.path == "/v1/stripe/webhook"

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=strategy, own_account=st.booleans())
    def exercise(case: Any, own_account: bool) -> None:
        # Half the cases name an account that exists, so that the routes get past 404.
        if own_account and case.path_parameters and "account_id" in case.path_parameters:
            case.path_parameters["account_id"] = account_id
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict | list):
            # JSON Schema's "integer" takes 5743.0; this API takes JSON integers only.
            case.body = _whole_floats_as_ints(case.body)
            if signed:
                # Stripe sends no NUL; the webhook refuses one with 400 (tested on its own).
                case.body = _without_nul(case.body)
            if isinstance(case.body, dict) and case.body.get("expires_at") is not None:
                # JSON Schema cannot say "in the future": a grant expiring in the past is 422.
                case.body["expires_at"] = "2999-01-01T00:00:00Z"
        if mode is GenerationMode.POSITIVE and (case.query or {}).get("as_of"):
            # Nor "not in the future": a balance as of a moment to come is 422.
            case.query["as_of"] = "2026-01-01T00:00:00Z"
        if mode is GenerationMode.POSITIVE and "Idempotency-Key" in (case.headers or {}):
            # A key names one request: reusing it for another body is refused (422), rightly.
            case.headers["Idempotency-Key"] = uuid.uuid4().hex
        report.requests += 1
        try:
            if signed:
                _send_signed(case, base_url, session)
            else:
                # Given here too, the token counts as the caller's own (not generated) auth.
                case.call_and_validate(base_url=base_url, session=session, headers=dict(headers))
        except FailureGroup as found:
            report.fail(operation.label, str(found))

    try:
        exercise()
    except hypothesis.errors.Unsatisfiable:
        # Nothing to break: an operation without parameters or body has no invalid requests.
        assert mode is GenerationMode.NEGATIVE, operation.label
        report.without_negative_cases.append(operation.label)


def _whole_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_floats_as_ints(v) for v in value]
    return value


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _send_signed(case: Any, base_url: str, session: requests.Session) -> None:
    """Send a generated Stripe event signed as Stripe signs, so it gets past verification."""
    kwargs = case.as_transport_kwargs(base_url=base_url)
    if "json" in kwargs and "Stripe-Signature" in kwargs["headers"]:
        body = json.dumps(kwargs.pop("json"))
        kwargs["data"] = body.encode()
        kwargs["headers"]["Stripe-Signature"] = signature(body)
    response = session.request(**kwargs, timeout=30)
    # Whatever a verified event holds, the answer is 200 (the contract): one the ledger
    # cannot use is ignored, not refused, so schema-breaking events are not rejected.
    case.validate_response(
        response, headers=kwargs["headers"], excluded_checks=[negative_data_rejection]
    )


async def test_every_operation_answers_as_the_openapi_document_says(
    ledger_app: Litestar,
    http: httpx.AsyncClient,
    services: Services,
    customer: Customer,
    writer_headers: dict[str, str],
) -> None:
    audit = await services.tokens.issue(Scope.LEDGER_AUDIT, name="schemathesis")
    by_tag = {
        "customers": customer.headers,
        "auditors": {"Authorization": f"Bearer {audit.secret}"},
    }

    def headers_for(tags: list[str]) -> dict[str, str]:
        for tag in tags:
            if tag in by_tag:
                return by_tag[tag]
        return writer_headers  # internal services: accounts, holds, notifications

    document = (await http.get("/schema/openapi.json")).json()

    report = await asyncio.to_thread(
        _run, document, ledger_app.state.base_url, headers_for, customer.account_id
    )

    print(
        f"\nschemathesis: {len(report.operations)} operations, {report.requests} requests, "
        f"{len(report.failures)} distinct failures; no invalid requests to make for: "
        f"{', '.join(report.without_negative_cases) or 'none'}"
    )
    assert len(report.operations) == sum(
        1 for ops in document["paths"].values() for method in ops if re.fullmatch(r"[a-z]+", method)
    )
    assert report.failures == {}, "\n\n".join(
        [f"{len(report.failures)} failing: {sorted(report.failures)}", *report.failures.values()]
    )


# What schemathesis found, kept as plain regressions.


async def test_a_verified_stripe_event_with_a_nul_is_refused_and_nothing_recorded(
    http: httpx.AsyncClient, services: Services
) -> None:
    event_id = "evt_nul_\u0000_1"
    body = json.dumps({"id": event_id, "type": "customer.created", "data": {"object": {"id": "x"}}})
    head = await services.store.head_position()

    response = await http.post(
        "/v1/stripe/webhook", content=body, headers={"Stripe-Signature": signature(body)}
    )

    assert response.status_code == 400  # was 500: PostgreSQL text cannot hold a NUL
    assert response.json() == {
        "message": "Invalid Stripe webhook: the event contains a NUL character."
    }
    assert await services.store.head_position() == head


async def test_page_cursors_that_are_not_ascii_digits_or_too_large_are_422(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    for query in ("limit=%C2%B2", "after=%D9%A3", f"after={2**63}", f"after={'9' * 5000}"):
        response = await http.get(f"/v1/credits/transactions?{query}", headers=customer.headers)

        # Before: "²" and 5,000 digits failed int() (500), "٣" was read as 3, 2**63 overflowed
        # the bigint parameter (500).
        assert response.status_code == 422, query
