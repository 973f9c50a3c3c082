"""One dispute's deliveries, in every order, end the same: the same credits, the same status.

Stripe never tells one dispute two closed statuses, nor an inquiry closed and then a
chargeback, but a stand-in, a replay or a test can; whatever set of statuses one dispute is
told, the account and the session end alike for every order they come in. The deliveries
are signed as Stripe signs them (the SDK's signer) and posted to the service's real
webhook; the purchase is made through the API against the stand-in.
"""

from __future__ import annotations

import itertools

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from api.services import Services
from ledger.domain.adjustments import DISPUTE_STAGE, Dispute
from tests.conftest import unique
from tests.e2e.test_stripe_event_orders import new_customer
from tests.e2e.test_stripe_webhooks import deliver, paid_purchase, topup_balance
from tests.support.stripe_events import dispute, event_body

CREDITS = 1000

deliveries = st.lists(
    st.tuples(st.sampled_from(sorted(DISPUTE_STAGE)), st.sampled_from([400, 1000])),
    min_size=2,
    max_size=3,
)


async def played(
    http: httpx.AsyncClient, services: Services, told: list[tuple[str, int]]
) -> tuple[int, Dispute]:
    """A fresh purchase told ``told`` of one dispute, in that order: its top-up balance and
    the dispute as its session keeps it."""
    customer = await new_customer(services)
    session_id, intent = await paid_purchase(http, customer, CREDITS)
    dispute_id = unique("dp")
    for status, amount in told:
        body = event_body(
            "charge.dispute.updated", dispute(dispute_id, intent, amount=amount, status=status)
        )
        answer = await deliver(http, body)
        assert answer.status_code == 200, answer.text
    session = await services.ledger.session(session_id, fresh=True)
    assert session is not None
    return await topup_balance(services, customer.account_id), session.disputes[dispute_id]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(told=deliveries)
@example(told=[("lost", 1000), ("charge_refunded", 1000)])
@example(told=[("warning_closed", 1000), ("lost", 1000)])
async def test_every_order_of_one_disputes_deliveries_ends_the_same(
    http: httpx.AsyncClient, services: Services, told: list[tuple[str, int]]
) -> None:
    ends = {
        tuple(order): await played(http, services, list(order))
        for order in set(itertools.permutations(told))
    }
    assert len(set(map(repr, ends.values()))) == 1, ends
