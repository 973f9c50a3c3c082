"""Logs for people and for machines, with the request id on every line of a request.

On a terminal each line is written for a person (``12:34:56 INFO ledger: …``);
otherwise, or with ``LEDGER_LOG_FORMAT=json``, one JSON object a line for a log
collector. Every line of a request carries its request id, every line of a
webhook its Stripe event id, and each answered request gets one line of its own
(``ledger.access``: method, route, status, milliseconds).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import sys
import time
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

if TYPE_CHECKING:
    import httpx

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
stripe_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stripe_event_id", default=None
)

access_log = logging.getLogger("ledger.access")
"""One line per answered request, at INFO."""
set_request_id, reset_request_id = request_id.set, request_id.reset
set_stripe_event_id = stripe_event_id.set
access_enabled_for = access_log.isEnabledFor
"""Each bound once, as ``ledger.request_scope.get_current_scope`` is (why there)."""


# Fields a line may carry besides its message; JSON gets them as keys.
_CONTEXT_FIELDS = ("request_id", "stripe_event_id")
_ACCESS_FIELDS = ("method", "route", "status", "duration_ms")


class ContextFilter(logging.Filter):
    """Puts the current request id and Stripe event id on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.stripe_event_id = stripe_event_id.get()
        return True


ASYNCPG_POOL_LOG = "asyncpg.pool"
"""The one asyncpg logger that logs a traceback."""


class OneLineDatabaseErrors(logging.Filter):
    """asyncpg's pool's lines about a database error, one line each, with the error.

    While PostgreSQL restarts or is away, asyncpg's pool logs a WARNING with a traceback
    each time it fails to reconnect its floor of connections (after 1, 2, 4 ... s): some
    twenty lines a try, of asyncpg's frames. The ledger's own loops say the same in one
    line (``DATABASE_ERRORS``), and so does the pool now (a filter on its logger:
    ``one_line_pool_errors``, which ``configure_logging`` calls). Any other exception
    keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # Here, not at the top: every command sets this filter up, `ledger audit --help` too.
        from ledger.store.event_store import DATABASE_ERRORS

        if record.exc_info and isinstance(error := record.exc_info[1], DATABASE_ERRORS):
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


HTTPX_LOG = "httpx"
"""httpx's logger: one INFO line per request (at ``-vv``), with the whole URL."""


class UrlsWithoutPaths(logging.Filter):
    """httpx's request lines with each URL cut to its scheme, host and port.

    The dispatcher sends to whatever URL a ``ledger:write`` token registered, and a
    receiver's URL often holds its own secret: a token in the query
    (``https://example.com/hook?token=…``) or the path itself (a chat service's incoming
    webhook). httpx logged every such URL whole, at ``-vv``. The ledger's own lines name
    an endpoint by its id, never its URL.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        import httpx  # loaded already: its own logger's record is what is filtered

        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(_origin(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def _origin(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{host}{port}/…" if host else "(a URL)"


def utc_time(created: float) -> str:
    """``datetime.fromtimestamp(created, UTC).isoformat()``, with the part down to the second
    made once a second: a JSON line's time took ~2.8 µs of its ~10 (one a request)."""
    global _second  # a one-entry cache
    whole = _floor(created)
    micro = round((created - whole) * 1_000_000)  # half to even, as datetime rounds
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    second = _second  # one read: another thread may set it meanwhile
    if second[0] != whole:
        second = _second = (whole, datetime.fromtimestamp(whole, UTC).isoformat()[:-6])
    # The digits of one million and micro, but the first: ``f"{micro:06d}"`` (a format spec
    # parsed a call: ~0.7k instructions more, of the line's ~25k).
    return f"{second[1]}.{str(micro + 1_000_000)[1:]}+00:00" if micro else f"{second[1]}+00:00"


_floor = math.floor
_second: tuple[int, str] = (-1, "")
"""The last whole second ``utc_time`` wrote, and its text without the offset."""


class _AccessLine(msgspec.Struct, omit_defaults=True):
    """An access line as ``JsonFormatter`` writes it: the same keys in the same order."""

    time: str
    level: str
    logger: str
    message: str
    request_id: str | None = None
    stripe_event_id: str | None = None
    method: str | None = None
    route: str | None = None
    status: int | None = None
    duration_ms: float | None = None


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def __init__(self) -> None:
        super().__init__()
        self._access_parts: dict[tuple[str, str, int], tuple[str, str]] = {}

    def access_line(
        self,
        created: float,
        method: str,
        route: str,
        status: int,
        ms: float,
        shown: str,
    ) -> str:
        """The line ``format`` makes of an access record, made without the record
        (``shown``: ``f"{ms:.1f}"``, made by ``log_access`` once for the message and the
        duration).

        Put together from text: the part before the duration and the part after it are
        made once for each method, route and status (as metrics bind their children):
        ~3.6k instructions a line less than a Struct encoded (callgrind, of a spend's ~500k)."""
        if not ms < _SHOWN_AS_JSON_BELOW:
            return self._access_struct(created, method, route, status, ms)
        parts = self._access_parts.get((method, route, status))
        if parts is None:
            parts = self._made_access_parts(method, route, status)
        head, tail = parts
        ids = ""
        if (request := request_id.get()) is not None:
            ids = ',"request_id":' + _json_text(request)
        if (event := stripe_event_id.get()) is not None:
            ids += ',"stripe_event_id":' + _json_text(event)
        return f'{{"time":"{utc_time(created)}{head}{shown} ms"{ids}{tail}{shown}}}'

    def _made_access_parts(self, method: str, route: str, status: int) -> tuple[str, str]:
        """The text around an access line's time and duration (kept for the methods that
        metrics count by name: every other is the client's choice)."""
        message = _json_text(f"{method} {route} {status} ")[:-1]  # its closing quote after
        head = f'","level":"info","logger":{_json_text(access_log.name)},"message":{message}'
        tail = (
            f',"method":{_json_text(method)},"route":{_json_text(route)}'
            f',"status":{status},"duration_ms":'
        )
        if len(self._access_parts) < _ACCESS_PARTS_KEPT and method in _COUNTED_METHODS:
            self._access_parts[(method, route, status)] = (head, tail)
        return head, tail

    def _access_struct(
        self, created: float, method: str, route: str, status: int, ms: float
    ) -> str:
        return msgspec.json.encode(
            _AccessLine(
                time=utc_time(created),
                level="info",
                logger=access_log.name,
                message=_access_message(method, route, status, ms),
                request_id=request_id.get(),
                stripe_event_id=stripe_event_id.get(),
                method=method,
                route=route,
                status=status,
                duration_ms=ms,
            )
        ).decode()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": utc_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in (*_CONTEXT_FIELDS, *_ACCESS_FIELDS):
            if (value := getattr(record, key, None)) is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line).decode()


class TextFormatter(logging.Formatter):
    """A line for a person: time, level, logger, message, then the ids it belongs to."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", _CLOCK)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # A message is one line: what others wrote into it (a receiver's refusal, a name)
        # must not start a line that reads as the service's own, nor drive the terminal.
        # A traceback is added after it, its lines kept.
        message = record.message
        record.message = message.translate(_ESCAPED)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = _ids(getattr(record, "request_id", None), getattr(record, "stripe_event_id", None))
        if not ids:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first}{ids}{newline}{rest}"

    def access_line(
        self,
        created: float,
        method: str,
        route: str,
        status: int,
        ms: float,
        shown: str,
    ) -> str:
        """The line ``format`` makes of an access record, made without the record
        (``shown``: ``f"{ms:.1f}"``, made by ``log_access`` once for the message and the
        duration)."""
        clock = time.strftime(_CLOCK, self.converter(created))
        ids = _ids(request_id.get(), stripe_event_id.get())
        message = f"{method} {route} {status} {shown} ms"
        return f"{clock} INFO    {access_log.name}: {message}{ids}"


_CLOCK = "%H:%M:%S"

_ESCAPED = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
"""Control characters and line separators as Python writes them escaped (``\\n``, ``\\x1b``)."""


def _access_message(method: str, route: str, status: int, ms: float) -> str:
    """An access line's message, as ``log_access``'s record formats it."""
    return f"{method} {route} {status} {ms:.1f} ms"


def _json_text(text: str) -> str:
    return msgspec.json.encode(text).decode()


_SHOWN_AS_JSON_BELOW = 1e8
"""Below this many milliseconds msgspec writes a duration of one decimal as ``f"{ms:.1f}"``
does (``12.3``, ``5.0``; no exponent), so a JSON line writes ``shown`` for both."""

_ACCESS_PARTS_KEPT = 4096
"""At most this many method, route and status keys: routes are the app's templates,
statuses 100-599, methods the fixed set below, so far fewer are ever made."""

_COUNTED_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def _ids(request: str | None, event: str | None) -> str:
    """The ids a text line ends with (``  [request …, event …]``), or nothing."""
    if request and event:
        return f"  [request {request}, event {event}]"
    if request:
        return f"  [request {request}]"
    if event:
        return f"  [event {event}]"
    return ""


class BatchedLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes the lines of one event-loop turn together.

    With a line per request, writing each line as it comes (a ``write`` and a flush
    each) was a fifth of a balance read's CPU. Lines logged in a running event loop
    wait for the end of the loop's turn and go out in one write; WARNING and above,
    and lines from outside a loop, go out at once, after whatever waits (the order
    is kept). ``logging.shutdown`` at exit, and a fork, flush what waits first.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None
        _batching.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle holds self.lock around this.
        try:
            line = self.format(record)
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)
            return
        self._take(line, record.levelno)

    def emit_line(self, line: str) -> None:
        """Write a line made already (at INFO), as ``emit`` writes a record's."""
        with self.lock:  # type: ignore[union-attr]
            self._take(line, logging.INFO)

    def _take(self, line: str, level: int) -> None:
        self._waiting.append(line + self.terminator)
        if level < logging.WARNING:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                if self._flush_on is not loop:
                    self._flush_on = loop
                    loop.call_soon(self.flush)
                return
        self._write_waiting()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_on = None
            self._write_waiting()

    def _write_waiting(self) -> None:
        if not self._waiting:
            return
        text = "".join(self._waiting)
        self._waiting.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the stream is gone (a closed pipe, exit)
            pass


_batching: weakref.WeakSet[BatchedLineHandler] = weakref.WeakSet()
"""Every live ``BatchedLineHandler``: a child must not inherit, and write again, what waits."""


def _flush_before_fork() -> None:
    for handler in list(_batching):
        handler.flush()


# One hook for all of them: a hook per handler would keep every handler ever made alive.
os.register_at_fork(before=_flush_before_fork)


def log_format(env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> str:
    """``text`` or ``json``: what ``LEDGER_LOG_FORMAT`` asks, else text only on a terminal."""
    env = os.environ if env is None else env
    asked = env.get("LEDGER_LOG_FORMAT", "").strip().lower() or "auto"
    if asked in ("text", "json"):
        return asked
    stream = sys.stderr if stream is None else stream
    return "text" if stream.isatty() else "json"


def configure_logging(level: int, env: Mapping[str, str] | None = None) -> None:
    """One handler on stderr (``BatchedLineHandler``), in the format ``log_format`` chooses."""
    # No line shows the caller's file, thread or process: not looking them up takes a
    # record from about 39 µs to 11 µs here, which matters with a line per request
    # (the logging HOWTO's "Optimization" section names these switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchedLineHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(TextFormatter() if log_format(env) == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    one_line_pool_errors()
    httpx_log = logging.getLogger(HTTPX_LOG)
    if not any(isinstance(f, UrlsWithoutPaths) for f in httpx_log.filters):
        httpx_log.addFilter(UrlsWithoutPaths())


def one_line_pool_errors() -> None:
    """``OneLineDatabaseErrors`` on asyncpg's pool's logger, once however often it is asked."""
    pool_log = logging.getLogger(ASYNCPG_POOL_LOG)
    if not any(isinstance(f, OneLineDatabaseErrors) for f in pool_log.filters):
        pool_log.addFilter(OneLineDatabaseErrors())


def log_access(method: str, route: str, status: int, seconds: float) -> None:
    """The request's access line (``ledger.access`` at INFO).

    A record, its filter and its formatter cost a balance read about a sixth of its
    CPU; where ``configure_logging``'s handler is the only one the line reaches, the
    line is made straight from the fields, the same text the formatter would make.
    """
    # ``round(seconds * 1000, 1)`` is the float of its text to one decimal (both are the
    # correctly rounded decimal): one conversion to decimal a line fewer (~2k instructions).
    shown = f"{seconds * 1000:.1f}"
    milliseconds = float(shown)
    handler = _sole_access_handler()
    if handler is not None:
        formatter: JsonFormatter | TextFormatter = handler.formatter  # type: ignore[assignment]
        try:
            line = formatter.access_line(time.time(), method, route, status, milliseconds, shown)
        except Exception:  # logging never raises: the record's road below reports it
            line = None
        if line is not None:
            handler.emit_line(line)
            return
    access_log.info(
        "%s %s %d %.1f ms",
        method,
        route,
        status,
        milliseconds,
        extra={"method": method, "route": route, "status": status, "duration_ms": milliseconds},
    )


_DIRECT_FORMATTERS = (JsonFormatter, TextFormatter)


def _sole_access_handler() -> BatchedLineHandler | None:
    """``configure_logging``'s handler when an access line reaches it and nothing else:
    no handler, filter or stop on the way (a test's capturing handler is one more)."""
    root = logging.root
    logger = access_log
    while logger is not root:
        if logger.handlers or logger.filters or not logger.propagate:
            return None
        logger = logger.parent  # type: ignore[assignment]
    if root.filters or len(root.handlers) != 1:
        return None
    handler = root.handlers[0]
    if (
        type(handler) is not BatchedLineHandler
        or handler.level > logging.INFO
        or type(handler.formatter) not in _DIRECT_FORMATTERS
        or len(handler.filters) != 1
        or type(handler.filters[0]) is not ContextFilter
    ):
        return None
    return handler
