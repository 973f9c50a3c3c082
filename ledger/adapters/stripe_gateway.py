"""The payment gateway on Stripe Checkout, through the official SDK (async)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import msgspec
import stripe
from stripe.params.checkout import SessionCreateParams

from ledger.adapters.stripe_timeout import timeout_from_env
from ledger.adapters.stripe_webhooks import MARK_KEY, MARK_VALUE, InvalidWebhook, found_checkout
from ledger.ports import (
    CheckoutKeyUsed,
    CheckoutRequest,
    CreatedCheckout,
    FoundCheckout,
    PaymentGatewayError,
)

log = logging.getLogger(__name__)

# httpx 0.28 deprecates the form-body style the SDK uses; harmless, but noisy.
warnings.filterwarnings(
    "ignore", message=r"Use 'content=<\.\.\.>' to upload raw", category=DeprecationWarning
)


class StripeGateway:
    """Creates Checkout sessions for one-time credit top-ups, and looks them up."""

    def __init__(
        self,
        secret_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 2,
        timeout: float | None = None,
    ) -> None:
        # One httpx client per gateway: it is bound to the event loop that first uses it.
        self._http_client = stripe.HTTPXClient(
            timeout=timeout if timeout is not None else timeout_from_env()
        )
        self.client = stripe.StripeClient(
            secret_key,
            http_client=self._http_client,
            max_network_retries=max_network_retries,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
        )

    async def close(self) -> None:
        """Close the connection pool; call at shutdown."""
        await self._http_client.close_async()

    async def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        """Create the session; Stripe's own idempotency makes a retry return the same one."""
        # The price too: a paid session whose CheckoutRequested is missing is rebuilt from
        # its metadata, if it carries the ledger's mark, at the price it was made at if that
        # is no less than the service's now (ledger/handlers/payments.py).
        metadata = {
            MARK_KEY: MARK_VALUE,
            "account_id": request.account_id,
            "credits": str(request.credits),
            "unit_amount": str(request.unit_amount),
            "currency": request.currency,
        }
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": request.credits,
                    "price_data": {
                        "currency": request.currency,
                        "unit_amount": request.unit_amount,
                        "product_data": {"name": "Credits"},
                    },
                }
            ],
            "client_reference_id": request.account_id,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "expires_at": request.expires_at,
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
        }
        try:
            session = await self.client.v1.checkout.sessions.create_async(
                params=params, options={"idempotency_key": request.idempotency_key}
            )
        except stripe.StripeError as error:
            message = _one_line(error.user_message or type(error).__name__)
            if isinstance(error, stripe.IdempotencyError) or _replayed(error):
                # The ledger asks again (ledger/service.py): a line of its own if it fails.
                log.info(
                    "Stripe made no session under key %s: %s", request.idempotency_key, message
                )
                raise CheckoutKeyUsed(
                    message, other_parameters=isinstance(error, stripe.IdempotencyError)
                ) from error
            log.warning(
                "Stripe refused to create a checkout session: %s (request id %s)",
                type(error).__name__,
                error.request_id,
            )
            raise PaymentGatewayError(message) from error
        except UnicodeDecodeError as error:
            raise _not_utf8("create a checkout session", error) from error
        return _created(session)

    async def expire_checkout(self, session_id: str) -> None:
        """Expire an open session at Stripe (nobody can pay it after)."""
        try:
            await self.client.v1.checkout.sessions.expire_async(session_id)
        except stripe.StripeError as error:
            raise self._failed("expire a checkout session", error) from error
        except UnicodeDecodeError as error:
            raise _not_utf8("expire a checkout session", error) from error

    async def look_up_checkout(self, session_id: str) -> FoundCheckout:
        """How the session stands at Stripe now, as the event it amounts to (reconciliation).

        A session Stripe does not know is ``unknown``; any other failure raises
        PaymentGatewayError.
        """
        try:
            session = await self.client.v1.checkout.sessions.retrieve_async(session_id)
            intent_status = None
            if (
                session.status == "complete"
                and session.payment_status == "unpaid"
                and isinstance(session.payment_intent, str)
            ):
                intent = await self.client.v1.payment_intents.retrieve_async(session.payment_intent)
                intent_status = intent.status
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return FoundCheckout(session_id=session_id, state="unknown")
            raise self._failed("retrieve a checkout session", error) from error
        except stripe.StripeError as error:
            raise self._failed("retrieve a checkout session", error) from error
        except UnicodeDecodeError as error:
            raise _not_utf8("retrieve a checkout session", error) from error
        try:
            return found_checkout(session.to_dict(for_json=True), intent_status)
        except InvalidWebhook as error:
            raise PaymentGatewayError(
                f"Stripe answered with an unreadable session: {error}"
            ) from error

    @staticmethod
    def _failed(what: str, error: stripe.StripeError) -> PaymentGatewayError:
        log.warning(
            "Stripe could not %s: %s (request id %s)", what, type(error).__name__, error.request_id
        )
        return PaymentGatewayError(_one_line(error.user_message or error))


def _replayed(error: stripe.StripeError) -> bool:
    """Whether Stripe answered a failure it saved under the request's idempotency key (it
    saves the first answer to a key, a 500 too, and gives it again to every retry)."""
    return _says_replayed(error.headers)


def _says_replayed(headers: Mapping[str, str] | None) -> bool:
    """Whether an answer's headers say it is a key's first answer given again."""
    return any(
        name.lower() == "idempotent-replayed" and value == "true"
        for name, value in (headers or {}).items()
    )


def _not_utf8(what: str, error: UnicodeDecodeError) -> PaymentGatewayError:
    """Stripe's answer in another encoding than UTF-8 (a proxy's error page may be): the
    SDK's debug log line decodes every body, at any log level, before it checks any (stripe
    16.1, ``_util.logfmt``), and raises this where it would raise an APIError."""
    log.warning("Stripe could not %s: its answer is not UTF-8 (%s)", what, error)
    return PaymentGatewayError("Stripe answered with a body that is not UTF-8.")


def _created(session: object) -> CreatedCheckout:
    """The session Stripe made, as the ledger records it; PaymentGatewayError if a field is
    missing or of another type (a 200 of ``{}`` or ``[]`` from a proxy was a 500)."""
    fields = {
        name: getattr(session, attribute, None)
        for name, attribute in (
            ("session_id", "id"),
            ("url", "url"),
            ("amount_total", "amount_total"),
            ("currency", "currency"),
            ("expires_at", "expires_at"),
        )
    }
    answer = getattr(session, "last_response", None)
    fields["replayed"] = _says_replayed(getattr(answer, "headers", None))
    try:
        return msgspec.convert(fields, type=CreatedCheckout, strict=True)
    except msgspec.ValidationError as error:
        raise PaymentGatewayError(
            f"Stripe answered with an incomplete checkout session: {error}"
        ) from error


def _one_line(said: object) -> str:
    """Stripe's message on one line: its network errors' run over four ("If this problem
    persists,\nlet us know at support@stripe.com.\n\n(Network error: …)"), which split
    `ledger stripe reconcile`'s line of the session and the log's."""
    return " ".join(str(said).split())
