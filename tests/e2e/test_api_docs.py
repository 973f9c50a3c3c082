"""The API's documentation: a page the service serves whole, a valid OpenAPI document, and
the HTTP answers the document cannot express (``Allow``, ``WWW-Authenticate``)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
import stripe
from litestar import Litestar
from litestar.routes import HTTPRoute
from openapi_spec_validator import validate

from api.docs_ui import ASSETS, SWAGGER_UI
from api.routes.stripe_webhook import EXAMPLE_EVENT, EXAMPLE_SECRET
from tests.e2e.conftest import Customer
from tests.support.browser import chromium

if TYPE_CHECKING:
    from playwright.async_api import Browser, Route

TIMEOUT_MS = 20_000
DOCUMENTED = ("get", "put", "post", "delete", "patch")
ASSETS_DIR = SWAGGER_UI.name  # swagger-ui-<version>
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def document(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_the_docs_page_shows_the_spend_operation_with_only_loopback_reachable(
    browser: Browser, http: httpx.AsyncClient
) -> None:
    from playwright.async_api import expect

    refused: list[str] = []
    loaded: list[str] = []

    async def loopback_only(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            loaded.append(url)
            await route.continue_()
        else:  # what a machine without internet access would fail to fetch
            refused.append(url)
            await route.abort("internetdisconnected")

    context = await browser.new_context()
    try:
        await context.route("**/*", loopback_only)
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)

        await page.goto(f"{http.base_url}".rstrip("/") + "/schema")

        spend = page.locator("#operations-internal-spendCredits")
        await expect(spend).to_be_visible()
        await expect(spend).to_contain_text("spendCredits")
        await expect(spend).to_contain_text("/v1/accounts/{account_id}/spend")
        await expect(page.locator("#openapi-json")).to_have_attribute(
            "href", "/schema/openapi.json"
        )
        await spend.locator(".opblock-summary").click()  # Swagger UI's own rendering, not our HTML
        await expect(spend.locator(".opblock-body")).to_contain_text("Idempotency-Key")
    finally:
        await context.close()

    assert refused == []
    assert any(url.endswith("/schema/openapi.json") for url in loaded)
    assert any(url.endswith("/swagger-ui-bundle.js") for url in loaded)


async def test_the_docs_pages_and_their_files_come_from_the_service(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/schema", headers={"Accept": BROWSER})
    swagger = await http.get("/schema/swagger")

    assert page.status_code == swagger.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == swagger.text
    assert 'href="/schema/openapi.json"' in page.text
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert referenced, page.text
    assert all(url.startswith("/schema/") for url in referenced), referenced
    for url in referenced:
        fetched = await http.get(url)
        assert fetched.status_code == 200, url
        assert fetched.content, url
    for name, media_type in ASSETS.items():
        fetched = await http.get(f"/schema/assets/{ASSETS_DIR}/{name}")
        assert fetched.headers["content-type"].split(";")[0] == media_type, name
        assert "immutable" in fetched.headers["cache-control"]
    assert (await http.get(f"/schema/assets/{ASSETS_DIR}/index.html")).status_code == 404
    for former in ("/schema/redoc", "/schema/elements", "/schema/rapidoc"):
        moved = await http.get(former)
        assert (moved.status_code, moved.headers["location"]) == (302, "/schema"), former
    assert (await http.get("/schema/openapi.yaml")).status_code == 200


@pytest.mark.parametrize("path", ["/schema/nope", "/schema/oauth2-redirect.html"])
@pytest.mark.parametrize("accept", [BROWSER, "application/json"])
async def test_a_docs_page_that_does_not_exist_is_the_contracts_json_404(
    http: httpx.AsyncClient, path: str, accept: str
) -> None:
    """Litestar answers a path under ``/schema`` that no page has with an HTML page of its
    own; every other path nothing serves is answered ``{"message": "Not found."}``."""
    answer = await http.get(path, headers={"Accept": accept})

    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"message": "Not found."}


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
async def test_schema_answers_a_client_not_asking_for_html_with_the_document(
    http: httpx.AsyncClient, document: dict[str, Any], accept: str | None
) -> None:
    """The contract's ``GET /schema``: "OpenAPI document". A browser asks for HTML and gets
    the page showing it; a script or curl gets the document itself."""
    headers = {"Accept": accept} if accept else {}
    if accept is None:
        http.headers.pop("Accept", None)

    response = await http.get("/schema", headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    assert response.headers["vary"] == "Accept"
    assert response.json() == document
    page = await http.get("/schema", headers={"Accept": BROWSER})
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["vary"] == "Accept"


async def test_the_root_points_to_the_docs_and_the_document(http: httpx.AsyncClient) -> None:
    response = await http.get("/")

    assert response.status_code == 200
    assert response.json() == {
        "service": "credit-ledger",
        "docs": "/schema",
        "openapi": "/schema/openapi.json",
    }
    assert response.headers["link"] == (
        '</schema/openapi.json>; rel="service-desc", </schema>; rel="service-doc"'
    )
    for path in response.json()["docs"], response.json()["openapi"]:
        assert (await http.get(path)).status_code == 200


def test_the_openapi_document_is_valid_openapi(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")

    validate(document)  # raises on any departure from the OpenAPI 3.1 schema and its rules


def test_every_operation_says_what_it_does(document: dict[str, Any]) -> None:
    # Its summary is its name (SpendCredits); the page shows the route's docstring beside it.
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method in (*DOCUMENTED, "head"):
                assert operation.get("description", "").strip(), (method, path)
    spend = document["paths"]["/v1/accounts/{account_id}/spend"]["post"]
    assert spend["description"].startswith("Spend credits: allowance, then grants, then top-ups")


EDGE_HEADERS = (
    "Ledger-Position",
    "Ledger-Read-From",
    "Ledger-Views-Behind",
    "X-Request-Id",
    "Idempotent-Replayed",
)
"""What api/edge.py adds to answers, which the document must show where they come."""


async def test_the_edge_headers_are_documented_where_answers_carry_them(
    http: httpx.AsyncClient,
    document: dict[str, Any],
    writer_headers: dict[str, str],
    customer: Customer,
) -> None:
    spend_path = f"/v1/accounts/{customer.account_id}/spend"
    spend = "/v1/accounts/{account_id}/spend"
    events = "/v1/accounts/{account_id}/events"
    transactions = "/v1/credits/transactions"
    keyed = {**writer_headers, "Idempotency-Key": "docs-headers-" + customer.account_id}
    spent = await http.post(spend_path, json={"amount": 1, "reason": "docs"}, headers=keyed)
    position = spent.headers["Ledger-Position"]
    calls = [
        ("post", spend, spend_path, keyed, {"amount": 1, "reason": "docs"}),  # replayed
        ("get", "/v1/credits", "/v1/credits", customer.headers, None),
        # No projector runs here: a list read at the spend's position is marked behind.
        ("get", transactions, transactions, customer.headers, None),
        ("get", events, events.format(account_id=customer.account_id), customer.headers, None),
        ("get", "/v1/credits", "/v1/credits", {}, None),  # 401
        ("get", "/healthz", "/healthz", {}, None),
    ]
    carried: set[str] = {h for h in EDGE_HEADERS if h in spent.headers}
    for method, template, path, headers, body in calls:
        sent = {**headers, "Ledger-Min-Position": position, "X-Request-Id": "docs-1"}
        if template in (spend, "/healthz"):  # reads no views
            sent.pop("Ledger-Min-Position")
        answer = await http.request(method, path, json=body, headers=sent)
        operation = document["paths"][template][method]
        response = operation["responses"][str(answer.status_code)]
        answered = {h for h in EDGE_HEADERS if h in answer.headers}
        assert answered <= set(response.get("headers", {})), (method, path, answer.status_code)
        taken = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "header"}
        assert {h for h in sent if h.startswith(("Ledger-", "X-"))} <= taken, (method, path)
        carried |= answered
    assert answer.headers["X-Request-Id"] == "docs-1"
    assert carried == set(EDGE_HEADERS)  # each seen on a real answer
    assert "Ledger-Position" in document["paths"][spend]["post"]["responses"]["200"]["headers"]


def test_ledger_min_position_is_documented_on_the_reads_that_answer_where_they_read(
    document: dict[str, Any],
) -> None:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method not in DOCUMENTED:
                continue
            taken = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "header"}
            ok = operation["responses"].get("200", {}).get("headers", {})
            assert "X-Request-Id" in taken, (method, path)
            assert ("Ledger-Min-Position" in taken) == ("Ledger-Read-From" in ok), (method, path)
            for status, response in operation["responses"].items():
                assert "X-Request-Id" in response.get("headers", {}), (method, path, status)
    reads = document["paths"]["/v1/credits"]["get"]
    (min_position,) = [p for p in reads["parameters"] if p["name"] == "Ledger-Min-Position"]
    assert min_position["schema"] == {"type": "integer", "minimum": 0, "maximum": 10**19 - 1}
    assert "(up to 19 digits)" in min_position["description"]


def test_the_stripe_signature_example_verifies_against_the_example_event(
    document: dict[str, Any],
) -> None:
    operation = document["paths"]["/v1/stripe/webhook"]["post"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "Stripe-Signature"]
    (header,) = [example["value"] for example in parameter["examples"].values()]
    (body,) = operation["requestBody"]["content"]["application/json"]["schema"]["examples"]

    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header), header
    assert body == EXAMPLE_EVENT
    # As the description says: the example event as compact JSON, the secret whsec_example.
    payload = msgspec.json.encode(body).decode()
    assert payload == json.dumps(body, separators=(",", ":"))
    assert stripe.WebhookSignature.verify_header(payload, header, EXAMPLE_SECRET, tolerance=None)


def test_integers_in_request_bodies_say_that_only_json_integers_are_taken(
    document: dict[str, Any],
) -> None:
    noted = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            properties = content.get("application/json", {}).get("schema", {}).get("properties", {})
            for name, prop in properties.items():
                if any(kind.get("type") == "integer" for kind in [prop, *prop.get("anyOf", [])]):
                    assert "`1517.0`" in prop.get("description", ""), (path, method, name)
                    noted.add(name)
            if properties.get("amount", {}).get("type") == "integer":
                refusals = operation["responses"]["422"]["content"]["application/json"]
                assert {
                    "message": "The amount field must be an integer.",
                    "errors": {"amount": ["The amount field must be an integer."]},
                } in [example["value"] for example in refusals["examples"].values()], path
    assert {"amount", "credits", "monthly_allowance", "priority", "threshold"} <= noted


async def test_an_undeclared_method_is_405_naming_the_methods_of_the_path(
    http: httpx.AsyncClient, document: dict[str, Any], writer_headers: dict[str, str]
) -> None:
    for path, operations in document["paths"].items():
        declared = {method.upper() for method in operations if method in DOCUMENTED}
        url = path.replace("{account_id}", "acct_x").replace("{", "").replace("}", "")

        response = await http.request("TRACE", url, headers=writer_headers)

        assert response.status_code == 405, (path, response.text)
        assert response.json() == {"message": "Method not allowed."}
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed - {"OPTIONS", "HEAD"} == declared, (path, allowed)


async def test_options_lists_every_method_of_each_path_without_a_token(
    http: httpx.AsyncClient, document: dict[str, Any], ledger_app: Litestar
) -> None:
    for path, operations in document["paths"].items():
        declared = {method.upper() for method in operations if method in DOCUMENTED}
        url = path.replace("{account_id}", "acct_x").replace("{", "").replace("}", "")

        response = await http.options(url)

        assert response.status_code == 204, (path, response.text)
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed - {"OPTIONS", "HEAD"} == declared, (path, allowed)
    # The guards let OPTIONS through because only Litestar's own handler answers it.
    for route in ledger_app.routes:
        if isinstance(route, HTTPRoute):
            handler, _ = route.route_handler_map["OPTIONS"]
            assert handler.handler_name == "options_handler", route.path


async def test_a_401_names_the_bearer_scheme_and_keeps_the_contract_body(
    http: httpx.AsyncClient,
) -> None:
    for headers in ({}, {"Authorization": "Bearer ldg_unknown_token"}, {"Authorization": "x"}):
        response = await http.get("/v1/credits", headers=headers)

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"message": "Unauthenticated."}


async def test_a_webhook_delivery_without_a_body_is_400_not_422(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/stripe/webhook", headers={"Stripe-Signature": "t=1,v1=ab"})

    assert response.status_code == 400
    assert response.json() == {"message": "Invalid Stripe webhook: missing body."}


async def test_the_documented_404_of_removing_a_webhook_endpoint_is_the_one_it_answers(
    http: httpx.AsyncClient, document: dict[str, Any], writer_headers: dict[str, str]
) -> None:
    """An unknown endpoint is answered ``Not found.``: the document said "No such account."
    with an account's message, the one 404 every route listed."""
    path = document["paths"]["/v1/webhook-endpoints/{endpoint_id}"]
    documented = path["delete"]["responses"]["404"]
    [example] = documented["content"]["application/json"]["examples"].values()

    answered = await http.delete("/v1/webhook-endpoints/whe_nobody", headers=writer_headers)

    assert answered.status_code == 404
    assert answered.json() == example["value"]
    assert "account" not in documented["description"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/accounts/{account_id}/holds/{hold_id}/capture", {"amount": 1}),
        ("post", "/v1/accounts/{account_id}/holds/{hold_id}/release", None),
        ("get", "/v1/accounts/{account_id}/holds/{hold_id}", None),
        ("post", "/v1/accounts/{account_id}/grants/{grant_id}/void", {}),
    ],
    ids=["capture", "release", "get hold", "void grant"],
)
async def test_the_documented_404s_of_a_hold_or_grant_route_are_the_ones_it_answers(
    http: httpx.AsyncClient,
    document: dict[str, Any],
    writer_headers: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    """No such hold (grant) answers "Hold not found." ("Grant not found."): the document
    listed only the account's 404, "Account not found.", for these routes."""
    documented = document["paths"][path][method]["responses"]["404"]
    examples = [e["value"] for e in documented["content"]["application/json"]["examples"].values()]
    opened = await http.post(
        "/v1/accounts",
        json={"account_id": f"acct_docs_{uuid.uuid4().hex[:12]}", "monthly_allowance": 10},
        headers=writer_headers,
    )
    assert opened.status_code == 201, opened.text
    answered = []
    for account_id in (opened.json()["account_id"], f"acct_none_{uuid.uuid4().hex[:12]}"):
        url = path.format(account_id=account_id, hold_id="hold_none", grant_id="grant_none")
        response = await http.request(method.upper(), url, json=body, headers=writer_headers)
        assert response.status_code == 404, response.text
        answered.append(response.json())

    assert sorted(examples, key=str) == sorted(answered, key=str)
