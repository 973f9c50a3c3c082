"""The relay loop: read a batch in commit order, publish it, wait for every ack, commit.

The position moves only after JetStream has acknowledged the whole batch, in
the transaction that holds the relay's turn (``relay.positions``). A relay
killed after the acks and before its commit finds, on restart, that the
stream's last message is further on than its position: the stream is a gapless
prefix of the store (``relay.publisher``), so it moves on from there instead of
publishing again. Anything published twice anyway (say by a relay whose last
ack was lost) carries the same ``Nats-Msg-Id`` and is dropped by JetStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import ssl
import time

import asyncpg
import msgspec

from ledger.failing_loop import SAY_AGAIN_SECONDS, said_lately
from ledger.store.event_store import DATABASE_ERRORS, NOTIFY_CHANNEL, EventStore, RecordedEvent
from ledger.store.migrate import RELAY_ROLE
from ledger.store.wakeups import Listening, wait_for_either
from ledger.urls import UNREADABLE, names_this_machine, readable, without_password
from relay.messages import outgoing
from relay.positions import (
    Connection,
    beyond_a_relay,
    claim,
    commit,
    read_position,
    register,
)
from relay.publisher import (
    DEFAULT_STREAM,
    BrokerUnavailable,
    JetStreamPublisher,
    RelayRefused,
    StreamSettings,
    StreamTail,
    tls_context,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "nats://127.0.0.1:4222"
POSITION_NAME = "relay:nats"
"""The position row of the relay to the default stream; another stream's is
``relay:nats:<stream>`` (``position_name``)."""
BATCH_SIZE = 500
# Without a notification on NOTIFY_CHANNEL (the group committer's, after its appends commit),
# or while an old transaction holds the watermark back, the relay still looks this often.
POLL_SECONDS = 0.5
FIRST_RETRY_SECONDS = 0.5
LAST_RETRY_SECONDS = 5.0
STALL_SECONDS = 30.0
"""A batch not done this long after its ack timeout waits on a database that does not answer
(a network partition: no error comes, PostgreSQL's own timeouts never see the statement)."""


_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]+")


class RelaySettings(msgspec.Struct, frozen=True):
    """Where to publish and how much at a time."""

    url: str = DEFAULT_URL
    stream: StreamSettings = StreamSettings()
    batch_size: int = BATCH_SIZE
    position_name: str = POSITION_NAME
    ack_timeout: float = 10.0
    tls_ca: str | None = None
    """CA certificates for a ``tls://`` broker's (None: the system's)."""


def relay_settings(
    *,
    url: str = DEFAULT_URL,
    subject_prefix: str = "ledger.events",
    stream: str = DEFAULT_STREAM,
    duplicate_window_seconds: float = 120.0,
    batch_size: int = BATCH_SIZE,
    tls_ca: str | None = None,
) -> RelaySettings:
    """Checked settings, without connecting; ``ValueError`` says what is wrong."""
    if not re.match(r"^(nats|tls)://[^\s]+$", url) or not readable(url):
        shown = without_password(url, hide_user=True)
        raise ValueError(
            f"{'the URL given' if shown == UNREADABLE else shown} is not a NATS URL "
            "(nats://host:port or tls://host:port, a port of 1 to 65535)"
        )
    if not all(_SUBJECT_TOKEN.fullmatch(token) for token in subject_prefix.split(".")):
        raise ValueError(
            f"{subject_prefix!r} is not a subject prefix: dot-separated tokens of letters, "
            "digits, '_' or '-' (no wildcards)"
        )
    if not _STREAM_NAME.fullmatch(stream):
        raise ValueError(f"{stream!r} is not a stream name: letters, digits, '_' or '-'")
    if duplicate_window_seconds <= 0:
        raise ValueError("the duplicate window must be positive")
    if batch_size < 1:
        raise ValueError("the batch size must be at least 1")
    if tls_ca:
        if not url.startswith("tls://"):
            raise ValueError("a TLS CA file is for a tls:// URL; a nats:// one is not TLS")
        try:
            tls_context(tls_ca)
        except (OSError, ssl.SSLError) as error:
            why = " ".join(str(error).split())
            raise ValueError(f"the TLS CA file {tls_ca} cannot be read: {why}") from None
    return RelaySettings(
        url=url,
        stream=StreamSettings(
            name=stream,
            subject_prefix=subject_prefix,
            duplicate_window_seconds=duplicate_window_seconds,
        ),
        batch_size=batch_size,
        position_name=position_name(stream),
        tls_ca=tls_ca or None,
    )


def production_problems(url: str | None) -> list[str]:
    """What ``LEDGER_ENV=production`` refuses of the broker's URL (None: none given), one line
    each: the development default, a broker anyone who reaches it may use, and credentials
    sent in plain text (``nats://``) past this machine."""
    if url is None:
        return [
            "LEDGER_ENV=production needs LEDGER_RELAY_URL (or --to): the relay's default, "
            f"{DEFAULT_URL}, is for development"
        ]
    address = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    userinfo, at, _ = address.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not user or (colon and not password):
        return [
            f"LEDGER_ENV=production refuses {without_password(url, hide_user=True)}: a NATS "
            "URL without credentials (tls://user:password@host:port, or a token: "
            "tls://token@host:port); anyone who reaches an open broker can publish into the "
            "ledger's stream or delete it"
        ]
    hosts = address.rpartition("@")[2].split(",")
    if url.partition("://")[0].lower() == "nats" and not all(map(_loopback, hosts)):
        return [
            f"LEDGER_ENV=production refuses {without_password(url, hide_user=True)}: nats:// "
            "sends its credentials in plain text to a host other than this machine; use tls://"
        ]
    return []


_HOST_PORT = re.compile(r"\[([^\]]*)\](?::\d*)?|([^:]*)(?::\d*)?")


def _loopback(host_port: str) -> bool:
    """Whether one server of a URL (``host:port``, ``[::1]:4222``) is this machine."""
    matched = _HOST_PORT.fullmatch(host_port)
    return names_this_machine((matched[1] or matched[2] or "") if matched else "")


def position_name(stream: str) -> str:
    """The row of ``projection_positions`` a relay to ``stream`` keeps its position in: one
    each, since a relay that finds its stream behind its position goes on from the position
    (a purged stream); two streams sharing one row each skipped what the other published."""
    return POSITION_NAME if stream == DEFAULT_STREAM else f"{POSITION_NAME}:{stream}"


class _InStream(msgspec.Struct, frozen=True):
    """What this relay knows the stream holds: every position up to ``position``, ending
    at sequence ``last_seq``."""

    position: int
    last_seq: int


class Relay:
    """Publishes the store's events to JetStream until stopped."""

    def __init__(
        self,
        store: EventStore,
        pool: asyncpg.Pool,
        database_url: str,
        settings: RelaySettings,
    ) -> None:
        self.store = store
        self.pool = pool
        self.database_url = database_url
        self.settings = settings
        self.publisher = JetStreamPublisher(
            settings.url, settings.stream, ack_timeout=settings.ack_timeout, tls_ca=settings.tls_ca
        )
        self.position = 0
        """The committed position, as this relay last saw it (for logs and tests)."""
        self.published = 0
        """Events this relay published and committed (another relay may do its share)."""
        self._in_stream: _InStream | None = None
        self._wake = asyncio.Event()
        self._delay = FIRST_RETRY_SECONDS
        self._troubled = False
        self._said: tuple[str, float] | None = None
        """The trouble's line as last said at WARNING, and when (``said_lately``)."""
        self._told_of_another = False
        self._registered = False

    async def run(self, stop: asyncio.Event) -> None:
        """Publish everything visible, then follow new events, until ``stop`` is set.

        A batch in flight is finished (acknowledged and committed, or given up)
        before it returns. ``RelayRefused`` when the stream is not this ledger's.
        """
        listening = Listening(
            self.database_url, NOTIFY_CHANNEL, self._wake, who="relay", poll_seconds=POLL_SECONDS
        )
        await listening.keep()
        with contextlib.suppress(*DATABASE_ERRORS):
            self.position = await read_position(self.pool, self.settings.position_name)
        log.info(
            "relay started at position %d: publishing to %s, stream %s, subjects %s",
            self.position,
            without_password(self.settings.url, hide_user=True),
            self.settings.stream.name,
            self.settings.stream.subjects,
        )
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    sent = await self.step()
                except BrokerUnavailable as error:
                    # Start afresh: a new connection, the stream made sure of, its tail read.
                    await self.publisher.close()
                    with contextlib.suppress(*DATABASE_ERRORS):
                        await self._register()
                    shown = without_password(self.settings.url, hide_user=True)
                    await self._retry_later(f"NATS at {shown} unavailable", error, stop)
                    continue
                except DATABASE_ERRORS as error:
                    await self._retry_later("the event store is unavailable", error, stop)
                    continue
                self._recovered()
                if not sent:
                    await listening.keep()  # again, if PostgreSQL cut its connection off
                    await wait_for_either(self._wake, stop, seconds=POLL_SECONDS)
        finally:
            await listening.close()
            await self.publisher.close()
            log.info("relay stopped at position %d", self.position)

    async def step(self) -> int:
        """Publish the next batch and commit its position; return how many events it held."""
        if not self.publisher.connected:
            self._in_stream = None
            await self.publisher.connect()
        async with self.pool.acquire() as connection:
            # A database behind a partition answers nothing and raises nothing, and a
            # cancelled statement waits for its server too: the connection is cut instead.
            seconds = self.settings.ack_timeout + STALL_SECONDS
            stalled: list[bool] = []

            def cut() -> None:
                stalled.append(True)
                connection.terminate()

            watchdog = asyncio.get_running_loop().call_later(seconds, cut)
            try:
                async with connection.transaction():
                    done = await self._publish_next(connection)
            except DATABASE_ERRORS as error:
                if stalled:
                    raise TimeoutError(f"no answer within {seconds:.0f}s") from error
                raise
            finally:
                watchdog.cancel()
        if done is None:
            return 0
        await self._register()
        in_stream, events = done
        # Committed: only now is the position the stream's and the database's alike.
        self._in_stream = in_stream
        if events:
            self.published += len(events)
            log.debug("relay: published up to position %d", in_stream.position)
        self.position = in_stream.position
        return len(events)

    async def _register(self) -> None:
        """Make this relay's position row (at 0) if there is none yet: ``/metrics`` then shows
        its lag from its start, also while it has never reached its broker (called when the
        broker is unavailable, and after each batch).

        Not before the broker has answered and the stream proved this ledger's: each relay
        refused for good at its start (a stream of another ledger's, subjects another stream
        holds: exit 1, "use another --stream") left a row at 0 that no relay would move,
        behind by the whole store in ``/metrics`` for ever, one for each stream tried.
        """
        if not self._registered:
            self.position = await register(self.pool, self.settings.position_name)
            self._registered = True

    async def _publish_next(
        self, connection: Connection
    ) -> tuple[_InStream, list[RecordedEvent]] | None:
        """In the turn's transaction: the next batch published, its position committed;
        None while another relay has the turn."""
        committed = await claim(connection, self.settings.position_name)
        if committed is None:
            if not self._told_of_another:
                log.info(
                    "relay: another relay is publishing %s too; taking turns, batch by batch",
                    self.settings.position_name,
                )
                self._told_of_another = True
            return None
        self.position = committed
        known = self._in_stream
        if known is None or known.position != committed:
            # Just connected, after a failure, or another relay moved on: look again.
            self._in_stream = None
            known = await self._reconcile(connection, committed)
        events = await self.store.read_all(
            after=known.position, limit=self.settings.batch_size, connection=connection
        )
        if events:
            prefix = self.settings.stream.subject_prefix
            last_seq = await self.publisher.publish(
                [outgoing(event, prefix) for event in events], after_seq=known.last_seq
            )
            in_stream = _InStream(events[-1].notification_id, last_seq)
        else:
            in_stream = known
        if in_stream.position != committed:
            await commit(connection, self.settings.position_name, in_stream.position)
        return in_stream, events

    async def _reconcile(self, connection: Connection, committed: int) -> _InStream:
        """Where to publish from, given what the stream holds and the committed position."""
        name = self.settings.stream.name
        tail: StreamTail = await self.publisher.tail()
        if tail.position is None:
            if tail.last_seq == 0:
                if committed:
                    log.warning(
                        "relay: stream %s is new: publishing the whole history again "
                        "(the relay had reached position %d elsewhere)",
                        name,
                        committed,
                    )
                return _InStream(0, 0)
            log.warning(
                "relay: stream %s holds no relayed event at its end (sequence %d); "
                "publishing after position %d",
                name,
                tail.last_seq,
                committed,
            )
            return _InStream(committed, tail.last_seq)
        # By its position, not behind the watermark: this look's can stand below an event
        # published after an earlier look's, and the relay refused its own stream.
        found = await self.store.event_at(tail.position, connection=connection)
        if found is None or found.hash.hex() != tail.hash:
            raise RelayRefused(
                f"stream {name} ends with position {tail.position}, which is not this ledger's "
                "event at that position: it holds another ledger's events (or the database was "
                "restored from a backup older than the stream). Publish to another stream "
                "(--stream), or delete that one to publish the whole history again."
            )
        if tail.position > committed:
            log.info(
                "relay: stream %s already holds everything up to position %d (committed: %d); "
                "going on from there",
                name,
                tail.position,
                committed,
            )
            return _InStream(tail.position, tail.last_seq)
        if tail.position < committed:
            # Its last message is this ledger's, so the stream is the store up to there: what
            # it lacks is what a broker that came back lost (or a stream restored from a
            # backup), and consumers would never see it. Filling it in keeps the stream whole.
            log.warning(
                "relay: stream %s ends at position %d but the relay committed %d: the events "
                "in between are not in it (a broker that lost what it acknowledged last, or a "
                "stream restored from a backup); publishing them again after %d",
                name,
                tail.position,
                committed,
                tail.position,
            )
        return _InStream(tail.position, tail.last_seq)

    async def _retry_later(self, what: str, error: BaseException, stop: asyncio.Event) -> None:
        self._in_stream = None
        delay = self._delay
        self._delay = min(self._delay * 2, LAST_RETRY_SECONDS)
        self._troubled = True
        # Said once, then every 10 minutes while it lasts (at DEBUG at each try between):
        # every 5 s, a broker down for an hour was 720 lines.
        line = f"relay: {what} ({_describe(error)}); holding at position {self.position}"
        now = time.monotonic()
        again = said_lately(self._said, line, now, SAY_AGAIN_SECONDS)
        if not again:
            self._said = (line, now)
        log.log(
            logging.DEBUG if again else logging.WARNING,
            "%s, retrying in %.1fs%s",
            line,
            delay,
            ""
            if again
            else f"; said again every {SAY_AGAIN_SECONDS / 60:.0f} minutes while it lasts",
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)

    def _recovered(self) -> None:
        self._delay = FIRST_RETRY_SECONDS
        if self._troubled:
            log.info("relay: recovered; publishing from position %d", self.position)
            self._troubled = False
            self._said = None


def _describe(error: BaseException) -> str:
    if isinstance(error, BrokerUnavailable):
        return str(error)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def run_until_stopped(
    store: EventStore, pool: asyncpg.Pool, database_url: str, settings: RelaySettings
) -> None:
    """Run the relay until SIGINT or SIGTERM; the batch in flight is finished first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(*DATABASE_ERRORS):
        if (beyond := await beyond_a_relay(pool)) is not None:
            log.warning(
                "relay: %s, which a relay never needs; connect it as %s (docs/relay.md)",
                beyond,
                RELAY_ROLE,
            )
    await Relay(store, pool, database_url, settings).run(stop)
