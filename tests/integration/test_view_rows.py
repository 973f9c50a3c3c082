"""The record types the views write their rows as (migrations 0016, 0017 and 0019) are the views'
rows: the Structs' fields in order, each of its table column's type."""

from __future__ import annotations

import msgspec
import pytest

from projections.balances import BalanceRow
from projections.grants import GrantRow
from projections.holds import HoldRow
from projections.notifications import NotifierState
from projections.purchases import PurchaseRow
from projections.statement import _COLUMNS as statement_columns
from tests.conftest import IsolatedDatabase

_ATTRIBUTES = """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
    WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"""


@pytest.mark.parametrize(
    ("record", "table", "row"),
    [
        ("balance_row", "balances", BalanceRow),
        ("notifier_row", "notifier_accounts", NotifierState),
        ("purchase_row", "purchases", PurchaseRow),
        ("hold_row", "holds", HoldRow),
        ("grant_row", "grants", GrantRow),
    ],
)
async def test_a_views_record_type_is_its_row_and_its_tables_columns(
    isolated_db: IsolatedDatabase, record: str, table: str, row: type[msgspec.Struct]
) -> None:
    attributes = await isolated_db.pool.fetch(_ATTRIBUTES, record)
    columns = {name: kind for name, kind in await isolated_db.pool.fetch(_ATTRIBUTES, table)}

    assert [name for name, _ in attributes] == list(row.__struct_fields__)
    assert {name: kind for name, kind in attributes} == columns


async def test_the_statement_line_record_is_the_statement_views_columns(
    isolated_db: IsolatedDatabase,
) -> None:
    attributes = await isolated_db.pool.fetch(_ATTRIBUTES, "statement_line")
    columns = await isolated_db.pool.fetch(_ATTRIBUTES, "statement_lines")

    assert [name for name, _ in attributes] == statement_columns
    assert [tuple(a) for a in attributes] == [tuple(c) for c in columns]
