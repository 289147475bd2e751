"""PostgreSQL message-log store: per-gateway chains in shared tables, appended by COPY under a row lock on the head.

Several gateway nodes may share one database. Each gateway_id has its own chain and its own head row in
``messagelog_chain``; ``append_batch`` takes that row FOR UPDATE, so appends to one chain serialise (nodes sharing a
gateway_id interleave whole batches into one valid chain) while different gateways never wait for each other.
Connections are opened with ``synchronous_commit=on``, so a commit is durable on return whatever the server default.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.messagelog.records import GENESIS, ChainHead, LogFields, LogRecord, chain_many
from gateway.messagelog.store import (
    COMPONENT,
    RECORD_COLUMNS,
    ChainState,
    MessageLogStore,
    Migration,
    SchemaError,
    StoreError,
    check_migrations,
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "message-log records and the per-gateway chain head",
        (
            """CREATE TABLE messagelog_chain (
                gateway_id text PRIMARY KEY,
                last_seq bigint NOT NULL,
                last_hash bytea NOT NULL,
                pruned_seq bigint NOT NULL,
                pruned_hash bytea NOT NULL
            )""",
            """CREATE TABLE messagelog_record (
                gateway_id text NOT NULL,
                seq bigint NOT NULL,
                created_ms bigint NOT NULL,
                direction text NOT NULL CHECK (direction IN ('request', 'response')),
                side text NOT NULL CHECK (side IN ('client', 'provider')),
                xroad_id text NOT NULL,
                request_id text NOT NULL,
                client text NOT NULL,
                service text NOT NULL,
                manifest bytea NOT NULL,
                signature bytea NOT NULL,
                signer_cert bytea NOT NULL,
                body bytea,
                body_sha512 bytea NOT NULL,
                prev_hash bytea NOT NULL,
                record_hash bytea NOT NULL,
                PRIMARY KEY (gateway_id, seq)
            )""",
            "CREATE INDEX messagelog_record_xroad_id ON messagelog_record (gateway_id, xroad_id)",
        ),
    ),
)

# Any constant: it names the lock that keeps two nodes from migrating the same database at once.
_MIGRATION_LOCK = 0x7761736C_6D6C6F67  # "waslmlog"
_COLS = ", ".join(RECORD_COLUMNS)
_SELECT = f"SELECT {_COLS} FROM messagelog_record WHERE gateway_id = $1"
_LOCK_HEAD = (
    "SELECT last_seq, last_hash, pruned_seq, pruned_hash FROM messagelog_chain WHERE gateway_id = $1 FOR UPDATE"
)
# Chaining more records than this is done off the event loop: ~10 µs each would otherwise stall it.
_INLINE_CHAIN_MAX = 16


def _record(row: asyncpg.Record) -> LogRecord:
    return LogRecord(*row)


def _state(gateway_id: str, row: asyncpg.Record | None) -> ChainState:
    if row is None:
        return ChainState.empty(gateway_id)
    return ChainState(gateway_id, ChainHead(row[0], row[1]), ChainHead(row[2], row[3]))


class PostgresMessageLogStore(MessageLogStore):
    """A MessageLogStore in PostgreSQL, holding the chain of ``gateway_id`` next to other gateways' chains."""

    migrations: tuple[Migration, ...] = MIGRATIONS

    def __init__(self, dsn: str, gateway_id: str, *, min_size: int = 1, max_size: int = 8) -> None:
        self.dsn = dsn
        self.gateway_id = gateway_id
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the store is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            server_settings={"synchronous_commit": "on", "application_name": "wasl-messagelog"},
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def migrate(self) -> int:
        latest = check_migrations(self.migrations)
        async with self.pool.acquire() as conn, conn.transaction():
            # Two nodes starting together would otherwise race on CREATE TABLE; the lock ends with the transaction.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (component text NOT NULL, version integer NOT NULL,"
                " description text NOT NULL, applied_ms bigint NOT NULL, PRIMARY KEY (component, version))"
            )
            current = await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM schema_version WHERE component = $1", COMPONENT
            )
            if current > latest:
                raise SchemaError(f"message-log schema v{current} is newer than this code (v{latest})")
            for m in self.migrations[current:]:
                for stmt in m.statements:
                    await conn.execute(stmt)
                await conn.execute(
                    "INSERT INTO schema_version (component, version, description, applied_ms) VALUES ($1, $2, $3, $4)",
                    COMPONENT,
                    m.version,
                    m.description,
                    int(time.time() * 1000),
                )
        return latest

    async def _lock_head(self, conn: asyncpg.Connection) -> ChainState:
        row = await conn.fetchrow(_LOCK_HEAD, self.gateway_id)
        if row is None:
            await conn.execute(
                "INSERT INTO messagelog_chain (gateway_id, last_seq, last_hash, pruned_seq, pruned_hash)"
                " VALUES ($1, 0, $2, 0, $2) ON CONFLICT (gateway_id) DO NOTHING",
                self.gateway_id,
                GENESIS,
            )
            row = await conn.fetchrow(_LOCK_HEAD, self.gateway_id)
        return _state(self.gateway_id, row)

    async def append_batch(self, batch: Sequence[LogFields]) -> list[LogRecord]:
        if not batch:
            return []
        batch = list(batch)
        async with self.pool.acquire() as conn, conn.transaction():
            state = await self._lock_head(conn)
            if len(batch) <= _INLINE_CHAIN_MAX:
                records = chain_many(state.last, batch)
            else:
                records = await asyncio.to_thread(chain_many, state.last, batch)
            gw = self.gateway_id
            await conn.copy_records_to_table(
                "messagelog_record",
                records=[(gw, *(getattr(r, c) for c in RECORD_COLUMNS)) for r in records],
                columns=("gateway_id", *RECORD_COLUMNS),
            )
            await conn.execute(
                "UPDATE messagelog_chain SET last_seq = $2, last_hash = $3 WHERE gateway_id = $1",
                gw,
                records[-1].seq,
                records[-1].record_hash,
            )
        return records

    async def state(self) -> ChainState:
        row = await self.pool.fetchrow(
            "SELECT last_seq, last_hash, pruned_seq, pruned_hash FROM messagelog_chain WHERE gateway_id = $1",
            self.gateway_id,
        )
        return _state(self.gateway_id, row)

    async def _records(self, sql: str, *args: Any) -> list[LogRecord]:
        return [_record(r) for r in await self.pool.fetch(sql, self.gateway_id, *args)]

    async def last(self) -> LogRecord | None:
        rows = await self._records(f"{_SELECT} ORDER BY seq DESC LIMIT 1")
        return rows[0] if rows else None

    async def by_xroad_id(self, xroad_id: str) -> list[LogRecord]:
        return await self._records(f"{_SELECT} AND xroad_id = $2 ORDER BY seq", xroad_id)

    async def range(self, from_seq: int, to_seq: int) -> list[LogRecord]:
        return await self._records(f"{_SELECT} AND seq BETWEEN $2 AND $3 ORDER BY seq", from_seq, to_seq)

    async def count(self) -> int:
        n = await self.pool.fetchval("SELECT count(*) FROM messagelog_record WHERE gateway_id = $1", self.gateway_id)
        return int(n)

    async def delete_through(self, seq: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            state = await self._lock_head(conn)
            if seq <= state.pruned.seq:
                return 0
            if seq > state.last.seq:
                raise StoreError(f"cannot prune through seq {seq}: the chain head is at seq {state.last.seq}")
            anchor = await conn.fetchval(
                "SELECT record_hash FROM messagelog_record WHERE gateway_id = $1 AND seq = $2", self.gateway_id, seq
            )
            if anchor is None:
                raise StoreError(f"cannot prune through seq {seq}: that record is missing, so its hash would be lost")
            status = await conn.execute(
                "DELETE FROM messagelog_record WHERE gateway_id = $1 AND seq <= $2", self.gateway_id, seq
            )
            await conn.execute(
                "UPDATE messagelog_chain SET pruned_seq = $2, pruned_hash = $3 WHERE gateway_id = $1",
                self.gateway_id,
                seq,
                anchor,
            )
        return int(status.split()[-1])
