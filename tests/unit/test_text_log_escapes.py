"""A text log line is one line: what others wrote into a message cannot forge another."""

from __future__ import annotations

import logging
import sys

from api.log_context import TextFormatter


def record(message: str, *args: object, exc_info: bool = False) -> logging.LogRecord:
    return logging.LogRecord(
        "ledger.notifications", logging.INFO, __file__, 1, message, args,
        sys.exc_info() if exc_info else None,
    )  # fmt: skip


def test_a_receivers_refusal_cannot_start_a_line_of_its_own_nor_drive_the_terminal() -> None:
    """A webhook receiver's error body is logged with the failed attempt: its newline
    started a line that read as the service's own, its escapes cleared the screen."""
    refusal = "HTTP 500: no\n12:00:00 WARNING ledger: token revoked\r\x1b[2J\u2028end"
    line = TextFormatter().format(record("delivery %s attempt 1: %s", "dlv_1", refusal))

    assert line.splitlines() == [line]
    assert line.endswith(
        "ledger.notifications: delivery dlv_1 attempt 1: HTTP 500: no\\n12:00:00 WARNING "
        "ledger: token revoked\\r\\x1b[2J\\u2028end"
    )


def test_a_traceback_keeps_its_lines_after_the_message() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        line = TextFormatter().format(record("failed: %s", "one\ntwo", exc_info=True))

    first, *traceback = line.splitlines()
    assert first.endswith("failed: one\\ntwo")
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-2:] == ["ValueError: bad", "value"]  # the exception's own text as raised
