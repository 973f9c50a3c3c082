"""How far this host's clock may be from the database's by default (a module of its own: the
`ledger` command's settings read it without importing the clock guard, and asyncio with it)."""

DEFAULT_MAX_SKEW_SECONDS = 5
"""``LEDGER_MAX_CLOCK_SKEW_SECONDS`` unset: NTP keeps hosts within milliseconds; seconds
apart, it has failed."""
