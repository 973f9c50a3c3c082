"""Development conveniences: the Stripe stand-in, the demo account with its token, and
generated secrets kept under the data folder.

Never used when ``LEDGER_ENV=production`` (settings refuse to start that way), except
``revoke_demo_tokens``: a production start revokes the demo token a development run
may have left in the same database.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from api.access.tokens import Scope
from api.services import Services
from api.settings import Settings
from ledger.commands import OpenAccount
from ledger.domain.errors import AccountAlreadyExists

log = logging.getLogger("ledger")

DEMO_ACCOUNT = "acct_demo"


def _write_secret_file(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(value + "\n")


def development_webhook_secret(settings: Settings) -> str:
    """``STRIPE_WEBHOOK_SECRET``, or one generated once and kept under the data folder."""
    if settings.webhook_secrets:
        return settings.webhook_secrets[0]
    path = settings.data_dir / "stripe-webhook-secret"
    if path.exists():
        return path.read_text().strip()
    secret = "whsec_" + secrets.token_hex(24)
    _write_secret_file(path, secret)
    return secret


def development_page_key(settings: Settings) -> str:
    """``LEDGER_PAGE_KEY``, or one generated once and kept under the data folder."""
    if settings.page_key:
        return settings.page_key
    path = settings.data_dir / "page-key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_hex(32)
    _write_secret_file(path, key)
    return key


@asynccontextmanager
async def start_stripe_standin(settings: Settings) -> AsyncIterator[str]:
    """Serve the Stripe stand-in in this process; yield its API base address.

    Its state lives in ``.data/stripe-standin.json``: after a restart, earlier checkout
    URLs still work and a repeated ``Idempotency-Key`` still finds its open session.
    """
    from stripe_standin import run_standin

    async with run_standin(
        port=settings.stripe_standin_port,
        webhook_url=f"{settings.public_url}/v1/stripe/webhook",
        webhook_secret=development_webhook_secret(settings),
        state_file=settings.data_dir / "stripe-standin.json",
    ) as standin:
        log.info("STRIPE_SECRET_KEY is not set: using the Stripe stand-in at %s", standin.base_url)
        yield standin.base_url


async def ensure_demo_account(services: Services, settings: Settings) -> None:
    """Open ``acct_demo`` and keep a working ``credits`` token for it in ``.data/demo-token``."""
    try:
        await services.ledger.execute(
            OpenAccount(account_id=DEMO_ACCOUNT, monthly_allowance=settings.default_monthly_allowance)
        )
        log.info("opened the demo account %s", DEMO_ACCOUNT)
    except AccountAlreadyExists:
        pass
    token_file = settings.data_dir / "demo-token"
    if token_file.exists():
        principal = await services.tokens.authenticate(token_file.read_text().strip())
        if principal is not None and principal.account_id == DEMO_ACCOUNT:
            _say_how_to_use(token_file, settings)
            return
    issued = await services.tokens.issue(Scope.CREDITS, account_id=DEMO_ACCOUNT, name="demo")
    _write_secret_file(token_file, issued.secret)
    log.info("wrote a new credits token for %s to %s", DEMO_ACCOUNT, token_file)
    _say_how_to_use(token_file, settings)


async def revoke_demo_tokens(services: Services) -> list[str]:
    """Revoke the ``credits`` tokens named "demo" for ``acct_demo`` (a production start-up).

    A database that served ``make run`` before going to production still holds the demo
    token whose secret sits in a file under ``.data/``: it must not open an account there.
    """
    revoked = await services.tokens.revoke_named(Scope.CREDITS, account_id=DEMO_ACCOUNT, name="demo")
    if revoked:
        log.warning(
            "LEDGER_ENV=production: revoked %d demo token(s) for %s left from development (%s)",
            len(revoked),
            DEMO_ACCOUNT,
            ", ".join(revoked),
        )
    return revoked


def _say_how_to_use(token_file: Path, settings: Settings) -> None:
    log.info(
        'try it: curl -s -X POST %s/v1/credits/purchase -H "Authorization: Bearer $(cat %s)" '
        "-H 'Content-Type: application/json' -d '{\"credits\": 1000}'",
        settings.public_url,
        token_file,
    )
    log.info(
        "or in a browser: %s/account, signed in with the token in %s",
        settings.public_url,
        token_file,
    )
