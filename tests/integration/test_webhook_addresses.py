"""Webhook receivers must be on public addresses: refused at registration and at every delivery.

Real DNS (the machine's resolver, for ``localhost``), real sockets, a real TLS receiver.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from api.access.tokens import Scope, TokenService
from api.app import create_app
from api.settings import Settings
from ledger.notifications import addresses
from ledger.notifications.addresses import (
    NonPublicAddress,
    UnresolvableHost,
    WebhookTransport,
    check_url,
    why_not_public,
)
from ledger.notifications.dispatcher import PER_ENDPOINT, Dispatcher
from ledger.notifications.endpoints import EndpointRegistry, MalformedURL, PlainTextURL
from ledger.notifications.outbox import list_deliveries
from ledger.notifications.url_form import MAX_URL_LENGTH
from projections.runner import Projector
from tests.conftest import IsolatedDatabase
from tests.integration.test_notifications import act, notifier, open_account, spend, until
from tests.support.certificates import certificate_for_localhost
from tests.support.webhook_receiver import Receiver, webhook_receiver


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata services
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),  # deprecated, still routed where it is configured
        ("0.0.0.0", "unspecified"),  # noqa: S104 (an address to refuse, not to bind)
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "private"),  # reserved, and Python counts it private too
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
    ],
)
def test_non_public_addresses_are_named_for_what_they_are(address: str, kind: str) -> None:
    assert why_not_public(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert why_not_public(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hooks",
        "http://localhost/hooks",  # resolved: 127.0.0.1
        "https://[::1]/hooks",
        "http://[::ffff:10.0.0.1]/",
        "http://10.0.0.7/admin",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_registration_refuses_urls_on_non_public_addresses(
    isolated_db: IsolatedDatabase, url: str
) -> None:
    with pytest.raises(NonPublicAddress):
        await EndpointRegistry(isolated_db.pool).create(url, ["credits.spent"])

    assert await EndpointRegistry(isolated_db.pool).list() == []
    allowed = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        url, ["credits.spent"]
    )
    assert allowed.url == url


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.1:9/hooks", "127.1"),  # glibc reads these three as 127.0.0.1
        ("http://2130706433/hooks", "2130706433"),
        ("http://0x7f.1/hooks", "0x7f.1"),
        ("http://010.0.0.1/hooks", "010.0.0.1"),  # and this one as 8.0.0.1
        ("http://a..b/hooks", "a..b"),
        ("http://-a-/hooks", "-a-"),
    ],
)
async def test_the_registry_refuses_a_host_that_is_no_dns_name_whoever_calls_it(
    isolated_db: IsolatedDatabase, url: str, host: str
) -> None:
    """The host rule lived in the HTTP body's pattern only: the registry itself stored such
    URLs where private addresses are allowed (no lookup), and its callers outside the route
    made endpoints the route refuses."""
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)

    with pytest.raises(MalformedURL, match=f"its host '{re.escape(host)}' is neither"):
        await registry.create(url, ["credits.spent"])

    assert await registry.list() == []


async def test_a_public_address_passes_and_a_name_that_does_not_resolve_is_refused() -> None:
    await check_url("https://8.8.8.8/hooks")  # a literal: no DNS asked

    with pytest.raises(UnresolvableHost):
        await check_url("https://no-such-host.invalid/hooks")


async def _registered(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, *urls: str
) -> list[httpx.Response]:
    """The API's answers to a writer registering each of ``urls`` for ``credits.spent``."""
    settings = Settings(
        database_url=database_url,
        stripe_secret_key="sk_test_addresses",
        stripe_api_base="http://127.0.0.1:9",
        stripe_webhook_secret="whsec_addresses",
        data_dir=tmp_path,
    )
    writer = await TokenService(pool).issue(Scope.LEDGER_WRITE, name="addresses")
    async with AsyncTestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {writer.secret}"}
        return [
            await client.post(
                "/v1/webhook-endpoints",
                json={"url": url, "events": ["credits.spent"]},
                headers=headers,
            )
            for url in urls
        ]


async def test_the_api_answers_422_in_the_contracts_shape(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    refused, unresolved = await _registered(
        database_url,
        pool,
        tmp_path,
        "http://169.254.169.254/latest",
        "https://no-such-host.invalid/x",
    )

    assert refused.status_code == 422
    message = (
        "The url must be on a public address: 169.254.169.254, which is not a public address "
        "(link-local); receivers on private networks need LEDGER_WEBHOOK_ALLOW_PRIVATE=1."
    )
    assert refused.json() == {"message": message, "errors": {"url": [message]}}
    assert unresolved.status_code == 422
    assert unresolved.json()["errors"]["url"][0].startswith(
        "The url's host must resolve to a public address: no-such-host.invalid does not resolve"
    )


async def test_a_url_longer_than_its_bound_is_422_and_one_at_it_is_judged_by_its_address(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """``maxLength`` of the document's url (the schemathesis run leaves it out: see there)."""
    at_the_bound = "http://169.254.169.254/" + "a" * (MAX_URL_LENGTH - 23)
    assert len(at_the_bound) == MAX_URL_LENGTH
    answers = await _registered(database_url, pool, tmp_path, at_the_bound, at_the_bound + "a")

    at, beyond = (answer.json()["errors"]["url"] for answer in answers)
    assert [answer.status_code for answer in answers] == [422, 422]
    assert at[0].startswith("The url must be on a public address: 169.254.169.254")
    assert not beyond[0].startswith("The url must be on a public address"), beyond


@pytest.mark.parametrize(
    ("url", "taken"),
    [
        ("http://8.8.8.8/hooks", False),  # public, in plain text: the balance for all to read
        ("HTTP://8.8.8.8/hooks", False),
        ("https://8.8.8.8/hooks", True),
        ("http://127.0.0.1:9/hooks", True),  # this machine: nothing crosses a network
        ("http://localhost:9/hooks", True),
        ("http://[::1]:9/hooks", True),
        ("http://hooks.localhost:9/hooks", False),  # DNS may answer for it (ledger/urls.py)
    ],
)
async def test_production_takes_plain_http_endpoints_on_this_machine_only(
    isolated_db: IsolatedDatabase, url: str, taken: bool
) -> None:
    production = EndpointRegistry(isolated_db.pool, allow_private=True, https_only=True)
    if taken:
        assert (await production.create(url, ["credits.spent"])).url == url
    else:
        with pytest.raises(PlainTextURL):
            await production.create(url, ["credits.spent"])
        assert await EndpointRegistry(isolated_db.pool).list() == []
    # Development takes any of them.
    development = EndpointRegistry(isolated_db.pool, allow_private=True)
    assert (await development.create(url, ["credits.spent"])).url == url


async def test_production_answers_422_for_a_plain_http_endpoint(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = Settings(
        ledger_env="production",
        database_url=database_url,
        stripe_secret_key="sk_live_addresses",
        page_key="k" * 32,
        stripe_api_base="http://127.0.0.1:9",
        stripe_webhook_secret="whsec_addresses",
        data_dir=tmp_path,
    )
    writer = await TokenService(pool).issue(Scope.LEDGER_WRITE, name="plain text")
    async with AsyncTestClient(create_app(settings)) as client:
        refused = await client.post(
            "/v1/webhook-endpoints",
            json={"url": "http://8.8.8.8/hooks", "events": ["credits.spent"]},
            headers={"Authorization": f"Bearer {writer.secret}"},
        )

    assert refused.status_code == 422
    message = (
        "The url must be https:// in production: a notification carries an account's "
        "balance, which its signature does not hide."
    )
    assert refused.json() == {"message": message, "errors": {"url": [message]}}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as running:
        yield running


async def test_a_delivery_to_an_address_no_longer_public_fails_its_attempt_and_sends_nothing(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    # Registered while its name was public, as it were; now it resolves to loopback.
    url = receiver.url("moved").replace("127.0.0.1", "localhost")
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(url, ["credits.spent"])
    books = isolated_db.ledger()
    account_id = await open_account(books)
    stop = asyncio.Event()
    running = [
        asyncio.create_task(Projector(isolated_db.store, isolated_db.url).run(stop)),
        asyncio.create_task(
            Dispatcher(
                isolated_db.pool, isolated_db.url, schedule=(0.2, 0.2), poll_seconds=0.1
            ).run(stop)
        ),
    ]
    try:
        await act(books, account_id, spend(5))
        await until(lambda: list_deliveries(isolated_db.pool, status="failed"), seconds=15)
    finally:
        stop.set()
        await asyncio.gather(*running)
        await books.uow.committer.stop()

    [delivery] = await list_deliveries(isolated_db.pool)
    assert len(delivery.history) == 3  # every attempt of the schedule was made, and refused
    for attempt in delivery.history:
        assert attempt.status_code is None
        assert attempt.error == (
            "not sent: localhost resolves to 127.0.0.1, which is not a public address (loopback)"
        )
    assert receiver.answered == []  # nothing reached it


async def test_deliveries_connect_to_the_checked_address_and_verify_tls_by_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, certificate, key = certificate_for_localhost(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    server_names: list[str | None] = []
    context.sni_callback = lambda _, server_name, __: server_names.append(server_name)
    requests: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(
                (
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                b"0",
            )
        )
        requests.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # httpx's CA bundle, as operators set it
    loopback_only = WebhookTransport(allowed=lambda address: address.is_loopback)
    public_only = WebhookTransport()
    try:
        async with httpx.AsyncClient(transport=loopback_only, trust_env=False) as client:
            sent = await client.post(f"https://localhost:{port}/hooks", content=b'{"a": 1}')
        async with httpx.AsyncClient(transport=public_only, trust_env=False) as client:
            with pytest.raises(NonPublicAddress, match=r"localhost resolves to 127\.0\.0\.1"):
                await client.post(f"https://localhost:{port}/hooks", content=b"{}")
    finally:
        server.close()
        await server.wait_closed()

    assert sent.status_code == 200
    assert server_names == ["localhost"]  # TLS by the name, the certificate checked for it
    [request] = requests  # the refused one never connected
    assert request.startswith(b"POST /hooks HTTP/1.1\r\n")
    assert f"host: localhost:{port}\r\n".encode() in request.lower()
    assert request.endswith(b'{"a": 1}')


async def test_a_receiver_answering_a_redirect_fails_the_attempt_and_is_not_followed(
    isolated_db: IsolatedDatabase,
) -> None:
    """A redirect would send the notification where the receiver chooses, past the check
    of its registered address (169.254.169.254, 127.0.0.1:5432): never followed, also where
    private receivers are allowed, and the attempt fails with the status."""
    reached: list[bytes] = []

    async def inside(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(await reader.read(1000))
        writer.close()

    target = await asyncio.start_server(inside, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(
                    b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n"
                    b"Location: http://127.0.0.1:%d/internal\r\n\r\n" % target_port
                )
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        f"http://127.0.0.1:{port}/hooks", ["credits.spent"]
    )
    books = isolated_db.ledger()
    account_id = await open_account(books)
    async with target, server, notifier(isolated_db, schedule=(0.1,)):
        await act(books, account_id, spend(5))
        await until(lambda: list_deliveries(isolated_db.pool, status="failed"), seconds=15)

    [delivery] = await list_deliveries(isolated_db.pool)
    assert [(a.status_code, a.error) for a in delivery.history] == [(302, "HTTP 302")] * 2
    assert reached == []


async def test_receivers_whose_names_never_resolve_leave_the_others_names_resolving(
    isolated_db: IsolatedDatabase, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup whose DNS servers never answer holds its thread until the system's resolver
    gives up, cancelled or not. In asyncio's default executor (6 threads on 2 CPUs, at most
    32) every request to such a name held one: a few of them took every thread, no other
    receiver's name resolved, and healthy deliveries waited (or timed out) with them (a
    review). Requests to one name now share its lookup, in the dispatcher's own threads."""
    real_lookup = socket.getaddrinfo
    released = threading.Event()
    looked_up: list[str] = []

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".hangs.test"):
            looked_up.append(host)
            released.wait()
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host == "receiver.test":
            host = "127.0.0.1"
        return real_lookup(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    hanging = [f"dns-{n}.hangs.test" for n in range(9)]  # 9 x 4 requests: past 32 threads
    for name in hanging:
        await registry.create(f"http://{name}/hooks", ["credits.spent"])
    healthy = receiver.url("healthy").replace("127.0.0.1", "receiver.test")
    await registry.create(healthy, ["credits.spent"])
    books = isolated_db.ledger()
    account_id = await open_account(books)
    spends = 2 * PER_ENDPOINT

    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(notifier(isolated_db, request_seconds=600))
        stack.callback(released.set)  # first: the dispatcher stops once its lookups end
        for amount in range(1, spends + 1):
            await act(books, account_id, spend(amount))
        await until(
            lambda: len(receiver.at("healthy")) == spends,
            seconds=60,
            what="every notification at the receiver whose name resolves",
        )
        lookups = collections.Counter(looked_up)

    assert lookups == dict.fromkeys(hanging, 1)  # one lookup each, shared by its requests


async def test_registrations_whose_names_never_resolve_leave_the_default_executor_free(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's check of a registered URL looked its name up in asyncio's default executor
    (at most 32 threads, 6 on 2 CPUs), which the rest of the process shares (to_thread):
    registrations of names whose DNS never answers held every thread, past their own 422,
    until the system's resolver gave up. They hold threads of their own now."""
    released = threading.Event()
    looked_up: list[str] = []

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        released.wait()
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(addresses, "RESOLVE_SECONDS", 600)  # still waiting when looked at
    registry = EndpointRegistry(isolated_db.pool)
    hanging = [
        asyncio.create_task(registry.create(f"https://dns-{n}.hangs.test/hooks", ["credits.spent"]))
        for n in range(40)  # more than any default executor's threads
    ]
    try:
        await until(lambda: looked_up, seconds=60, what="a lookup under way")
        free = asyncio.create_task(asyncio.to_thread(lambda: "free"))
        done, _ = await asyncio.wait([free, *hanging], timeout=30, return_when="FIRST_COMPLETED")

        assert done == {free}
        assert len(looked_up) <= addresses.REGISTRATION_THREADS  # the rest wait their turn
    finally:
        released.set()
        ended = await asyncio.gather(*hanging, return_exceptions=True)
    assert all(isinstance(end, UnresolvableHost) for end in ended)
    assert await registry.list() == []
