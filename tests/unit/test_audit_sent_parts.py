"""A worker's Part comes back to the parent as it was made (``audit.parts.sent``)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from uuid import uuid4

from audit.findings import Finding
from audit.parts import received, sent
from audit.replay_state import (
    AccountAt,
    GivenBack,
    HiddenEvent,
    IntentAt,
    Part,
    PurchaseAt,
    SessionAt,
    Settled,
)
from ledger.domain.adjustments import Dispute, Refund, Worth


def _every_field_filled() -> Part:
    stream = uuid4()
    at = datetime(2026, 12, 7, 8, 30, 0, 123456, tzinfo=UTC)
    purchase = PurchaseAt(
        status="paid",
        needs_review=False,
        amount_refunded=100,
        credits_clawed_back=5,
        credits_reversed=0,
        credits=50,
        amount=1000,
        currency="eur",
        position=7,
        created_at=at,
        paid_at=None,
        updated_at=at,
    )
    return Part(
        events=9,
        streams=2,
        accounts=1,
        snapshots=1,
        findings=[Finding(kind="hash-chain", detail="é 🚀", account_id="acct_a", version=2)],
        credited={"cs_1": [("acct_a", 50, 7)]},
        taken_back={"cs_1": GivenBack("acct_a", 5, 8, other_accounts={"acct_b"}, first_position=8)},
        sessions=[
            SessionAt(
                stream,
                "cs_1",
                "acct_a",
                50,
                True,
                5,
                0,
                Worth(5, 0),
                refunds={"re_1": Refund("succeeded", 100)},
                disputes={"dp_1": Dispute("won", None)},
                moved=(5, 0, 0, 0),
            )
        ],
        intents=[IntentAt("pi_1", "cs_1", 100, {"re_1": Refund("pending", 100)}, {})],
        figures={"balances": {"acct_a": AccountAt(topup_balance=45, stream_id=stream)}},
        purchase_rows={"cs_1": ("acct_a", purchase)},
        hold_status={"h_1": ("acct_a", (stream, 10, 0, 10, "released", "r", at, at, None), 9)},
        grant_rows={"g_1": ("acct_a", (stream, 3, 3, 1, None, "gift", "open", 4, at, None), 4)},
        stream_accounts={stream: "acct_a"},
        claimed={"acct_a": [1, 1, 0]},
        unreplayed=["acct_c"],
        open_holds=[("acct_a", "h_2")],
        settled_holds={"acct_a": {"h_1": Settled("released", 0, 10)}},
        voids={("acct_a", b"\x00\xff")},
        hidden=[HiddenEvent(9, stream, 3, "812")],
        hidden_count=4,
        last_hidden=12,
    )


def test_a_part_sent_back_by_a_worker_is_received_as_it_was_made() -> None:
    """A hold's or grant's row holds UUIDs and times, which msgpack would bring back as text
    (a row the views then disagree with); every other field is msgpack's."""
    part = _every_field_filled()

    back = received(pickle.loads(pickle.dumps(sent(part))))  # noqa: S301 (as the pool sends it)

    assert back == part
    for field in Part.__struct_fields__:
        assert getattr(back, field) == getattr(part, field), field


def test_a_part_with_a_figure_past_64_bits_is_received_as_it_was_made() -> None:
    """A balance past a bigint (a finding, not a crash: the statement view cannot hold it)
    is past what msgpack holds too."""
    part = Part(events=2, figures={"statement": {"acct_huge": AccountAt(balance=-(2**64))}})

    back = received(pickle.loads(pickle.dumps(sent(part))))  # noqa: S301 (as the pool sends it)

    assert back == part
