"""The SQLite plumbing shared by the stores: multi-row inserts in statement sizes the statement cache can hold."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.storage import sqlite_base


@pytest.mark.parametrize("per_statement", [1, 7, 40, 256, 512, 936])
def test_statement_sizes_cover_every_row_within_the_limit_and_reuse_few_statements(per_statement: int) -> None:
    seen: set[int] = set()
    for count in range(0, 3 * per_statement + 70):
        sizes = sqlite_base.statement_sizes(count, per_statement)
        assert sum(sizes) == count
        assert all(0 < size <= per_statement for size in sizes)
        assert len(sizes) <= count // per_statement + 2
        seen.update(sizes)
    # Multiples of 32 plus the remainders below 32: far fewer than the 128 statements a connection caches.
    assert len(seen) <= per_statement // 32 + 32


def test_insert_rows_writes_every_row_in_order_with_a_handful_of_statements() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t (n INTEGER, label TEXT)")
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    sqlite_base.insert_rows(db, "t", ("n", "label"), [(i, f"row {i}") for i in range(300)], max_rows=256)
    assert len(statements) == 3  # 256 + 32 + 12 rows
    assert db.execute("SELECT n, label FROM t ORDER BY rowid").fetchall() == [(i, f"row {i}") for i in range(300)]
