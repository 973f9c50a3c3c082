"""``ledger webhooks deliveries|retry``: the outbound notifications' deliveries, listed and
retried."""

from __future__ import annotations

import click

from api.cli_support import WholeNumber, run_with_services, settings_from_env


@click.group("webhooks")
def webhooks_group() -> None:
    """Inspect and retry outbound notification deliveries."""


def _delivery_id(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """The id as `webhooks deliveries` prints it (dlv_12), or its number alone (a click
    callback: the error names DELIVERY_ID, where it was "Invalid value: …" naming none)."""
    digits = value.strip().lower().removeprefix("dlv_")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise click.BadParameter(f"{value!r} is not a delivery id (dlv_123 or 123)")
    return int(digits)


@webhooks_group.command("deliveries")
@click.option(
    "--status",
    type=click.Choice(["pending", "delivered", "failed", "cancelled"]),
    help="Only deliveries in this state.",
)
@click.option("--endpoint", "endpoint_id", help="Only deliveries to this endpoint (we_…).")
@click.option(
    "--limit", type=WholeNumber(1, 10_000), default=50, show_default=True, help="How many."
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one delivery each.")
def webhook_deliveries(
    status: str | None, endpoint_id: str | None, limit: int, as_json: bool
) -> None:
    """List deliveries, newest first, each with its attempts."""
    import msgspec

    from ledger.notifications.outbox import list_deliveries

    found = run_with_services(
        settings_from_env(service=False),
        lambda s: list_deliveries(s.pool, status=status, endpoint_id=endpoint_id, limit=limit),
    )
    for delivery in found:
        if as_json:
            click.echo(msgspec.json.encode(delivery).decode())
            continue
        when = (
            f"next attempt {delivery.next_attempt_at:%Y-%m-%d %H:%M:%SZ}"
            if delivery.next_attempt_at
            else f"delivered {delivery.delivered_at:%Y-%m-%d %H:%M:%SZ}"
            if delivery.delivered_at
            else ""
        )
        click.echo(
            f"dlv_{delivery.delivery_id}  {delivery.status:<9}  {delivery.event_type:<19}  "
            f"{delivery.notification_id}  {delivery.account_id}  -> {delivery.endpoint_id} "
            f"{delivery.url}  attempts {delivery.attempts}  {when}".rstrip()
        )
        for attempt in delivery.history:
            outcome = attempt.error or f"HTTP {attempt.status_code}"
            click.echo(
                f"    #{attempt.attempt}  {attempt.started_at:%Y-%m-%d %H:%M:%SZ}  "
                f"{attempt.duration_ms} ms  {outcome}"
            )
    if not found and not as_json:
        click.echo("no deliveries", err=True)


@webhooks_group.command("retry")
@click.argument("delivery_id", callback=_delivery_id)
def webhook_retry(delivery_id: int) -> None:
    """Make DELIVERY_ID (pending or failed) due now; the dispatcher sends it at once."""
    from ledger.notifications.outbox import NotRetryable, retry_now

    try:
        delivery = run_with_services(
            settings_from_env(service=False), lambda s: retry_now(s.pool, delivery_id)
        )
    except NotRetryable as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"dlv_{delivery.delivery_id} ({delivery.notification_id} to {delivery.endpoint_id}) "
        "is due now"
    )
