"""The notifications view: the outbox of webhook deliveries, derived from the events.

For each account event it decides which notifications the event makes and
inserts one delivery per notification and subscribed endpoint, in the
projector's transaction, together with the view's position: every event's
notifications are created exactly once, and none is lost if the projector
stops anywhere. The dispatcher (ledger/notifications/dispatcher.py) sends them.

What the alerts need of each account (its buckets, threshold and whether each
alert may fire again) is kept in ``notifier_accounts``, folded from the same
events. ``credits.low_balance`` fires when ``available`` goes from at or above
the account's threshold to below it, whichever of the two moved; it fires
again only after ``available`` has been back at or above the threshold.
``credits.depleted`` likewise, when ``available`` goes from above zero to zero
or below.

An endpoint gets the notifications of events recorded after it was created
and projected while it is live: a new subscriber is not sent the history.
A notification's id is made from the event's position and the type, so it is
the same on every attempt, and also when this view is rebuilt: a rebuild makes
deliveries only of events past the live view's position (retention may have pruned
the earlier ones' rows, docs/notifications.md), and the deliveries' unique key keeps
it from making twice those the live view makes meanwhile.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from ledger.domain.events import (
    AccountEvent,
    AccountOpened,
    CreditsGranted,
    CreditsPurchased,
    CreditsSpent,
    GrantExpired,
    HoldCaptured,
    HoldExpired,
    LowBalanceThresholdSet,
    MonthlyAllowanceReset,
    low_balance_threshold,
)
from ledger.notifications import DELIVERIES_CHANNEL, EVENT_TYPES
from ledger.store.event_store import Connection
from ledger.times import in_utc
from projections.balance_changes import HELD, HELD_EXACT, Balances
from projections.events import (
    EventKinds,
    Moment,
    ProjectedEvent,
    WhichOf,
    as_datetime,
    of_kinds,
)
from projections.memory import ViewMemory, rows_of
from projections.writes import Write, WritesView


class NotifierState(msgspec.Struct, Balances):
    """One account as the alerts see it, after its last event (its ``balance`` and
    ``available``: ``Balances``)."""

    stream_id: UUID
    account_id: str
    monthly_allowance: int
    allowance_remaining: int
    topup_balance: int
    held: int
    threshold: int | None
    low_armed: bool
    depleted_armed: bool
    position: int
    granted: int = 0

    @property
    def effective_threshold(self) -> int:
        """The account's own threshold, or 10 % of its allowance (rounded down)."""
        return low_balance_threshold(self.monthly_allowance, self.threshold)

    @property
    def is_low(self) -> bool:
        return self.available < self.effective_threshold

    @property
    def is_depleted(self) -> bool:
        return self.available <= 0

    def balances(self) -> dict[str, Any]:
        """The balances every notification carries: as they are after its event's command."""
        return {
            "account_id": self.account_id,
            "balance": self.balance,
            "available": self.available,
            "held": self.held,
            "allowance_remaining": self.allowance_remaining,
            "granted": self.granted,
            "topup_balance": self.topup_balance,
            "monthly_allowance": self.monthly_allowance,
            "low_balance_threshold": self.effective_threshold,
        }


# The state's fields are the table's columns (and migration 0016's notifier_row, in order).
_COLUMNS = ", ".join(NotifierState.__struct_fields__)

# One array of records (migration 0016's notifier_row), as the balances view writes its rows.
_UPSERT = f"""INSERT INTO {{table}} ({_COLUMNS})
    SELECT {_COLUMNS} FROM unnest($1::notifier_row[])
    ON CONFLICT (stream_id) DO UPDATE SET
        monthly_allowance = excluded.monthly_allowance,
        allowance_remaining = excluded.allowance_remaining,
        topup_balance = excluded.topup_balance, held = excluded.held,
        granted = excluded.granted, threshold = excluded.threshold, low_armed = excluded.low_armed,
        depleted_armed = excluded.depleted_armed, position = excluded.position"""

# A column an array: a notification rarely goes to more than a few endpoints. Only events
# past the live view's position: those before it had their deliveries made when the live
# view applied them, and a rebuild must not make again those that retention pruned
# (docs/notifications.md). The live projector's statement reads the position it moves.
_DELIVERIES = """INSERT INTO webhook_deliveries
        (notification_id, event_type, endpoint_id, account_id, position, payload)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[])
        AS d(notification_id, event_type, endpoint_id, account_id, position, payload)
    WHERE d.position > coalesce(
        (SELECT p.position FROM projection_positions p WHERE p.name = 'notifications'), 0)
    ON CONFLICT (notification_id, endpoint_id) DO NOTHING"""


class Notification(msgspec.Struct, frozen=True):
    """What is sent: ``{"id", "type", "created", "data"}``."""

    id: str
    type: str
    created: int
    data: dict[str, Any]


def notification_id(position: int, event_type: str) -> str:
    """The same id for the same event and type, whoever computes it and however often."""
    return f"evt_{position}_{event_type.replace('.', '_')}"


_OWN = WhichOf(
    CreditsPurchased, CreditsSpent, HoldCaptured, CreditsGranted, GrantExpired, HoldExpired
)
_OWN_EXACT = _OWN.exact
# The type of the notification an event of each of _OWN's classes is by itself.
_OWN_TYPES = {
    CreditsPurchased: "credits.purchased",
    CreditsSpent: "credits.spent",
    HoldCaptured: "credits.spent",
    CreditsGranted: "credits.granted",
    GrantExpired: "grant.expired",
    HoldExpired: "hold.expired",
}


def _own_notification(event: object, wanted: Container[str]) -> tuple[str, dict[str, Any]] | None:
    """The notification an event is by itself (before any alert it sets off), if its
    type is ``wanted``: its details are not built for nobody."""
    try:  # isinstance() of each class, looked up (see WhichOf): a match asked them in turn
        which = _OWN_EXACT[type(event)]
    except KeyError:
        which = _OWN[type(event)]
    if which is None or (kind := _OWN_TYPES[which]) not in wanted:
        return None
    if which is CreditsSpent:
        assert isinstance(event, CreditsSpent)  # for the type checker: cheap when it is
        return kind, {
            "amount": event.amount,
            "from_allowance": event.from_allowance,
            "from_grants": event.from_grants,
            "from_topup": event.from_topup,
            "reason": event.reason or None,
            "hold_id": None,
        }
    if which is CreditsPurchased:
        assert isinstance(event, CreditsPurchased)
        return kind, {"session_id": event.session_id, "credits": event.credits}
    if which is HoldCaptured:
        assert isinstance(event, HoldCaptured)
        if event.captured <= 0:
            return None
        return kind, {
            "amount": event.captured,
            "from_allowance": event.from_allowance,
            "from_grants": dict(event.from_grants),
            "from_topup": event.from_topup,
            "reason": None,
            "hold_id": event.hold_id,
        }
    if which is CreditsGranted:
        assert isinstance(event, CreditsGranted)
        return kind, {
            "grant_id": event.grant_id,
            "amount": event.amount,
            "priority": event.priority,
            "expires_at": None
            if event.expires_at is None
            else in_utc(datetime.fromisoformat(event.expires_at)),
            "reason": event.reason or None,
        }
    if which is GrantExpired:
        assert isinstance(event, GrantExpired)
        return kind, {"grant_id": event.grant_id, "lapsed": event.lapsed}
    assert isinstance(event, HoldExpired)
    return kind, {
        "hold_id": event.hold_id,
        "released": event.released,
        # As the hold's answer counts it: of ``released``, the allowance share carried
        # over a reset and the shares of grants closed meanwhile, which ended.
        "lapsed": event.lapsed + sum(event.grants_lapsed.values()),
    }


def fold(
    state: NotifierState | None,
    projected: ProjectedEvent,
    wanted: Container[str] = EVENT_TYPES,
    *,
    ends_command: bool = True,
) -> tuple[NotifierState | None, list[Notification]]:
    """The account's state after one event and the notifications of ``wanted`` types it makes.

    ``state`` is changed in place (and returned); None while the stream is not
    an account's. The alerts arm and fire the same whatever is wanted: only the
    notifications nobody subscribed to are not built. They are judged after the
    last event a command recorded on the account (``ends_command``), on what the
    command left: a refund that claws back and restores in one command never
    crossed anything.
    """
    made: list[tuple[Notification, int]] = []
    state = _folded(state, projected, wanted, ends_command, made, 0)
    return state, [notification for notification, _ in made]


_WHICH = WhichOf(AccountOpened, LowBalanceThresholdSet)
_WHICH_EXACT = _WHICH.exact


def _folded(
    state: NotifierState | None,
    projected: ProjectedEvent,
    wanted: Container[str],
    ends_command: bool,
    made: list[tuple[Notification, int]],
    delivered: int,
) -> NotifierState | None:
    """``fold``, adding the notifications to ``made`` with the event's position: a rebuild
    folds every event through here, and a list and a tuple made for each cost it. None
    is built of an event at or before ``delivered``, the position up to which the live
    view has made its deliveries (``_SUBSCRIBERS``)."""
    event = projected.event
    try:  # isinstance() of each class, looked up (see WhichOf)
        which = _WHICH_EXACT[type(event)]
    except KeyError:
        which = _WHICH[type(event)]
    if which is AccountOpened:
        assert isinstance(event, AccountOpened)  # for the type checker: cheap when it is
        allowance = event.monthly_allowance
        opened = NotifierState(
            stream_id=projected.stream_id,
            account_id=event.account_id,
            monthly_allowance=allowance,
            allowance_remaining=allowance,
            topup_balance=0,
            held=0,
            threshold=None,
            low_armed=False,
            depleted_armed=False,
            position=projected.position,
        )
        # An account that opens low or empty has not crossed anything yet.
        opened.low_armed, opened.depleted_armed = not opened.is_low, not opened.is_depleted
        return opened
    if state is None:
        return None
    if which is LowBalanceThresholdSet:
        assert isinstance(event, LowBalanceThresholdSet)
        state.threshold = event.threshold
    elif (moved := projected.moved) is None:
        return state  # neither moves the buckets nor the threshold
    else:
        # The same meaning of each event as the balances view and the statement.
        allowance, topup, granted = moved
        if type(event) is MonthlyAllowanceReset:  # moved: the new allowance
            state.monthly_allowance = event.monthly_allowance
            allowance -= state.allowance_remaining
        # Only the buckets that move, as in balances.fold (an attribute set is dear).
        if allowance:
            state.allowance_remaining += allowance
        if topup:
            state.topup_balance += topup
        if granted:
            state.granted += granted
        try:  # HELD[type(event)], in the plain dict first
            held = HELD_EXACT[type(event)]
        except KeyError:
            held = HELD[type(event)]
        if held is not None:
            state.held += held(event)
    state.position = projected.position
    if wanted:  # with no subscriber, build nothing
        if projected.position <= delivered:
            wanted = _NOTHING  # the alerts below still arm and fire, building nothing
        elif own := _own_notification(event, wanted):
            _notify(made, state, projected, wanted, *own)
    if not ends_command:
        return state
    # state.available and state.effective_threshold written out: a rebuild judges them
    # for every event, and three properties and low_balance_threshold() a call each.
    available = state.allowance_remaining + state.granted + state.topup_balance - state.held
    threshold = state.monthly_allowance // 10 if state.threshold is None else state.threshold
    if available < threshold:  # low
        if state.low_armed:
            state.low_armed = False
            _notify(made, state, projected, wanted, "credits.low_balance")
    elif not state.low_armed:  # armed again (set only then: an attribute set is dear)
        state.low_armed = True
    if available <= 0:  # depleted
        if state.depleted_armed:
            state.depleted_armed = False
            _notify(made, state, projected, wanted, "credits.depleted")
    elif not state.depleted_armed:
        state.depleted_armed = True
    return state


def _notify(
    made: list[tuple[Notification, int]],
    state: NotifierState,
    projected: ProjectedEvent,
    wanted: Container[str],
    kind: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Add the notification of ``kind``, with its event's position, if it is wanted. Built
    only for the few events that notify: most fold without a dict or a clock (nor a
    closure, as ``notify`` was)."""
    if kind not in wanted:
        return
    balances = state.balances()
    made.append(
        (
            Notification(
                notification_id(projected.position, kind),
                kind,
                int(as_datetime(projected.recorded_at).timestamp()),
                balances | details if details else balances,
            ),
            projected.position,
        )
    )


class _Subscriber(msgspec.Struct, frozen=True):
    endpoint_id: str
    event_types: frozenset[str]
    created_at: Moment


_encode = msgspec.json.Encoder().encode


_ACCOUNT_EVENTS = EventKinds(AccountOpened, AccountEvent)

_NOTHING: frozenset[str] = frozenset()

# The live subscribers, and on each row the position up to which the live view has made
# its deliveries (as _DELIVERIES reads it).
_SUBSCRIBERS = """SELECT endpoint_id, event_types, created_at,
        coalesce((SELECT p.position FROM projection_positions p WHERE p.name = 'notifications'),
                 0) AS delivered
    FROM webhook_endpoints WHERE disabled_at IS NULL"""


class NotificationsProjection(WritesView):
    """The outbox of webhook deliveries, and the per-account state the alerts need."""

    name = "notifications"
    table = "notifier_accounts"

    def __init__(self, memory: ViewMemory[NotifierState] | None = None) -> None:
        self.memory = memory if memory is not None else ViewMemory(limit=0)

    async def fold(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> list[Write]:
        """A batch folded: one read (of the states not remembered) and one write of the
        states, one insert of deliveries."""
        events = of_kinds(events, _ACCOUNT_EVENTS)
        if not events:
            return []
        states = await self.memory.rows(
            {e.stream_id for e in events}, rows_of(connection, table, NotifierState)
        )
        rows = await connection.fetch(_SUBSCRIBERS)
        subscribers = [
            _Subscriber(r["endpoint_id"], frozenset(r["event_types"]), r["created_at"])
            for r in rows
        ]
        wanted = frozenset().union(*(s.event_types for s in subscribers))
        # A rebuild folds events the live view has made its deliveries of already, which
        # _DELIVERIES keeps out (the position it reads then is this one or later): their
        # notifications would be built for nobody.
        delivered = rows[0]["delivered"] if rows else 0
        deliveries: list[tuple[str, str, str, str, int, str]] = []
        made: list[tuple[Notification, int]] = []  # the command's so far, with their positions
        following: list[ProjectedEvent | None] = [*events[1:], None]
        for event, next_event in zip(events, following, strict=True):
            # The projector reads whole appends (read_whole_appends_after), and one
            # append holds one command's events of a stream, one after the other.
            ends_command = (
                next_event is None
                or next_event.recorded_at != event.recorded_at
                or next_event.stream_id != event.stream_id
            )
            stream_id = event.stream_id
            state = states[stream_id] = _folded(
                states[stream_id], event, wanted, ends_command, made, delivered
            )
            if state is None or not ends_command or not made:
                continue
            for notification, position in made:
                if position != event.position:
                    # Made by an event inside the command: it carries the balances the
                    # command left, as the alerts judge them. A payment that lands after its
                    # refund credits and claws back in one command, and its credits.purchased
                    # told of a balance the account never had.
                    left = notification.data | state.balances()
                    notification = msgspec.structs.replace(notification, data=left)
                chosen = [
                    s.endpoint_id
                    for s in subscribers
                    if notification.type in s.event_types
                    and as_datetime(event.recorded_at) >= as_datetime(s.created_at)
                ]
                if not chosen:
                    continue
                payload = _encode(notification).decode()
                deliveries.extend(
                    (
                        notification.id,
                        notification.type,
                        endpoint_id,
                        state.account_id,
                        position,
                        payload,
                    )
                    for endpoint_id in chosen
                )
            made = []
        self.memory.keep(states)
        written = [msgspec.structs.astuple(s) for s in states.values() if s is not None]
        writes = [Write(_UPSERT.format(table=table), (written,))] if written else []
        if deliveries:
            writes += [
                Write(_DELIVERIES, tuple(map(list, zip(*deliveries, strict=True)))),
                # At commit (just after, on the projector's short road): the dispatcher
                # wakes once the rows are visible.
                Write("SELECT pg_notify($1, '')", (DELIVERIES_CHANNEL,), alone=True),
            ]
        return writes
