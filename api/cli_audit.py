"""``ledger audit verify|keygen|checkpoint|export``: replay and verify the ledger, sign
checkpoints of it, export an account's history."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from api.cli_exits import CouldNotRun, exit_2_when_it_cannot_run
from api.cli_files import output_option, written_whole
from api.cli_support import (
    MAX_JOBS,
    DecimalNumber,
    account_id_option,
    default_jobs,
    jobs_option,
    plural,
    progress,
    run_with_database,
    settings_from_env,
)
from audit.time_skew import MAX_TIME_SKEW_SECONDS
from ledger.heap import BATCHES_YOUNG, settle_after_start_up

if TYPE_CHECKING:
    from api.database import Database


@click.group("audit")
def audit_group() -> None:
    """Replay and verify the ledger, sign checkpoints, export histories."""


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@audit_group.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--checkpoint",
    "checkpoint_files",
    multiple=True,
    type=_FILE,
    help="A signed checkpoint (`audit checkpoint`): also prove nothing at or before it changed. "
    "Repeatable.",
)
@click.option(
    "--public-key",
    "public_key_files",
    multiple=True,
    type=_FILE,
    help="The auditors' trusted copy of the signing key (FILE.pub). Repeatable (rotated keys).",
)
@jobs_option(
    "Processes to replay with: the streams are split among them by a hash of their id, "
    f"all reading one snapshot. 1 replays in this process; at most {MAX_JOBS}."
)
@click.option(
    "--max-time-skew",
    type=DecimalNumber(min=0, min_open=True),
    default=MAX_TIME_SKEW_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="Report an event whose own time (which its command was judged at) is further than "
    "this from the time the database recorded it (time-far-from-record). `inf` judges no "
    "event's time: for a history written with clocks set apart from the database's (tests).",
)
def audit_verify(
    as_json: bool,
    checkpoint_files: tuple[Path, ...],
    public_key_files: tuple[Path, ...],
    jobs: int | None,
    max_time_skew: float,
) -> None:
    """Replay every event: check hash chains, balances, invariants, snapshots and the views.

    See docs/audit-checkpoints.md for --checkpoint.

    \b
    Exit codes:
      0  nothing found
      1  findings: the report lists them
      2  could not verify: a usage error, the database unreachable, never set up
         or lacking migrations, a checkpoint or key it cannot use, any other error
    """
    # 1 and 2 apart: a monitor tells "the books are wrong" from "the audit did not run".
    with exit_2_when_it_cannot_run():
        ok = _verify_and_report(as_json, checkpoint_files, public_key_files, jobs, max_time_skew)
    if not ok:
        sys.exit(1)


def _verify_and_report(
    as_json: bool,
    checkpoint_files: tuple[Path, ...],
    public_key_files: tuple[Path, ...],
    jobs: int | None,
    max_time_skew: float,
) -> bool:
    """The audit and its report; whether it found nothing."""
    import msgspec

    from audit.checkpoint import CheckpointError, open_checkpoints
    from audit.verify import verify

    try:
        checkpoints = open_checkpoints(checkpoint_files, public_key_files)
    except CheckpointError as error:
        raise click.ClickException(str(error)) from None
    if public_key_files and not checkpoints:
        click.echo(
            "warning: --public-key without --checkpoint: the keys check checkpoint files, "
            "and no checkpoint was given, so nothing was signed to check",
            err=True,
        )
    for checkpoint in checkpoints if not public_key_files else ():
        click.echo(
            f"warning: no --public-key, so {checkpoint.name} was checked with the key it names "
            f"itself ({checkpoint.checkpoint.public_key}): that shows the file is intact, not "
            "who signed it. Compare that key with your trusted copy, or pass --public-key.",
            err=True,
        )

    async def run(services: Database) -> Any:
        settle_after_start_up(young=BATCHES_YOUNG)  # as in its workers (audit/parts.py)
        # The bar's total and the default --jobs' measure of the store, only where a bar is
        # drawn or --jobs was not given (not for --json --jobs N or a pipe, as the benchmark
        # and scripts run it): the last position, read from the index, not a count of every
        # event (a read of the whole index before the audit's own reads). Positions have
        # gaps, and the bar ends at 100 % whatever its total was (``Progress``).
        drawn = not as_json and sys.stderr.isatty()
        total = await services.store.head_position() if drawn or jobs is None else 0
        with progress(total, "events", enabled=drawn) as bar:
            return await verify(
                services.pool,
                on_progress=bar.update,
                checkpoints=checkpoints,
                jobs=default_jobs(total) if jobs is None else jobs,
                database_url=services.database_url,
                max_time_skew=max_time_skew,
            )

    # The audit changes nothing: no migrations or grants applied to the database it audits.
    report = run_with_database(settings_from_env(service=False), run, set_up_first=False)
    if as_json:
        # Beside the report's fields, what the text says of the checkpoints (each one's
        # summary line, and on stderr whether a trusted key checked it), so that a kept
        # report (the cron's verify-last.json, docs/audit-checkpoints.md) says what it
        # vouches for and whether its signer was only the key the file names itself.
        checked = [
            {
                "file": c.name,
                "position": c.checkpoint.position,
                "event_count": c.checkpoint.event_count,
                "stream_count": c.checkpoint.stream_count,
                "created_at": c.checkpoint.created_at,
                "public_key": c.checkpoint.public_key,
                "checked_against_trusted_keys": c.trusted,
            }
            for c in checkpoints
        ]
        shown = msgspec.to_builtins(report) | {"checkpoints": checked}
        click.echo(msgspec.json.encode(shown).decode())
    else:
        click.echo(
            f"replayed {plural(report.events, 'event')} in {report.seconds:.1f} s "
            f"({report.events_per_second:,.0f} events/s): {plural(report.accounts, 'account')}, "
            f"{plural(report.checkout_sessions, 'checkout session')}, "
            f"{plural(report.snapshots, 'snapshot')}"
        )
        positions = ", ".join(f"{k} at {v}" for k, v in sorted(report.projection_positions.items()))
        click.echo(f"views checked: {positions or 'none'}")
        skew = report.max_time_skew_seconds
        click.echo(
            "event times: not judged (--max-time-skew inf)"
            if skew is None
            else f"event times: judged within {skew:g} s of when the database recorded them "
            "(--max-time-skew)"
        )
        for checkpoint in checkpoints:
            click.echo(f"checkpoint {checkpoint.summary()}")
        for finding in report.findings:
            click.echo(finding.line())
        click.echo(
            "OK: hash chains, balances, invariants, snapshots and views agree"
            + (", and nothing at or before the checkpoints changed" if checkpoints else "")
            if report.ok
            else f"FAILED: {plural(len(report.findings), 'finding')}"
        )
    return bool(report.ok)


@audit_group.command("keygen")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (mode 0600); the public key goes to OUT.pub.",
)
def audit_keygen(out: Path) -> None:
    """Make an Ed25519 key pair for signing checkpoints; print the public key.

    Keep the private key off the database host's disks and backups; give the
    public key to the auditors.
    """
    from audit.checkpoint import CheckpointError, generate_key, public_key_hex, public_key_pem

    if not out.name:
        raise click.BadParameter("needs a file name", param_hint="'--out'")
    try:
        public = generate_key(out)
    except CheckpointError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"private key: {out} (mode 0600)", err=True)
    click.echo(f"public key: {out}.pub; give it to the auditors:", err=True)
    click.echo(public_key_pem(public), nl=False)
    click.echo(f"public key (hex, as checkpoint files name it): {public_key_hex(public)}")


@audit_group.command("checkpoint")
@click.option(
    "--key",
    "key_file",
    required=True,
    envvar="LEDGER_CHECKPOINT_KEY",
    show_envvar=True,
    type=_FILE,
    help="The Ed25519 private key from `audit keygen` (PEM).",
)
@output_option
def audit_checkpoint(key_file: Path, output: Path) -> None:
    """Write a signed checkpoint of the store: every stream's head at the current position.

    Keep the files outside the database (see docs/audit-checkpoints.md); `audit
    verify --checkpoint FILE` proves nothing at or before it changed since.
    """
    from audit.checkpoint import (
        CheckpointError,
        encode_checkpoint,
        load_private_key,
        take_checkpoint,
    )

    try:
        key = load_private_key(key_file)
    except CheckpointError as error:
        raise CouldNotRun(str(error)) from None  # as `audit verify` a key it cannot use
    try:
        checkpoint = run_with_database(
            settings_from_env(service=False), lambda database: take_checkpoint(database.pool, key)
        )
    except CheckpointError as error:
        raise click.ClickException(str(error)) from None
    with written_whole(output, binary=True) as file:
        file.write(encode_checkpoint(checkpoint))
    click.echo(
        f"checkpoint at position {checkpoint.position}: {plural(checkpoint.event_count, 'event')}, "
        f"{plural(checkpoint.stream_count, 'stream')}, Merkle root {checkpoint.merkle_root}",
        err=True,
    )


@audit_group.command("export")
@click.argument("account_id", callback=account_id_option)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON Lines, or CSV for spreadsheets.",
)
@output_option
def audit_export(account_id: str, fmt: str, output: Path) -> None:
    """Write ACCOUNT_ID's history, oldest first, with the balance after each event."""
    from audit.export import (
        DamagedHistory,
        account_history,
        as_csv_row,
        as_json_line,
        csv_header,
    )
    from ledger.domain.ids import account_stream_id

    # A bar on a terminal, unless the lines themselves go to it (a large account's history
    # took minutes with nothing said).
    drawn = sys.stderr.isatty() and not (str(output) == "-" and sys.stdout.isatty())

    async def run(services: Database, output: IO[str]) -> int:
        stream_id = account_stream_id(account_id)
        if not await services.store.first_events([stream_id]):
            raise click.ClickException(f"account {account_id} does not exist")
        total = 0
        if drawn:
            total = await services.pool.fetchval(
                "SELECT max(originator_version) FROM stored_events WHERE originator_id = $1",
                stream_id,
            )
        count = 0
        if fmt == "csv":
            output.write(csv_header() + "\n")
        with progress(total, "events", enabled=drawn) as bar:
            try:
                async for event in account_history(services.store, account_id):
                    output.write(
                        (as_csv_row(event) if fmt == "csv" else as_json_line(event)) + "\n"
                    )
                    count += 1
                    if count % 1000 == 0:
                        bar.update(1000)
            except DamagedHistory as error:
                raise click.ClickException(
                    f"{error}; {plural(count, 'event')} exported before it"
                ) from None
            bar.update(count % 1000)
        return count

    settings = settings_from_env(service=False)
    with written_whole(output) as file:
        count = run_with_database(settings, lambda services: run(services, file))
    click.echo(f"exported {plural(count, 'event')} of {account_id}", err=True)
