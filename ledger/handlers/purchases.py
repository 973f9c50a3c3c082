"""Deciding purchase commands: a Checkout session created at Stripe becomes CheckoutRequested."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ledger.commands import RecordCheckout
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.errors import AccountNotFound
from ledger.domain.ids import account_stream_id, checkout_stream_id
from ledger.store.claims import Claim, request_fingerprint
from ledger.unit_of_work import Decision, Handler, Streams


class CheckoutStarted(msgspec.Struct, frozen=True):
    """The answer: where the customer pays."""

    checkout_url: str
    session_id: str


@dataclass
class CheckoutState:
    account: CreditAccount | None
    session: CheckoutSession | None


async def load_checkout(streams: Streams, command: RecordCheckout) -> CheckoutState:
    return CheckoutState(
        account=await streams.get(CreditAccount, account_stream_id(command.account_id)),
        session=await streams.get(CheckoutSession, checkout_stream_id(command.session_id)),
    )


def decide_checkout(state: CheckoutState, command: RecordCheckout) -> Decision[CheckoutStarted]:
    """Record the session once; the same session again (Stripe's idempotency) records nothing."""
    if state.account is None:
        raise AccountNotFound(command.account_id)
    answer = CheckoutStarted(checkout_url=command.checkout_url, session_id=command.session_id)
    if state.session is not None:
        return Decision(answer)
    session = CheckoutSession.request(
        session_id=command.session_id,
        account_id=command.account_id,
        credits=command.credits,
        amount=command.amount,
        currency=command.currency,
        checkout_url=command.checkout_url,
        expires_at=command.expires_at,
    )
    return Decision(answer, [session])


def purchase_claim(command: RecordCheckout) -> Claim | None:
    """With an Idempotency-Key, the same key answers the same session."""
    if command.idempotency_key is None:
        return None
    return Claim(
        f"purchase/{command.account_id}",
        command.idempotency_key,
        request_fingerprint({"credits": command.credits}),
    )


def by_session(command: RecordCheckout) -> str:
    return command.session_id


HANDLERS: dict[type, Handler] = {  # type: ignore[type-arg]
    RecordCheckout: Handler(
        CheckoutStarted, by_session, load_checkout, decide_checkout, purchase_claim
    ),
}
