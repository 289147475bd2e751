"""SQLite message-log store: one gateway's chain in one WAL-mode file, every sqlite call on one worker thread.

Durability. The default ``synchronous="FULL"`` fsyncs the WAL at every commit, so a record is durable, even across
power loss or an OS crash, once ``append_batch`` returns. ``synchronous="NORMAL"`` (with WAL) fsyncs only at
checkpoints: a committed transaction survives the *process* being killed (the data is in the OS page cache; the
kill -9 test runs in both modes and loses nothing) but the last commits can roll back on power loss or a kernel
crash, which breaks the "durable on return" promise the gateway makes to its callers. With group commit the fsync
is paid once per batch, so FULL costs little (see bench/messagelog_store.py); keep FULL unless the disk is known to
lie about fsync anyway.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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
from gateway.storage import sqlite_base

T = TypeVar("T")

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "message-log records and the chain head",
        (
            """CREATE TABLE messagelog_chain (
                gateway_id TEXT PRIMARY KEY,
                last_seq INTEGER NOT NULL,
                last_hash BLOB NOT NULL,
                pruned_seq INTEGER NOT NULL,
                pruned_hash BLOB NOT NULL
            )""",
            # seq is the rowid: records cluster in seq order, so range scans and appends touch adjacent pages.
            """CREATE TABLE messagelog_record (
                seq INTEGER PRIMARY KEY,
                created_ms INTEGER NOT NULL,
                direction TEXT NOT NULL CHECK (direction IN ('request', 'response')),
                side TEXT NOT NULL CHECK (side IN ('client', 'provider')),
                xroad_id TEXT NOT NULL,
                request_id TEXT NOT NULL,
                client TEXT NOT NULL,
                service TEXT NOT NULL,
                manifest BLOB NOT NULL,
                signature BLOB NOT NULL,
                signer_cert BLOB NOT NULL,
                body BLOB,
                body_sha512 BLOB NOT NULL,
                prev_hash BLOB NOT NULL,
                record_hash BLOB NOT NULL
            )""",
            "CREATE INDEX messagelog_record_xroad_id ON messagelog_record (xroad_id)",
        ),
    ),
    Migration(
        2,
        "timestamp tokens, archives, encrypted bodies",
        (
            "ALTER TABLE messagelog_record ADD COLUMN body_encrypted INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE messagelog_chain ADD COLUMN stamped_seq INTEGER NOT NULL DEFAULT 0",
            """CREATE TABLE messagelog_timestamp (
                last_seq INTEGER PRIMARY KEY,
                first_seq INTEGER NOT NULL,
                merkle_root BLOB NOT NULL,
                token BLOB NOT NULL,
                tsa_name TEXT NOT NULL,
                tsa_url TEXT NOT NULL,
                gen_time_ms INTEGER NOT NULL,
                created_ms INTEGER NOT NULL
            )""",
            """CREATE TABLE messagelog_archive (
                last_seq INTEGER PRIMARY KEY,
                first_seq INTEGER NOT NULL,
                name TEXT NOT NULL,
                manifest_sha256 BLOB NOT NULL,
                last_created_ms INTEGER NOT NULL,
                created_ms INTEGER NOT NULL
            )""",
        ),
    ),
)

_COLS = ", ".join(RECORD_COLUMNS)
_SELECT = f"SELECT {_COLS} FROM messagelog_record"


_TS_COLS = "first_seq, last_seq, merkle_root, token, tsa_name, tsa_url, gen_time_ms, created_ms"
_ARCHIVE_COLS = "first_seq, last_seq, name, manifest_sha256, last_created_ms, created_ms"


def _record(row: tuple[Any, ...]) -> LogRecord:
    return LogRecord._make((*row[:-1], bool(row[-1])))  # SQLite keeps the flag as 0/1


class SqliteMessageLogStore(sqlite_base.WorkerStore, MessageLogStore):
    """A MessageLogStore in one SQLite file, which holds the chain of exactly one gateway."""

    _thread_prefix = "messagelog-sqlite"
    migrations: tuple[Migration, ...] = MIGRATIONS

    def __init__(
        self,
        path: str | os.PathLike[str],
        gateway_id: str = "default",
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 10_000,
    ) -> None:
        if synchronous.upper() not in ("FULL", "EXTRA", "NORMAL"):
            raise ValueError(f"synchronous must be FULL, EXTRA or NORMAL, not {synchronous!r}")
        self.path = os.fspath(path)
        self.gateway_id = gateway_id
        self.synchronous = synchronous.upper()
        self._busy_timeout_ms = busy_timeout_ms
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    # -- the worker thread -------------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await sqlite_base.run(self._executor, lambda: StoreError("the store is not open"), fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    def _connect(self) -> None:
        # Records are ~3 KB: at the default 4 KB page most pages hold one record and a quarter of free space;
        # 16 KB pages pack five, a smaller file and fewer page writes. Takes effect only in a new file.
        self._conn = sqlite_base.connect(self.path, self._busy_timeout_ms, self.synchronous, StoreError,
                                         pragmas=("PRAGMA page_size=16384",))

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return sqlite_base.transaction(self._db, fn)

    def _state_in(self, db: sqlite3.Connection, *, create: bool) -> ChainState:
        row = db.execute(
            "SELECT last_seq, last_hash, pruned_seq, pruned_hash, stamped_seq FROM messagelog_chain"
            " WHERE gateway_id = ?",
            (self.gateway_id,),
        ).fetchone()
        if row is not None:
            return ChainState(self.gateway_id, ChainHead(row[0], row[1]), ChainHead(row[2], row[3]), row[4])
        other = db.execute("SELECT gateway_id FROM messagelog_chain LIMIT 1").fetchone()
        if other is not None:
            raise StoreError(f"{self.path} holds the message log of gateway {other[0]!r}, not {self.gateway_id!r}")
        if create:
            db.execute(
                "INSERT INTO messagelog_chain (gateway_id, last_seq, last_hash, pruned_seq, pruned_hash)"
                " VALUES (?, 0, ?, 0, ?)",
                (self.gateway_id, GENESIS, GENESIS),
            )
        return ChainState.empty(self.gateway_id)

    def _migrate_sync(self) -> int:
        latest = check_migrations(self.migrations)

        def too_new(current: int) -> Exception:
            return SchemaError(f"{self.path}: message-log schema v{current} is newer than this code (v{latest})")

        return self._tx(lambda db: sqlite_base.migrate(db, COMPONENT, self.migrations, latest, too_new))

    def _append_sync(self, batch: Sequence[LogFields]) -> list[LogRecord]:
        def append(db: sqlite3.Connection) -> list[LogRecord]:
            state = self._state_in(db, create=True)
            records = chain_many(state.last, batch)
            sqlite_base.insert_rows(db, "messagelog_record", RECORD_COLUMNS, records)
            db.execute(
                "UPDATE messagelog_chain SET last_seq = ?, last_hash = ? WHERE gateway_id = ?",
                (records[-1].seq, records[-1].record_hash, self.gateway_id),
            )
            return records

        return self._tx(append)

    def _delete_through_sync(self, seq: int) -> int:
        def delete(db: sqlite3.Connection) -> int:
            state = self._state_in(db, create=False)
            if seq <= state.pruned.seq:
                return 0
            if seq > state.last.seq:
                raise StoreError(f"cannot prune through seq {seq}: the chain head is at seq {state.last.seq}")
            row = db.execute("SELECT record_hash FROM messagelog_record WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                raise StoreError(f"cannot prune through seq {seq}: that record is missing, so its hash would be lost")
            deleted = db.execute("DELETE FROM messagelog_record WHERE seq <= ?", (seq,)).rowcount
            db.execute("DELETE FROM messagelog_timestamp WHERE last_seq <= ?", (seq,))
            db.execute(
                "UPDATE messagelog_chain SET pruned_seq = ?, pruned_hash = ? WHERE gateway_id = ?",
                (seq, row[0], self.gateway_id),
            )
            return deleted

        return self._tx(delete)

    def _add_timestamp_sync(self, stamp: TimestampRecord) -> bool:
        def add(db: sqlite3.Connection) -> bool:
            state = self._state_in(db, create=False)
            if stamp.last_seq <= state.stamped_seq:
                return False  # another node of this gateway stamped it first
            if stamp.first_seq != state.stamped_seq + 1 or stamp.last_seq > state.last.seq:
                raise StoreError(f"a token for seqs {stamp.first_seq}..{stamp.last_seq} does not continue the "
                                 f"stamped prefix (seq {state.stamped_seq}, head {state.last.seq})")
            db.execute(
                f"INSERT INTO messagelog_timestamp ({_TS_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (stamp.first_seq, stamp.last_seq, stamp.merkle_root, stamp.token, stamp.tsa_name, stamp.tsa_url,
                 stamp.gen_time_ms, stamp.created_ms),
            )
            db.execute("UPDATE messagelog_chain SET stamped_seq = ? WHERE gateway_id = ?",
                       (stamp.last_seq, self.gateway_id))
            return True

        return self._tx(add)

    def _add_archive_sync(self, archive: ArchiveRecord) -> None:
        def add(db: sqlite3.Connection) -> None:
            state = self._state_in(db, create=False)
            row = db.execute("SELECT max(last_seq) FROM messagelog_archive").fetchone()
            expected = row[0] + 1 if row[0] is not None else state.pruned.seq + 1
            if archive.first_seq != expected or archive.last_seq > state.stamped_seq:
                raise StoreError(f"archive of seqs {archive.first_seq}..{archive.last_seq} does not continue the "
                                 f"archives (next seq {expected}) within the stamped prefix (seq {state.stamped_seq})")
            db.execute(
                f"INSERT INTO messagelog_archive ({_ARCHIVE_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                (archive.first_seq, archive.last_seq, archive.name, archive.manifest_sha256, archive.last_created_ms,
                 archive.created_ms),
            )

        self._tx(add)

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, args).fetchall()

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[LogRecord]:
        return [_record(r) for r in self._db.execute(sql, args).fetchall()]

    def _state_sync(self) -> ChainState:
        return self._state_in(self._db, create=False)

    def _count_sync(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM messagelog_record").fetchone()[0])

    # -- the interface -----------------------------------------------------------------------------------------

    async def migrate(self) -> int:
        return await self._run(self._migrate_sync)

    async def append_batch(self, batch: Sequence[LogFields]) -> list[LogRecord]:
        if not batch:
            return []
        # Chaining (SHA-256 over every byte) runs in the worker too, so the event loop only waits.
        return await self._run(self._append_sync, list(batch))

    async def state(self) -> ChainState:
        return await self._run(self._state_sync)

    async def last(self) -> LogRecord | None:
        rows = await self._run(self._query, f"{_SELECT} ORDER BY seq DESC LIMIT 1", ())
        return rows[0] if rows else None

    async def by_xroad_id(self, xroad_id: str) -> list[LogRecord]:
        return await self._run(self._query, f"{_SELECT} WHERE xroad_id = ? ORDER BY seq", (xroad_id,))

    async def range(self, from_seq: int, to_seq: int) -> list[LogRecord]:
        return await self._run(self._query, f"{_SELECT} WHERE seq BETWEEN ? AND ? ORDER BY seq", (from_seq, to_seq))

    async def count(self) -> int:
        return await self._run(self._count_sync)

    async def delete_through(self, seq: int) -> int:
        return await self._run(self._delete_through_sync, seq)

    async def record_hashes(self, from_seq: int, to_seq: int) -> list[tuple[int, bytes]]:
        rows = await self._run(
            self._rows, "SELECT seq, record_hash FROM messagelog_record WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (from_seq, to_seq),
        )
        return [(r[0], r[1]) for r in rows]

    async def add_timestamp(self, stamp: TimestampRecord) -> bool:
        return await self._run(self._add_timestamp_sync, stamp)

    async def timestamps(self, from_seq: int, to_seq: int) -> list[TimestampRecord]:
        rows = await self._run(
            self._rows,
            f"SELECT {_TS_COLS} FROM messagelog_timestamp WHERE last_seq >= ? AND first_seq <= ? ORDER BY last_seq",
            (from_seq, to_seq),
        )
        return [TimestampRecord(*r) for r in rows]

    async def add_archive(self, archive: ArchiveRecord) -> None:
        await self._run(self._add_archive_sync, archive)

    async def archives(self) -> list[ArchiveRecord]:
        rows = await self._run(self._rows, f"SELECT {_ARCHIVE_COLS} FROM messagelog_archive ORDER BY last_seq", ())
        return [ArchiveRecord(*r) for r in rows]
