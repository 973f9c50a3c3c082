"""The views' names, as the command line, the README and ``projection_positions`` use them,
and the grant statuses the grants view is read by.

Kept apart from the views themselves so that ``ledger --help`` lists them without
importing every projection; ``all_projections()`` serves exactly these, in this order
(a test holds the two together).
"""

VIEW_NAMES = ("balances", "purchases", "statement", "holds", "grants", "notifications")

GRANT_STATUSES = ("active", "expired", "voided", "all")
"""What ``ledger grants list --status`` and ``GET .../grants?status=`` choose from."""
