"""The Python client's types and operations against the OpenAPI document the service publishes.

The document is generated in-process from the app (what ``GET /schema/openapi.json``
serves). Every operation the client calls must be there with the same method,
path, success status, query parameters, body, answer and ``Idempotency-Key``
header; every Struct of ``ledger_client.types`` must have the fields, types,
required fields and defaults of its schema. A change on either side fails here.
"""

from __future__ import annotations

import re
from typing import Any

import ledger_client.types
import msgspec
import msgspec.inspect as mi
import pytest
from ledger_client import OPERATIONS, Operation

from api.app import create_app
from api.settings import Settings

Shape = Any
"""A type reduced to what both sides can say: ``"integer"``, ``("array", ...)``, ..."""

NOT_IN_THE_CLIENT = {
    # Auditors', customers' lists, operations and Stripe's: not part of the client yet.
    "accountEvents",
    "globalEvents",
    "listPurchases",
    "listTransactions",
    "stripeWebhook",
    "index",
    "healthz",
    "readyz",
    "metrics",
}
"""Operations of the document the client leaves out on purpose; any other new one fails."""

ERROR_BODIES = (ledger_client.types.ErrorBody, ledger_client.types.ValidationErrorBody)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings()).openapi_schema.to_schema()  # type: ignore[no-any-return]


def _operations(document: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        op["operationId"]: (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if re.fullmatch(r"get|put|post|patch|delete", method)
    }


# --- shapes --------------------------------------------------------------------------------


def _union(members: list[Shape]) -> Shape:
    flat: set[Shape] = set()
    for member in members:
        flat |= member[1] if isinstance(member, tuple) and member[0] == "union" else {member}
    return next(iter(flat)) if len(flat) == 1 else ("union", frozenset(flat))


def document_shape(schema: dict[str, Any]) -> Shape:
    """The shape of an OpenAPI schema (Litestar's JSON Schema dialect)."""
    if "$ref" in schema:
        return ("struct", schema["$ref"].rsplit("/", 1)[-1])
    for combined in ("oneOf", "anyOf"):
        if combined in schema:
            return _union([document_shape(s) for s in schema[combined]])
    if "enum" in schema:
        return ("enum", frozenset(schema["enum"]))
    kind = schema.get("type")
    if isinstance(kind, list):
        return _union([document_shape({**schema, "type": k}) for k in kind])
    if kind is None:
        return "any"
    if kind == "string" and schema.get("format") == "date-time":
        return "date-time"
    if kind == "array":
        return ("array", document_shape(schema.get("items", {})))
    if kind == "object" and "properties" not in schema:
        return ("map", document_shape(schema.get("additionalProperties") or {}))
    if kind == "object":
        return ("struct", schema.get("title"))
    return kind


def client_shape(info: mi.Type) -> Shape:
    """The shape of a client type, as msgspec sees it."""
    simple = {
        mi.StrType: "string",
        mi.IntType: "integer",
        mi.FloatType: "number",
        mi.BoolType: "boolean",
        mi.NoneType: "null",
        mi.AnyType: "any",
        mi.DateTimeType: "date-time",
    }
    for kind, shape in simple.items():
        if isinstance(info, kind):
            return shape
    match info:
        case mi.UnionType(types=types):
            return _union([client_shape(t) for t in types])
        case mi.LiteralType(values=values):
            return ("enum", frozenset(values))
        case mi.ListType(item_type=item):
            return ("array", client_shape(item))
        case mi.DictType(key_type=mi.StrType(), value_type=value):
            return ("map", client_shape(value))
        case mi.StructType(cls=cls):
            return ("struct", cls.__name__)
    raise AssertionError(f"no shape for {info}")


NO_DEFAULT = object()


def client_fields(struct: type[msgspec.Struct]) -> dict[str, tuple[Shape, bool, object]]:
    """Each field's wire name: (shape, required, default)."""
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    return {
        f.encode_name: (
            client_shape(f.type),
            f.required,
            f.default if f.default is not mi.NODEFAULT else NO_DEFAULT,
        )
        for f in info.fields
    }


def document_fields(schema: dict[str, Any]) -> dict[str, tuple[Shape, bool, object]]:
    required = set(schema.get("required", []))
    return {
        name: (document_shape(prop), name in required, prop.get("default", NO_DEFAULT))
        for name, prop in schema.get("properties", {}).items()
    }


def differences(struct: type[msgspec.Struct], schema: dict[str, Any]) -> list[str]:
    """What differs between a client Struct and its schema, in words (empty: nothing)."""
    ours, theirs = client_fields(struct), document_fields(schema)
    found = [f"{name}: only in the client" for name in ours.keys() - theirs.keys()]
    found += [f"{name}: only in the service" for name in theirs.keys() - ours.keys()]
    for name in ours.keys() & theirs.keys():
        (shape, required, default), (their_shape, their_required, their_default) = (
            ours[name],
            theirs[name],
        )
        if shape != their_shape:
            found.append(f"{name}: the client has {_shown(shape)}, the service {_shown(their_shape)}")
        if required != their_required:
            found.append(
                f"{name}: required {required} in the client, {their_required} in the service"
            )
        # A default the service documents is the client's too (a body leaves it out: the
        # service applies its own). None is how both say "optional, nothing".
        if their_default is not NO_DEFAULT and default != their_default:
            found.append(
                f"{name}: default {default!r} in the client, {their_default!r} in the service"
            )
        if their_default is NO_DEFAULT and default not in (NO_DEFAULT, None):
            found.append(f"{name}: default {default!r} in the client, none in the service")
    return sorted(found)


# --- the checks ----------------------------------------------------------------------------


def test_every_operation_of_the_client_is_the_documented_one(document: dict[str, Any]) -> None:
    documented = _operations(document)
    problems = []
    for op in OPERATIONS.values():
        if op.operation_id not in documented:
            problems.append(f"{op.operation_id}: not in the document")
            continue
        method, path, spec = documented[op.operation_id]
        problems += [
            f"{op.operation_id}: {p}" for p in _operation_differences(op, method, path, spec)
        ]
    assert problems == []


def _operation_differences(
    op: Operation, method: str, path: str, spec: dict[str, Any]
) -> list[str]:
    found = []
    if (op.method, op.path) != (method, path):
        found.append(f"{op.method} {op.path} in the client, {method} {path} in the service")
    success = {code: r for code, r in spec["responses"].items() if code.startswith("2")}
    if list(success) != [str(op.status)]:
        found.append(f"answers {op.status} in the client, {list(success)} in the service")
    else:
        schema = success[str(op.status)]["content"]["application/json"]["schema"]
        if document_shape(schema) != ("struct", op.answer.__name__):
            found.append(f"answers {op.answer.__name__}, the service {document_shape(schema)}")
    parameters = spec.get("parameters", [])
    query = {p["name"] for p in parameters if p["in"] == "query"}
    if query != set(op.query):
        found.append(f"query {sorted(op.query)} in the client, {sorted(query)} in the service")
    keyed = any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in parameters)
    if keyed != op.keyed:
        found.append(f"Idempotency-Key: {op.keyed} in the client, {keyed} in the service")
    body = spec.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if (body is None) != (op.body is None):
        found.append(f"body {op.body} in the client, {body and body.get('title')} in the service")
    elif body is not None and op.body is not None:
        if body.get("title") != op.body.__name__:
            found.append(
                f"body {op.body.__name__} in the client, {body.get('title')} in the service"
            )
        found += [f"body: {d}" for d in differences(op.body, body)]
    return found


def test_every_client_type_has_the_fields_and_types_of_its_schema(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    answers: dict[str, type[msgspec.Struct]] = {}
    pending = [op.answer for op in OPERATIONS.values()] + list(ERROR_BODIES)
    while pending:  # the answers and the Structs inside them
        struct = pending.pop()
        if struct.__name__ in answers:
            continue
        answers[struct.__name__] = struct
        for shape, _, _ in client_fields(struct).values():
            pending += [s for s in _structs_in(shape, struct)]

    problems = {}
    for name, struct in answers.items():
        if name not in components:
            problems[name] = ["no such component schema"]
        elif found := differences(struct, components[name]):
            problems[name] = found
    assert problems == {}

    bodies = {op.body for op in OPERATIONS.values() if op.body is not None}
    every_struct = {
        value
        for value in vars(ledger_client.types).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == ledger_client.types.__name__
        and not value.__name__.startswith("_")
    }
    # Nothing in the client's types is left unchecked.
    assert every_struct - set(answers.values()) - bodies == set()


def _structs_in(shape: Shape, owner: type[msgspec.Struct]) -> list[type[msgspec.Struct]]:
    if isinstance(shape, tuple) and shape[0] == "struct":
        found = getattr(ledger_client.types, shape[1], None)
        assert found is not None, (
            f"{owner.__name__} refers to {shape[1]}, not in the client's types"
        )
        return [found]
    if isinstance(shape, tuple) and shape[0] in ("array", "map"):
        return _structs_in(shape[1], owner)
    if isinstance(shape, tuple) and shape[0] == "union":
        return [s for member in shape[1] for s in _structs_in(member, owner)]
    return []


def test_every_operation_for_internal_services_and_customers_is_in_the_client(
    document: dict[str, Any],
) -> None:
    assert set(_operations(document)) - NOT_IN_THE_CLIENT == set(OPERATIONS)


def _shown(shape: object) -> str:
    """A shape in words that do not depend on the order of a set (hash seeds vary)."""
    if isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[1], frozenset):
        return f"{shape[0]} of {', '.join(sorted(map(str, shape[1])))}"
    return str(shape)


def test_a_drifted_type_is_found() -> None:
    """The comparison itself: each kind of drift is reported."""

    class Hold(msgspec.Struct):
        hold_id: str
        amount: str
        extra: int = 0
        status: str | None = None

    schema = {
        "type": "object",
        "required": ["hold_id", "amount", "captured", "status"],
        "properties": {
            "hold_id": {"type": "string"},
            "amount": {"type": "integer"},
            "captured": {"type": "integer"},
            "status": {"type": "string", "enum": ["held"]},
        },
    }

    assert differences(Hold, schema) == [
        "amount: the client has string, the service integer",
        "captured: only in the service",
        "extra: only in the client",
        "status: required False in the client, True in the service",
        "status: the client has union of null, string, the service enum of held",
    ]
