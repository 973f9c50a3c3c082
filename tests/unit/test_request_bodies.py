"""Bodies that say two things, and headers that say the body is not plain JSON."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from api.body_headers import ENCODED, body_refusal
from api.schemas import GrantRequest, SpendRequest
from api.validation import ValidationFailed, decode_body, repeated_fields


@pytest.mark.parametrize(
    "body",
    [
        b'{"amount": 1, "amount": 100000}',
        b'{"amount": 1, "reason": "x", "amount": 100000}',
        b'{"amount": 1, "\\u0061mount": 100000}',  # the same name, spelled with an escape
        b'{"\\u0061mount": 1, "\\u0061mount": 100000}',
    ],
)
def test_a_field_given_twice_is_refused_not_read_as_its_last(body: bytes) -> None:
    with pytest.raises(ValidationFailed) as refused:
        decode_body(body, SpendRequest)

    assert refused.value.errors == {"amount": ["The amount field must be given once."]}


@pytest.mark.parametrize(
    "body",
    [
        b'{"amount": 5, "reason": "amount"}',  # a value that spells a field's name
        b'{"amount": 5, "reason": "the \\"amount\\" field"}',
        b'{"amount": 5, "other": 1, "other": 2}',  # an unknown key: ignored, twice or not
        b'{"amount": 5, "reason": "a\\nb", "other": 1, "other": 2}',
    ],
)
def test_a_field_given_once_passes_whatever_else_the_body_holds(body: bytes) -> None:
    assert repeated_fields(body, SpendRequest) == []
    assert decode_body(body, SpendRequest).amount == 5


def test_a_time_given_twice_is_refused_before_it_is_cut_to_the_microsecond() -> None:
    body = b'{"amount": 5, "expires_at": "2999-01-01T00:00:00.1234567Z", "expires_at": null}'

    assert repeated_fields(body, GrantRequest) == ["expires_at"]


@pytest.mark.parametrize(
    ("headers", "refusal"),
    [
        ([], None),
        ([(b"content-type", b"application/json")], None),
        ([(b"content-type", b"Application/JSON; charset=utf-8")], None),
        ([(b"content-encoding", b"identity")], None),
        ([(b"content-type", b"text/plain")], None),
        ([(b"content-type", b"application/x-www-form-urlencoded")], None),
        ([(b"content-encoding", b" Identity ")], None),
        ([(b"content-encoding", b"gzip")], ENCODED),
        ([(b"content-type", b"application/json"), (b"content-encoding", b"br")], ENCODED),
        ([(b"content-encoding", b"")], None),
        ([(b"content-encoding", b"identity, IDENTITY")], None),
        ([(b"content-encoding", b"identity, gzip")], ENCODED),
        ([(b"content-encoding", b"gzip,")], ENCODED),
    ],
)
def test_a_body_is_sent_as_it_is(headers: list[tuple[bytes, bytes]], refusal: str | None) -> None:
    assert body_refusal({"headers": headers}) == refusal  # type: ignore[arg-type]


def _twice_beside_nesting(depth: int) -> bytes:
    """A spend that gives its amount twice, beside an unknown field nested ``depth`` deep."""
    return b'{"amount": 1, "amount": 100000, "x": ' + b"[" * depth + b"]" * depth + b"}"


def _spend_read_through_the_lane(body: bytes) -> object:
    from types import SimpleNamespace

    from api.express import Call, Declined

    scope: Any = {"headers": [], "litestar_app": SimpleNamespace(state={"services": None})}
    try:
        return Call(scope, body).body_as(SpendRequest)
    except Declined:
        return None


@pytest.mark.parametrize("digits", [4300, 4301, 100_000])
def test_a_field_given_twice_is_refused_beside_a_number_of_any_length(digits: int) -> None:
    """Python makes no int of over 4,300 digits (ValueError), which msgspec skips in an
    unknown field: the check took the body for no JSON, and it spent its last amount."""
    body = b'{"amount": 1, "amount": 100000, "x": ' + b"9" * digits + b"}"

    assert repeated_fields(body, SpendRequest) == ["amount"]
    with pytest.raises(ValidationFailed):
        decode_body(body, SpendRequest)
    assert _spend_read_through_the_lane(body) is None


@pytest.mark.parametrize(
    "unknown",
    [
        b'"x": "\xff"',  # a byte no UTF-8 text holds, in a value msgspec skips
        b'"\xffx": 1',  # in a key it skips
        b'"x": "\xed\xa0\x80"',  # a surrogate written in UTF-8
    ],
)
def test_a_field_given_twice_is_refused_beside_bytes_that_are_no_utf_8(unknown: bytes) -> None:
    """msgspec skips an unknown field without reading its text as UTF-8; Python's parser
    refused the body (UnicodeDecodeError, a ValueError), the check took it for no JSON,
    and msgspec read the spend as its last amount."""
    body = b'{"amount": 1, "amount": 100000, ' + unknown + b"}"

    assert repeated_fields(body, SpendRequest) == ["amount"]
    with pytest.raises(ValidationFailed):
        decode_body(body, SpendRequest)
    assert _spend_read_through_the_lane(body) is None


def test_a_field_given_twice_is_refused_however_deep_the_body_nests() -> None:
    """Python's parser, which finds the repeated fields, gives up on nesting a few levels
    before msgspec does: a body nested in between was read as its last amount (100,000)."""
    limit = sys.getrecursionlimit()
    for depth in range(limit - 100, limit + 10):
        body = _twice_beside_nesting(depth)
        with pytest.raises(ValidationFailed):
            decode_body(body, SpendRequest)
        assert _spend_read_through_the_lane(body) is None, depth
