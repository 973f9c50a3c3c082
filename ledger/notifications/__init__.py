"""Outbound notifications: webhook endpoints, signed deliveries and their dispatcher.

The deliveries themselves are derived from the events by the ``notifications``
projection (projections/notifications.py); this package registers receivers,
signs bodies and sends what is due.
"""

from __future__ import annotations

EVENT_TYPES = (
    "credits.purchased",
    "credits.spent",
    "credits.low_balance",
    "credits.depleted",
    "hold.expired",
    "credits.granted",
    "grant.expired",
)
"""What an endpoint may subscribe to."""

DELIVERIES_CHANNEL = "ledger_deliveries"
"""NOTIFY channel: new or manually retried deliveries are due now."""
