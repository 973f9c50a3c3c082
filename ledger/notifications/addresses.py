"""Webhook receivers must be on public addresses: the ledger is not a way into its own network.

Whoever may register a webhook endpoint (a ``ledger:write`` token) chooses where the
dispatcher sends requests from inside the deployment. Without a check, a URL such as
``http://169.254.169.254/…`` (a cloud's metadata service), ``http://127.0.0.1:5432``
or ``http://10.0.0.7/admin`` turns the dispatcher into a probe of the private network.

So an endpoint's host must resolve only to public addresses, checked twice:

* when the endpoint is registered (``EndpointRegistry.create``): every address the
  name resolves to, answered with a 422 that says which one is not public;
* at every connection the dispatcher opens (``PublicAddressesOnly``, its httpx
  transport's network backend): DNS may have changed since, so the name is resolved
  again, every address checked, and the connection is made to those checked
  addresses, never to a second lookup of the name that could answer differently.
  A refused delivery is not sent; its attempt fails with the reason and is retried
  on the schedule.

``LEDGER_WEBHOOK_ALLOW_PRIVATE=1`` turns both checks off (development, the test
suite's receivers on 127.0.0.1, a deployment whose receivers are internal).
Deliveries connect directly, never through ``HTTP(S)_PROXY``: the address checked is
the address connected to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import typing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RESOLVE_SECONDS = 5.0
"""How long a registration waits for DNS (deliveries use their connect timeout)."""
LOOKUP_THREADS = 32
"""The dispatcher's threads for looking names up (``SharedLookups``)."""
REGISTRATION_THREADS = 4
"""The threads a registration's name is looked up in (``resolve``): its own, so that DNS
that never answers holds these, never asyncio's default executor, which the rest of the
process uses (``asyncio.to_thread``, the loop's ``getaddrinfo``). Registrations are rare
(an internal service subscribing); a fifth name at once waits, up to ``RESOLVE_SECONDS``."""

_KINDS = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_private", "private"),
    ("is_reserved", "reserved"),
    ("is_site_local", "site-local"),  # IPv6's fec0::/10: deprecated, private, and not is_private
)


class NonPublicAddress(Exception):
    """The host is, or resolves to, an address the ledger does not send to."""


class UnresolvableHost(Exception):
    """The host's name does not resolve."""


def why_not_public(address: IPAddress) -> str | None:
    """None for a public address; otherwise what it is (``loopback``, ``private``, …)."""
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 reaches 127.0.0.1; 2002:7f00:1:: is 6to4 for it.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return why_not_public(embedded)
    for attribute, kind in _KINDS:
        if getattr(address, attribute, False):  # IPv4 has no is_site_local
            return kind
    if not address.is_global:
        return "not globally routable"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an address literal: itself), in the resolver's order."""
    if (literal := _literal(host)) is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        found = await loop.run_in_executor(_registration_threads(), _lookup, host, port)
    except (socket.gaierror, UnicodeError) as error:
        raise UnresolvableHost(f"{host} does not resolve ({error})") from error
    return _addresses(host, found)


_registrations: tuple[int, ThreadPoolExecutor] | None = None
"""This process's registration threads, and its pid (a forked worker makes its own)."""


def _registration_threads() -> ThreadPoolExecutor:
    global _registrations  # one pool a process, made when first needed
    if _registrations is None or _registrations[0] != os.getpid():
        threads = ThreadPoolExecutor(REGISTRATION_THREADS, thread_name_prefix="webhook-check")
        _registrations = (os.getpid(), threads)
    return _registrations[1]


def _lookup(host: str, port: int) -> list[Any]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


def _addresses(host: str, found: list[Any]) -> list[IPAddress]:
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableHost(f"{host} does not resolve")
    return addresses


class SharedLookups:
    """The dispatcher's name lookups: in threads of its own, one at a time per name and port.

    A lookup whose DNS servers never answer holds its thread until the system's resolver
    gives up, however its waiter is cancelled. In asyncio's default executor (as few as 6
    threads) each request to such a name held one, a few such names held them all, and no
    other receiver's name resolved: their deliveries waited, and timed out, with them. Here
    a name's requests wait on one lookup, so a name that hangs holds one thread.
    """

    def __init__(self, threads: int = LOOKUP_THREADS) -> None:
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="webhook-lookup")
        self._running: dict[tuple[str, int], asyncio.Future[list[Any]]] = {}

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """As ``resolve``."""
        if (literal := _literal(host)) is not None:
            return [literal]
        key = (host, port)
        lookup = self._running.get(key)
        if lookup is None:
            lookup = asyncio.get_running_loop().run_in_executor(self._threads, _lookup, host, port)
            self._running[key] = lookup
            lookup.add_done_callback(lambda done: self._ended(key, done))
        try:
            # Shielded: a waiter cancelled (its timeout) leaves the lookup to the others.
            found = await asyncio.shield(lookup)
        except (socket.gaierror, UnicodeError) as error:
            raise UnresolvableHost(f"{host} does not resolve ({error})") from error
        return _addresses(host, found)

    def _ended(self, key: tuple[str, int], lookup: asyncio.Future[list[Any]]) -> None:
        if self._running.get(key) is lookup:
            del self._running[key]
        if not lookup.cancelled():
            lookup.exception()  # retrieved, also when every waiter had gone

    def close(self) -> None:
        """Let the threads go (a lookup that hangs ends on its own)."""
        self._threads.shutdown(wait=False, cancel_futures=True)


async def public_addresses(
    host: str, port: int, lookups: SharedLookups | None = None
) -> list[IPAddress]:
    """``resolve(host)``, or NonPublicAddress naming the first address that is not public."""
    addresses = await (resolve(host, port) if lookups is None else lookups.resolve(host, port))
    for address in addresses:
        if (kind := why_not_public(address)) is not None:
            named = (
                str(address)
                if host.strip("[]") == str(address)
                else f"{host} resolves to {address}"
            )
            raise NonPublicAddress(f"{named}, which is not a public address ({kind})")
    return addresses


async def check_url(url: str) -> None:
    """Raise NonPublicAddress or UnresolvableHost unless ``url``'s host is public."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise UnresolvableHost(f"not a URL httpx can send to: {error}") from None
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            await public_addresses(host, port)
    except TimeoutError as error:
        raise UnresolvableHost(f"{host} did not resolve within {RESOLVE_SECONDS:g} s") from error


class PublicAddressesOnly(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to addresses ``allowed`` accepts.

    It resolves the host itself, refuses the connection (NonPublicAddress) when any
    address is not allowed, and otherwise connects to those addresses in turn. TLS is
    unchanged: it is set up afterwards with the URL's host name, so certificates are
    checked against the name as always.
    """

    def __init__(
        self,
        *,
        allowed: Callable[[IPAddress], bool] | None = None,
    ) -> None:
        self._allowed = allowed
        self._inner = httpcore.AnyIOBackend()
        self.lookups = SharedLookups()

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        if self._allowed is None:
            return await public_addresses(host, port, self.lookups)
        addresses = await self.lookups.resolve(host, port)
        for address in addresses:
            if not self._allowed(address):
                raise NonPublicAddress(f"{host} resolves to {address}, which is not allowed here")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._addresses(host, port)
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(f"resolving {host} took too long") from error
        except UnresolvableHost as error:
            raise httpcore.ConnectError(str(error)) from error
        refused: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as error:  # refused or unreachable: the next one
                refused = error
        assert refused is not None  # resolve() never answers an empty list
        raise refused

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise NonPublicAddress(f"a Unix socket ({path}) is not a public address")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _anything(_: IPAddress) -> bool:
    return True


class WebhookTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connections made by ``PublicAddressesOnly``.

    ``allow_private`` lets every address through (still resolved and connected to the
    same way). The CA bundle is httpx's usual one (``SSL_CERT_FILE`` is honoured).
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed: Callable[[IPAddress], bool] | None = None,
    ) -> None:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(limits=limits)
        # httpx 0.28 takes no network backend, so its connection pool is replaced by
        # one with ours (httpcore's public API); httpx's request and error handling stay.
        self._network = PublicAddressesOnly(allowed=_anything if allow_private else allowed)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self._network,
        )

    async def aclose(self) -> None:
        await super().aclose()
        self._network.lookups.close()
