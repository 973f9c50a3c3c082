"""What a reconciliation with Stripe looks at unless told (a module of its own: ``ledger stripe
reconcile --help`` shows them without importing the ledger's service, api/reconcile.py)."""

from datetime import timedelta

DEFAULT_OLDER_THAN = timedelta(minutes=15)
"""Sessions younger than this are left to their webhooks, which are normally seconds away.
Every session past its expiry is older: the ledger's live an hour."""

RECONCILE_WINDOW = timedelta(days=30)
"""How far back the service's periodic run looks (Stripe keeps events 30 days)."""

DEFAULT_LIMIT = 1000
"""Sessions per run at most (oldest first): Stripe's rate limits stay far away."""
