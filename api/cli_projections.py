"""``ledger projections rebuild``: the read views rebuilt from the events (``projections
status`` is among the read-only commands, api/cli_inspect.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from api.cli_support import (
    MAX_JOBS,
    default_jobs,
    jobs_option,
    plural,
    progress,
    run_with_database,
    settings_from_env,
)
from ledger.heap import BATCHES_YOUNG, settle_after_start_up
from projections.names import VIEW_NAMES

if TYPE_CHECKING:
    from api.database import Database


@click.group("projections", help=f"Inspect and rebuild the read views: {', '.join(VIEW_NAMES)}.")
def projections_group() -> None:
    pass


def rebuilding(names: list[str]) -> str:
    """The rebuild's bar's label, short enough to leave an 80-column terminal its count and
    rate (the six views' names took 73 columns of it); the lines after it name the views."""
    return f"rebuilding {plural(len(names), 'view')}"


@projections_group.command(
    "rebuild",
    short_help="Rebuild views from the events (every view, or those named).",
    help="Rebuild the views NAMEd (none, or `all`: every view) from position zero into "
    "fresh tables in one pass, then swap them in. The API keeps answering from the old "
    f"tables meanwhile.\n\nNAME is one of: {', '.join(VIEW_NAMES)}, all.",
)
@click.argument("names", metavar="[NAME]...", nargs=-1, type=click.Choice([*VIEW_NAMES, "all"]))
@jobs_option(
    "Fill the fresh tables from this many processes, each folding its share of the "
    f"streams; 1: one pass in this process; at most {MAX_JOBS}."
)
def rebuild_projection(names: tuple[str, ...], jobs: int | None) -> None:
    from projections.events import UnreadableEvent
    from projections.rebuild import RebuildRunning, rebuild_all
    from projections.rebuild_parts import PartFailed
    from projections.runner import all_projections

    wanted = set(names or ["all"])
    chosen = [p for p in all_projections() if "all" in wanted or p.name in wanted]

    from api.database import owner_connection

    settings = settings_from_env(service=False)

    # The database alone, not the service's parts (api.app: Litestar, the clock's check of
    # commands that record, the standby's pool): their imports were ~0.4 s of CPU before the
    # workers started, a twentieth of a 1,000,000-event rebuild's time on two cores.
    async def run(database: Database) -> None:
        settle_after_start_up(young=BATCHES_YOUNG)  # as in the parts' processes
        head = await database.store.head_position()
        database_url = settings.database_admin_url or database.given_url
        async with owner_connection(database_url) as connection:
            described = rebuilding([p.name for p in chosen])
            try:
                with progress(head, "events", description=described) as bar:
                    position = await rebuild_all(
                        connection,
                        chosen,
                        lambda count, _: bar.update(count),
                        jobs=default_jobs(head) if jobs is None else jobs,
                        database_url=database_url,
                    )
            except (RebuildRunning, PartFailed) as error:
                raise click.ClickException(str(error)) from None
            except UnreadableEvent as error:  # the old tables stay, the new ones are dropped
                raise click.ClickException(
                    f"{error}; the views are left as they were (see `ledger audit verify`)"
                ) from None
        for projection in chosen:
            click.echo(f"rebuilt {projection.name} up to position {position}")

    run_with_database(settings, run)
