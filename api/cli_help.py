"""``ledger help [COMMAND]...``: the help of the ledger or of one of its commands, for a
newcomer who types ``help`` where click expects ``--help`` (click said "No such command")."""

from __future__ import annotations

import click


@click.command("help")
@click.argument("names", nargs=-1, metavar="[COMMAND]...")
@click.pass_context
def help_command(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Show the help of the ledger, or of a command: `ledger help audit verify` is
    `ledger audit verify --help`."""
    context = ctx.find_root()
    for name in names:
        group = context.command
        found = group.get_command(context, name) if isinstance(group, click.Group) else None
        if found is None:
            raise click.UsageError(f"{context.command_path} has no command {name!r}", ctx)
        context = click.Context(found, info_name=name, parent=context)
    click.echo(context.get_help())
