"""uvicorn's protocol: an answer's head and body in one send, reads answered at the turn's end.

uvicorn (httptools) writes an answer's head and its body with a ``transport.write``
each, and uvloop sends every write at once. Under load a turn of the event loop
answers many reads, and sending each as it is made wakes its client (here, a process
on the same machine) once per answer. The answers to ``GET`` and ``HEAD`` are held
instead, while any other request is in flight, and sent, one ``send`` per connection,
when the turn ends: a read's answer waits at most for the rest of that turn, and the
reads cost about 15 % less CPU and go about as much faster (bench/HISTORY.md). A lone
read, with nothing to share its turn, goes out at once (held, it took 3-4 µs longer).
Answers to writes go out at once: they come in bursts already (a group commit answers
its commands together), and holding them measured no faster and a higher p99.

Every other answer's head waits for its body, which uvicorn writes next in the same
turn, and goes out with it: one ``send`` an answer instead of two, 6-8 µs less of the
server's CPU an answer on loopback (and a client that never reads a head alone). A head
whose body does not come in its turn (a streamed answer) goes out alone at the turn's end.

A streamed body still goes out as it comes, a turn's worth at a time, and closing
the connection sends what is held first.

A request that is not HTTP (an unknown method, a broken request line or header) is
answered 400 with a JSON body in the contract's shape, ``{"message": ...}``, where
uvicorn answers it in plain text. A request whose line and headers run past
``MAX_HEAD_BYTES`` is answered 431 the same way, before its head ends: httptools keeps
an unfinished head in memory whole, however long, so one client could fill the memory.
A chunked body's trailers are headers kept the same way, and have the same limit.

A header's value is read without the whitespace that ends it, as RFC 9110 (5.5) has it and
uvicorn's h11 reads it: httptools drops only the whitespace before a value, so
``Idempotency-Key: job-1 `` (a trailing space) was another key than ``job-1``, and a retry
that left the space out spent again.

A SIGTERM (a supervisor, a rolling restart) leaves an idle keep-alive connection open
until its peer closes it or its keep-alive time ends, and answers a request on it with
``Connection: close``; one whose next request has not finished its head by the end of
that time is closed then all the same. uvicorn closed it at once, racing a proxy that had
just sent a request on it: nginx answers such a POST 502 and does not pass it to another
replica. A proxy whose idle time is shorter than the server's (nginx's
``keepalive_timeout`` in the ``upstream``, below uvicorn's 5 s) closes every one of them
itself, so none is lost. A Ctrl-C still closes idle connections at once: a browser's
would hold the stop up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sized
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

_READS = (b"GET", b"HEAD")
_OWS = (b" ", b"\t")
"""What may end a header's raw value and is not part of it (RFC 9110's OWS)."""

MAX_HEAD_BYTES = 64 * 1024
"""A request line and headers at most this long (nginx admits 4 x 8 KiB, h11 16 KiB),
counted from the read after the one the request began in: httptools does not say where in
a read a message begins, and counting the whole read would charge a pipelined request with
the end of the one before (a read is at most 256 KiB, so a head stays bounded)."""


class _TurnWrites:
    """A transport that, while ``holding`` and other requests are in flight, sends a
    turn's writes as one at its end; otherwise an answer's head waits for its body."""

    __slots__ = ("_held", "_in_flight", "_joining", "_loop", "_transport", "holding")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        in_flight: Sized,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._in_flight = in_flight
        self._held: list[bytes] = []
        self._joining = False
        self.holding = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held:
            held.append(data)  # after what is held already, even when no longer holding
            if self._joining:  # a head waited for its body: both go now
                self._send_held()
            return
        if self.holding and len(self._in_flight) >= 2:
            self._loop.call_soon(self._send_held)
        elif data.startswith(b"HTTP/"):  # a head: its body comes next, in the same turn
            self._joining = True
            self._loop.call_soon(self._send_held)
        else:
            self._transport.write(data)
            return
        held.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _send_held(self) -> None:
        held = self._held
        if not held:
            return
        self._held = []
        self._joining = False
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._send_held()
        self._transport.close()

    def write_eof(self) -> None:
        self._send_held()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = []
        self._joining = False
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        # An upgraded connection (a WebSocket) writes as its new protocol writes.
        self._send_held()
        self.holding = False
        self._transport.set_protocol(protocol)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class StoppingState(ServerState):
    """uvicorn's server state, and whether a stop keeps idle connections (a SIGTERM's)."""

    def __init__(self) -> None:
        super().__init__()
        self.idle_connections_kept = False


class ReadsAnsweredPerTurn(HttpToolsProtocol):
    """uvicorn's httptools protocol, holding the answers to reads until the turn ends."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._writes = _TurnWrites(transport, self.loop, self.tasks)
        self._in_head = self._began = False
        self._head_bytes = 0
        self._last_answer = False
        self._kept_until = 0.0
        super().connection_made(self._writes)  # type: ignore[arg-type]

    def shutdown(self) -> None:
        state = self.server_state
        idle = self.cycle is None or self.cycle.response_complete
        if not (idle and isinstance(state, StoppingState) and state.idle_connections_kept):
            super().shutdown()
            return
        self._last_answer = True
        self._kept_until = self.loop.time() + self.timeout_keep_alive
        if self.timeout_keep_alive_task is None:  # none armed before a first request
            self._end_when_kept()

    def _end_when_kept(self) -> None:
        """Close the connection at the end of the time a stop keeps it."""
        self.timeout_keep_alive_task = self.loop.call_at(
            self._kept_until, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        counted, self._began = self._in_head, False
        super().data_received(data)
        # Only what went whole to one unfinished head counts: a chunk that also begins a
        # message may carry the body of the one before, which has its own limit.
        if counted and self._in_head and not self._began and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, "The request's headers are too large.")
        # uvicorn stopped the keep-alive timer as the bytes came: kept by a stop and with
        # no request begun (half a head, or none), the connection still ends at its time,
        # where it would keep the stop waiting until its peer sent the rest.
        if (
            self._last_answer
            and self.timeout_keep_alive_task is None
            and (self.cycle is None or self.cycle.response_complete)
            and not self.transport.is_closing()
        ):
            self._end_when_kept()

    def on_message_begin(self) -> None:
        self._in_head = self._began = True
        self._head_bytes = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn 0.54.0's own, with the value's trailing whitespace left out; written whole,
        # not as a call to it: that call cost a header more than the test does (~0.1 µs).
        if value[-1:] in _OWS:  # rare: one slice and test a header otherwise
            value = value.rstrip(b" \t")
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._writes.holding = self.parser.get_method() in _READS
        super().on_headers_complete()
        if self._last_answer and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_chunk_header(self) -> None:
        # Until its data: the last chunk (size 0) has none, and its trailers follow.
        self._in_head = True
        self._head_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._in_head = False
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        self._in_head = False

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, msg)

    def _refuse(self, status: int, msg: str) -> None:
        """Answer ``status`` with ``{"message": msg}`` and close the connection."""
        body = msgspec.json.encode({"message": msg})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(head))
        self.transport.close()
