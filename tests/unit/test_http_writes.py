"""uvicorn with ``ReadsAnsweredPerTurn`` (api/http_writes.py), served on a real socket.

Every write the protocol sends to the connection's transport is recorded, so each
test can say which answers went out in one ``send`` and that the bytes the client
reads are the answer, whole, in order. Answers are held only while another request
is in flight: the ``busy`` fixture keeps one waiting on a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import uvicorn

from api.http_writes import MAX_HEAD_BYTES, ReadsAnsweredPerTurn, StoppingState
from api.startup import bind, uvicorn_config

JSON = b'{"balance":2000}'
RELEASE = {"busy": asyncio.Event()}
"""What ``GET /busy`` waits for (a new event for each test that uses it)."""


async def app(scope: Any, receive: Any, send: Any) -> None:
    """GET/HEAD /json, GET /stream (two parts a while apart), GET /late (the body a while
    after the head), POST /echo, GET /boom (fails), GET /busy (answers when released),
    GET /headers (the request's headers as the app got them, a JSON list of pairs)."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/busy":
        await RELEASE["busy"].wait()
    if scope["path"] == "/boom":
        raise RuntimeError("the app failed before answering")
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first,", "more_body": True})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"second"})
        return
    if scope["path"] == "/late":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"late"})
        return
    answer = body if scope["method"] == "POST" else JSON
    if scope["path"] == "/headers":
        answer = msgspec.json.encode([[k.decode(), v.decode()] for k, v in scope["headers"]])
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


class _Recorded:
    """The real transport, with every write kept."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ListeningServer(uvicorn.Server):
    """uvicorn, saying when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()

    async def serving_on(self, sock: socket.socket) -> asyncio.Task[None]:
        """Serve on ``sock`` in a task; return it once the server listens."""
        task = asyncio.create_task(self.serve(sockets=[sock]))
        await asyncio.wait_for(self.listening.wait(), 10)
        return task


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, list[bytes]]]:
    """uvicorn with the protocol on a free port; the writes its connections sent."""
    writes: list[bytes] = []

    class Recording(ReadsAnsweredPerTurn):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_Recorded(transport, writes))  # type: ignore[arg-type]

    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(app, http=Recording, lifespan="off", log_config=None, loop="none")
    server = ListeningServer(config)
    task = await server.serving_on(sock)
    try:
        yield sock.getsockname()[1], writes
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def busy(served: tuple[int, list[bytes]]) -> AsyncIterator[None]:
    """A read in flight on a connection of its own until the test ends."""
    RELEASE["busy"] = asyncio.Event()
    reader, writer = await asyncio.open_connection("127.0.0.1", served[0])
    writer.write(get("/busy", "Connection: close"))
    await writer.drain()
    await asyncio.sleep(0.1)  # its request is being answered: a task in flight
    try:
        yield
    finally:
        RELEASE["busy"].set()
        assert (await asyncio.wait_for(reader.read(), 5)).endswith(JSON)
        writer.close()


async def ask(port: int, *requests: bytes) -> bytes:
    """Send the requests on one connection, one after another; everything read back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            writer.write(request)
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: t", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def test_a_read_goes_out_in_one_write(served: tuple[int, list[bytes]], busy: None) -> None:
    port, writes = served
    answer = await ask(port, get("/json"))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\n" + JSON)
    assert writes == [answer]


async def test_an_answer_to_a_write_goes_out_at_once_head_and_body_together(
    served: tuple[int, list[bytes]], busy: None
) -> None:
    port, writes = served
    request = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
    answer = await ask(port, request)
    assert answer.endswith(b"\r\n\r\nhello")
    assert writes == [answer]


async def test_a_head_whose_body_comes_later_goes_out_at_the_end_of_its_turn(
    served: tuple[int, list[bytes]],
) -> None:
    port, writes = served
    answer = await ask(port, get("/late"))
    assert answer.endswith(b"\r\n\r\n4\r\nlate\r\n0\r\n\r\n")  # chunked: no length given
    assert len(writes) == 2
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"\r\n\r\n")
    assert b"".join(writes) == answer


async def test_reads_and_writes_on_one_connection_keep_their_order(
    served: tuple[int, list[bytes]],
    busy: None,
) -> None:
    port, writes = served
    post = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok"
    answer = await ask(port, get("/json"), post, get("/json"))
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.index(JSON) < answer.index(b"\r\n\r\nok") < answer.rindex(JSON)
    assert b"".join(writes) == answer
    assert len(writes) == 3  # a read, the write's answer, a read


async def test_a_streamed_read_goes_out_as_it_comes(
    served: tuple[int, list[bytes]], busy: None
) -> None:
    port, writes = served
    answer = await ask(port, get("/stream"))
    assert b"first," in answer
    assert answer.index(b"first,") < answer.index(b"second")
    assert len(writes) >= 2  # the head and the first part, then the second part later
    assert b"first," in writes[0]
    assert b"second" not in writes[0]
    assert b"".join(writes) == answer


async def test_a_read_that_closes_the_connection_is_sent_whole(
    served: tuple[int, list[bytes]],
    busy: None,
) -> None:
    port, writes = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/json", "Connection: close"))
    answer = await asyncio.wait_for(reader.read(), 5)  # the server closes after answering
    writer.close()
    assert answer.endswith(JSON)
    assert b"connection: close" in answer.lower()
    assert writes == [answer]


async def test_a_head_request_has_its_head_alone(
    served: tuple[int, list[bytes]], busy: None
) -> None:
    port, writes = served
    answer = await ask(port, b"HEAD /json HTTP/1.1\r\nHost: t\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\n")
    assert writes == [answer]


async def test_a_read_that_fails_gets_uvicorns_500_whole(
    served: tuple[int, list[bytes]], busy: None, caplog: pytest.LogCaptureFixture
) -> None:
    port, writes = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/boom"))
    answer = await asyncio.wait_for(reader.read(), 5)  # uvicorn closes after a 500
    writer.close()
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert answer.endswith(b"Internal Server Error")
    assert writes == [answer]
    assert "the app failed before answering" in caplog.text


async def test_a_lone_read_goes_out_at_once_head_and_body_together(
    served: tuple[int, list[bytes]],
) -> None:
    port, writes = served
    answer = await ask(port, get("/json"))
    assert answer.endswith(b"\r\n\r\n" + JSON)
    assert writes == [answer]


async def test_a_headers_value_is_read_without_the_whitespace_that_ends_it(
    served: tuple[int, list[bytes]],
) -> None:
    """RFC 9110 (5.5): the spaces and tabs around a value are not part of it. httptools drops
    only those before it, so ``Idempotency-Key: job-1 `` reached the app as another key than
    ``job-1``, and a retry without the space spent again. h11 strips both sides."""
    port, _ = served
    request = get(
        "/headers",
        "Idempotency-Key: job-1 ",
        "X-Tab:\tvalue\t \t",
        "X-Inner: a  b",
        "X-Blank:   ",
        "Connection: close",
    )
    answer = await ask(port, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert msgspec.json.decode(body) == [
        ["host", "t"],
        ["idempotency-key", "job-1"],
        ["x-tab", "value"],
        ["x-inner", "a  b"],
        ["x-blank", ""],
        ["connection", "close"],
    ]


def test_the_service_serves_with_it() -> None:
    assert uvicorn_config(app).http is ReadsAnsweredPerTurn


@pytest.mark.parametrize(
    "request_bytes",
    [b"BREW /json HTTP/1.1\r\nHost: t\r\n\r\n", b"GET /json HTTP/1.1\r\nHo st: t\r\n\r\n"],
    ids=["an unknown method", "a space in a header's name"],
)
async def test_a_request_that_is_not_http_is_400_in_the_contracts_shape(
    served: tuple[int, list[bytes]], request_bytes: bytes
) -> None:
    port, _ = served
    answer = await ask(port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"content-type: application/json" in head.lower()
    assert b"connection: close" in head.lower()
    assert msgspec.json.decode(body) == {"message": "Invalid HTTP request received."}


@pytest.mark.parametrize(
    "begun",
    [
        b"GET /json HTTP/1.1\r\nHost: t\r\nX-Big: ",
        # A chunked body's trailers are headers too, kept whole as the head's were.
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Big: ",
    ],
    ids=["a header", "a chunked body's trailer"],
)
async def test_a_head_past_the_limit_is_431_in_the_contracts_shape_before_it_ends(
    served: tuple[int, list[bytes]], begun: bytes
) -> None:
    port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()

    async def read_all() -> None:
        with contextlib.suppress(ConnectionError):  # reset: it closed on what we still sent
            while chunk := await reader.read(65536):
                received.extend(chunk)

    reading = asyncio.create_task(read_all())
    try:
        writer.write(begun)
        with contextlib.suppress(ConnectionError):  # refused while still sending
            for _ in range(64):  # four times the limit in one header, never ended
                writer.write(b"a" * (MAX_HEAD_BYTES // 16))
                await writer.drain()
                await asyncio.sleep(0)
        await asyncio.wait_for(reading, 5)
    finally:
        writer.close()
    answer = bytes(received)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close" in head.lower()
    assert msgspec.json.decode(body) == {"message": "The request's headers are too large."}


async def test_heads_under_the_limit_are_answered_whatever_bodies_share_their_chunks(
    served: tuple[int, list[bytes]],
) -> None:
    port, _ = served
    first = get("/json", f"X-Long: {'b' * (MAX_HEAD_BYTES // 2)}")
    echoed = b"c" * (MAX_HEAD_BYTES * 5 // 8)
    posted = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(echoed)
    third = first
    # The end of a head, a whole request with its body and the next head begun, in one
    # chunk: the body is not the next head's, which stays under the limit.
    answer = await ask(
        port,
        first[:-9],
        first[-9:] + posted + echoed + third[:30],
        third[30:-9],
        third[-9:],
    )
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert echoed in answer


async def test_a_chunked_body_is_not_counted_as_head_however_it_is_cut(
    served: tuple[int, list[bytes]],
) -> None:
    port, _ = served
    data = b"d" * (MAX_HEAD_BYTES * 2)
    parts = [data[n : n + MAX_HEAD_BYTES // 2] for n in range(0, len(data), MAX_HEAD_BYTES // 2)]
    request = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    # Each chunk's size line alone, its data after it: the data is the body's, not a trailer.
    answer = await ask(port, request, b"%x\r\n" % len(data), *parts, b"\r\n0\r\nX-T: 1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert answer.endswith(data)


@pytest.mark.parametrize(
    "sent",
    [
        # After the stop, half a head: uvicorn's data_received stopped the keep-alive
        # timer, and no request began to close the connection after its answer.
        [b"", b"GET /json HTTP/1.1\r\n"],
        # Half a head before the stop, a byte of it after.
        [b"GET /json HTTP/1.1\r\n", b"H"],
        # A head trickled in, a byte at a time, past the keep-alive time.
        [b"", *[bytes([byte]) for byte in b"GET /json HTTP/1.1\r\nHost: t\r\nX-Slow: "]],
    ],
    ids=["half a head after", "half a head across", "a trickled head"],
)
async def test_a_sigterms_stop_ends_a_kept_connection_with_half_a_request_at_its_time(
    sent: list[bytes],
) -> None:
    """A SIGTERM keeps an idle connection for its keep-alive time (a proxy's request on it
    answered): a connection whose request never finishes its head must not keep the stop
    waiting past that, where uvicorn closed it at once."""
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(
        app,
        http=ReadsAnsweredPerTurn,
        lifespan="off",
        log_config=None,
        loop="none",
        timeout_keep_alive=0.5,
    )
    server = ListeningServer(config)
    server.server_state = StoppingState()
    serving = await server.serving_on(sock)
    reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
    try:
        writer.write(sent[0])
        await asyncio.sleep(0.1)
        server.server_state.idle_connections_kept = True  # as _Server.handle_exit on SIGTERM
        server.should_exit = True
        await asyncio.sleep(0.2)  # the stop has begun: the connections were asked to shut down
        for part in sent[1:]:
            if reader.at_eof():  # closed: what is left of the head is not sent
                break
            writer.write(part)
            await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.shield(serving), 30)  # hung for good without the fix
        assert reader.at_eof()  # closed, with nothing said
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        await serving
        sock.close()


async def test_an_expect_100_continue_is_still_answered_before_its_body(
    served: tuple[int, list[bytes]],
) -> None:
    """``on_header`` is uvicorn's own written again (with the trailing whitespace left out):
    its ``Expect: 100-continue`` still has the body asked for, with a space after it too."""
    port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue \r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"hello")
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nhello")
