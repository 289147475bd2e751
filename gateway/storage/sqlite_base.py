"""SQLite plumbing shared by the stores: one worker thread, WAL connections, immediate transactions, migrations."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class MigrationLike(Protocol):
    @property
    def version(self) -> int: ...
    @property
    def description(self) -> str: ...
    @property
    def statements(self) -> tuple[str, ...]: ...


async def run(executor: ThreadPoolExecutor | None, closed: Callable[[], Exception], fn: Callable[..., T],
              *args: Any) -> T:
    """Run ``fn(*args)`` on the store's worker thread, raising ``closed()`` when the store is not open."""
    if executor is None:
        raise closed()
    # A cancelled caller does not cancel the thread's work: a commit in flight still completes (or rolls back)
    # as a whole, so cancellation never leaves a half-written batch.
    return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args))


def connect(path: str, busy_timeout_ms: int, synchronous: str, error: type[Exception], *,
            pragmas: Sequence[str] = (), check_same_thread: bool = True) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with the given ``synchronous`` level, running ``pragmas`` first."""
    # isolation_level=None: the module must not open transactions behind our back; we say BEGIN IMMEDIATE so a
    # second writer waits for the lock up front instead of failing at COMMIT.
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000,
                           check_same_thread=check_same_thread)
    try:
        for pragma in pragmas:
            conn.execute(pragma)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise error(f"{path}: could not switch to WAL (journal_mode is {mode})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        # A multi-row INSERT keeps a statement journal, which spills past 64 KiB into a temporary file that
        # is created, written and unlinked per statement; kept in memory, none of that reaches the disk.
        conn.execute("PRAGMA temp_store=MEMORY")
    except BaseException:
        conn.close()
        raise
    return conn


# SQLite allows 32766 parameters in a statement; a wide table gets fewer rows per statement.
_MAX_PARAMETERS = 32766


@functools.lru_cache(maxsize=256)
def _insert_sql(table: str, columns: tuple[str, ...], count: int) -> str:
    row = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * count)}"


# Row counts of the INSERT statements are whole multiples of this plus one remainder below it, so a table needs few
# distinct statements (at most max_rows / 32 + 32), and they stay compiled in the connection's statement cache. With
# one statement of exactly the batch's size, most batches of a 10-second benchmark compiled a new statement (SQLite
# compiles ~5 µs per row of 35 columns, against ~1 µs to run it).
_ROW_STEP = 32


def statement_sizes(count: int, per_statement: int) -> list[int]:
    """The row counts of the INSERT statements that write ``count`` rows, at most ``per_statement`` each."""
    step = max(1, min(_ROW_STEP, per_statement))
    largest = per_statement - per_statement % step
    sizes = [largest] * (count // largest)
    rest = count % largest
    if rest >= step:
        sizes.append(rest - rest % step)
    if rest % step:
        sizes.append(rest % step)
    return sizes


def insert_rows(db: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]],
                max_rows: int = 256) -> None:
    """Insert ``rows`` with multi-row INSERT statements rather than executemany, whose every row is a statement
    step that releases the GIL and must win it back from a busy event loop before the next row."""
    per_statement = max(1, min(max_rows, _MAX_PARAMETERS // len(columns)))
    start = 0
    for size in statement_sizes(len(rows), per_statement):
        chunk = rows[start:start + size]
        start += size
        db.execute(_insert_sql(table, columns, size), [value for row in chunk for value in row])


def transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(db)`` inside BEGIN IMMEDIATE ... COMMIT, rolling back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def migrate(db: sqlite3.Connection, component: str, migrations: Sequence[MigrationLike], latest: int,
            too_new: Callable[[int], Exception]) -> int:
    """Apply the migrations of ``component`` newer than its row in ``schema_version``; call inside a transaction."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (component TEXT NOT NULL, version INTEGER NOT NULL,"
        " description TEXT NOT NULL, applied_ms INTEGER NOT NULL, PRIMARY KEY (component, version))"
    )
    current = db.execute(
        "SELECT coalesce(max(version), 0) FROM schema_version WHERE component = ?", (component,)
    ).fetchone()[0]
    if current > latest:
        raise too_new(current)
    for m in migrations[current:]:
        for stmt in m.statements:
            db.execute(stmt)
        db.execute(
            "INSERT INTO schema_version (component, version, description, applied_ms) VALUES (?, ?, ?, ?)",
            (component, m.version, m.description, int(time.time() * 1000)),
        )
    return latest


class WorkerStore:
    """Mixin giving a store ``open``/``close`` of its one worker thread around its ``_connect``/``_disconnect``."""

    _thread_prefix: str
    _executor: ThreadPoolExecutor | None
    _run: Callable[..., Any]
    _connect: Callable[[], None]
    _disconnect: Callable[[], None]

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_prefix)
        try:
            await self._run(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._disconnect)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None
