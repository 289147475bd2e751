"""PostgreSQL operational-record store: every gateway's records in one shared table, keyed by gateway id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

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
from gateway.storage import postgres_base

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "operational records", (
        f"CREATE TABLE {TABLE} (\nid bigserial PRIMARY KEY,\ngateway_id text NOT NULL,\n"
        f"{column_types('text', 'bigint', 'double precision', 'boolean')})",
        f"CREATE INDEX {TABLE}_time ON {TABLE} (gateway_id, request_in_ms)",
        f"CREATE INDEX {TABLE}_xroad_id ON {TABLE} (gateway_id, xroad_id)",
        f"CREATE INDEX {TABLE}_trace_id ON {TABLE} (gateway_id, trace_id) WHERE trace_id IS NOT NULL",
        f"CREATE INDEX {TABLE}_service ON {TABLE} (gateway_id, service_key, request_in_ms)",
        f"CREATE INDEX {TABLE}_pair ON {TABLE} (gateway_id, client_member, provider_member, request_in_ms)",
    )),
)
_MIGRATION_LOCK = 0x7761736C_6F706D6E  # "waslopmn": one node migrates at a time
_COLS = ", ".join(COLUMNS)
_GATEWAY = "gateway_id = $1"


class PostgresOpStore(postgres_base.PoolStore, OpStore):
    """Operational records of ``gateway_id`` in a database that other gateways may share."""

    migrations = MIGRATIONS

    def __init__(self, dsn: str, gateway_id: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.dsn = dsn
        self.gateway_id = gateway_id
        self._min_size, self._max_size = min_size, max_size
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the operational-record store is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is None:
            self._pool = await postgres_base.create_pool(self.dsn, self._min_size, self._max_size,
                                                         {"application_name": "wasl-opmon"})

    async def migrate(self) -> int:
        latest = check_migrations(self.migrations)

        def too_new(current: int) -> Exception:
            return StoreError(f"operational-record schema v{current} is newer than this code (v{latest})")

        return await postgres_base.migrate(self.pool, _MIGRATION_LOCK, COMPONENT, self.migrations, latest, too_new)

    async def insert(self, batch: Sequence[OpRecord]) -> None:
        if not batch:
            return
        gw = self.gateway_id
        async with self.pool.acquire() as conn:
            await conn.copy_records_to_table(TABLE, records=[(gw, *r.row()) for r in batch],
                                             columns=("gateway_id", *COLUMNS))

    async def records(self, query: OpQuery, scope: Scope) -> list[tuple[Any, ...]]:
        sql, params = opquery.records_sql(query, scope, _COLS, TABLE, "numeric", [self.gateway_id], _GATEWAY)
        return [tuple(r) for r in await self.pool.fetch(sql, *params)]

    async def aggregate(self, query: OpQuery, scope: Scope) -> Aggregate:
        statements = opquery.aggregate_sql(query, scope, TABLE, "numeric", [self.gateway_id], _GATEWAY)
        return Aggregate(*[[tuple(r) for r in await self.pool.fetch(sql, *params)] for sql, params in statements])

    async def delete_before(self, cutoff_ms: int, limit: int = 10_000) -> int:
        status = await self.pool.execute(
            f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE {_GATEWAY} AND request_in_ms < $2"
            f" LIMIT $3)", self.gateway_id, cutoff_ms, limit)
        return int(status.split()[-1])

    async def count(self) -> int:
        return int(await self.pool.fetchval(f"SELECT count(*) FROM {TABLE} WHERE {_GATEWAY}", self.gateway_id))
