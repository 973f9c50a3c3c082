"""What refunds and disputes take back of a purchase, whatever order Stripe tells them in.

A purchase of ``credits`` for ``amount`` (minor units) keeps the credits its
money still pays for. The facts are Stripe's cumulative ``amount_refunded`` (the
largest seen), each refund's latest status, and each dispute's latest status with the most
money told of it in that status (statuses only move forward, see ``REFUND_STAGE`` and
``DISPUTE_STAGE``; ``newer``). From them alone:

* ``refunded = max(largest amount_refunded - failed, returned)`` (``refunded_money``):
  ``failed`` is what the refunds known to have failed or been canceled were of (Stripe takes
  them out of its figure when they fail, and sends no ``charge.refunded`` then),
  ``returned`` what the other refunds known by their id are of;
* ``refunded_credits = credits * min(amount, refunded) // amount``
  (rounded down: the customer keeps a part-credit);
* ``disputed_credits = min(credits - refunded_credits, ceil(credits * withdrawn / amount))``,
  where ``withdrawn`` is the money chargebacks hold (status ``needs_response``,
  ``under_review`` or ``lost``).

A chargeback's share is rounded up: Stripe disputes what a refund left, so a refund
of 405 of 1,000 (at 10 a credit, 40 credits) and a chargeback of the other 595 take
back all 100 credits, in either order. Rounded down, the chargeback took 59 and left
one credit for no money; and since the chargeback may be told first, before anything
says a refund came before it, no rule that looks at both can round it down alone.

Because these are functions of the facts and not of their order, a refund or a
dispute that arrives before its payment, twice, or after the one that follows
it ends the same. The cap on ``disputed_credits`` means a lost dispute and a
refund of the same money never take the credits twice.

A refund that fails (pending or succeeded, then ``failed``; or ``canceled``) returned no
money: what its clawback took comes back. Whichever Stripe tells first, ``charge.refunded``
or the failure, the same facts give the same credits: the largest ``amount_refunded`` less
the failed refunds is never more than the money still refunded (a figure from before the
failure counts it, one from after does not, and less is taken), nor is what the live
refunds known by id are of. A refund made after another failed is known in full by its id
(``refund.created``; before API version 2024-10-28, its ``charge.refund.updated``): from
``charge.refunded`` alone it would be taken back less the failed one.

**Inquiries** (``warning_needs_response``, ``warning_under_review``,
``warning_closed``) move no money: they take back nothing, and closing one gives
nothing back. A chargeback takes back from its start (Stripe withdraws the money
then, ``charge.dispute.funds_withdrawn``); ``won`` gives it back
(``funds_reinstated``), ``lost`` keeps it, also while the loss is appealed
(``appeal_needs_response``, ``appeal_under_review``) until the appeal is won.
"""

from __future__ import annotations

from typing import Any

import msgspec

DISPUTE_STAGE = {
    "warning_needs_response": 0,
    "warning_under_review": 1,
    "needs_response": 2,
    "under_review": 3,
    "warning_closed": 4,
    "charge_refunded": 5,
    "lost": 6,
    "appeal_needs_response": 7,
    "appeal_under_review": 8,
    "won": 9,
}
"""How far along a dispute is: a status at an earlier stage than the one known is old news.

A loss may be appealed (API version 2026-10-28): ``lost``, ``appeal_needs_response``,
``appeal_under_review``, then ``won`` or ``lost`` again. ``won`` ends every life, so it
comes last; a ``lost`` that ends an appeal reads as old news, and changes nothing the
appeal's statuses did not (the bank holds the money in both).

The order is total (no two statuses share a stage), so whatever set of statuses one dispute
is told ends at the same one in every order. The ways a dispute closes, which Stripe never
tells of one dispute together (a stand-in, a replay or a test can), go by the money: an
inquiry's ``warning_closed`` moved none, ``charge_refunded`` closed it by a refund (which
``charge.refunded`` counts), ``lost`` keeps what the bank withdrew; the one that moved most
counts. ``warning_closed`` then ``needs_response`` is an inquiry closed and then escalated,
which Stripe never does either: the close counts, as it does told in the other order."""

MONEY_WITHDRAWN = frozenset(
    {"needs_response", "under_review", "lost", "appeal_needs_response", "appeal_under_review"}
)
"""Dispute statuses in which the bank holds the disputed money."""


class Dispute(msgspec.Struct, frozen=True):
    """A dispute as last heard of: its status and the money it is about."""

    status: str
    amount: int | None
    """None only while a payment intent keeps it: its session knows what None means."""

    @classmethod
    def of(cls, state: Dispute | dict[str, Any]) -> Dispute:
        """The dispute itself, or the dispute a snapshot's JSON describes."""
        return state if isinstance(state, Dispute) else msgspec.convert(state, type=cls)

    @property
    def withdrawn(self) -> int:
        """What it took, never below nothing: no dispute gives back more than disputes took."""
        return max(self.amount or 0, 0) if self.status in MONEY_WITHDRAWN else 0


def newer(known: Dispute | None, status: str, amount: int | None) -> bool:
    """Whether ``status`` of ``amount`` is news for a dispute last seen as ``known``: a later
    stage, or the same status told of more money (None, told of no amount, is of the whole
    charge: the most). Stripe's disputed amount can differ from the charge's; were the first
    amount of a status kept, the account would end as the events' order made it."""
    if known is not None and status == known.status:
        return _more(amount, known.amount)
    return later_stage(DISPUTE_STAGE, known.status if known else None, status)


def _more(amount: int | None, than: int | None) -> bool:
    if than is None:
        return False
    return amount is None or amount > than


def later_stage(stages: dict[str, int], known: str | None, status: str) -> bool:
    """Whether ``status`` is at a later stage than ``known`` (None: nothing heard yet); a
    status not in ``stages`` never is."""
    if status not in stages:
        return False
    return known is None or stages[status] > stages.get(known, -1)


REFUND_STAGE = {
    "pending": 0,
    "requires_action": 0,
    "succeeded": 1,
    "failed": 2,
    "canceled": 2,
}
"""How far along a refund is (Stripe's ``Refund.status``): ``failed`` and ``canceled`` end it
(a succeeded refund may still fail; no ended one changes again)."""

RETURNED_NOTHING = frozenset({"failed", "canceled"})
"""Refund statuses whose money went back to the merchant, not to the customer."""


class Refund(msgspec.Struct, frozen=True):
    """A refund as last heard of by its id: its status and its amount."""

    status: str
    amount: int

    @classmethod
    def of(cls, state: Refund | dict[str, Any]) -> Refund:
        """The refund itself, or the refund a snapshot's JSON describes."""
        return state if isinstance(state, Refund) else msgspec.convert(state, type=cls)

    @property
    def returned(self) -> bool:
        """Whether its money is the customer's (not failed, not canceled)."""
        return self.status not in RETURNED_NOTHING


def refund_heard(known: Refund | None, status: str, amount: int) -> Refund | None:
    """The refund as ``status`` leaves it, when that is news for one last seen as ``known``
    (its amount the one first heard: no later event changes it); None when it is not."""
    if not later_stage(REFUND_STAGE, known.status if known else None, status):
        return None
    return Refund(status, known.amount if known else amount)


def refunded_money(amount_refunded: int, refunds: dict[str, Refund]) -> int:
    """The money refunds returned, from the facts alone (see the module): never more than
    Stripe's figure or the live refunds say, whichever order they came in."""
    failed = returned = 0
    for refund in refunds.values():
        if refund.returned:
            returned += refund.amount
        else:
            failed += refund.amount
    return max(amount_refunded - failed, returned, 0)


class Worth(msgspec.Struct, frozen=True):
    """What refunds and disputes take back of one purchase, in credits."""

    refunded: int
    disputed: int


def taken_back(
    credits: int,
    amount: int,
    amount_refunded: int,
    disputes: dict[str, Dispute],
    *,
    chargeback_rounded_up: bool = True,
) -> Worth:
    """The credits refunds and disputes take back, from the facts alone (see the module).

    ``chargeback_rounded_up=False``: the rule before the chargeback's share was rounded up,
    which decided what purchases disputed before then took back (the audit accepts it).
    """
    if amount <= 0:
        return Worth(0, 0)
    refunded = credits * min(amount, amount_refunded) // amount
    withdrawn = credits * min(amount, sum(d.withdrawn for d in disputes.values()))
    disputed = -(-withdrawn // amount) if chargeback_rounded_up else withdrawn // amount
    return Worth(refunded, min(credits - refunded, disputed))
