"""A password as PostgreSQL stores it under SCRAM-SHA-256, made here, so that the password
itself never reaches the server.

``ALTER ROLE … PASSWORD 'the password'`` sends it in the clear, and the server writes the
statement to its log wherever ``log_statement`` takes DDL (``ddl``, ``all``: a common
audit setting), or where the statement fails. Given the verifier instead, PostgreSQL
stores it as it is, whatever ``password_encryption`` says (libpq's
``PQencryptPasswordConn`` and psql's ``\\password`` do the same). RFC 5802 and RFC 7677;
PostgreSQL's ``scram_build_secret`` and ``pg_saslprep`` (src/common).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

ITERATIONS = 4096
"""PostgreSQL's default (``scram_iterations``)."""

_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21,
    stringprep.in_table_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
    stringprep.in_table_a1,  # unassigned code points
)


def scram_sha_256(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` for ``password``."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _saslprep(password: str) -> bytes:
    """The bytes PostgreSQL derives the keys from: SASLprep (RFC 4013) of the password, or
    the password as it is where SASLprep refuses it (as ``pg_saslprep``'s callers do)."""
    raw = password.encode("utf-8")
    if password.isascii():  # pg_saslprep returns pure ASCII untouched
        return raw
    # Spaces first: U+200B is in both tables, and PostgreSQL makes it a space.
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else "" if stringprep.in_table_b1(c) else c
        for c in password
    )
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    if not prepared or any(check(c) for c in prepared for check in _PROHIBITED):
        return raw
    right_to_left = any(stringprep.in_table_d1(c) for c in prepared)  # RFC 3454, 6
    if right_to_left and (
        any(stringprep.in_table_d2(c) for c in prepared)
        or not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1]))
    ):
        return raw
    return prepared.encode("utf-8")
