"""What an audit can find, in words an auditor can act on."""

from __future__ import annotations

import msgspec


class Finding(msgspec.Struct, frozen=True, omit_defaults=True):
    """One thing that is not as the events say it should be."""

    kind: str
    detail: str
    account_id: str | None = None
    stream_id: str | None = None
    version: int | None = None
    position: int | None = None

    def line(self) -> str:
        """One line for the human report."""
        where = []
        if self.account_id:
            where.append(f"account {self.account_id}")
        elif self.stream_id:
            where.append(f"stream {self.stream_id}")
        if self.version is not None:
            where.append(f"version {self.version}")
        if self.position is not None:
            where.append(f"position {self.position}")
        if not where:
            return f"[{self.kind}] {self.detail}"
        return f"[{self.kind}] {', '.join(where)}: {self.detail}"
