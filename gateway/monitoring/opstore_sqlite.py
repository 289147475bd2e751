"""SQLite operational-record store: one file in the gateway's state folder, every sqlite call on one worker thread."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.monitoring import opquery
from gateway.monitoring.opquery import OpQuery, Scope
from gateway.monitoring.oprecords import COLUMNS, OpRecord
from gateway.monitoring.opstore import (
    COMPONENT,
    TABLE,
    Aggregate,
    Migration,
    OpStore,
    StoreError,
    check_migrations,
    column_types,
)
from gateway.storage import sqlite_base

T = TypeVar("T")

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "operational records", (
        f"CREATE TABLE {TABLE} (\nid INTEGER PRIMARY KEY,\n{column_types('TEXT', 'INTEGER', 'REAL', 'INTEGER')})",
        f"CREATE INDEX {TABLE}_time ON {TABLE} (request_in_ms)",
        f"CREATE INDEX {TABLE}_xroad_id ON {TABLE} (xroad_id)",
        f"CREATE INDEX {TABLE}_trace_id ON {TABLE} (trace_id) WHERE trace_id IS NOT NULL",
        f"CREATE INDEX {TABLE}_service ON {TABLE} (service_key, request_in_ms)",
        f"CREATE INDEX {TABLE}_pair ON {TABLE} (client_member, provider_member, request_in_ms)",
    )),
)
_COLS = ", ".join(COLUMNS)


class SqliteOpStore(sqlite_base.WorkerStore, OpStore):
    """Operational records in one SQLite file (WAL). They are statistics, not evidence: ``synchronous=NORMAL``
    keeps commits cheap, and a power cut may lose the last second of them, never the file."""

    _thread_prefix = "opmon-sqlite"
    migrations = MIGRATIONS

    def __init__(self, path: str | os.PathLike[str], gateway_id: str = "default", busy_timeout_ms: int = 10_000):
        self.path = os.fspath(path)
        self.gateway_id = gateway_id
        self._busy_timeout_ms = busy_timeout_ms
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await sqlite_base.run(self._executor, lambda: StoreError("the operational-record store is not open"),
                                     fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the operational-record store is not open")
        return self._conn

    def _connect(self) -> None:
        self._conn = sqlite_base.connect(self.path, self._busy_timeout_ms, "NORMAL", StoreError,
                                         check_same_thread=False)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return sqlite_base.transaction(self._db, fn)

    def _migrate_sync(self) -> int:
        latest = check_migrations(self.migrations)

        def too_new(current: int) -> Exception:
            return StoreError(f"{self.path}: operational-record schema v{current} is newer than this code (v{latest})")

        return self._tx(lambda db: sqlite_base.migrate(db, COMPONENT, self.migrations, latest, too_new))

    def _insert_sync(self, rows: list[tuple[Any, ...]]) -> None:
        self._tx(lambda db: sqlite_base.insert_rows(db, TABLE, COLUMNS, rows, max_rows=512))

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, tuple(params)).fetchall()

    def _aggregate_sync(self, query: OpQuery, scope: Scope) -> Aggregate:
        return Aggregate(*(self._fetch(sql, params) for sql, params in opquery.aggregate_sql(query, scope, TABLE)))

    def _delete_sync(self, cutoff_ms: int, limit: int) -> int:
        return self._tx(lambda db: db.execute(
            f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE request_in_ms < ? LIMIT ?)",
            (cutoff_ms, limit)).rowcount)

    # -- the interface -----------------------------------------------------------------------------------------

    async def migrate(self) -> int:
        return await self._run(self._migrate_sync)

    async def insert(self, batch: Sequence[OpRecord]) -> None:
        if batch:
            await self._run(self._insert_sync, [r.row() for r in batch])

    async def records(self, query: OpQuery, scope: Scope) -> list[tuple[Any, ...]]:
        sql, params = opquery.records_sql(query, scope, _COLS, TABLE)
        return await self._run(self._fetch, sql, params)

    async def aggregate(self, query: OpQuery, scope: Scope) -> Aggregate:
        return await self._run(self._aggregate_sync, query, scope)

    async def delete_before(self, cutoff_ms: int, limit: int = 10_000) -> int:
        return await self._run(self._delete_sync, cutoff_ms, limit)

    async def count(self) -> int:
        rows = await self._run(self._fetch, f"SELECT count(*) FROM {TABLE}", ())
        return int(rows[0][0])
