"""What the dispatcher reads of a receiver's answer (ledger/notifications/dispatcher.py), on
``httpx.MockTransport``: the receiver's side of the network is the test's."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from ledger.notifications.dispatcher import Dispatcher
from ledger.notifications.outbox import DueDelivery

DUE = DueDelivery(1, 1, "evt_1_credits_spent", "we_1", "https://receiver.example/hooks", "s", "{}")


class _Sent(httpx.AsyncByteStream):
    """A body as a receiver sends it, 64 KiB at a time."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), 65536):
            yield self.body[start : start + 65536]


def _gzip_of_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(bytes(size)) + compressor.flush()


@pytest.mark.parametrize("status", [200, 500])
async def test_a_compressed_answer_is_read_no_further_than_the_limit_on_the_wire(
    status: int,
) -> None:
    """64 KiB of gzip is 64 MiB of zeros: read decoded, the first chunk alone held that much
    in memory, in the process that also runs the projector, once per slot (a review)."""
    bomb = _gzip_of_zeros(64 * 1024 * 1024)

    def receiver(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"Content-Encoding": "gzip"}, stream=_Sent(bomb))

    dispatcher = Dispatcher(None, timeout=5)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        tracemalloc.start()
        try:
            answered, text = await dispatcher._post(client, DUE, {})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert answered == status
    assert len(text) <= 200
    assert peak < 8 * 1024 * 1024


class _CutOff(httpx.AsyncByteStream):
    """The start of a body, then the connection lost."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"thank"
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


async def test_a_body_cut_off_after_a_2xx_is_the_delivery_done() -> None:
    """The 2xx is the acknowledgement, as when its body is still coming at the deadline: a
    cut body had the attempt failed with no status, and the notification sent again."""
    answers = iter([200, 503])

    def receiver(_: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), headers={"Content-Length": "100"}, stream=_CutOff())

    dispatcher = Dispatcher(None, timeout=5)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        assert await dispatcher._post(client, DUE, {}) == (200, "")
        with pytest.raises(httpx.RemoteProtocolError):  # a refusal's is an error, as before
            await dispatcher._post(client, DUE, {})
