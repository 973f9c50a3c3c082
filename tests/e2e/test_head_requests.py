"""HEAD answers as GET does, without the body (RFC 9110, 9.3.2: a server that answers GET
answers HEAD). Litestar 2 routes HEAD only to handlers declared for it, so every GET route
answered HEAD 405 (a load balancer's or a monitor's check, ``curl -I``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar

from tests.e2e.conftest import Customer


@pytest.fixture
async def in_process(ledger_app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """The app called in this process. httpx drops a HEAD answer's body whatever the app
    sends (as uvicorn does): tests/unit/test_edge_head.py looks at what the edge sends."""
    transport = httpx.ASGITransport(app=ledger_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as client:
        yield client


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v1/credits", "/v1/credits/purchases"])
async def test_head_answers_as_get_without_the_body(
    http: httpx.AsyncClient, in_process: httpx.AsyncClient, customer: Customer, path: str
) -> None:
    got = await http.get(path, headers=customer.headers)
    head = await http.head(path, headers=customer.headers)
    direct = await in_process.head(path, headers=customer.headers)

    assert got.status_code == 200, got.text
    assert head.status_code == 200
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]
    assert direct.status_code == 200
    assert direct.content == b""


async def test_head_needs_the_token_get_needs(in_process: httpx.AsyncClient) -> None:
    answer = await in_process.head("/v1/credits")

    assert answer.status_code == 401
    assert answer.content == b""


async def test_head_on_a_path_without_get_is_405_and_its_methods_list_head_with_get(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    post_only = await http.head("/v1/credits/purchase", headers=customer.headers)
    options = await http.options("/v1/credits")

    assert post_only.status_code == 405
    assert "HEAD" not in post_only.headers["allow"]
    assert {m.strip() for m in options.headers["allow"].split(",")} >= {"GET", "HEAD"}
