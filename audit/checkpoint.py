"""Signed checkpoints: tamper evidence anchored outside the database.

The per-stream hash chains (migrations 0006 and 0009) show a changed row only
to someone who trusts each chain's last link, and that link lives in the same
table: whoever can write the table with its trigger disabled can rewrite a
stream and recompute its hashes, or cut off its last events, and the chains
stay consistent. A checkpoint is a statement of the store at one position,
signed with an Ed25519 key that never enters the database and kept by the
auditors outside it: the head (version and hash) of every stream, a Merkle root
over those heads, and the number of events. ``ledger audit verify --checkpoint``
then proves that nothing at or before that position was changed, removed or
added since. Events after the newest checkpoint are covered only by the chains.

File format, Merkle layout and key handling: docs/audit-checkpoints.md.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal
from uuid import UUID

import asyncpg
import msgspec
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from audit.checkpoint_replay import CheckpointReplay, Tail
from audit.checkpoint_replay import add_position as add_position
from audit.checkpoint_replay import positions_digest as positions_digest
from audit.findings import Finding
from ledger.store.event_store import VISIBLE, ChainedEvent
from ledger.store.hash_chain import GENESIS

FORMAT: Literal["credit-ledger-checkpoint"] = "credit-ledger-checkpoint"
FORMAT_VERSION = 2
"""Version 2 signs where each stream's events sit in the store's order (``Head.positions``);
version 1 files, which do not, are still read and checked for the rest."""
READABLE_VERSIONS = (1, 2)

SIGNATURE_CONTEXT = b"credit-ledger-checkpoint\x00"
"""Prefixed to every signed message, so no other message signed with the key can pass for one."""

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

_INT64 = 2**63 - 1
Hash = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$", description="32 bytes, hex")]
Signature = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{128}$", description="64 bytes, hex")]
Count = Annotated[int, msgspec.Meta(ge=0, le=_INT64)]
Version = Annotated[int, msgspec.Meta(ge=1, le=_INT64)]
Moment = Annotated[datetime, msgspec.Meta(tz=True)]

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CheckpointError(Exception):
    """A key or checkpoint file that cannot be used: say which and why."""


class Head(msgspec.Struct, frozen=True, omit_defaults=True):
    """A stream's last event at the checkpoint's position."""

    stream_id: UUID
    version: Version
    hash: Hash
    positions: Hash | None = None
    """Format 2: sha256 over the positions (``notification_id``, int8 big-endian) of the
    stream's events up to its head, in version order. The hash chain covers each event's
    content, not where it sits in the store's order, so without this events of different
    streams could trade places below the checkpoint unseen."""


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """The signed statement, as written to the file (field order is the file's)."""

    format: Literal["credit-ledger-checkpoint"] = FORMAT
    format_version: int = FORMAT_VERSION
    created_at: Moment
    position: Count
    event_count: Count
    stream_count: Count
    merkle_root: Hash
    public_key: Hash
    signature: Signature
    heads: list[Head]


# --- the Merkle tree ---------------------------------------------------------------


def head_leaf(stream_id: UUID, version: int, head_hash: bytes, positions: bytes = b"") -> bytes:
    """A head as a Merkle leaf: stream id (16 bytes) || version (int8, big-endian) || hash (32)
    || positions (32, format 2 only)."""
    return stream_id.bytes + version.to_bytes(8, "big", signed=True) + head_hash + positions


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """The Merkle Tree Hash of RFC 6962 (section 2.1), with SHA-256.

    A leaf hashes as sha256(0x00 || leaf), a node as sha256(0x01 || left || right),
    so no leaf can pass for a node. Leaves are paired left to right, level by
    level; an odd one out at the end of a level moves up unchanged, which makes
    the same tree as the RFC's split at the largest power of two below n. No
    leaves: sha256 of nothing.
    """
    level = [hashlib.sha256(LEAF_PREFIX + leaf).digest() for leaf in leaves]
    if not level:
        return hashlib.sha256(b"").digest()
    while len(level) > 1:
        paired = [
            hashlib.sha256(NODE_PREFIX + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def heads_root(heads: Sequence[Head]) -> bytes:
    """The Merkle root over the heads, in the order given (a checkpoint sorts them by stream id)."""
    return merkle_root(
        head_leaf(
            h.stream_id,
            h.version,
            bytes.fromhex(h.hash),
            b"" if h.positions is None else bytes.fromhex(h.positions),
        )
        for h in heads
    )


# --- signing ----------------------------------------------------------------------


def signed_message(checkpoint: Checkpoint) -> bytes:
    """The bytes the signature covers: fixed-width, big-endian, nothing left to a serialiser.

    context "credit-ledger-checkpoint\\0" (25 bytes) || format_version (uint4)
    || position (int8) || event_count (int8) || stream_count (int8)
    || merkle_root (32 bytes) || created_at (int8, microseconds since 1970-01-01 UTC)
    """
    return (
        SIGNATURE_CONTEXT
        + struct.pack(
            ">Iqqq",
            checkpoint.format_version,
            checkpoint.position,
            checkpoint.event_count,
            checkpoint.stream_count,
        )
        + bytes.fromhex(checkpoint.merkle_root)
        + struct.pack(">q", (checkpoint.created_at - _UNIX_EPOCH) // timedelta(microseconds=1))
    )


def public_key_hex(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key in hex, as checkpoint files name their signer."""
    return key.public_bytes_raw().hex()


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def generate_key(out: Path) -> Ed25519PublicKey:
    """Write a new private key to ``out`` (PEM, mode 0600) and its public key to ``out.pub``.

    Refuses to overwrite either: a lost signing key cannot sign again, and a
    replaced one would leave auditors holding a public key that no longer matches.
    """
    public_out = out.with_name(out.name + ".pub")
    for path in (out, public_out):
        if path.exists():
            raise CheckpointError(f"{path} exists already; keys are never overwritten")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        # Created 0600 (never readable by others, not even for a moment), never over a file.
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        public_out.write_text(public_key_pem(key.public_key()))
    except OSError as error:  # not "[Errno 2] No such file or directory: '…'"
        raise CheckpointError(
            f"cannot write {error.filename or out}: {error.strerror or error}"
        ) from None
    return key.public_key()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file (as ``generate_key`` writes it)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The library's own words ("MalformedFraming", a link to its FAQ) said nothing of
        # which file was wanted.
        if b"PUBLIC KEY" in data:
            raise CheckpointError(
                f"{path} is a public key: --key takes the private key, the FILE "
                "`ledger audit keygen --out FILE` wrote (not FILE.pub)"
            ) from None
        raise CheckpointError(
            f"{path} is not a private key: --key takes the FILE `ledger audit keygen --out "
            "FILE` wrote (PEM, -----BEGIN PRIVATE KEY-----)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key: a PEM file (``FILE.pub``) or the 64 hex digits keygen printed."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(data.decode().strip()))
    except (ValueError, UnicodeDecodeError, UnsupportedAlgorithm):
        # Not the library's words ("non-hexadecimal number found in fromhex() arg").
        if b"PRIVATE KEY" in data:
            raise CheckpointError(
                f"{path} is a private key: --public-key takes FILE.pub (an auditor needs "
                "no private key)"
            ) from None
        raise CheckpointError(
            f"{path} is not a public key: --public-key takes FILE.pub of `ledger audit "
            "keygen --out FILE` (PEM, -----BEGIN PUBLIC KEY-----) or the 64 hex digits it "
            "printed"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


# --- taking a checkpoint ----------------------------------------------------------

# The watermark of EventStore.read_all: a row whose transaction is older than every
# transaction still running can no longer be preceded by a late commit, so no event
# at or below this position can appear after the checkpoint is signed.
_WATERMARK = f"SELECT coalesce(max(notification_id), 0) FROM stored_events WHERE {VISIBLE}"
_COUNT = "SELECT count(*) FROM stored_events WHERE notification_id <= $1"
# Descending, so the primary key's index serves the order; sorted ascending below.
_HEADS = """SELECT DISTINCT ON (originator_id) originator_id, originator_version, hash
            FROM stored_events WHERE notification_id <= $1
            ORDER BY originator_id DESC, originator_version DESC"""
_POSITIONS = """SELECT originator_id, sha256(string_agg(int8send(notification_id), ''::bytea
                                                   ORDER BY originator_version))
                FROM stored_events WHERE notification_id <= $1 GROUP BY originator_id"""


async def take_checkpoint(pool: asyncpg.Pool, key: Ed25519PrivateKey) -> Checkpoint:
    """Sign the store as it stands: position, event count and every stream's head.

    Read in one REPEATABLE READ snapshot, so the three agree with each other.
    """
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        position = await connection.fetchval(_WATERMARK)
        event_count = await connection.fetchval(_COUNT, position)
        rows = await connection.fetch(_HEADS, position)
        positions: dict[UUID, bytes] = {
            stream_id: digest for stream_id, digest in await connection.fetch(_POSITIONS, position)
        }
    for stream_id, version, stored in rows:
        if len(stored) != len(GENESIS):
            # Signed, it made a file no verify could read (the format holds 32 bytes).
            raise CheckpointError(
                f"stream {stream_id}'s head (version {version}) has a stored hash of "
                f"{len(stored)} bytes, not {len(GENESIS)}: a row written past the store's "
                "checks (`ledger audit verify` names it); no checkpoint written"
            )
    heads = sorted(
        (
            Head(stream_id=r[0], version=r[1], hash=r[2].hex(), positions=positions[r[0]].hex())
            for r in rows
        ),
        key=lambda h: h.stream_id,
    )
    unsigned = Checkpoint(
        created_at=datetime.now(UTC),
        position=position,
        event_count=event_count,
        stream_count=len(heads),
        merkle_root=heads_root(heads).hex(),
        public_key=public_key_hex(key.public_key()),
        signature="00" * 64,
        heads=heads,
    )
    return msgspec.structs.replace(unsigned, signature=key.sign(signed_message(unsigned)).hex())


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """The file's content: indented JSON, one field per line."""
    return msgspec.json.format(msgspec.json.encode(checkpoint), indent=2) + b"\n"


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint file; a file that is not one raises CheckpointError."""
    try:
        checkpoint = msgspec.json.decode(path.read_bytes(), type=Checkpoint)
    except (OSError, msgspec.DecodeError) as error:
        raise CheckpointError(f"{path} is not a checkpoint file: {error}") from None
    if checkpoint.format_version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has format version {checkpoint.format_version}; "
            f"this ledger reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    return checkpoint


# --- verifying against a checkpoint -----------------------------------------------


def check_file(
    checkpoint: Checkpoint, trusted_keys: Sequence[Ed25519PublicKey] = ()
) -> list[Finding]:
    """What is wrong with the file itself: its signature, its Merkle root, its heads' order.

    With no trusted keys the signature is checked with the key the file names,
    which shows the file is intact but not who made it.
    """
    found: list[Finding] = []
    heads = checkpoint.heads
    if any(a.stream_id >= b.stream_id for a, b in itertools.pairwise(heads)):
        found.append(
            Finding(
                kind="checkpoint-file",
                detail="its heads are not in ascending stream order, or name a stream twice",
            )
        )
    signs_positions = checkpoint.format_version >= 2
    if any((h.positions is not None) != signs_positions for h in heads):
        found.append(
            Finding(
                kind="checkpoint-file",
                detail=f"a head {'lacks' if signs_positions else 'has'} the positions of its "
                f"stream's events, which format version {checkpoint.format_version} "
                f"{'signs' if signs_positions else 'does not know'}",
            )
        )
    if len(heads) != checkpoint.stream_count:
        found.append(
            Finding(
                kind="checkpoint-file",
                detail=f"it lists {len(heads)} heads, and signed a stream count of "
                f"{checkpoint.stream_count}",
            )
        )
    if (root := heads_root(heads).hex()) != checkpoint.merkle_root:
        found.append(
            Finding(
                kind="checkpoint-file",
                detail=f"its heads hash to Merkle root {root[:16]}…, it signed "
                f"{checkpoint.merkle_root[:16]}…: a head in the file was changed, added or removed",
            )
        )
    message = signed_message(checkpoint)
    signature = bytes.fromhex(checkpoint.signature)
    keys = list(trusted_keys) or _named_key(checkpoint)
    if not any(_signs(key, signature, message) for key in keys):
        trusted = {public_key_hex(k) for k in trusted_keys}
        detail = (
            f"it names signing key {checkpoint.public_key[:16]}…, which is not a trusted key"
            if trusted and checkpoint.public_key not in trusted
            else "its signature does not match its signed fields: the file was changed after "
            "it was signed, or was not signed by this key"
        )
        found.append(Finding(kind="checkpoint-signature", detail=detail))
    return found


def _named_key(checkpoint: Checkpoint) -> list[Ed25519PublicKey]:
    try:
        return [Ed25519PublicKey.from_public_bytes(bytes.fromhex(checkpoint.public_key))]
    except ValueError:
        return []


def _signs(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


class CheckpointAudit:
    """One checkpoint, checked against the events as ``audit verify`` replays them.

    Feed it every event in position order (``observe``), then ask for ``findings``.
    It recomputes each stream's chain from its first event up to the checkpoint's
    position, from the events' content alone, and compares where each stream
    ends there with the signed heads; so a stream rewritten with consistent
    hashes, a stream cut short, an event removed and written again later, and a
    stream or event slipped in before the position all show.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        name: str = "checkpoint",
    ) -> None:
        self.checkpoint = checkpoint
        self.name = name
        self.trusted = bool(trusted_keys)
        self.file_findings = check_file(checkpoint, trusted_keys)
        self._heads = {h.stream_id: h for h in checkpoint.heads}
        self.replay = CheckpointReplay(
            checkpoint.position,
            {h.stream_id: h.version for h in checkpoint.heads},
            signs_positions=checkpoint.format_version >= 2,
        )

    def summary(self) -> str:
        """One line saying what this checkpoint covers."""
        c = self.checkpoint
        return (
            f"{self.name}: position {c.position}, {c.event_count:,} "
            f"event{'' if c.event_count == 1 else 's'}, {c.stream_count:,} "
            f"stream{'' if c.stream_count == 1 else 's'}, "
            f"taken {c.created_at:%Y-%m-%d %H:%M:%S}Z, "
            f"signing key {c.public_key[:16]}…"
        )

    def observe(self, event: ChainedEvent, chained_on_stored: bytes | None = None) -> None:
        """Take one event, in position order.

        ``chained_on_stored`` is this event's hash computed on the stored hash of
        its stream's previous event, as the verifier's own chain check computes
        it: where this audit's chain still agrees with the stored hashes (almost
        always) it is the same value, so it is used instead of hashing again.
        """
        self.replay.observe(event, chained_on_stored)

    def findings(self, account_of: Callable[[UUID], str | None] = lambda _: None) -> list[Finding]:
        """Everything that disagrees with the checkpoint, after the last ``observe``."""
        c = self.checkpoint
        where = f"{self.name} of {c.created_at:%Y-%m-%d %H:%M:%S}Z at position {c.position}"
        found = [Finding(kind=f.kind, detail=f"{where}: {f.detail}") for f in self.file_findings]
        for head in c.heads:
            if problem := self._head_problem(head):
                found.append(
                    Finding(
                        kind="checkpoint-head",
                        detail=f"{problem} ({where})",
                        account_id=account_of(head.stream_id),
                        stream_id=str(head.stream_id),
                        version=head.version,
                    )
                )
        for stream_id, tail in self.replay.tails.items():
            if stream_id not in self._heads:
                found.append(
                    Finding(
                        kind="checkpoint-head",
                        detail="this stream has events at or before the checkpoint's position "
                        f"and the checkpoint lists no such stream: written into the past ({where})",
                        account_id=account_of(stream_id),
                        stream_id=str(stream_id),
                        version=tail.version,
                    )
                )
        if self.replay.count != c.event_count:
            ends = (
                f"; the store now ends at position {self.replay.last_position}: its last events "
                "were cut off"
                if self.replay.last_position < c.position
                else ""
            )
            found.append(
                Finding(
                    kind="checkpoint-count",
                    detail=f"{self.replay.count:,} events at or before position {c.position}, the "
                    f"checkpoint counted {c.event_count:,}: events were "
                    f"{'removed' if self.replay.count < c.event_count else 'added'}{ends} ({where})",
                )
            )
        return found

    def _head_problem(self, head: Head) -> str | None:
        tail = self.replay.tails.get(head.stream_id) or Tail()
        signed = bytes.fromhex(head.hash)
        if tail.version < head.version:
            later = self.replay.rewritten_later.get(head.stream_id)
            if later is not None:
                return (
                    f"the checkpoint signed this stream at version {head.version}; an event at "
                    f"or before that version now sits at position {later}, after the "
                    "checkpoint: it was removed and written again"
                )
            return (
                f"the checkpoint signed this stream at version {head.version}; the store has it "
                f"only up to version {tail.version}: its last events were cut off"
            )
        if tail.version > head.version:
            return (
                f"the checkpoint signed this stream at version {head.version}; the store has it "
                f"at version {tail.version} by the checkpoint's position: events were added "
                "into the past"
            )
        if tail.stored != signed:
            return (
                f"version {head.version} has hash {tail.stored.hex()[:16]}… in the store, "
                f"{head.hash[:16]}… in the checkpoint: the stream was rewritten after the "
                "checkpoint"
            )
        if tail.chained != signed:
            return (
                f"the stream's events hash to {tail.chained.hex()[:16]}… at version "
                f"{head.version}, the checkpoint signed {head.hash[:16]}…: an event before its "
                "head was changed"
            )
        if head.positions is not None and tail.positions_signed() != bytes.fromhex(head.positions):
            return (
                "the stream's events sit at other positions in the store's order than the "
                "checkpoint signed: events were moved (their positions changed by hand)"
            )
        return None


def open_checkpoints(
    checkpoint_files: Sequence[Path], public_key_files: Sequence[Path]
) -> list[CheckpointAudit]:
    """Read checkpoint files and the trusted public keys to check them with."""
    keys = [load_public_key(path) for path in public_key_files]
    return [
        CheckpointAudit(load_checkpoint(path), keys, name=str(path)) for path in checkpoint_files
    ]
