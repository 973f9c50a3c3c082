"""Schemathesis against the service's own OpenAPI document, over real HTTP, every check.

The run is what ``schemathesis run --checks all`` does, in process: its four phases
(the document's examples; coverage of each parameter's edges, undeclared methods and
left-out headers; fuzzing, schema-valid and schema-breaking; stateful chains that
feed one answer's ids into the next request) with every check schemathesis has: no
5xx, documented status, content type, headers and body, valid data accepted, invalid
data refused, 405 with ``Allow`` for undeclared methods, ``OPTIONS`` and ``Allow``
agreeing with the document, auth enforced, a required header's absence refused, and
the stateful resource checks. Requests carry a token of the scope their operation
takes; half of them name an account that exists, so the routes get past 404.

What JSON Schema cannot say, the document says in words, and ``fitted`` makes the
generated requests say too (only the parts schemathesis generated as valid): integers
are JSON integers (``1517.0`` is 422: see api/validation.py's ``INTEGER_NOTE``); an
``Idempotency-Key`` names one request (another request under it is 422); a grant
expires in the future, ``as_of`` is not; Stripe events come signed.

Bounded and repeatable: a fixed seed, a few examples per operation, no shrinking.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import schemathesis
from litestar import Litestar
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.engine import events
from schemathesis.generation.case import Case

from api.access.tokens import Scope
from api.services import Services
from ledger.notifications.endpoints import EndpointRegistry
from ledger.notifications.url_form import MAX_URL_LENGTH
from tests.e2e.conftest import Customer
from tests.support.projector import projector_running
from tests.support.stripe_events import signature

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
"""Per operation and phase; raise it for a deeper run (``SCHEMATHESIS_EXAMPLES=200``)."""

SEED = int(os.environ.get("SCHEMATHESIS_SEED", "20261130"))
"""The same run every time; change it to explore (``SCHEMATHESIS_SEED=7``)."""

# Refusals the ledger's rules make of well-formed requests: a short balance (402), an
# account that exists or a period already passed (409). Everything else that is
# schema-valid must be accepted (or 401/403/404 for a token or an id the caller lacks).
ACCEPTED_FOR_VALID_DATA = ["2xx", "401", "402", "403", "404", "409"]
# And one 422 of the contract's: a capture above what the hold reserves (the document's
# example for that route), which no schema can know.
ACCEPTED_FOR_A_CAPTURE = [*ACCEPTED_FOR_VALID_DATA, "422"]

WEBHOOK = "/v1/stripe/webhook"

UNKNOWN_HEADER = "in header - object with unexpected properties"
"""A request with a header the document does not name, which schemathesis expects refused
once an operation documents any header parameter (``X-Request-Id`` on every one). HTTP
services take headers they do not read (proxies add ``X-Forwarded-For``, ``traceparent``),
and so does this one: the document names those it reads."""


def config(base_url: str, tokens: dict[str, str], account_id: str) -> SchemathesisConfig:
    """Every check and every phase, tokens by tag, the suite's account for half the cases."""
    bearer = {tag: {"Authorization": f"Bearer {token}"} for tag, token in tokens.items()}
    return SchemathesisConfig.from_dict(
        {
            "base-url": base_url,
            "seed": SEED,
            "workers": 1,
            "generation": {
                "max-examples": EXAMPLES,
                "no-shrink": True,
                "database": "none",
                "deterministic": True,
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": 6},
            },
            "checks": {
                "enabled": True,  # all of them, as --checks all
                "positive_data_acceptance": {"expected-statuses": ACCEPTED_FOR_VALID_DATA},
            },
            # Internal services' token by default; customers and auditors have their own.
            "headers": bearer["internal"],
            "operations": [
                *(
                    {"include-tag": tag, "headers": headers}
                    for tag, headers in bearer.items()
                    if tag != "internal"
                ),
                {
                    "include-operation-id": "captureHold",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ACCEPTED_FOR_A_CAPTURE}
                    },
                },
            ],
            "dictionaries": {"accounts": {"values": [account_id]}},
            "parameters": {"path.account_id": {"dictionary": "accounts", "probability": 0.5}},
        }
    )


class Report:
    """What the run covered and what it found."""

    def __init__(self) -> None:
        self.operations: set[str] = set()
        self.phases: set[str] = set()
        self.requests = 0
        self.checks: set[str] = set()
        self.failures: dict[str, str] = {}
        self.errors: list[str] = []

    def scenario(self, event: events.ScenarioFinished) -> None:
        recorder = event.recorder
        self.phases.add(str(event.phase.value))
        self.requests += len(recorder.interactions)
        for case_id, checks in recorder.checks.items():
            node = recorder.cases.get(case_id)
            label = node.value.operation.label if node is not None else recorder.label
            self.operations.add(label)
            for check in checks:
                self.checks.add(check.name)
                if check.failure_info is not None:
                    failure = check.failure_info.failure
                    if UNKNOWN_HEADER in failure.message:
                        continue
                    self.failures.setdefault(
                        f"{label}: {failure.title}",
                        f"{failure.message}\n{check.failure_info.code_sample}"[:3000],
                    )


def fitted(used_keys: set[str]) -> Callable[..., None]:
    """A ``before_call`` hook: what the document says in words, applied to valid parts."""

    def before_call(_: Any, case: Case, __: dict[str, Any]) -> None:
        meta = case.meta
        valid = (lambda _: True) if meta is None else (lambda at: not meta.is_negative_at(at))
        if valid(ParameterLocation.BODY) and isinstance(case.body, dict | list):
            case.body = _whole_floats_as_ints(case.body)
            if isinstance(case.body, dict) and case.body.get("expires_at") is not None:
                case.body["expires_at"] = "2999-01-01T00:00:00Z"
        if valid(ParameterLocation.QUERY) and (case.query or {}).get("as_of"):
            case.query["as_of"] = "2026-01-01T00:00:00Z"
        headers = case.headers or {}
        if valid(ParameterLocation.HEADER) and (key := headers.get("Idempotency-Key")):
            if key in used_keys:
                headers["Idempotency-Key"] = uuid.uuid4().hex
            used_keys.add(headers["Idempotency-Key"])
        signed = valid(ParameterLocation.BODY) and valid(ParameterLocation.HEADER)
        if case.path == WEBHOOK and signed and isinstance(case.body, dict) and headers:
            # Stripe sends no NUL; the webhook refuses one with 400 (tested on its own).
            case.body = _without_nul(case.body)
            # Signed over the bytes requests sends: json.dumps with its defaults.
            headers["Stripe-Signature"] = signature(json.dumps(case.body))

    return before_call


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


def run(document: dict[str, Any], settings: SchemathesisConfig) -> Report:
    """The engine ``schemathesis run`` drives, with the ``fitted`` hook for this run only."""
    schema = schemathesis.openapi.from_dict(document, config=settings)
    report = Report()
    hook = schemathesis.hook("before_call")(fitted(set()))
    try:
        for event in schemathesis.engine.from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                report.scenario(event)
            elif isinstance(event, events.NonFatalError):
                report.errors.append(f"{event.label}: {event.value!r}")
            elif isinstance(event, events.FatalError):
                raise event.exception
            elif isinstance(event, events.EngineFinished):
                for failure in event.failures:
                    report.failures.setdefault(f"run: {failure.title}", failure.message)
    finally:
        schemathesis.hooks.unregister(hook)
    return report


def without_url_length(document: dict[str, Any]) -> dict[str, Any]:
    """The document less the webhook URL's ``maxLength``: with it, the URL pattern's host
    lookaheads (a name of 253 characters at most, its last label not all digits) made
    schemathesis's coverage phase search for a valid URL of 2,048 characters, 125 s of its
    budget on that one draw and ~300 s a run in all (11 s without). The bound is checked on
    its own (tests/integration/test_webhook_addresses.py)."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("pattern", "").startswith("^[Hh][Tt][Tt][Pp]"):
                found.append(node.pop("maxLength"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert found, "the webhook URL's maxLength is no longer in the document"
    assert set(found) == {MAX_URL_LENGTH}, found
    return document


async def test_every_operation_answers_as_the_openapi_document_says_under_every_check(
    ledger_app: Litestar,
    http: httpx.AsyncClient,
    services: Services,
    customer: Customer,
    writer_headers: dict[str, str],
) -> None:
    audit = await services.tokens.issue(Scope.LEDGER_AUDIT, name="schemathesis")
    tokens = {
        "internal": writer_headers["Authorization"].removeprefix("Bearer "),
        "customers": customer.token,
        "auditors": audit.secret,
    }
    document = without_url_length((await http.get("/schema/openapi.json")).json())
    settings = config(ledger_app.state.base_url, tokens, customer.account_id)

    endpoints = EndpointRegistry(services.pool)
    before = {endpoint.id for endpoint in await endpoints.list()}
    try:
        # The views follow, as beside `ledger serve`: the lists read what was written
        # without waiting out their second for a projector that is not there.
        async with projector_running(services.store, services.database_url):
            report = await asyncio.to_thread(run, document, settings)
    finally:
        # The run subscribes made-up URLs; later tests' dispatchers need not try them.
        for endpoint in await endpoints.list():
            if endpoint.id not in before:
                await endpoints.disable(endpoint.id)

    print(
        f"\nschemathesis: {len(report.operations)} operations, {report.requests} requests, "
        f"phases {sorted(report.phases)}, checks {sorted(report.checks)}, "
        f"{len(report.failures)} distinct failures, {len(report.errors)} errors"
    )
    assert report.errors == []
    assert report.failures == {}, "\n\n".join(
        [f"{len(report.failures)} failing: {sorted(report.failures)}", *report.failures.values()]
    )
    documented = {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
        if method in ("get", "put", "post", "delete", "patch")
    }
    assert documented <= report.operations
    assert {"examples", "coverage", "fuzzing", "stateful"} <= report.phases
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "positive_data_acceptance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
        "ignored_auth",
        "use_after_free",
        "ensure_resource_availability",
    } <= report.checks


# What schemathesis found, kept as plain regressions.


async def test_a_verified_stripe_event_with_a_nul_is_200_and_nothing_recorded(
    http: httpx.AsyncClient, services: Services
) -> None:
    event_id = "evt_nul_\u0000_1"
    body = json.dumps({"id": event_id, "type": "customer.created", "data": {"object": {"id": "x"}}})
    head = await services.store.head_position()

    response = await http.post(
        "/v1/stripe/webhook", content=body, headers={"Stripe-Signature": signature(body)}
    )

    # Was 500 (PostgreSQL text cannot hold a NUL), then 400, which Stripe retries for days.
    assert response.status_code == 200
    assert response.json() == {"received": True}
    assert await services.store.head_position() == head


async def test_page_cursors_that_are_not_ascii_digits_or_too_large_are_422(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    for query in ("limit=%C2%B2", "after=%D9%A3", f"after={2**63}", f"after={'9' * 5000}"):
        response = await http.get(f"/v1/credits/transactions?{query}", headers=customer.headers)

        # Before: "²" and 5,000 digits failed int() (500), "٣" was read as 3, 2**63 overflowed
        # the bigint parameter (500).
        assert response.status_code == 422, query
