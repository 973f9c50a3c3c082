"""Progress bars' labels leave an 80-column terminal room for the count and the rate."""

from __future__ import annotations

from tqdm import tqdm

from api.cli_projections import rebuilding
from projections.names import VIEW_NAMES


def shown(label: str) -> str:
    """The line tqdm draws for the label, as the command's bar (api/cli_support.py) has it."""
    return tqdm.format_meter(
        n=1_000_000, total=1_000_000, elapsed=9.0, ncols=80, prefix=label, unit=" events"
    )


def test_the_rebuild_label_leaves_the_count_and_the_rate_on_an_80_column_terminal() -> None:
    assert rebuilding(list(VIEW_NAMES)) == f"rebuilding {len(VIEW_NAMES)} views"
    assert rebuilding(["notifications"]) == "rebuilding 1 view"
    for names in (list(VIEW_NAMES), *([name] for name in VIEW_NAMES)):
        line = shown(rebuilding(names))
        assert "1000000/1000000" in line
        assert line.endswith("events/s]"), line
    # Each view's name, as it was: the bar had no room left for what it counts.
    assert "events/s]" not in shown(f"rebuilding {', '.join(VIEW_NAMES)}")
