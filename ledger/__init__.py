"""The credit ledger: domain, event store and application services."""
