"""``ledger db setup``: the database's roles, stored functions, migrations and grants."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.group("db")
def db_group() -> None:
    """Set the database up: roles, functions, migrations, grants."""


@db_group.command("setup")
@click.option(
    "--admin-url",
    envvar=["DATABASE_ADMIN_URL", "DATABASE_URL"],
    show_envvar=True,
    help="A role that may create roles (the postgres superuser, or one with CREATEROLE). "
    "Default: DATABASE_ADMIN_URL, else DATABASE_URL, else the embedded PostgreSQL.",
)
@click.option(
    "--service-password",
    envvar="LEDGER_SERVICE_PASSWORD",
    show_envvar=True,
    help="Set this password on ledger_service, the role the service connects as "
    "(production: DATABASE_URL=postgresql://ledger_service:PASSWORD@host/db).",
)
@click.option(
    "--relay-password",
    envvar="LEDGER_RELAY_DATABASE_PASSWORD",
    show_envvar=True,
    help="Set this password on ledger_relay, the database role `ledger relay` connects as "
    "(its DATABASE_URL=postgresql://ledger_relay:PASSWORD@host/db).",
)
@click.option(
    "--projector-password",
    envvar="LEDGER_PROJECTOR_DATABASE_PASSWORD",
    show_envvar=True,
    help="Set this password on ledger_projector, the database role `ledger project` on a "
    "host of its own connects as "
    "(its DATABASE_URL=postgresql://ledger_projector:PASSWORD@host/db).",
)
def db_setup(
    admin_url: str | None,
    service_password: str | None,
    relay_password: str | None,
    projector_password: str | None,
) -> None:
    """Create the roles ledger_owner, ledger_service, ledger_projector and ledger_relay, apply
    the stored functions, the migrations and the grants. Safe to run again (what a deploy's migrate
    step runs).

    Needs no Stripe or other settings: only the database.
    """
    from api.database import describe, resolve_database_url, set_up_database
    from api.settings import default_data_dir
    from ledger import event_loop

    data_dir = Path(os.environ.get("LEDGER_DATA_DIR", "").strip() or default_data_dir())
    # As every other command reads them (api/settings.py): a value of blanks is none, and
    # the blanks or newline around a URL (a secrets file's) are not part of it.
    admin_url = (admin_url or "").strip() or os.environ.get("DATABASE_URL", "").strip() or None
    given = click.get_current_context().get_parameter_source("admin_url")
    if given is click.core.ParameterSource.COMMANDLINE:
        variable = "--admin-url"
    elif os.environ.get("DATABASE_ADMIN_URL", "").strip():
        variable = "DATABASE_ADMIN_URL"
    else:
        variable = "DATABASE_URL"
    if admin_url is None and os.environ.get("LEDGER_ENV", "").strip() == "production":
        # As every other command: a migrate step whose URL went missing set up a database
        # of its own under the data folder, and said so with exit 0.
        raise click.ClickException(
            "LEDGER_ENV=production needs DATABASE_ADMIN_URL, DATABASE_URL or --admin-url: "
            "the embedded PostgreSQL is for development"
        )
    url = resolve_database_url(admin_url, data_dir)
    applied = event_loop.run(
        set_up_database(
            url,
            service_password=service_password or None,
            relay_password=relay_password or None,
            projector_password=projector_password or None,
            variable=variable,
        )
    )
    click.echo(
        f"database {describe(url)} set up"
        + (f"; applied {', '.join(applied)}" if applied else "; no migration was pending")
        + ("; ledger_service's password set" if service_password else "")
        + ("; ledger_relay's password set" if relay_password else "")
        + ("; ledger_projector's password set" if projector_password else "")
    )
