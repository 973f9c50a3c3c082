"""The top functions of a py-spy profile, from its collapsed stacks (``--format raw``).

    py-spy record --pid PID --duration 10 --format raw --output /tmp/spend.txt
    python -m bench.profile_summary /tmp/spend.txt

Prints each function's share of the samples: "total" counts a sample for every
function on its stack (what a call and everything under it costs), "own" only for the
function running. Idle thread-pool workers are left out, and so are the frames on
nearly every stack (the event loop, the server's entry points).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"(?P<function>.*) \((?P<file>.*?):\d+\)$")
ALMOST_ALL = 0.95
IDLE = ("_worker (futures/thread.py)", "wait (threading.py)", "_try_wait (subprocess.py)")
# The process's entry points: on every stack that starts at the root (with uvloop, a
# task's stack starts at its coroutine instead, so they fall under ALMOST_ALL).
ENTRY = ("(click/core.py)", "(uvicorn/main.py)", "(uvicorn/server.py)", "(uvicorn/_compat.py)",
         "(api/cli.py)", "(api/cli_serve.py)", "(asyncio/runners.py)", "(<frozen runpy>)")  # fmt: skip


def _frames(stack: str) -> list[str]:
    frames = []
    for text in stack.split(";"):
        found = _FRAME.match(text)
        if found:
            where = "/".join(found["file"].split("/")[-2:])
            frames.append(f"{found['function']} ({where})")
    return frames


def summarise(raw: Path, top: int = 30) -> str:
    """The ``top`` functions by total and by own share of the samples."""
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = _frames(stack)
        if not frames or frames[-1].endswith(IDLE):
            continue  # a thread waiting: a pool worker or a progress bar's monitor
        count = int(count_text)
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return "no samples\n"
    lines = [f"{samples} samples (busy ones; idle waits are not sampled)", "", "total %  function"]
    shown = 0
    for frame, count in total.most_common():
        if count / samples >= ALMOST_ALL or frame.endswith(ENTRY) or frame.startswith("<module>"):
            continue
        lines.append(f"{100 * count / samples:6.1f}  {frame}")
        shown += 1
        if shown == top:
            break
    lines += ["", "  own %  function"]
    for frame, count in own.most_common(top // 2):
        lines.append(f"{100 * count / samples:6.1f}  {frame}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_summary",
        description="Top functions (total and own share of samples) of a py-spy raw profile.",
    )
    parser.add_argument("profile", type=Path, help="a file from `py-spy record --format raw`")
    parser.add_argument("--top", type=int, default=30, help="how many (default 30)")
    args = parser.parse_args(argv)
    print(summarise(args.profile, args.top), end="")


if __name__ == "__main__":
    main()
