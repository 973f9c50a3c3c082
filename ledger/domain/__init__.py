"""The domain: aggregates, their events and rules. No I/O here."""
