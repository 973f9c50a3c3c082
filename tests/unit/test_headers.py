"""api/headers.py: one header out of an ASGI scope's raw list."""

from __future__ import annotations

from typing import Any

import pytest

from api.headers import RepeatedHeader, first_header, only_header


def scope_with(*headers: tuple[bytes, bytes]) -> Any:
    return {"type": "http", "headers": list(headers)}


def test_the_first_of_repeated_headers_is_the_one_read() -> None:
    scope = scope_with((b"x-request-id", b"first"), (b"x-request-id", b"second"))
    assert first_header(scope, b"x-request-id") == "first"


def test_a_missing_header_is_none_and_an_empty_one_is_empty() -> None:
    scope = scope_with((b"authorization", b""))
    assert first_header(scope, b"x-request-id") is None
    assert first_header(scope, b"authorization") == ""


def test_values_are_decoded_as_latin_1_as_http_sends_them() -> None:
    scope = scope_with((b"idempotency-key", "caf\u00e9".encode("latin-1")))
    assert first_header(scope, b"idempotency-key") == "caf\u00e9"


def test_a_header_given_again_with_another_value_is_repeated_but_not_the_same_again() -> None:
    different = scope_with(
        (b"idempotency-key", b"a"), (b"x-other", b""), (b"idempotency-key", b"b")
    )
    with pytest.raises(RepeatedHeader):
        only_header(different, b"idempotency-key")
    same = scope_with((b"idempotency-key", b"a"), (b"idempotency-key", b"a"))
    assert only_header(same, b"idempotency-key") == "a"
    assert only_header(different, b"x-other") == ""
    assert only_header(different, b"authorization") is None
