"""What ``ledger serve`` says when its stop cuts requests off (api/startup.py)."""

from __future__ import annotations

import logging

import pytest

from api.startup import STOP_GRACE_SECONDS, _quiet_about_cut_off_requests


def test_the_grace_ending_is_the_ledgers_warning_not_uvicorns_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Ctrl-C with a request still in flight 20 s later ended on "ERROR uvicorn.error:
    Cancel 1 running task(s), timeout graceful shutdown exceeded", for the stop the README
    promises (a newcomer's review)."""
    _quiet_about_cut_off_requests()  # as the server's shutdown does first
    with caplog.at_level(logging.INFO):
        logging.getLogger("uvicorn.error").error(
            "Cancel %s running task(s), timeout graceful shutdown exceeded", 2
        )

    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "ledger",
            "WARNING",
            f"stopping now (the {STOP_GRACE_SECONDS} s grace ended): 2 requests in flight cut off",
        )
    ]
