"""PostgreSQL message-log store: per-gateway chains in shared tables, appended by COPY under a row lock on the head.

Several gateway nodes may share one database. Each gateway_id has its own chain and its own head row in
``messagelog_chain``; ``append_batch`` takes that row FOR UPDATE, so appends to one chain serialise (nodes sharing a
gateway_id interleave whole batches into one valid chain) while different gateways never wait for each other.
Connections are opened with ``synchronous_commit=on``, so a commit is durable on return whatever the server default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.messagelog.records import GENESIS, ChainHead, LogFields, LogRecord, chain_many
from gateway.messagelog.store import (
    COMPONENT,
    RECORD_COLUMNS,
    ArchiveRecord,
    ChainState,
    MessageLogStore,
    Migration,
    SchemaError,
    StoreError,
    TimestampRecord,
    check_migrations,
)
from gateway.storage import postgres_base

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
    Migration(
        2,
        "timestamp tokens, archives, encrypted bodies",
        (
            "ALTER TABLE messagelog_record ADD COLUMN body_encrypted boolean NOT NULL DEFAULT false",
            "ALTER TABLE messagelog_chain ADD COLUMN stamped_seq bigint NOT NULL DEFAULT 0",
            """CREATE TABLE messagelog_timestamp (
                gateway_id text NOT NULL,
                last_seq bigint NOT NULL,
                first_seq bigint NOT NULL,
                merkle_root bytea NOT NULL,
                token bytea NOT NULL,
                tsa_name text NOT NULL,
                tsa_url text NOT NULL,
                gen_time_ms bigint NOT NULL,
                created_ms bigint NOT NULL,
                PRIMARY KEY (gateway_id, last_seq)
            )""",
            """CREATE TABLE messagelog_archive (
                gateway_id text NOT NULL,
                last_seq bigint NOT NULL,
                first_seq bigint NOT NULL,
                name text NOT NULL,
                manifest_sha256 bytea NOT NULL,
                last_created_ms bigint NOT NULL,
                created_ms bigint NOT NULL,
                PRIMARY KEY (gateway_id, last_seq)
            )""",
        ),
    ),
)

# Any constant: it names the lock that keeps two nodes from migrating the same database at once.
_MIGRATION_LOCK = 0x7761736C_6D6C6F67  # "waslmlog"
_COLS = ", ".join(RECORD_COLUMNS)
_SELECT = f"SELECT {_COLS} FROM messagelog_record WHERE gateway_id = $1"
_HEAD_COLS = "last_seq, last_hash, pruned_seq, pruned_hash, stamped_seq"
_LOCK_HEAD = f"SELECT {_HEAD_COLS} FROM messagelog_chain WHERE gateway_id = $1 FOR UPDATE"
_TS_COLS = "first_seq, last_seq, merkle_root, token, tsa_name, tsa_url, gen_time_ms, created_ms"
_ARCHIVE_COLS = "first_seq, last_seq, name, manifest_sha256, last_created_ms, created_ms"
# Chaining more records than this is done off the event loop: ~10 µs each would otherwise stall it.
_INLINE_CHAIN_MAX = 16


def _record(row: asyncpg.Record) -> LogRecord:
    return LogRecord(*row)


def _state(gateway_id: str, row: asyncpg.Record | None) -> ChainState:
    if row is None:
        return ChainState.empty(gateway_id)
    return ChainState(gateway_id, ChainHead(row[0], row[1]), ChainHead(row[2], row[3]), row[4])


class PostgresMessageLogStore(postgres_base.PoolStore, MessageLogStore):
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
        self._pool = await postgres_base.create_pool(
            self.dsn, self._min_size, self._max_size,
            {"synchronous_commit": "on", "application_name": "wasl-messagelog"},
        )

    async def migrate(self) -> int:
        latest = check_migrations(self.migrations)

        def too_new(current: int) -> Exception:
            return SchemaError(f"message-log schema v{current} is newer than this code (v{latest})")

        return await postgres_base.migrate(self.pool, _MIGRATION_LOCK, COMPONENT, self.migrations, latest, too_new)

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
                records=[(gw, *r) for r in records],
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
        row = await self.pool.fetchrow(f"SELECT {_HEAD_COLS} FROM messagelog_chain WHERE gateway_id = $1",
                                       self.gateway_id)
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
                "DELETE FROM messagelog_timestamp WHERE gateway_id = $1 AND last_seq <= $2", self.gateway_id, seq
            )
            await conn.execute(
                "UPDATE messagelog_chain SET pruned_seq = $2, pruned_hash = $3 WHERE gateway_id = $1",
                self.gateway_id,
                seq,
                anchor,
            )
        return int(status.split()[-1])

    async def record_hashes(self, from_seq: int, to_seq: int) -> list[tuple[int, bytes]]:
        rows = await self.pool.fetch(
            "SELECT seq, record_hash FROM messagelog_record WHERE gateway_id = $1 AND seq BETWEEN $2 AND $3"
            " ORDER BY seq",
            self.gateway_id, from_seq, to_seq,
        )
        return [(r[0], r[1]) for r in rows]

    async def add_timestamp(self, stamp: TimestampRecord) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            # The head row's lock orders this against appends and against other nodes stamping the same chain.
            state = await self._lock_head(conn)
            if stamp.last_seq <= state.stamped_seq:
                return False
            if stamp.first_seq != state.stamped_seq + 1 or stamp.last_seq > state.last.seq:
                raise StoreError(f"a token for seqs {stamp.first_seq}..{stamp.last_seq} does not continue the "
                                 f"stamped prefix (seq {state.stamped_seq}, head {state.last.seq})")
            await conn.execute(
                f"INSERT INTO messagelog_timestamp (gateway_id, {_TS_COLS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                self.gateway_id, stamp.first_seq, stamp.last_seq, stamp.merkle_root, stamp.token, stamp.tsa_name,
                stamp.tsa_url, stamp.gen_time_ms, stamp.created_ms,
            )
            await conn.execute("UPDATE messagelog_chain SET stamped_seq = $2 WHERE gateway_id = $1",
                               self.gateway_id, stamp.last_seq)
        return True

    async def timestamps(self, from_seq: int, to_seq: int) -> list[TimestampRecord]:
        rows = await self.pool.fetch(
            f"SELECT {_TS_COLS} FROM messagelog_timestamp WHERE gateway_id = $1 AND last_seq >= $2 AND first_seq <= $3"
            " ORDER BY last_seq",
            self.gateway_id, from_seq, to_seq,
        )
        return [TimestampRecord(*r) for r in rows]

    async def add_archive(self, archive: ArchiveRecord) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            state = await self._lock_head(conn)
            last = await conn.fetchval("SELECT max(last_seq) FROM messagelog_archive WHERE gateway_id = $1",
                                       self.gateway_id)
            expected = last + 1 if last is not None else state.pruned.seq + 1
            if archive.first_seq != expected or archive.last_seq > state.stamped_seq:
                raise StoreError(f"archive of seqs {archive.first_seq}..{archive.last_seq} does not continue the "
                                 f"archives (next seq {expected}) within the stamped prefix (seq {state.stamped_seq})")
            await conn.execute(
                f"INSERT INTO messagelog_archive (gateway_id, {_ARCHIVE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                self.gateway_id, archive.first_seq, archive.last_seq, archive.name, archive.manifest_sha256,
                archive.last_created_ms, archive.created_ms,
            )

    async def archives(self) -> list[ArchiveRecord]:
        rows = await self.pool.fetch(
            f"SELECT {_ARCHIVE_COLS} FROM messagelog_archive WHERE gateway_id = $1 ORDER BY last_seq", self.gateway_id
        )
        return [ArchiveRecord(*r) for r in rows]
