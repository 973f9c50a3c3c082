"""Request checks that answer in the contract's 422 shape, with its exact wording."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar.params import HeaderParameter

IDEMPOTENCY_KEY_MAX = 255

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        description="Your unique key for this request: a repeat returns the first answer.",
        # Documentation only: checked_idempotency_key() checks it, with the 422 wording.
        schema_extra={
            "one_of": None,
            "type": "string",
            "min_length": 1,
            "max_length": IDEMPOTENCY_KEY_MAX,
            "pattern": "^[ -~]+$",
            "examples": ["job-1"],
        },
    ),
]
"""The ``Idempotency-Key`` request header (required where the route says so)."""


class ValidationFailed(Exception):
    """One or more fields are invalid: ``errors`` maps each field to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors

    @classmethod
    def single(cls, field: str, message: str) -> ValidationFailed:
        return cls({field: [message]})

    @property
    def message(self) -> str:
        """The first message, noting how many more follow (as Laravel words it)."""
        messages = [m for field_messages in self.errors.values() for m in field_messages]
        first, more = messages[0], len(messages) - 1
        if more:
            return f"{first} (and {more} more error{'s' if more > 1 else ''})"
        return first


def _label(field: str) -> str:
    return field.replace("_", " ")


def json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 422 saying why it is not one."""
    try:
        data = msgspec.json.decode(body) if body.strip() else None
    except msgspec.DecodeError:
        raise ValidationFailed.single("body", "The request body must be valid JSON.") from None
    if not isinstance(data, dict):
        raise ValidationFailed.single("body", "The request body must be a JSON object.")
    return data


class Checker:
    """Collects every field's errors, then raises them together."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.errors: dict[str, list[str]] = {}

    def fail(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def integer(
        self,
        field: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        required: bool = True,
        default: int | None = None,
    ) -> int | None:
        """An integer field: JSON numbers only, never true/false, 1000.5 or "1000"."""
        label = _label(field)
        if field not in self.data or self.data[field] is None:
            if required:
                self.fail(field, f"The {label} field is required.")
            return default
        value = self.data[field]
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"The {label} field must be an integer.")
            return None
        if minimum is not None and value < minimum:
            self.fail(field, f"The {label} must be at least {minimum}.")
        elif maximum is not None and value > maximum:
            self.fail(field, f"The {label} must not be greater than {maximum}.")
        return value

    def string(
        self,
        field: str,
        *,
        max_length: int = 255,
        pattern: str | None = None,
        pattern_hint: str = "",
        required: bool = True,
    ) -> str | None:
        """A non-empty string field, optionally matching a regular expression."""
        label = _label(field)
        value = self.data.get(field)
        if value is None or value == "":
            if required:
                self.fail(field, f"The {label} field is required.")
            return None
        if not isinstance(value, str):
            self.fail(field, f"The {label} field must be a string.")
            return None
        if len(value) > max_length:
            self.fail(field, f"The {label} must not be greater than {max_length} characters.")
        elif pattern is not None and not re.fullmatch(pattern, value):
            self.fail(field, f"The {label} format is invalid.{pattern_hint}")
        return value

    def done(self) -> None:
        """Raise the collected errors, if any."""
        if self.errors:
            raise ValidationFailed(self.errors)


def checked_idempotency_key(key: str | None, *, required: bool = False) -> str | None:
    """The header's key, or a 422 if it is missing (when required), too long or not ASCII."""
    field = "Idempotency-Key"
    if key is None:
        if required:
            raise ValidationFailed.single(field, "The Idempotency-Key header is required.")
        return None
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isascii() or not key.isprintable():
        raise ValidationFailed.single(
            field,
            f"The Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX} printable "
            "ASCII characters.",
        )
    return key
