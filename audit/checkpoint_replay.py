"""What a signed checkpoint needs to see of the events as ``audit verify`` replays them
(``CheckpointReplay``), apart from the checkpoints' files and keys (``audit.checkpoint``): a
worker process of the audit replays its part with this alone and imports no cryptography
(36 modules; ``import audit.parts`` 1,101M → 1,029M instructions with the interpreter's own
start, callgrind), and the audit waits for its last worker to end."""

from __future__ import annotations

import hashlib
import struct
from typing import Any
from uuid import UUID

from ledger.store.event_store import ChainedEvent
from ledger.store.hash_chain import GENESIS, event_hash_at


def positions_digest() -> Any:
    """A stream's running ``Head.positions``: ``add_position`` each event's, in version order."""
    return hashlib.sha256()


_POSITION = struct.Struct(">q")
add_position = _POSITION.pack
"""An event's position as ``Head.positions`` hashes it (PostgreSQL's ``int8send``)."""


class Tail:
    """A stream as the replay leaves it at the checkpoint's position."""

    __slots__ = ("chained", "positions", "stored", "version")

    def __init__(self, positions: Any = None) -> None:
        self.version = 0
        self.stored = GENESIS  # the stored hash of its last event
        self.chained = GENESIS  # the chain recomputed from version 1, from content alone
        self.positions = positions  # a positions_digest(), its digest once sent back, or None

    def positions_signed(self) -> bytes | None:
        """What ``Head.positions`` should be for the events seen (None: not signed)."""
        positions = self.positions
        return (
            positions if positions is None or isinstance(positions, bytes) else positions.digest()
        )


class CheckpointReplay:
    """What one checkpoint needs to see of the events: where each stream ends at its position.

    Every decision is per stream, but for the count and the last position, so the
    streams may be split over processes, each replaying its own part in position
    order, and the parts merged (``merge``) before the findings are made.
    """

    def __init__(
        self, position: int, head_versions: dict[UUID, int], signs_positions: bool = False
    ) -> None:
        self.position = position
        self.head_versions = head_versions
        self.signs_positions = signs_positions
        self.tails: dict[UUID, Tail] = {}
        self.rewritten_later: dict[UUID, int] = {}
        self.count = 0
        self.last_position = 0

    def empty_copy(self) -> CheckpointReplay:
        """A replay of the same checkpoint that has seen nothing yet: one per part."""
        return CheckpointReplay(self.position, self.head_versions, self.signs_positions)

    def without_heads(self) -> CheckpointReplay:
        """What a part sends back: its tails (their positions digested: a running sha256
        cannot cross a process boundary), not the checkpoint's heads again."""
        self.head_versions = {}
        for tail in self.tails.values():
            tail.positions = tail.positions_signed()
        return self

    def observe(self, event: ChainedEvent, chained_on_stored: bytes | None = None) -> None:
        """Take one event; a stream's events in position order (see CheckpointAudit.observe)."""
        self.last_position = max(self.last_position, event.notification_id)
        if event.notification_id > self.position:
            version = self.head_versions.get(event.originator_id)
            if version is not None and event.originator_version <= version:
                self.rewritten_later.setdefault(event.originator_id, event.notification_id)
            return
        self.count += 1
        tail = self.tails.get(event.originator_id)
        if tail is None:
            digest = positions_digest() if self.signs_positions else None
            tail = self.tails[event.originator_id] = Tail(digest)
        if tail.positions is not None:
            tail.positions.update(add_position(event.notification_id))
        if chained_on_stored is not None and tail.chained == tail.stored:
            tail.chained = chained_on_stored
        else:
            tail.chained = event_hash_at(
                tail.chained,
                event.originator_id,
                event.originator_version,
                event.microseconds,
                event.topic,
                event.state,
            )
        tail.version = event.originator_version
        tail.stored = event.hash

    def merge(self, other: CheckpointReplay) -> None:
        """Add a part that replayed other streams of the same checkpoint."""
        self.tails.update(other.tails)
        for stream_id, position in other.rewritten_later.items():
            self.rewritten_later.setdefault(stream_id, position)
        self.count += other.count
        self.last_position = max(self.last_position, other.last_position)
