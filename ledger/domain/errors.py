"""Domain errors: each names a broken business rule, mapped to one status code at the edge."""

from __future__ import annotations


class DomainError(Exception):
    """A command was refused by the rules."""


class AccountAlreadyExists(DomainError):
    """An account with this id is already open."""


class AccountNotFound(DomainError):
    """No account with this id has been opened."""


class InvalidAmount(DomainError):
    """An amount of credits or money outside what the rules allow."""


class InvalidReason(DomainError):
    """A reason holding a NUL character, which no view's text could keep."""


class InvalidAccountId(DomainError):
    """An account id outside the allowed characters or length."""


class InvalidPeriod(DomainError):
    """A billing period not written YYYY-MM."""


class PeriodOutOfOrder(DomainError):
    """A monthly reset for a period before the account's last one."""


class InsufficientCredits(DomainError):
    """The balance is short of what a spend asks."""


class HoldNotFound(DomainError):
    """No hold with this id was placed on the account."""


class HoldHasExpired(DomainError):
    """The hold reached its expiry; its credits went back to the account."""


class HoldAlreadySettled(DomainError):
    """The hold was captured, released or expired before this request."""


class CaptureExceedsHold(DomainError):
    """A capture asked for more credits than the hold reserved."""


class HoldNotDue(DomainError):
    """An expiry was asked for a hold that has not reached it."""


class InvalidGrant(DomainError):
    """A grant with a priority, an expiry or an id the rules do not allow."""


class GrantNotFound(DomainError):
    """No grant with this id was given to the account."""


class GrantClosed(DomainError):
    """The grant expired or was voided before this request."""


class GrantNotDue(DomainError):
    """An expiry was asked for a grant that is not past it (or is closed already)."""
