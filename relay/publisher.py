"""The JetStream side of the relay: one connection, one stream, batches acknowledged whole.

Every message carries headers that make the stream a gapless, ordered copy of
the store:

* ``Nats-Msg-Id`` = the event's position: JetStream drops a message whose id it
  has stored within the stream's duplicate window, so a batch published again
  (after a lost acknowledgement, say) is stored once.
* The first message of a batch expects the stream's last sequence to be the one
  the relay knows (``Nats-Expected-Last-Sequence``), every later one expects the
  previous position to be the stream's last message id
  (``Nats-Expected-Last-Msg-Id``). If one message of a batch is refused, or
  someone else's message got in between, every later one is refused too: the
  stream never holds position n+1 without position n before it. That is what
  lets the relay trust the stream's last message as "everything up to here is
  in" (``Relay._reconcile``), also once the duplicate window has passed.

JetStream checks the message id before those expectations: a duplicate is
acknowledged as a duplicate whatever its headers expect (seen on nats-server 2.9).

The batch is published with plain core publishes, each with a reply subject on
this connection's own inbox, rather than with nats-py's ``publish_async``: in
nats-py 2.16 that one yields to the event loop for every message (one socket
write each, about 4,500 events/s here against 23,000 this way), and the future
of a refused message never completes (its ack handler raises the error instead
of setting it), so a refusal would only show as a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from relay.messages import MSG_ID_HEADER, OutgoingMessage

log = logging.getLogger(__name__)

EXPECTED_STREAM_HEADER = "Nats-Expected-Stream"
EXPECTED_LAST_SEQUENCE_HEADER = "Nats-Expected-Last-Sequence"
EXPECTED_LAST_MSG_ID_HEADER = "Nats-Expected-Last-Msg-Id"

CLOSE_SECONDS = 5.0
"""How long closing a connection may take before it is given up (its socket is closed)."""

# What the client raises when the broker is away, slow or refusing: all of it
# means "not published, try again later".
_BROKER_ERRORS = (nats.errors.Error, OSError, TimeoutError)


class RelayRefused(Exception):
    """The relay will not publish: its settings or the stream it found are wrong."""


class BrokerUnavailable(Exception):
    """The broker did not take a batch (down, unreachable, refusing): nothing is lost, retry."""


DEFAULT_STREAM = "LEDGER_EVENTS"


class StreamSettings(msgspec.Struct, frozen=True):
    """The JetStream stream the relay publishes to (created if missing)."""

    name: str = DEFAULT_STREAM
    subject_prefix: str = "ledger.events"
    duplicate_window_seconds: float = 120.0

    @property
    def subjects(self) -> str:
        return f"{self.subject_prefix}.>"


class StreamTail(msgspec.Struct, frozen=True):
    """Where the stream ends: its last sequence and, when it holds one, its last event."""

    last_seq: int
    position: int | None = None
    """The ``Nats-Msg-Id`` of the last message (None: empty, or not a relayed event)."""
    hash: str | None = None


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    """JetStream's answer to a publish: ``{"stream", "seq", "duplicate"}`` or ``{"error"}``."""

    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class _Batch:
    """The acks of the batch in flight."""

    def __init__(self, number: int, positions: list[int]) -> None:
        self.number = number
        self.positions = positions
        self.seqs: list[int] = [0] * len(positions)
        self.duplicates: list[int] = []
        """Indexes JetStream dropped as duplicates: ``seqs`` holds the earlier message's."""
        self.missing = len(positions)
        self.refusal: str | None = None
        self.done = asyncio.Event()

    def acked(self, index: int, seq: int, *, duplicate: bool = False) -> None:
        if not self.seqs[index]:
            self.seqs[index] = seq
            if duplicate:
                self.duplicates.append(index)
            self.missing -= 1
            if not self.missing:
                self.done.set()

    def refuse(self, why: str) -> None:
        # The first refusal is the one that matters: the later ones follow from it.
        if self.refusal is None:
            self.refusal = why
            self.done.set()


def servers(url: str) -> list[str]:
    """One URL per server of ``url``, each with its scheme and credentials: nats-py reads
    ``nats://a:4222,b:4222`` as one address and refuses it (invalid connect url option)."""
    scheme, _, rest = url.partition("://")
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    userinfo, at, hosts = rest[:end].rpartition("@")
    return [f"{scheme}://{userinfo}{at}{host}{rest[end:]}" for host in hosts.split(",")]


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A client's TLS context that trusts the certificates in ``ca_file`` only; ``OSError``
    or ``ssl.SSLError`` if it cannot be read."""
    return ssl.create_default_context(cafile=ca_file)


class _TlsOnlyClient(Client):
    """A client for a ``tls://`` URL: it sends its CONNECT, credentials and all, over TLS only.

    nats-py 2.16 upgrades to TLS only when the server's INFO says ``tls_required``; to a
    server (or anyone in the middle) that does not, it sends the CONNECT, with the URL's
    user and password or token, in plain text. Its ``ssl_context`` is read when, and
    only when, it starts TLS, just before that CONNECT.
    """

    _tls_started = False

    @property
    def ssl_context(self) -> ssl.SSLContext:
        self._tls_started = True
        return super().ssl_context

    def _connect_command(self) -> bytes:
        if not self._tls_started:
            raise nats.errors.Error(
                "the server does not offer TLS, and a tls:// URL is sent over TLS only"
            )
        return super()._connect_command()


class JetStreamPublisher:
    """Publishes batches to one stream and reports only when every message is acknowledged."""

    def __init__(
        self,
        url: str,
        stream: StreamSettings,
        *,
        ack_timeout: float = 10.0,
        tls_ca: str | None = None,
    ) -> None:
        self.url = url
        self.stream = stream
        self.ack_timeout = ack_timeout
        self.tls_ca = tls_ca
        """A file of CA certificates a ``tls://`` server's is checked against instead of the
        system's (a broker with a certificate of a private CA)."""
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lost = asyncio.Event()
        self._last_error: BaseException | None = None
        self._inbox = ""
        self._batches = 0
        self._batch: _Batch | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected and not self._lost.is_set()

    async def connect(self) -> None:
        """Connect and make sure the stream exists; ``BrokerUnavailable`` if that fails.

        A URL may name several servers of one cluster (``nats://user:pw@a:4222,b:4222``):
        each is tried in turn, and the first that answers is used."""
        failed: BaseException | None = None
        for server in servers(self.url):
            try:
                await self._connect_to(server)
            except _BROKER_ERRORS as error:
                failed = error
                await self.close()
            else:
                return
        assert failed is not None
        raise BrokerUnavailable(self._reason(failed)) from failed

    async def _connect_to(self, server: str) -> None:
        await self.close()
        # This connection's own flag: a late callback of the one before cannot set it.
        lost = self._lost = asyncio.Event()

        async def on_disconnected() -> None:
            lost.set()

        self._last_error = None
        # The relay reconnects by itself, with its own backoff and log lines, so the
        # client tries each connection once and closes when it drops.
        tls = server.startswith("tls://")
        nc = _TlsOnlyClient() if tls else Client()
        self._nc = nc
        await nc.connect(
            server,
            tls=tls_context(self.tls_ca) if tls and self.tls_ca else None,
            name="ledger-relay",
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            connect_timeout=2,
            error_cb=self._on_error,
            disconnected_cb=on_disconnected,
            closed_cb=on_disconnected,
        )
        self._inbox = nc.new_inbox()
        await nc.subscribe(f"{self._inbox}.>", cb=self._on_ack)
        self._js = nc.jetstream(timeout=self.ack_timeout)
        await self._ensure_stream(self._js)

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            info = await js.stream_info(self.stream.name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(
                    StreamConfig(
                        name=self.stream.name,
                        subjects=[self.stream.subjects],
                        storage=StorageType.FILE,
                        duplicate_window=self.stream.duplicate_window_seconds,
                    )
                )
            except nats.js.errors.BadRequestError as error:  # asking again cannot help
                # ...unless another relay made the stream between our look and our ask
                # (JetStream says its subjects overlap): then it is ours to publish to.
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    if (await js.stream_info(self.stream.name)).config.subjects == [
                        self.stream.subjects
                    ]:
                        return
                await self.close()
                raise RelayRefused(
                    f"cannot create stream {self.stream.name} for subjects "
                    f"{self.stream.subjects}: {self._reason(error)}. Choose other subjects "
                    "(--subject-prefix) or publish to the stream that holds them (--stream)."
                ) from None
            log.info(
                "relay created stream %s (subjects %s, duplicate window %.0fs)",
                self.stream.name,
                self.stream.subjects,
                self.stream.duplicate_window_seconds,
            )
            return
        subjects = info.config.subjects or []
        if self.stream.subjects not in subjects:
            # Kept as the operator set it: publishing says so clearly if it does not fit.
            log.warning(
                "relay: stream %s exists with subjects %s, not %s",
                self.stream.name,
                subjects,
                self.stream.subjects,
            )

    async def tail(self) -> StreamTail:
        """The stream's last sequence and the position and hash of its last message."""
        js = self._manager()
        try:
            info = await js.stream_info(self.stream.name)
            last_seq = info.state.last_seq
            if not info.state.messages:
                return StreamTail(last_seq=last_seq)
            try:
                last = await js.get_msg(self.stream.name, last_seq)
            except nats.js.errors.NotFoundError:
                return StreamTail(last_seq=last_seq)
        except _BROKER_ERRORS as error:
            raise BrokerUnavailable(self._reason(error)) from error
        msg_id = (last.headers or {}).get(MSG_ID_HEADER, "")
        if not msg_id.isdigit():
            return StreamTail(last_seq=last_seq)
        try:
            found_hash = msgspec.json.decode(last.data or b"{}").get("hash")
        except (msgspec.DecodeError, AttributeError):
            found_hash = None
        return StreamTail(last_seq=last_seq, position=int(msg_id), hash=found_hash)

    async def publish(self, messages: Sequence[OutgoingMessage], after_seq: int) -> int:
        """Publish a batch right after stream sequence ``after_seq``; return the last sequence.

        Returns only when JetStream has acknowledged every message; raises
        ``BrokerUnavailable`` otherwise (some of the batch may be stored: publish it
        again after re-reading the tail).
        """
        nc = self._require()
        if not messages:
            return after_seq
        self._batches += 1
        batch = _Batch(self._batches, [m.position for m in messages])
        self._batch = batch
        try:
            # Every message goes out before the first ack is awaited: one write to the
            # socket for the batch, the acks come back on this connection's inbox.
            for index, message in enumerate(messages):
                headers = {
                    MSG_ID_HEADER: str(message.position),
                    EXPECTED_STREAM_HEADER: self.stream.name,
                }
                if index:
                    headers[EXPECTED_LAST_MSG_ID_HEADER] = str(messages[index - 1].position)
                elif after_seq:  # 0 would mean "no check", not "empty stream"
                    headers[EXPECTED_LAST_SEQUENCE_HEADER] = str(after_seq)
                await nc.publish(
                    message.subject,
                    message.body,
                    reply=f"{self._inbox}.{batch.number}.{index}",
                    headers=headers,
                )
            await self._acknowledged(batch)
            if batch.refusal is None and batch.duplicates:
                batch.refusal = await self._dropped_for_good(batch)
        except _BROKER_ERRORS as error:
            raise BrokerUnavailable(self._reason(error)) from error
        finally:
            self._batch = None
        if batch.refusal is not None:
            raise BrokerUnavailable(batch.refusal)
        return max([after_seq, *batch.seqs])

    async def _acknowledged(self, batch: _Batch) -> None:
        """Until every ack or a refusal is in; raises when the connection drops or time is up."""
        done = asyncio.ensure_future(batch.done.wait())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            finished, _ = await asyncio.wait(
                [done, lost], timeout=self.ack_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            done.cancel()
            lost.cancel()
        if done in finished:
            return
        if lost in finished:
            raise nats.errors.ConnectionClosedError
        raise nats.errors.TimeoutError

    async def _on_ack(self, msg: Msg) -> None:
        batch = self._batch
        _, number, index = msg.subject.rsplit(".", 2)
        if batch is None or number != str(batch.number):
            return  # an ack of a batch given up already
        position = batch.positions[int(index)]
        if (msg.headers or {}).get("Status") == "503":
            batch.refuse(f"no stream takes position {position}'s subject (no responders)")
            return
        try:
            ack = _decode_ack(msg.data)
        except msgspec.DecodeError:
            batch.refuse(f"unreadable ack for position {position}: {msg.data[:200]!r}")
            return
        if ack.error is not None:
            batch.refuse(
                f"JetStream refused position {position}: {ack.error.description} "
                f"(error {ack.error.err_code})"
            )
            return
        batch.acked(int(index), ack.seq, duplicate=ack.duplicate)

    async def _dropped_for_good(self, batch: _Batch) -> str | None:
        """Why a message dropped as a duplicate is not in the stream, if one is not.

        JetStream remembers ids for its duplicate window also after their messages are
        purged or deleted, and acknowledges the id again as a duplicate of a sequence
        the stream no longer holds: taken as stored, the event would be lost.
        """
        js = self._manager()
        for index in batch.duplicates:
            position, seq = batch.positions[index], batch.seqs[index]
            try:
                earlier = await js.get_msg(self.stream.name, seq)
            except nats.js.errors.NotFoundError:
                earlier = None
            if earlier is None or (earlier.headers or {}).get(MSG_ID_HEADER) != str(position):
                return (
                    f"JetStream dropped position {position} as a duplicate of sequence {seq}, "
                    "which the stream no longer holds (purged or deleted within its duplicate "
                    "window): publishing it again once the window has passed"
                )
        return None

    async def close(self) -> None:
        """Close the connection, if any (never raises)."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                # Bounded: after a failed TLS handshake (a certificate not trusted) nats-py
                # 2.16's close() waits for good on a stream the handshake left detached, and
                # the relay held there, logging nothing, never trying again.
                await asyncio.wait_for(nc.close(), CLOSE_SECONDS)

    def _require(self) -> Client:
        if self._nc is None or not self.connected:
            raise BrokerUnavailable(self._reason(nats.errors.ConnectionClosedError()))
        return self._nc

    def _manager(self) -> JetStreamContext:
        if self._js is None or not self.connected:
            raise BrokerUnavailable(self._reason(nats.errors.ConnectionClosedError()))
        return self._js

    def _reason(self, error: BaseException) -> str:
        # NoServersError hides why: the client's last error says it (refused, timed out).
        if isinstance(error, nats.errors.NoServersError) and self._last_error is not None:
            error = self._last_error
        if isinstance(error, nats.errors.ConnectionClosedError):
            return "connection lost"
        if isinstance(error, nats.js.errors.APIError):
            return f"JetStream refused: {error.description} (error {error.err_code})"
        text = str(error).removeprefix("nats: ")
        return f"{type(error).__name__}: {text}" if text else type(error).__name__

    async def _on_error(self, error: Exception) -> None:
        self._last_error = error
        log.debug("relay: NATS client error: %r", error)
