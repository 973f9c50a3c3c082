"""The collector settings a served process takes once started (ledger/heap.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ledger.heap import BATCHES_YOUNG, OLDER, YOUNG


def printed_by(code: str) -> list[str]:
    """What ``code`` prints, run in an interpreter of its own: the collector's settings are
    the whole interpreter's."""
    return subprocess.run(  # noqa: S603 (the test's own code)
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()


@pytest.mark.parametrize(
    ("argument", "young"), [("", YOUNG), (f"young={BATCHES_YOUNG}", BATCHES_YOUNG)]
)
def test_start_up_is_frozen_out_of_collections_and_passes_are_rarer(
    argument: str, young: int
) -> None:
    """A replay's processes (``young=BATCHES_YOUNG``) pass over their objects rarer still."""
    shown = printed_by(
        "import gc; from ledger.heap import settle_after_start_up; before = gc.get_freeze_count();"
        f" settle_after_start_up({argument}); print(before, gc.get_freeze_count() > 0,"
        " *gc.get_threshold())"
    )

    assert shown == ["0", "True", str(young), *map(str, OLDER)]


def test_a_batch_process_still_collects_cycles_once_they_pile_up() -> None:
    """``BATCHES_YOUNG`` makes passes rare, not gone: garbage in cycles is collected once
    that much more is alive than after the last pass."""
    shown = printed_by(
        "import gc, weakref\n"
        "from ledger.heap import settle_after_start_up, BATCHES_YOUNG\n"
        "settle_after_start_up(young=BATCHES_YOUNG)\n"
        "class Node: pass\n"
        "first = Node(); first.me = first; alive = weakref.ref(first); del first\n"
        "kept = []\n"
        "before = alive() is not None\n"
        "for _ in range(BATCHES_YOUNG // 1000 + 10):\n"
        "    for _ in range(1000):\n"
        "        n = Node(); n.me = n\n"
        "    kept.append([[] for _ in range(1000)])\n"
        "print(before, alive() is None)"
    )

    assert shown == ["True", "True"]


def test_audit_verify_workers_take_the_batch_setting() -> None:
    shown = printed_by(
        "import gc, multiprocessing; from audit.parts import start_worker;"
        " start_worker(multiprocessing.get_context('spawn').Queue());"
        " print(*gc.get_threshold())"
    )

    assert shown == [str(BATCHES_YOUNG), *map(str, OLDER)]
