"""Request bodies decoded straight into their Struct, refusals in the contract's 422 wording.

``Body[SomeRequest]`` is the ``dto`` of a route that takes a JSON body: the raw
bytes are decoded by msgspec into the Struct in one step (strictly: ``1000.0``
and ``"1000"`` are not integers). Only when that fails is the body looked at
field by field, so that every bad field gets its own message, worded from the
Struct's constraints as the contract words them ("The credits must be at least
100.").
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar, cast, get_args, get_origin

import msgspec
from litestar._openapi.schema_generation import SchemaCreator
from litestar.connection import ASGIConnection
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.openapi.spec import Reference, Schema
from litestar.params import HeaderParameter, KwargDefinition
from litestar.typing import FieldDefinition

from api.body_headers import check_body_headers
from api.headers import RepeatedHeader, only_header
from ledger.domain.limits import (
    IDEMPOTENCY_KEY_MAX,
    IDEMPOTENCY_KEY_PATTERN,
    IDEMPOTENCY_KEY_RULE,
    is_idempotency_key,
)

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import Scope


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


NOT_AN_OBJECT = "The request body must be a JSON object."
NOT_JSON = "The request body must be valid JSON."


S = TypeVar("S", bound=msgspec.Struct)


class Body(AbstractDTO[S], Generic[S]):
    """The ``dto`` of a route with a JSON body: ``dto=Body[SpendRequest]``.

    Litestar hands it the raw bytes; it decodes them into the Struct itself
    (Litestar's own decoding converts leniently, taking ``"1000"`` for 1000) and
    documents the body with the Struct's own schema. It builds no transfer model.
    """

    def decode_bytes(self, value: bytes) -> Any:
        if value:
            check_body_headers(self.asgi_connection.scope)
        return self._decoded(value)

    def _decoded(self, value: bytes) -> Any:
        """``decode_body``, its refusal listing a bad ``Idempotency-Key`` too: the body is
        decoded before Litestar checks the headers, and one 422 names every bad field."""
        try:
            return decode_body(value, self.model_type)
        except ValidationFailed as failed:
            key = idempotency_key_errors(self.asgi_connection)
            if not key:
                raise
            raise ValidationFailed({**failed.errors, **key}) from None

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        return decode_body(msgspec.json.encode(value), self.model_type)

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        """Nothing to build: decoding is ``decode_body``."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        """The Struct's own JSON Schema, as msgspec writes it (Litestar's drops ``minimum: 0``)."""
        kwargs = field_definition.kwarg_definition
        schema = noting_integers(json_schema(cls.model_type))
        if isinstance(kwargs, KwargDefinition) and kwargs.examples:
            schema["examples"] = [example.value for example in kwargs.examples]
        if isinstance(kwargs, KwargDefinition) and kwargs.description:
            schema["description"] = kwargs.description
        return cast(Schema, schema)  # Litestar writes a dict out as it is

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False


class OptionalBody(Body[S], Generic[S]):
    """A body that may be left out, or sent as ``null``: the route gets None then."""

    def decode_bytes(self, value: bytes) -> Any:
        if value:
            check_body_headers(self.asgi_connection.scope)
        return None if value.strip() == b"null" else self._decoded(value)

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        """The Struct's schema, admitting ``null`` too (the document marks the body optional)."""
        schema = cast(
            dict[str, Any],
            super().create_openapi_schema(field_definition, handler_id, schema_creator),
        )
        return cast(Schema, {**schema, "type": ["object", "null"]})


class RawBody(Body[S], Generic[S]):
    """The body's bytes as they came, documented as the Struct (the Stripe webhook checks
    its signature on the raw bytes before anything reads them, whatever the headers call
    them: ``Content-Type`` and ``Content-Encoding`` are not looked at)."""

    def decode_bytes(self, value: bytes) -> Any:
        return value


def json_schema(model: type[msgspec.Struct]) -> dict[str, Any]:
    """``model``'s JSON Schema with every reference written out in place."""
    (top,), definitions = msgspec.json.schema_components([model], ref_template="{name}")

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return cast(dict[str, Any], inline(top))


INTEGER_NOTE = (
    "A JSON integer, written without a fraction or an exponent: `1517.0`, `1.517e3` and "
    '`"1517"` are refused with 422 as not integers, although JSON Schema counts `1517.0` '
    "as one."
)
"""What the document says of every integer in a request body: bodies are decoded strictly."""


def noting_integers(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``INTEGER_NOTE`` in the description of each integer property."""
    for prop in schema.get("properties", {}).values():
        kinds = [prop, *prop.get("anyOf", ())]
        if any(kind.get("type") == "integer" for kind in kinds):
            described = prop.get("description")
            prop["description"] = f"{described} {INTEGER_NOTE}" if described else INTEGER_NOTE
    return schema


NOT_JSON_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What msgspec raises for a body that is not JSON: a string that is not UTF-8 inside one
is a UnicodeDecodeError, and arrays or objects nested too deep a RecursionError."""


PAST_THE_MICROSECOND = re.compile(r"(?<=\.\d{6})\d+")


def cut_past_the_microsecond(moment: str) -> str:
    """An RFC 3339 time with the digits of its fraction past the microsecond cut off.

    RFC 3339 allows any number of them; msgspec rounds them to the nearest microsecond, and
    a moment rounded up is a later instant than the one written (an ``as_of`` that counted
    an event recorded after it, a grant's ``expires_at`` that an ``as_of`` at the instant
    written found still active). Every time the API reads is cut, as Python's
    ``datetime.fromisoformat`` (the CLI's) does: one rule for all of them."""
    return PAST_THE_MICROSECOND.sub("", moment, count=1)


_LEAP_SECOND = re.compile(r"(?<=:)60(\.\d+)?(?=([Zz]|[+-]\d\d:?\d\d)$)")
"""A time's seconds written ``60``, its fraction if any, before the offset that ends it."""

_LAST_MICROSECOND = "59.999999"


def moment_as_read(moment: str) -> str:
    """An RFC 3339 time as the API reads it: cut at the microsecond, and a leap second
    (``2016-12-31T23:59:60Z``) read as the last microsecond before it.

    RFC 3339 (5.6, 5.7) writes a leap second as second 60 of 23:59 UTC on a month's last
    day; Python's datetime and msgspec have no second 60, and the time was a 422 saying it
    was no RFC 3339 time. The last microsecond before it orders as the leap second does:
    after everything recorded in 23:59:59, before the next day. A second 60 anywhere else
    (``00:41:60Z``) is left as written, and refused."""
    moment = cut_past_the_microsecond(moment)
    before = _LEAP_SECOND.sub(_LAST_MICROSECOND, moment, count=1)
    if before == moment:
        return moment
    try:
        utc = msgspec.convert(before, datetime).astimezone(UTC)
        last_of_a_month = (utc + timedelta(microseconds=1)).day == 1
    except (msgspec.ValidationError, ValueError, OverflowError):
        return moment
    at_a_leap_second = (utc.hour, utc.minute, utc.second, utc.microsecond) == (23, 59, 59, 999999)
    return before if at_a_leap_second and last_of_a_month else moment


@functools.cache
def _moment_fields(model: type[msgspec.Struct]) -> tuple[str, ...]:
    """The JSON names of ``model``'s fields that hold a time."""
    return tuple(
        field.encode_name
        for field in msgspec.structs.fields(model)
        if datetime in (_unwrapped(field.type), *map(_unwrapped, get_args(_unwrapped(field.type))))
    )


def _moments_as_read(raw: bytes, names: tuple[str, ...]) -> bytes:
    """``raw`` with each time of ``names`` as ``moment_as_read`` reads it (unchanged if none
    needs it, or if it is not a JSON object: decoding then says what is wrong with it)."""
    try:
        data = msgspec.json.decode(raw)
    except NOT_JSON_ERRORS:
        return raw
    if not isinstance(data, dict):
        return raw
    read = {
        name: as_read
        for name in names
        if isinstance(value := data.get(name), str) and (as_read := moment_as_read(value)) != value
    }
    return msgspec.json.encode({**data, **read}) if read else raw


_QUOTED_FIELDS: dict[type[msgspec.Struct], tuple[bytes, ...]] = {}
"""Each request Struct's JSON names as they stand in a body, quoted (``b'"amount"'``)."""


def _quoted_fields(model: type[msgspec.Struct]) -> tuple[bytes, ...]:
    found = _QUOTED_FIELDS.get(model)
    if found is None:
        found = tuple(b'"' + name.encode() + b'"' for name in model.__struct_encode_fields__)
        _QUOTED_FIELDS[model] = found
    return found


_BACKSLASH = ord("\\")
"""A backslash, as a byte's number: ``in`` on bytes tries its operand as a number first, so
``b"\\\\" in raw`` made and dropped a TypeError, ~2.1k instructions a spend (callgrind)."""


def repeated_fields(raw: bytes, model: type[msgspec.Struct]) -> list[str]:
    """The fields of ``model`` that the JSON object ``raw`` gives more than once.

    msgspec keeps the last of them, so ``{"amount": 1, "amount": 100000}`` spent 100,000:
    a money request that says two things is refused, not read one way. Nearly every body
    is cleared by a plain count of each quoted name (a name seen once, and no escape that
    could spell it otherwise: about 7k instructions for a spend's body); only the rest is
    parsed again, key by key. A body nested too deep for that parse raises RecursionError,
    as msgspec's decoding does (``NOT_JSON_ERRORS``): Python's parser gives up a few levels
    before msgspec, and a repeated field must not pass in between.
    """
    if _BACKSLASH not in raw:
        for quoted in _quoted_fields(model):
            if raw.count(quoted) > 1:
                break
        else:
            return []
    top: list[list[str]] = []

    def keys_of(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        top[:] = [[key for key, _ in pairs]]  # objects close inside out: the body's is last
        return dict(pairs)

    # Read as leniently as msgspec skips a field the request does not have: its bytes are
    # not checked as UTF-8 (surrogateescape), its numbers may be of any length (kept as
    # text: Python makes no int of over 4,300 digits). Refused here (a ValueError), such a
    # body was taken for no JSON, and msgspec read it with its last amount.
    text = raw.decode("utf-8", "surrogateescape")
    try:
        if not isinstance(
            json.loads(text, object_pairs_hook=keys_of, parse_int=str, strict=False), dict
        ):
            return []
    except ValueError:  # not JSON: decoding says so
        return []
    keys = top[0]
    return [name for name in model.__struct_encode_fields__ if keys.count(name) > 1]


def is_utf8(raw: bytes) -> bool:
    """Whether ``raw`` is UTF-8, as JSON text is (RFC 8259, section 8.1). msgspec checks only
    the strings it keeps: bytes that are not UTF-8 in a field the request does not have (or
    in its name) were taken, and the request recorded."""
    if raw.isascii():
        return True
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def decode_body(raw: bytes, model: type[msgspec.Struct]) -> Any:
    """The body as ``model``, or ValidationFailed with every bad field's message. An empty
    body is one without fields (``api.errors._no_body``)."""
    if not raw.strip():
        raw = b"{}"
    try:
        repeated = repeated_fields(raw, model)
    except RecursionError:
        raise ValidationFailed.single("body", NOT_JSON) from None
    if repeated:
        raise ValidationFailed(
            {name: [f"The {name.replace('_', ' ')} field must be given once."] for name in repeated}
        )
    if not is_utf8(raw):
        raise ValidationFailed.single("body", NOT_JSON)
    if names := _moment_fields(model):
        raw = _moments_as_read(raw, names)
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError:
        pass
    except NOT_JSON_ERRORS:
        raise ValidationFailed.single("body", NOT_JSON) from None
    try:
        data = msgspec.json.decode(raw)
    except msgspec.ValidationError:  # an integer of more digits than msgspec reads: JSON still
        data = _with_integers_of_any_length(raw)
    except NOT_JSON_ERRORS:  # a well-formed start the typed decoder refused first
        raise ValidationFailed.single("body", NOT_JSON) from None
    if not isinstance(data, dict):
        raise ValidationFailed.single("body", NOT_AN_OBJECT)
    raise ValidationFailed(field_errors(data, model) or {"body": ["The request body is invalid."]})


_PAST_ANY_LIMIT = 10**100
"""What an integer of more digits than Python makes an int of stands for: past every bound."""


def _integer_of_any_length(digits: str) -> int:
    """``digits`` as an int, or one past every bound for more digits than Python reads."""
    try:
        return int(digits)
    except ValueError:  # over 4,300 digits
        return -_PAST_ANY_LIMIT if digits.startswith("-") else _PAST_ANY_LIMIT


def _with_integers_of_any_length(raw: bytes) -> Any:
    """``raw`` (UTF-8 JSON that msgspec refused for a number's length) read with each such
    integer standing for one past every bound, so that its field is worded as too large or
    too small (``json`` parses as deep as msgspec: ``repeated_fields``)."""
    try:
        return json.loads(raw, parse_int=_integer_of_any_length)
    except (ValueError, RecursionError):
        raise ValidationFailed.single("body", NOT_JSON) from None


def field_errors(data: dict[str, Any], model: type[msgspec.Struct]) -> dict[str, list[str]]:
    """Each field of ``data`` checked against its declaration in ``model``."""
    errors: dict[str, list[str]] = {}
    for field in msgspec.structs.fields(model):
        label = field.name.replace("_", " ")
        extra = _extra(field.type)
        value = data.get(field.encode_name)
        if value is None:
            if field.required and (field.encode_name not in data or not _allows_none(field.type)):
                errors[field.encode_name] = [
                    extra.get("missing", f"The {label} field is required.")
                ]
            if field.required or field.encode_name not in data or _allows_none(field.type):
                continue
        if _is_list(field.type) and isinstance(value, list):
            errors.update(_item_errors(field, value, extra))
            if value:
                continue
        try:
            msgspec.convert(value, type=field.type, strict=True)
        except msgspec.ValidationError as error:
            errors[field.encode_name] = [_worded(str(error), label, extra, field.required)]
    return errors


def _worded(problem: str, label: str, extra: dict[str, Any], required: bool = True) -> str:
    """msgspec's description of a refused value, in the contract's words (a null given for
    a field with a default is a value of the wrong kind, not a missing one)."""
    if match := re.match(r"Expected `(\w+)(?: \| null)?`, got `(\w+)`", problem):
        if match[2] == "null" and required:
            return str(extra.get("missing", f"The {label} field is required."))
        kind = {"int": "an integer", "str": "a string", "array": "an array"}.get(
            match[1], f"a {match[1]}"
        )
        return f"The {label} field must be {kind}."
    if match := re.match(r"Expected `int` >= (-?\d+)", problem):
        return f"The {label} must be at least {match[1]}."
    if match := re.match(r"Expected `int` <= (-?\d+)", problem):
        return f"The {label} must not be greater than {match[1]}."
    if problem.startswith("Integer value out of range"):
        return f"The {label} must not be greater than {_bound(extra)}."
    if match := re.match(r"Expected `str` of length <= (\d+)", problem):
        return f"The {label} must not be greater than {match[1]} characters."
    if re.match(r"Expected `(str|array)` of length >= 1", problem):
        return str(extra.get("missing", f"The {label} field is required."))
    if "invalid" in extra:
        return str(extra["invalid"])
    return f"The {label} format is invalid.{extra.get('hint', '')}"


def _item_errors(
    field: msgspec.structs.FieldInfo, items: list[Any], extra: dict[str, Any]
) -> dict[str, list[str]]:
    """A list field's items, each checked alone: one message per bad item."""
    (item_type,) = get_args(_unwrapped(field.type))
    choices = ", ".join(get_args(item_type))
    errors = {}
    for index, item in enumerate(items):
        try:
            msgspec.convert(item, type=item_type, strict=True)
        except msgspec.ValidationError:
            name = f"{field.encode_name}.{index}"
            errors[name] = [str(extra["invalid"]).format(field=name, choices=choices)]
    return errors


def _unwrapped(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_list(annotation: Any) -> bool:
    return get_origin(_unwrapped(annotation)) is list


def _allows_none(annotation: Any) -> bool:
    return type(None) in get_args(_unwrapped(annotation))


def _extra(annotation: Any) -> dict[str, Any]:
    """The ``Meta(extra=...)`` of a field, wherever in its annotation it sits."""
    found: dict[str, Any] = {}
    stack = [annotation]
    while stack:
        current = stack.pop()
        if get_origin(current) is Annotated:
            base, *metadata = get_args(current)
            for meta in metadata:
                if isinstance(meta, msgspec.Meta) and meta.extra:
                    found = {**meta.extra, **found}
                if isinstance(meta, msgspec.Meta) and meta.le is not None:
                    found.setdefault("le", meta.le)
            stack.append(base)
        else:
            stack.extend(a for a in get_args(current) if a is not type(None))
    return found


def _bound(extra: dict[str, Any]) -> object:
    return extra.get("le", "the largest allowed")


_IDEMPOTENCY_KEY_HEADER = HeaderParameter(
    name="Idempotency-Key",
    description="Your unique key for this request: a repeat returns the first answer.",
    min_length=1,
    max_length=IDEMPOTENCY_KEY_MAX,
    pattern=IDEMPOTENCY_KEY_PATTERN,
)

IdempotencyKey = Annotated[str, _IDEMPOTENCY_KEY_HEADER]
"""The ``Idempotency-Key`` request header, required."""

OptionalIdempotencyKey = Annotated[str | None, _IDEMPOTENCY_KEY_HEADER]
"""The ``Idempotency-Key`` request header, where it may be left out."""


IDEMPOTENCY_KEY_INVALID = f"The Idempotency-Key header must be {IDEMPOTENCY_KEY_RULE}."
IDEMPOTENCY_KEY_MISSING = "The Idempotency-Key header is required."
IDEMPOTENCY_KEY_REPEATED = "The Idempotency-Key header must be given once."


class InvalidIdempotencyKey(Exception):
    """The request's ``Idempotency-Key`` is no key a route takes; its one argument is the
    422's message (``IDEMPOTENCY_KEY_REPEATED`` or ``IDEMPOTENCY_KEY_INVALID``)."""


def idempotency_key_of(scope: Scope) -> str | None:
    """The request's ``Idempotency-Key`` header, None if not given, as the routes' header
    parameters admit it (``is_idempotency_key``, the CLI's ``--key`` check too: their length
    and pattern, which msgspec searches, where ``$`` also passes a last newline that no header
    value ends with); ``InvalidIdempotencyKey`` when it is given twice with different values
    or not admitted. The one reading of a key: the express lane declines what this refuses
    (api/express.py), and a route's 422 lists it (``idempotency_key_errors``)."""
    try:
        key = only_header(scope, b"idempotency-key")
    except RepeatedHeader:
        raise InvalidIdempotencyKey(IDEMPOTENCY_KEY_REPEATED) from None
    if key is not None and not is_idempotency_key(key):
        raise InvalidIdempotencyKey(IDEMPOTENCY_KEY_INVALID)
    return key


def idempotency_key_errors(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, list[str]]:
    """The 422 entry of the route's ``Idempotency-Key`` header as Litestar would word it
    (missing where required, or not admitted), or none. A key given twice with different
    values was refused before (``refuse_a_repeated_idempotency_key``)."""
    parameter = connection.route_handler.parsed_fn_signature.parameters.get("idempotency_key")
    if parameter is None:
        return {}
    try:
        key = idempotency_key_of(connection.scope)
    except InvalidIdempotencyKey as invalid:
        return {"Idempotency-Key": [str(invalid)]}
    if key is None and not parameter.has_default:
        return {"Idempotency-Key": [IDEMPOTENCY_KEY_MISSING]}
    return {}


async def refuse_a_repeated_idempotency_key(request: Request[Any, Any, Any]) -> None:
    """The app's before-request hook: a route that takes ``Idempotency-Key`` refuses it
    given twice with different values (422), as a body's field given twice; Litestar would
    take the first. It runs after the guards, as a missing key is refused after them."""
    if "idempotency_key" not in request.route_handler.parsed_fn_signature.parameters:
        return
    try:
        only_header(request.scope, b"idempotency-key")
    except RepeatedHeader:
        raise ValidationFailed.single("Idempotency-Key", IDEMPOTENCY_KEY_REPEATED) from None
