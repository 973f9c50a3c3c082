"""A ``ledger`` command's output file (``-o FILE``): written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click


class _OutputFile(click.Path):
    """``-o FILE`` (``-``: standard output), a directory refused before the command runs (it
    was refused by the rename, once the command's work was done)."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, writable=True, allow_dash=True, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str | os.PathLike) and os.path.isdir(value):
            self.fail(f"{os.fsdecode(value)!r} is a directory", param, ctx)
        return super().convert(value, param, ctx)


output_option = click.option(
    "--output",
    "-o",
    type=_OutputFile(),
    default="-",
    help="File to write (default: standard output); written whole or not at all.",
)
"""``-o FILE``, as each command that writes a file takes it (``written_whole`` writes it)."""


@contextlib.contextmanager
def written_whole(path: Path | None, *, binary: bool = False) -> Iterator[IO[Any]]:
    """A file to write ``path`` through: a temporary file beside it, renamed over it when the
    block ends well, removed when it does not (an export that stopped half-way left half a
    history under the name asked for, over the whole one an earlier run wrote). ``None`` or
    ``-``: standard output, as it comes."""
    if path is None or str(path) == "-":
        yield sys.stdout.buffer if binary else sys.stdout
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        # 0o666 less the umask, as a file opened to write gets; an existing file's mode kept.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:  # named as asked: the temporary name means nothing to anyone
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        with os.fdopen(
            descriptor, "wb" if binary else "w", encoding=None if binary else "utf-8"
        ) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
