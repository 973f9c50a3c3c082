"""The collector settings a served process takes once started (ledger/heap.py)."""

from __future__ import annotations

import subprocess
import sys

from ledger.heap import OLDER, YOUNG


def test_start_up_is_frozen_out_of_collections_and_passes_are_rarer() -> None:
    """In a process of its own: the settings are the whole interpreter's."""
    shown = subprocess.run(
        [sys.executable, "-c",
         "import gc; from ledger.heap import settle_after_start_up; before = gc.get_freeze_count();"
         " settle_after_start_up(); print(before, gc.get_freeze_count() > 0, *gc.get_threshold())"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip

    assert shown == ["0", "True", str(YOUNG), *map(str, OLDER)]
