"""The access line made straight from its fields (api/log_context.py) is the line its record makes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest

from api.log_context import (
    ASYNCPG_POOL_LOG,
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    access_log,
    configure_logging,
    log_access,
    request_id,
    stripe_event_id,
    utc_time,
)

CREATED = 1764072000.25  # 2025-11-25T12:00:00.250000+00:00


def record_line(
    formatter: logging.Formatter, method: str, route: str, status: int, ms: float
) -> str:
    """What the record road writes: a record, the handler's filter, the formatter."""
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        0,
        "%s %s %d %.1f ms",
        (method, route, status, ms),
        None,
        extra={"method": method, "route": route, "status": status, "duration_ms": ms},
    )
    record.created = CREATED
    ContextFilter().filter(record)
    return formatter.format(record)


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
@pytest.mark.parametrize(
    ("request_value", "event_value"),
    [("req-1", None), ("req-2", "evt_1"), (None, "evt_2"), (None, None)],
)
def test_the_direct_line_is_the_line_the_record_makes(
    formatter: JsonFormatter | TextFormatter, request_value: str | None, event_value: str | None
) -> None:
    request_token = request_id.set(request_value)
    event_token = stripe_event_id.set(event_value)
    try:
        for method, route, status, ms in [
            ("GET", "/v1/accounts/{account_id}/credits", 200, 0.4),
            ("POST", "/v1/stripe/webhook", 400, 12.0),
            ("DELETE", "unmatched", 405, 1234.5),
        ]:
            direct = formatter.access_line(CREATED, method, route, status, ms, f"{ms:.1f}")
            assert direct == record_line(formatter, method, route, status, ms)
    finally:
        request_id.reset(request_token)
        stripe_event_id.reset(event_token)


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_the_line_made_from_the_shown_duration_is_the_line_the_record_makes(
    formatter: JsonFormatter | TextFormatter,
) -> None:
    # As log_access makes it: the duration and its text made once, the parts
    # around them kept per method, route and status (made the first time, reused after).
    rng = random.Random(15)
    ids = [("req-1", None), ("req-2", "evt_1"), (None, "evt_2"), (None, None)]
    ids += [('a "quoted" id\\', "évènement\n"), ("\u2028", None)]
    requests = [
        ("POST", "/v1/accounts/{account_id:str}/spend", 200),
        ("GET", "/v1/accounts/{account_id}/credits", 404),
        ("BREW", "unmatched", 405),
        ('PO"ST', "/v1/é/{x}\\", 499),
    ]
    seconds = [0.0, 0.00004, 0.00005, 0.00015, 0.0012, 1.5e5, 2.9e5, -1.0]
    seconds += [rng.uniform(0, 0.2) for _ in range(300)]
    for request_value, event_value in ids:
        request_token = request_id.set(request_value)
        event_token = stripe_event_id.set(event_value)
        try:
            for _ in range(2):
                for method, route, status in requests:
                    for moment in seconds:
                        ms = round(moment * 1000, 1)
                        shown = f"{ms:.1f}"
                        direct = formatter.access_line(CREATED, method, route, status, ms, shown)
                        assert direct == record_line(formatter, method, route, status, ms)
        finally:
            request_id.reset(request_token)
            stripe_event_id.reset(event_token)


def test_msgspec_writes_a_duration_of_one_decimal_as_the_message_does() -> None:
    # The JSON line writes the message's text of the duration for its number, below 1e8 ms.
    rng = random.Random(15)
    tenths = [*range(100_000), *(rng.randrange(10**9) for _ in range(100_000)), 10**9 - 1]
    for whole in tenths:
        ms = round(whole / 10, 1)
        assert msgspec.json.encode(ms).decode() == f"{ms:.1f}", ms


def test_a_lines_time_is_what_datetime_writes_to_the_microsecond() -> None:
    # Whole seconds (no fraction written), the halves datetime rounds to even, the last
    # microsecond of a second that rounds up into the next, then moments at random.
    moments = [CREATED, 1764072000.0, 1764072000.9999995, 1764072000.9999994, 1.5e9 + 5e-7, 0.0]
    rng = random.Random(15)
    moments += [rng.uniform(0, 4e9) for _ in range(20_000)]
    moments += [
        rng.randrange(4 * 10**9) + (rng.randrange(10**6) + 0.5) / 1e6 for _ in range(20_000)
    ]
    for moment in moments:
        assert utc_time(moment) == datetime.fromtimestamp(moment, UTC).isoformat(), moment


def test_a_lines_duration_is_the_milliseconds_rounded_to_one_decimal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The record road (a second handler: caplog's) carries the number the direct line writes.
    rng = random.Random(15)
    seconds = [0.00125, 0.00025, 0.00005, 0.0, 1e-9, 0.0499999, 12.34567, 99999.99995]
    seconds += [k / 20_000 for k in range(2_000)]  # halves of a tenth of a millisecond
    seconds += [rng.random() * 10 ** rng.randint(-6, 5) for _ in range(2_000)]
    with caplog.at_level(logging.INFO, logger=access_log.name):
        for value in seconds:
            log_access("GET", "/healthz", 200, value)
    for value, record in zip(seconds, caplog.records, strict=True):
        ms = round(value * 1000, 1)
        assert record.duration_ms == ms, value  # type: ignore[attr-defined]
        assert record.getMessage() == f"GET /healthz 200 {ms:.1f} ms", value


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., io.StringIO]]:
    """Configures logging as the server does, in the test itself (pytest sets its own
    handlers on the root logger, and its own ``sys.stderr``, after fixtures); JSON lines
    unless asked for text."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()

    def configure(log_format: str = "json") -> io.StringIO:
        monkeypatch.setattr("sys.stderr", stream)
        configure_logging(logging.INFO, {"LEDGER_LOG_FORMAT": log_format})
        return stream

    yield configure
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_with_the_service_handler_alone_the_line_skips_the_record(
    configured: Callable[[], io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = configured()
    made: list[object] = []
    monkeypatch.setattr(access_log, "makeRecord", lambda *a, **k: made.append(a))
    token = request_id.set("req-direct")
    try:
        log_access("GET", "/healthz", 200, 0.0012)
    finally:
        request_id.reset(token)
    await asyncio.sleep(0)  # the end of the loop's turn writes the lines

    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert made == []
    assert line["message"] == "GET /healthz 200 1.2 ms"
    assert (line["logger"], line["request_id"], line["duration_ms"]) == (
        "ledger.access",
        "req-direct",
        1.2,
    )


async def test_a_second_handler_gets_the_record_and_the_service_handler_the_same_line(
    configured: Callable[[], io.StringIO], caplog: pytest.LogCaptureFixture
) -> None:
    stream = configured()
    logging.getLogger().addHandler(caplog.handler)
    with caplog.at_level(logging.INFO, logger=access_log.name):
        log_access("POST", "/v1/accounts/{account_id}/spend", 201, 0.0031)
        await asyncio.sleep(0)

    [record] = [r for r in caplog.records if r.name == access_log.name]
    assert (record.method, record.status, record.duration_ms) == (  # type: ignore[attr-defined]
        "POST",
        201,
        3.1,
    )
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["message"] == "POST /v1/accounts/{account_id}/spend 201 3.1 ms"


async def test_a_handler_on_the_way_gets_the_line_too(
    configured: Callable[[], io.StringIO],
) -> None:
    stream = configured()
    seen = io.StringIO()
    on_the_way = logging.StreamHandler(seen)
    ledger_logger = logging.getLogger("ledger")
    ledger_logger.addHandler(on_the_way)
    try:
        log_access("GET", "/readyz", 503, 0.002)
        await asyncio.sleep(0)
    finally:
        ledger_logger.removeHandler(on_the_way)

    assert seen.getvalue() == "GET /readyz 503 2.0 ms\n"
    assert json.loads(stream.getvalue())["status"] == 503


async def test_a_direct_line_that_fails_to_be_made_takes_the_record_road(
    configured: Callable[[], io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = configured()

    def broken(*_: object) -> str:
        raise ValueError("cannot make the line")

    monkeypatch.setattr(JsonFormatter, "access_line", broken)
    log_access("GET", "/healthz", 200, 0.001)  # raises nothing
    await asyncio.sleep(0)

    assert json.loads(stream.getvalue())["message"] == "GET /healthz 200 1.0 ms"


def logged_with(
    configured: Callable[..., io.StringIO], error: BaseException, logger: str
) -> list[str]:
    """The lines of a WARNING that ``logger`` logs with ``error``, logging configured as the
    server configures it (in text)."""
    stream = configured("text")
    before = len(stream.getvalue())  # the lines of an earlier call stay in the stream
    try:
        raise error
    except BaseException:
        logging.getLogger(logger).warning(
            "Failed to restore the pool connection floor; retrying", exc_info=True
        )
    return stream.getvalue()[before:].splitlines()


def test_asyncpg_reconnecting_to_a_restarting_database_says_so_in_one_line(
    configured: Callable[..., io.StringIO],
) -> None:
    lines = logged_with(
        configured,
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
        ASYNCPG_POOL_LOG,
    )

    [line] = lines
    assert line.endswith(
        "WARNING asyncpg.pool: Failed to restore the pool connection floor; retrying: "
        "CannotConnectNowError: the database system is shutting down"
    )


def test_other_errors_and_the_ledgers_own_lines_keep_their_traceback(
    configured: Callable[..., io.StringIO],
) -> None:
    surprise = logged_with(configured, ValueError("a bug"), ASYNCPG_POOL_LOG)
    own = logged_with(configured, ConnectionRefusedError("refused"), "projections.runner")

    for lines in (surprise, own):
        assert len(lines) > 1
        assert lines[1] == "Traceback (most recent call last):"
