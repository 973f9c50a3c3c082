"""Where /metrics may be read: on a port of its own (METRICS_PORT), or with a token (METRICS_TOKEN).

Real HTTP: the app served by uvicorn on two sockets, as ``ledger serve`` does with
METRICS_PORT set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.settings import Settings
from tests.support.servers import bind_free_port, serving


def settings_for(database_url: str, data_dir: Path, **metrics: object) -> Settings:
    return Settings(
        database_url=database_url,
        stripe_secret_key="sk_test_metrics",
        stripe_api_base="http://127.0.0.1:9",
        stripe_webhook_secret="whsec_metrics",
        data_dir=data_dir,
        **metrics,  # type: ignore[arg-type]
    )


@pytest.fixture
async def two_ports(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """The API's base URL and the metrics port's, one app behind both."""
    api, metrics = bind_free_port(), bind_free_port()
    metrics_port = metrics.getsockname()[1]
    app = create_app(settings_for(database_url, tmp_path, metrics_port=metrics_port))
    async with serving(app, api, metrics) as base_url:
        yield base_url, f"http://127.0.0.1:{metrics_port}"


async def test_with_a_metrics_port_the_page_is_there_and_only_there(
    two_ports: tuple[str, str],
) -> None:
    api, metrics = two_ports
    async with httpx.AsyncClient(timeout=30) as http:
        on_api = await http.get(f"{api}/metrics")
        on_its_port = await http.get(f"{metrics}/metrics")
        api_routes_on_metrics_port = [
            await http.get(f"{metrics}/healthz"),
            await http.get(f"{metrics}/v1/credits"),
            await http.get(f"{metrics}/schema/openapi.json"),
        ]
        healthz = await http.get(f"{api}/healthz")

    assert on_api.status_code == 404
    assert on_api.json() == {"message": "Not found."}
    assert on_its_port.status_code == 200
    assert on_its_port.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE ledger_http_requests_total counter" in on_its_port.text
    assert [r.status_code for r in api_routes_on_metrics_port] == [404, 404, 404]
    assert healthz.status_code == 200


async def test_with_a_metrics_port_no_other_method_or_port_says_a_page_is_there(
    two_ports: tuple[str, str],
) -> None:
    """The metrics port answers /metrics and nothing else, yet a GET of a POST-only route
    there was 405 with that route's methods in ``Allow`` (so a path the port does not serve
    was told to exist), and an OPTIONS of /metrics on the API's port was 204 offering the
    GET that is 404 there. Both are 404 now, as every other path they do not serve."""
    api, metrics = two_ports
    async with httpx.AsyncClient(timeout=30) as http:
        other_method_on_metrics_port = [
            await http.get(f"{metrics}/v1/accounts/acct_1/holds"),
            await http.post(f"{metrics}/healthz"),
            await http.delete(f"{metrics}/metrics"),
        ]
        options_on_api = await http.options(f"{api}/metrics")
        options_on_its_port = await http.options(f"{metrics}/metrics")
        other_method_on_api = await http.post(f"{api}/healthz")

    for answer in other_method_on_metrics_port[:2]:
        assert answer.status_code == 404, answer.text
        assert answer.json() == {"message": "Not found."}
        assert "allow" not in answer.headers
    # /metrics itself is there on its port: another method is 405 as on any route.
    assert other_method_on_metrics_port[2].status_code == 405
    assert options_on_api.status_code == 404
    assert options_on_api.json() == {"message": "Not found."}
    assert options_on_its_port.status_code == 204
    assert other_method_on_api.status_code == 405
    assert other_method_on_api.headers["allow"]


async def test_with_a_metrics_token_the_page_needs_it(database_url: str, tmp_path: Path) -> None:
    app = create_app(settings_for(database_url, tmp_path, metrics_token="scrape-s3cret"))
    async with AsyncTestClient(app) as client:
        without = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer scrape-s3cre"})
        other_scheme = await client.get("/metrics", headers={"Authorization": "Basic c2NyYXBl"})
        right = await client.get("/metrics", headers={"Authorization": "Bearer scrape-s3cret"})

    for refused in (without, wrong, other_scheme):
        assert refused.status_code == 401
        assert refused.json() == {"message": "Unauthenticated."}
    assert right.status_code == 200
    assert "ledger_store_head_position" in right.text


MULTIPROCESS_WORKER = """
from api.metrics import observe_request, webhook_outcomes
from ledger.store import stats

observe_request("/v1/credits", "GET", 200, 0.02)
webhook_outcomes["applied"].inc()
stats.count_appended("ledger.domain.events:CreditsSpent")
"""

MULTIPROCESS_SCRAPE = """
import sys
from api.metrics import exposition

sys.stdout.write(exposition().decode())
"""


def test_several_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def python(code: str) -> str:
        done = subprocess.run(  # noqa: S603 (this interpreter, the test's own code)
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    python(MULTIPROCESS_WORKER)
    python(MULTIPROCESS_WORKER)
    page = python(MULTIPROCESS_SCRAPE)  # a third process answers the scrape

    lines = page.splitlines()
    assert 'ledger_http_requests_total{method="GET",status="200"} 2.0' in lines
    assert 'ledger_stripe_webhooks_total{outcome="applied"} 2.0' in lines
    assert 'ledger_events_appended_total{type="CreditsSpent"} 2.0' in lines
    assert (
        'ledger_http_request_duration_seconds_count{method="GET",route="/v1/credits",status="2xx"} 2.0'
        in lines
    )
    assert "# TYPE ledger_process_start_time_seconds gauge" in lines
    assert not any("_created" in line or "pid=" in line for line in lines)
