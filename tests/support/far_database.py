"""A PostgreSQL server as if it were far away: a loopback proxy that delays its answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit, urlunsplit

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _upstream(url: str) -> Callable[[], Awaitable[Streams]]:
    parts = urlsplit(url)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    port = parts.port or 5432
    if host.startswith("/"):  # a Unix socket's folder (the embedded server)
        return lambda: asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
    return lambda: asyncio.open_connection(host, port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def far_database(url: str, answers_after: float) -> AsyncIterator[str]:
    """The URL of ``url``'s database through a proxy that sends each of the server's
    answers ``answers_after`` seconds late (what the client sends goes at once)."""
    connect = _upstream(url)

    async def relay(client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await connect()
        await asyncio.gather(_pipe(client, to_server, 0), _pipe(server, to_client, answers_after))

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    try:
        yield urlunsplit(parts._replace(netloc=netloc, query=""))
    finally:
        proxy.close()
