"""/metrics moves under traffic: requests per route, events per type, webhooks, conflicts."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from api.access.tokens import Scope
from api.log_context import ContextFilter
from api.services import Services
from ledger.bootstrap import build_ledger
from ledger.commands import SpendCredits
from ledger.notifications.endpoints import EndpointRegistry
from ledger.notifications.outbox import NotRetryable, list_deliveries, retry_now
from stripe_standin import RunningStandin
from tests.conftest import fresh_database, unique
from tests.e2e.conftest import Customer, served_api
from tests.support.servers import bind_free_port
from tests.support.stripe_events import event_body, new_event_id, signature

_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? '
    r"(?P<value>-?[0-9.e+-]+|\+Inf|NaN)$"
)
METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "operations-metrics.md"
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def canonical(key: str) -> str:
    """A sample's name and labels, labels sorted: the text format gives them in any order."""
    name, _, labels = key.partition("{")
    if not labels:
        return name
    pairs = sorted(_LABEL.findall(labels))
    return name + "{" + ",".join(f'{label}="{value}"' for label, value in pairs) + "}"


class Samples(dict[str, float]):
    """Samples keyed by ``canonical`` keys; looked up with labels in any order."""

    def __getitem__(self, key: str) -> float:
        return super().__getitem__(canonical(key))

    def get(self, key: str, default: float | None = None) -> float | None:  # type: ignore[override]
        return super().get(canonical(key), default)


async def scrape(http: httpx.AsyncClient, **kwargs: Any) -> Samples:
    """Every sample of the page, keyed by its line up to the value; the page must parse."""
    response = await http.get("/metrics", **kwargs)
    assert response.status_code == 200
    # Exactly prometheus-client's: a parameter named twice fails Prometheus 3's scrape.
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = Samples()
    for line in response.text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        parsed = _SAMPLE.match(line)
        assert parsed, f"not Prometheus text: {line!r}"
        key = canonical(line.rsplit(" ", 1)[0])
        assert key not in samples, f"a sample twice: {line!r}"
        samples[key] = float(parsed["value"])
    return samples


def moved(before: Samples, after: Samples, key: str) -> float:
    return (after.get(key) or 0.0) - (before.get(key) or 0.0)


async def test_metrics_count_requests_by_route_template_and_time_them(
    http: httpx.AsyncClient, customer: Customer, writer_headers: dict[str, str]
) -> None:
    before = await scrape(http)

    for _ in range(3):
        assert (await http.get("/v1/credits", headers=customer.headers)).status_code == 200
    refused = await http.post(
        f"/v1/accounts/{customer.account_id}/spend",
        headers={**writer_headers, "Idempotency-Key": unique("key")},
        json={"amount": 10**9},
    )
    after = await scrape(http)

    assert refused.status_code == 402
    credits = 'route="/v1/credits",method="GET",status="2xx"'
    assert moved(before, after, f"ledger_http_request_duration_seconds_count{{{credits}}}") == 3
    assert (
        moved(before, after, f'ledger_http_request_duration_seconds_bucket{{{credits},le="+Inf"}}')
        == 3
    )
    assert after[f"ledger_http_request_duration_seconds_sum{{{credits}}}"] > 0
    # The route's template, never the raw path with its account id.
    spend = 'route="/v1/accounts/{account_id}/spend",method="POST",status="4xx"'
    assert moved(before, after, f"ledger_http_request_duration_seconds_count{{{spend}}}") == 1
    assert not any(customer.account_id in key for key in after)
    assert moved(before, after, 'ledger_http_requests_total{method="POST",status="402"}') == 1


async def test_requests_that_match_no_route_are_counted_logged_and_carry_a_request_id(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Litestar answers a path it does not know (404) or a method a path does not take
    # (405) before the app's middleware: the edge wraps the whole app, so these are seen.
    caplog.set_level(logging.INFO, logger="ledger.access")
    before = await scrape(http)

    missing = await http.get("/v1/no-such-thing", headers={"X-Request-Id": "req-missing-1"})
    wrong_method = await http.delete("/v1/credits")
    after = await scrape(http)

    assert missing.status_code == 404
    assert missing.headers["x-request-id"] == "req-missing-1"
    assert wrong_method.status_code == 405
    assert len(wrong_method.headers["x-request-id"]) == 32
    unmatched = 'route="unmatched",method="{}",status="4xx"'
    assert (
        moved(
            before,
            after,
            f"ledger_http_request_duration_seconds_count{{{unmatched.format('GET')}}}",
        )
        == 1
    )
    assert (
        moved(
            before,
            after,
            f"ledger_http_request_duration_seconds_count{{{unmatched.format('DELETE')}}}",
        )
        == 1
    )
    assert moved(before, after, 'ledger_http_requests_total{method="GET",status="404"}') == 1
    assert moved(before, after, 'ledger_http_requests_total{method="DELETE",status="405"}') == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "ledger.access"]
    assert "GET unmatched 404" in " ".join(lines)
    assert "DELETE unmatched 405" in " ".join(lines)


async def test_metrics_count_appended_events_by_type_and_conflict_retries(
    http: httpx.AsyncClient, services: Services, customer: Customer, writer_headers: dict[str, str]
) -> None:
    def spend_over_http(amount: int) -> httpx.Request:
        return http.build_request(
            "POST",
            f"/v1/accounts/{customer.account_id}/spend",
            headers={**writer_headers, "Idempotency-Key": unique("key")},
            json={"amount": amount},
        )

    before = await scrape(http)
    assert (
        await http.send(spend_over_http(5))
    ).status_code == 200  # the API now holds it in memory
    # Another writer (a second repository, as another API process would be) appends meanwhile,
    # so the API's next spend decides on a stale version, conflicts, and is decided again.
    elsewhere = build_ledger(services.pool)
    try:
        await elsewhere.execute(
            SpendCredits(
                account_id=customer.account_id, amount=7, reason="", idempotency_key=unique("k")
            )
        )
    finally:
        await elsewhere.uow.committer.stop()
    assert (await http.send(spend_over_http(11))).status_code == 200
    after = await scrape(http)

    assert moved(before, after, 'ledger_events_appended_total{type="CreditsSpent"}') == 3
    assert moved(before, after, 'ledger_concurrency_conflicts_total{outcome="retried"}') == 1
    assert moved(before, after, 'ledger_concurrency_conflicts_total{outcome="gave_up"}') == 0
    assert moved(before, after, "ledger_group_commit_commands_total") >= 2
    assert after['ledger_db_pool_connections{state="idle"}'] >= 0
    assert after["ledger_db_pool_max_connections"] > 0
    # Reads hold at most their share of the pool, the rest kept for commands.
    reads_may_hold = after["ledger_db_pool_read_max_connections"]
    assert 0 < reads_may_hold < after["ledger_db_pool_max_connections"]
    assert 0 <= after["ledger_db_pool_read_connections"] <= reads_may_hold


async def test_metrics_count_webhook_outcomes(http: httpx.AsyncClient) -> None:
    ignored = event_body("customer.created", {"id": "cus_m1", "object": "customer"}, new_event_id())
    before = await scrape(http)

    for body, header in [
        (ignored, signature(ignored)),
        (ignored, signature(ignored)),  # Stripe delivers again
        (ignored, "t=1,v1=00"),
        ("[]", signature("[]")),
    ]:
        await http.post("/v1/stripe/webhook", content=body, headers={"Stripe-Signature": header})
    after = await scrape(http)

    for outcome, count in [
        ("ignored", 1),
        ("duplicate", 1),
        ("bad_signature", 1),
        ("malformed", 1),
        ("applied", 0),
    ]:
        assert moved(before, after, f'ledger_stripe_webhooks_total{{outcome="{outcome}"}}') == count


async def test_metrics_show_each_views_lag_in_events_and_seconds(
    http: httpx.AsyncClient, services: Services, customer: Customer
) -> None:
    views = [r["name"] for r in await services.pool.fetch("SELECT name FROM projection_positions")]

    samples = await scrape(http)

    head = samples["ledger_store_head_position"]
    assert head > 0
    for view in views:
        position = samples[f'ledger_projection_position{{view="{view}"}}']
        assert samples[f'ledger_projection_lag_positions{{view="{view}"}}'] == max(
            head - position, 0
        )
        assert samples[f'ledger_projection_lag_seconds{{view="{view}"}}'] >= 0


async def test_the_page_has_exactly_the_metrics_the_operations_doc_lists(
    http: httpx.AsyncClient,
) -> None:
    doc = await asyncio.to_thread(METRICS_DOC.read_text)
    listed = dict(re.findall(r"^\| `(ledger_[a-z_]+)` \| (counter|gauge|histogram) \|", doc, re.M))

    page = (await http.get("/metrics")).text
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", page, re.M))

    assert declared == listed
    assert not any(line.split("{")[0].endswith("_created") for line in page.splitlines())


async def test_the_page_is_answered_while_the_database_refuses_connections(
    postgres_server_url: str, standin: RunningStandin
) -> None:
    """The page read the database before answering and failed with it (503): while
    PostgreSQL was away Prometheus saw the target down and none of the 503s it answered."""
    async with fresh_database(postgres_server_url) as url, served_api(url, standin) as app:
        name = urlsplit(url).path[1:]
        admin = await asyncpg.connect(postgres_server_url)
        try:
            async with httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http:
                before = await scrape(http)
                assert before["ledger_database_up"] == 1
                await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name,
                )
                refused = [(await http.get("/readyz")).status_code for _ in range(2)]
                away = await scrape(http)
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            await admin.close()

    assert refused == [503, 503]
    assert away["ledger_database_up"] == 0
    # The counters are the test process's, which other tests' apps count in too.
    answered_503 = 'ledger_http_requests_total{method="GET",status="503"}'
    assert away[answered_503] - (before.get(answered_503) or 0) == 2


async def test_the_page_shows_the_webhook_outbox_and_overdue_expiries(
    postgres_server_url: str, standin: RunningStandin
) -> None:
    """A receiver down (the outbox growing) and a sweeper not sweeping (expiries past due)
    moved no metric: only log lines said so, one attempt or sweep at a time."""
    async with (
        fresh_database(postgres_server_url) as url,
        served_api(url, standin) as app,
        httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http,
    ):
        quiet = await scrape(http)
        admin = await asyncpg.connect(url)
        try:
            # The views' and the outbox's rows as the projector writes them; a hold of a
            # stream with no balances row is one the sweeper never lists.
            await admin.execute(
                """INSERT INTO webhook_endpoints (endpoint_id, url, event_types, secret)
                   VALUES ('we_down', 'http://127.0.0.1:9/', '{credits.spent}', 's');
                   INSERT INTO webhook_deliveries (notification_id, event_type, endpoint_id,
                       account_id, position, payload, created_at, next_attempt_at)
                   SELECT 'evt_' || n, 'credits.spent', 'we_down', 'acct_x', n, '{}',
                          now() - interval '1 hour', now() + interval '1 hour'
                   FROM generate_series(1, 3) n;
                   INSERT INTO webhook_deliveries (notification_id, event_type, endpoint_id,
                       account_id, position, payload, status, attempts)
                   VALUES ('evt_gave_up', 'credits.spent', 'we_down', 'acct_x', 4, '{}',
                           'failed', 12);
                   INSERT INTO holds (hold_id, stream_id, amount, status, reason,
                                      expires_at, placed_at, position)
                   VALUES ('hold_late', gen_random_uuid(), 5, 'held', 'r',
                           now() - interval '10 minutes', now() - interval '1 hour', 1);
                   INSERT INTO grants (grant_id, stream_id, amount, remaining, priority,
                                       expires_at, reason, status, granted_at, position)
                   VALUES ('grant_later', gen_random_uuid(), 5, 5, 50,
                           now() + interval '1 day', 'r', 'active', now(), 1)"""
            )
        finally:
            await admin.close()
        behind = await scrape(http)

    assert quiet["ledger_webhook_deliveries_pending"] == 0
    assert quiet["ledger_webhook_oldest_pending_seconds"] == 0
    assert quiet['ledger_expiry_overdue_seconds{kind="hold"}'] == 0
    assert behind["ledger_webhook_deliveries_pending"] == 3
    assert behind["ledger_webhook_oldest_pending_seconds"] >= 3600
    assert quiet["ledger_webhook_deliveries_failed"] == 0
    assert behind["ledger_webhook_deliveries_failed"] == 1  # the pending alert no longer sees it
    assert behind['ledger_expiry_overdue_seconds{kind="hold"}'] >= 600
    assert behind['ledger_expiry_overdue_seconds{kind="grant"}'] == 0  # due tomorrow


async def test_failed_deliveries_of_a_disabled_endpoint_are_not_counted_as_given_up(
    postgres_server_url: str, standin: RunningStandin
) -> None:
    """Disabling an endpoint cancels its pending deliveries but leaves its failed ones, which
    can then never be retried (retry refuses a disabled endpoint's) nor pruned by the
    documented retention (delivered and cancelled only): counted, they held the "Webhooks
    given up" alert on for good after a receiver was retired."""
    async with (
        fresh_database(postgres_server_url) as url,
        served_api(url, standin) as app,
        httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http,
    ):
        pool = app.state.services.pool
        registry = EndpointRegistry(pool, allow_private=True)
        retired, live = [
            await registry.create(f"http://127.0.0.1:9/{name}", ["credits.spent"])
            for name in ("retired", "live")
        ]
        await pool.execute(
            """INSERT INTO webhook_deliveries (notification_id, event_type, endpoint_id,
                   account_id, position, payload, status, attempts)
               SELECT 'evt_' || e, 'credits.spent', e, 'acct_x', 1, '{}', 'failed', 12
               FROM unnest($1::text[]) e""",
            [retired.id, live.id],
        )
        both = await scrape(http)
        await registry.disable(retired.id)
        (gone,) = await list_deliveries(pool, endpoint_id=retired.id)
        with pytest.raises(NotRetryable):
            await retry_now(pool, gone.delivery_id)
        after = await scrape(http)

    assert both["ledger_webhook_deliveries_failed"] == 2
    assert gone.status == "failed"  # kept as it ended
    assert after["ledger_webhook_deliveries_failed"] == 1  # the live endpoint's


async def test_a_write_refused_503_for_a_busy_account_is_logged_naming_the_account(
    http: httpx.AsyncClient,
    services: Services,
    customer: Customer,
    writer_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its only line was the access line, which has the route's template: the on-call
    engineer could not tell which account was hot."""
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.WARNING, logger="api.errors")
    locks = services.ledger.uow.locks
    monkeypatch.setattr(locks, "wait", 0.05)
    before = await scrape(http)
    async with locks.hold(customer.account_id):  # the commands before it on the account
        refused = await http.post(
            f"/v1/accounts/{customer.account_id}/spend",
            headers={**writer_headers, "Idempotency-Key": unique("key")},
            json={"amount": 1},
        )
    after = await scrape(http)

    assert refused.status_code == 503
    assert moved(before, after, 'ledger_concurrency_conflicts_total{outcome="gave_up"}') == 1
    [line] = [r for r in caplog.records if "busy" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert f"{customer.account_id} stayed busy" in line.getMessage()
    assert line.request_id == refused.headers["x-request-id"]  # type: ignore[attr-defined]


async def test_view_reads_are_counted_by_the_database_that_answered(
    database_url: str, standin: RunningStandin
) -> None:
    """A standby failing or lagging sent every read to the primary with no metric moving:
    only a warning line when it started."""
    unreachable = bind_free_port()  # bound, never listening: connections are refused
    standby_down = f"postgresql://postgres@127.0.0.1:{unreachable.getsockname()[1]}/nowhere"
    try:
        for read_url, answered_by in ((database_url, "standby"), (standby_down, "primary")):
            async with (
                served_api(database_url, standin, changes={"database_read_url": read_url}) as app,
                httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http,
            ):
                services: Services = app.state.services
                writer = await services.tokens.issue(Scope.LEDGER_WRITE, name="reads")
                headers = {"Authorization": f"Bearer {writer.secret}"}
                before = await scrape(http)
                read = await http.get("/v1/accounts/acct_no_such/credits", headers=headers)
                after = await scrape(http)
            assert read.headers["ledger-read-from"] == answered_by
            key = f'ledger_view_reads_total{{source="{answered_by}"}}'
            assert moved(before, after, key) == 1
    finally:
        unreachable.close()


async def test_the_latency_histogram_tells_apart_answers_under_five_milliseconds(
    http: httpx.AsyncClient,
) -> None:
    """Balance reads and spends answer in 1-5 ms on an idle service: with 5 ms as the first
    bucket nine reads in ten fell in it, and their median could not be told."""
    assert (await http.get("/healthz")).status_code == 200
    page = (await http.get("/metrics")).text
    bounds = set(
        re.findall(r'^ledger_http_request_duration_seconds_bucket\{[^}]*\ble="([^"]+)"', page, re.M)
    )

    assert {"0.001", "0.0025", "0.005", "10.0", "+Inf"} <= bounds
