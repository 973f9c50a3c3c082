"""BatchedLineHandler (api/log_context.py): lines of one loop turn go out together, in order."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.log_context import BatchedLineHandler


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, BatchedLineHandler]]:
    stream = io.StringIO()
    handler = BatchedLineHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"tests.batched.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, stream, handler
    logger.removeHandler(handler)


async def test_lines_of_one_loop_turn_go_out_together_at_its_end(
    logged: tuple[logging.Logger, io.StringIO, BatchedLineHandler],
) -> None:
    logger, stream, _ = logged
    for n in range(3):
        logger.info("line %d", n)
    assert stream.getvalue() == ""

    await asyncio.sleep(0)

    assert stream.getvalue() == "INFO line 0\nINFO line 1\nINFO line 2\n"


async def test_a_warning_goes_out_at_once_after_the_lines_before_it(
    logged: tuple[logging.Logger, io.StringIO, BatchedLineHandler],
) -> None:
    logger, stream, _ = logged
    logger.info("before")
    logger.warning("now")

    assert stream.getvalue() == "INFO before\nWARNING now\n"
    await asyncio.sleep(0)
    assert stream.getvalue() == "INFO before\nWARNING now\n"  # nothing twice


async def test_a_line_from_another_thread_keeps_its_place(
    logged: tuple[logging.Logger, io.StringIO, BatchedLineHandler],
) -> None:
    logger, stream, _ = logged
    logger.info("in the loop")
    thread = threading.Thread(target=logger.info, args=("in a thread",))
    thread.start()
    thread.join()

    assert stream.getvalue() == "INFO in the loop\nINFO in a thread\n"


async def test_flush_writes_what_waits_as_logging_shutdown_does_at_exit(
    logged: tuple[logging.Logger, io.StringIO, BatchedLineHandler],
) -> None:
    logger, stream, handler = logged
    logger.info("last words")
    handler.flush()

    assert stream.getvalue() == "INFO last words\n"


def test_outside_a_loop_every_line_goes_out_at_once(
    logged: tuple[logging.Logger, io.StringIO, BatchedLineHandler],
) -> None:
    logger, stream, _ = logged
    logger.info("plain")

    assert stream.getvalue() == "INFO plain\n"


async def test_a_fork_writes_what_waits_first_so_the_child_does_not_write_it_again(
    tmp_path: Path,
) -> None:
    with (tmp_path / "log").open("w") as stream:
        handler = BatchedLineHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger(f"tests.batched.fork.{id(stream)}")
        logger.propagate = False
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            logger.info("before the fork")  # waits for the end of this loop turn
            child = os.fork()
            if child == 0:  # the child: whatever it inherited waiting would go out now
                handler.flush()
                os._exit(0)
            await asyncio.to_thread(os.waitpid, child, 0)
            handler.flush()
        finally:
            logger.removeHandler(handler)

    assert (tmp_path / "log").read_text() == "before the fork\n"


def test_a_handler_no_longer_used_is_not_kept_alive() -> None:
    handler = weakref.ref(BatchedLineHandler(io.StringIO()))
    gc.collect()

    assert handler() is None
