"""One counted run of a driver under callgrind, for ``spend_instructions`` and
``rebuild_instructions``: the driver marks what it measures by calling ``zlib.adler32``
just before and ``zlib.crc32`` just after (``--zero-before=adler32 --dump-before=crc32``),
so its start-up and shut-down fall outside the one dump read here."""

from __future__ import annotations

import glob
import os
import pstats
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path


def counted_runs(
    runs: int,
    one_run: Callable[[int, Path], int | None],
    *,
    per: int,
    what: str,
    keep: Path | None,
    prefix: str,
) -> None:
    """Make ``runs`` counted runs (``one_run(run, out_dir)``: the instructions counted, or
    None without valgrind) and print each, then the median ``what`` (``per`` of them a run)
    and the spread; the dumps are kept in ``keep``, or removed."""
    out_dir = keep or Path(tempfile.mkdtemp(prefix=prefix))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        each = []
        for run in range(1, runs + 1):
            total = one_run(run, out_dir)
            if total is not None:
                each.append(total / per)
                print(f"run {run}: {total:,} instructions, {total / per:,.0f} {what}")
        if each:
            low, high = min(each), max(each)
            print(
                f"{what}: {sorted(each)[len(each) // 2]:,.0f} instructions "
                f"(median of {len(each)}; spread {(high - low) / low * 100:.2f} %)"
            )
    finally:
        if keep is None:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            print(f"dumps in {out_dir}")


def counted_run(
    command: list[str],
    out_dir: Path,
    run: int,
    *,
    valgrind: bool,
    cprofile: bool,
    per: int,
    unit: str,
    split: bool,
) -> int | None:
    """Run ``command`` (under callgrind when ``valgrind``) and give the instructions its
    measured part counted (None without valgrind). With ``cprofile`` the driver was given
    ``--profile-to`` and its profile is printed; with ``split`` each shared object's self
    instructions ``per`` ``unit``."""
    out = out_dir / f"callgrind.out.run{run}"
    if valgrind:
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            "--zero-before=adler32", "--dump-before=crc32",
            f"--log-file={out_dir / f'valgrind.run{run}.log'}", *command,
        ]  # fmt: skip
    with open(out_dir / f"stderr.run{run}.txt", "wb") as stderr:
        subprocess.run(command, check=True, stderr=stderr)
    if cprofile:
        stats = pstats.Stats(str(out_dir / f"cprofile.run{run}"))
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
    if not valgrind:
        return None
    dumps = sorted(glob.glob(f"{out}.*"))  # the one --dump-before made: <out>.1
    if len(dumps) != 1:
        raise SystemExit(f"expected one dump of the measured part, found {dumps}")
    if split:
        shares = by_object(dumps[0])
        whole = sum(shares.values())
        for name, cost in sorted(shares.items(), key=lambda item: -item[1])[:12]:
            print(f"  {name}: {cost / per:,.0f} {unit} ({cost / whole:.1%})")
    return total(dumps[0])


async def stored_events(url: str) -> int:
    """How many events the store at ``url`` holds (what a replay's count is divided by)."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM stored_events"))
    finally:
        await connection.close()


def total(dump: str) -> int:
    """The instructions a callgrind dump counted (its ``summary:``, callgrind_annotate's total)."""
    text = Path(dump).read_text()
    found = re.search(r"^summary:\s+(\d+)", text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no totals in {dump}")
    return int(found[1])


def by_object(dump: str) -> dict[str, int]:
    """Each shared object's self instructions in a callgrind dump (the interpreter,
    asyncpg's protocol, msgspec, uvloop, libc, ...)."""
    names: dict[str, str] = {}
    totals: dict[str, int] = {}
    current = "?"
    after_call = False
    for line in Path(dump).read_text().splitlines():
        if line.startswith("ob="):
            current = _compressed(line[3:], names)
        elif line.startswith(("cob=", "cfi=", "cfl=", "cfn=")):
            if line.startswith("cob="):
                _compressed(line[4:], names)
        elif line.startswith("calls="):
            after_call = True
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            if after_call:  # the call's inclusive cost: counted where it is spent
                after_call = False
                continue
            cost = int(line.split()[-1])
            totals[current] = totals.get(current, 0) + cost
    return totals


def _compressed(text: str, names: dict[str, str]) -> str:
    """A name of callgrind's compressed form: ``(n) name`` the first time, ``(n)`` after."""
    if text.startswith("("):
        key, _, name = text.partition(")")
        name = name.strip()
        if name:
            names[key] = name
        return os.path.basename(names.get(key, key))
    return os.path.basename(text)
