"""Times as the API and its notifications answer them (outside `ledger.domain`: the
projections know the domain's events alone, tests/unit/test_projection_folds.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec


def in_utc(moment: datetime) -> str:
    """``moment`` in UTC with a "Z", as msgspec writes every time the API answers (a hold's
    or grant's expiry too; the offset a grant was given stays in its event)."""
    return msgspec.json.encode(moment.astimezone(UTC)).decode()[1:-1]
