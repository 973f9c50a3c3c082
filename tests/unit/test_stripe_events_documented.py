"""The runbook lists the Stripe events to send the webhook endpoint: the ones the ledger reads."""

from __future__ import annotations

import re
from pathlib import Path

from ledger.adapters.stripe_webhooks import ACTED_ON

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_runbook_lists_every_stripe_event_the_ledger_reads_and_no_other() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("- **Stripe's webhook endpoint**")
    bullet = text[start : text.index("\n- **", start + 1)]
    listed = set(re.findall(r"`((?:checkout|charge|refund)\.[a-z_.]+)`", bullet))
    assert listed == ACTED_ON
