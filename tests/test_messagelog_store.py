"""Message-log storage tests: chaining, tamper detection, group commit, retention, crash durability, on both stores."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import itertools
import os
import secrets
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.messagelog.postgres_store import PostgresMessageLogStore
from gateway.messagelog.records import (
    GENESIS,
    ChainHead,
    LogFields,
    LogRecord,
    ProblemKind,
    RecordError,
    canonical_bytes,
    chain,
    chain_many,
    compute_hash,
    verify_chain,
)
from gateway.messagelog.sqlite_store import SqliteMessageLogStore
from gateway.messagelog.store import (
    RECORD_COLUMNS,
    ArchiveRecord,
    ChainState,
    MessageLogStore,
    Migration,
    SchemaError,
    StoreError,
    TimestampRecord,
)
from gateway.messagelog.writer import GroupCommitWriter, MessageLogWriteError, WriterClosed
from gateway.storage import sqlite_base

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_DSN = os.environ.get("WASL_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def fields(i: int, *, tag: str = "m", log_body: bool = True, size: int = 600) -> LogFields:
    body = (f"<e:Envelope><e:Body><q>{tag}-{i}</q>".encode() + b"x" * size)[:size] + b"</e:Body></e:Envelope>"
    return LogFields.for_message(
        created_ms=1_700_000_000_000 + i,
        direction="request" if i % 2 else "response",
        side="client" if i % 3 else "provider",
        xroad_id=f"{tag}-{i}",
        request_id=f"req-{tag}-{i}",
        client="WASL/GOV/1234/portal",
        service="WASL/COM/5678/registry/getPerson/v1",
        manifest=b'{"alg":"ES256","body":"' + hashlib.sha256(body).hexdigest().encode() + b'"}',
        signature=hashlib.sha512(body).digest(),
        signer_cert=b"0\x82\x01\x22" + bytes(290),
        body=body,
        log_body=log_body,
    )


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion on a fresh loop in another thread, whether or not this thread runs a loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# -- raw database access, to play the attacker -------------------------------------------------------------------


class SqliteRaw:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, timeout=10)

    async def fetch(self, seq: int) -> dict[str, Any]:
        with closing(self._db()) as db:
            db.row_factory = sqlite3.Row
            return dict(db.execute("SELECT * FROM messagelog_record WHERE seq = ?", (seq,)).fetchone())

    async def update(self, seq: int, **cols: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in cols)
        with closing(self._db()) as db:
            db.execute(f"UPDATE messagelog_record SET {sets} WHERE seq = ?", (*cols.values(), seq))

    async def delete(self, seq: int) -> None:
        with closing(self._db()) as db:
            db.execute("DELETE FROM messagelog_record WHERE seq = ?", (seq,))

    async def renumber_from(self, seq: int, delta: int) -> None:
        # Through negative seqs, so no row ever collides with a neighbour's key mid-update.
        with closing(self._db()) as db:
            db.execute("UPDATE messagelog_record SET seq = -(seq + ?) WHERE seq >= ?", (delta, seq))
            db.execute("UPDATE messagelog_record SET seq = -seq WHERE seq < 0")

    async def insert(self, r: LogRecord) -> None:
        marks = ", ".join("?" * len(RECORD_COLUMNS))
        with closing(self._db()) as db:
            db.execute(
                f"INSERT INTO messagelog_record ({', '.join(RECORD_COLUMNS)}) VALUES ({marks})",
                tuple(getattr(r, c) for c in RECORD_COLUMNS),
            )

    async def schema_versions(self) -> list[int]:
        with closing(self._db()) as db:
            rows = db.execute("SELECT version FROM schema_version WHERE component = 'messagelog' ORDER BY version")
            return [r[0] for r in rows]

    async def execute(self, sql: str, *args: Any) -> None:
        with closing(self._db()) as db:
            db.execute(sql.replace("$1", "?").replace("$2", "?"), args)


class PostgresRaw:
    def __init__(self, dsn: str, gateway_id: str) -> None:
        self.dsn = dsn
        self.gw = gateway_id

    async def _run(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def fetch(self, seq: int) -> dict[str, Any]:
        rows = await self._run("SELECT * FROM messagelog_record WHERE gateway_id = $1 AND seq = $2", self.gw, seq)
        row = dict(rows[0])
        del row["gateway_id"]
        return row

    async def update(self, seq: int, **cols: Any) -> None:
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(cols, start=3))
        await self._run(
            f"UPDATE messagelog_record SET {sets} WHERE gateway_id = $1 AND seq = $2", self.gw, seq, *cols.values()
        )

    async def delete(self, seq: int) -> None:
        await self._run("DELETE FROM messagelog_record WHERE gateway_id = $1 AND seq = $2", self.gw, seq)

    async def renumber_from(self, seq: int, delta: int) -> None:
        await self._run(
            "UPDATE messagelog_record SET seq = -(seq + $3) WHERE gateway_id = $1 AND seq >= $2", self.gw, seq, delta
        )
        await self._run("UPDATE messagelog_record SET seq = -seq WHERE gateway_id = $1 AND seq < 0", self.gw)

    async def insert(self, r: LogRecord) -> None:
        cols = ("gateway_id", *RECORD_COLUMNS)
        marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        await self._run(
            f"INSERT INTO messagelog_record ({', '.join(cols)}) VALUES ({marks})",
            self.gw,
            *(getattr(r, c) for c in RECORD_COLUMNS),
        )

    async def schema_versions(self) -> list[int]:
        rows = await self._run("SELECT version FROM schema_version WHERE component = 'messagelog' ORDER BY version")
        return [r[0] for r in rows]

    async def execute(self, sql: str, *args: Any) -> None:
        await self._run(sql, *args)


@dataclasses.dataclass
class Backend:
    name: str
    target: str  # the SQLite path or the PostgreSQL DSN
    gateway_id: str
    raw: SqliteRaw | PostgresRaw

    def make(self, gateway_id: str | None = None) -> MessageLogStore:
        gw = gateway_id or self.gateway_id
        if self.name == "sqlite":
            return SqliteMessageLogStore(self.target, gw)
        return PostgresMessageLogStore(self.target, gw, max_size=4)


# -- fixtures ----------------------------------------------------------------------------------------------------


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A database of its own for this test session, dropped at the end."""
    name = f"wasl_mlog_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        run_sync(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        reason = f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {exc!r}"
        if IN_CI:
            pytest.fail(reason)  # CI must exercise both stores, so a missing database is a failure there
        pytest.skip(reason)
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        run_sync(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    gw = f"gw-{secrets.token_hex(4)}"  # one chain per test in the shared PostgreSQL database
    if request.param == "sqlite":
        path = tmp_path / "messagelog.sqlite"
        return Backend("sqlite", str(path), gw, SqliteRaw(path))
    dsn = request.getfixturevalue("pg_dsn")
    return Backend("postgres", dsn, gw, PostgresRaw(dsn, gw))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[MessageLogStore]:
    s = backend.make()
    await s.open()
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


async def append_n(store: MessageLogStore, n: int, *, tag: str = "m", batch: int = 7) -> list[LogRecord]:
    out: list[LogRecord] = []
    for start in range(0, n, batch):
        out += await store.append_batch([fields(i, tag=tag) for i in range(start + 1, min(n, start + batch) + 1)])
    return out


def kinds(problems: Sequence[Any]) -> list[tuple[str, int, str | None]]:
    return [(p.kind.value, p.seq, p.xroad_id) for p in problems]


# -- pure record logic -------------------------------------------------------------------------------------------


def test_record_hashes_keep_their_v1_encoding() -> None:
    """Known answers: a change to the encoding would make every stored chain read as tampered."""
    body = "<x>café</x>".encode()
    common = dict(created_ms=1795872900199, direction="request", side="client", xroad_id="e2e-1",
                  request_id="f0e2e968-8048-41b3-a79f-bd363f3094e3", client="DEMO/GOV/1003/patients",
                  service="DEMO/GOV/1001/population/echo/v1", manifest=b'{"v":1}', signature=b"\x30\x44sig",
                  signer_cert=b"\x30\x82cert")
    plain = LogFields.for_message(**common, body=body)  # type: ignore[arg-type]
    digest_only = LogFields.for_message(**common, body=body, log_body=False)  # type: ignore[arg-type]
    encrypted = LogFields.for_message(**common, body=b"ciphertext", body_sha512=hashlib.sha512(body).digest(),  # type: ignore[arg-type]
                                      body_encrypted=True)
    prev = bytes(range(32))
    assert [chain(prev, 7, f).record_hash.hex() for f in (plain, digest_only, encrypted)] == [
        "059345aa2b4c57cdc0e881d1261e0533756bb10078a583bcbc9ef3a27613c21c",
        "a01407f5d110c61824a1899c31b6643fd042349a795809caef187161bbbe5651",
        "4263a54e0b370ce25ba4e35b6b6ce9ae2dcb132c120470efff35d363e7410d66",
    ]


def test_canonical_bytes_is_unambiguous() -> None:
    base = chain(GENESIS, 1, fields(1))
    a = base._replace(client="ab", service="c")
    b = base._replace(client="a", service="bc")
    assert canonical_bytes(a) != canonical_bytes(b)
    assert canonical_bytes(base._replace(body=None)) != canonical_bytes(base._replace(body=b""))
    assert canonical_bytes(base._replace(seq=2)) != canonical_bytes(base)
    assert compute_hash(base) == hashlib.sha256(base.prev_hash + canonical_bytes(base)).digest()
    assert base.record_hash == compute_hash(base)


def test_bad_fields_cannot_be_built() -> None:
    # Refused when built, to the caller who made them, never as a failed batch that takes other callers with it.
    f = fields(1)
    with pytest.raises(RecordError, match="body_sha512"):
        dataclasses.replace(f, body=f.body + b"!")  # type: ignore[operator]
    with pytest.raises(RecordError, match="direction"):
        dataclasses.replace(f, direction="sideways")
    with pytest.raises(RecordError, match="created_ms"):
        dataclasses.replace(f, created_ms="yesterday")  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="manifest"):
        dataclasses.replace(f, manifest="text")  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="prev_hash"):
        chain(b"short", 1, f)
    assert fields(1, log_body=False).body is None and fields(1, log_body=False).body_sha512 == f.body_sha512
    # A digest the caller already holds is trusted as given (no second SHA-512 on the hot path).
    assert f.body is not None
    known = LogFields.for_message(
        **{k: getattr(f, k) for k in LogFields.__dataclass_fields__ if k != "body_sha512"}, body_sha512=f.body_sha512
    )
    assert known == f


def test_verify_chain_in_memory_names_each_kind() -> None:
    recs = chain_many(ChainHead(0, GENESIS), [fields(i) for i in range(1, 21)])
    assert verify_chain(recs) == []
    head = ChainHead(20, recs[-1].record_hash)
    # A consistent forged tail is invisible to the hashes alone; only the recorded head exposes it.
    forged_tail = [*recs, chain(recs[-1].record_hash, 21, fields(99, tag="forged"))]
    assert verify_chain(forged_tail) == []
    assert kinds(verify_chain(forged_tail, end=head)) == [("inserted", 21, "forged-99")]
    assert kinds(verify_chain(recs[:-3], end=head)) == [("deleted", 18, None)]
    # A record rewritten with a recomputed hash breaks its successor's link.
    rewritten = list(recs)
    rewritten[4] = chain(recs[4].prev_hash, 5, dataclasses.replace(recs[4].fields, client="EVIL"))
    assert kinds(verify_chain(rewritten)) == [("broken_link", 6, "m-6")]
    # Retention: the remaining window verifies from its anchor, and only from its anchor.
    assert verify_chain(recs[5:], recs[4].record_hash, start_seq=6, end=head) == []
    assert kinds(verify_chain(recs[5:], GENESIS, start_seq=6)) == [("broken_link", 6, "m-6")]


# -- both stores -------------------------------------------------------------------------------------------------


async def test_append_and_verify(store: MessageLogStore) -> None:
    assert await store.last() is None
    assert await store.state() == ChainState.empty(store.gateway_id)
    recs = await append_n(store, 30)
    assert [r.seq for r in recs] == list(range(1, 31))
    assert recs[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.record_hash for a, b in itertools.pairwise(recs))
    assert verify_chain(recs) == []
    assert await store.count() == 30
    assert await store.last() == recs[-1]
    assert await store.range(1, 30) == recs
    assert await store.range(10, 12) == recs[9:12]
    assert await store.by_xroad_id("m-17") == [recs[16]]
    assert await store.by_xroad_id("nope") == []
    state = await store.state()
    assert state.last == ChainHead(30, recs[-1].record_hash)
    assert state.pruned == ChainHead(0, GENESIS)
    assert await store.verify() == []
    assert await store.verify(page_size=4) == []


async def test_one_batch_larger_than_one_insert_statement(store: MessageLogStore) -> None:
    # SQLite writes a batch as multi-row INSERTs of at most 256 rows; 600 records span three of them.
    recs = await store.append_batch([fields(i, size=64) for i in range(600)])
    assert [r.seq for r in recs] == list(range(1, 601))
    assert await store.range(1, 600) == recs
    assert await store.by_xroad_id("m-599") == [recs[-1]]
    assert await store.verify() == []


def test_sqlite_connections_keep_statement_journals_in_memory(tmp_path: Path) -> None:
    # A multi-row INSERT past 64 KiB would otherwise spill its statement journal into a temporary file, created
    # and unlinked per statement (seen with strace under load).
    with closing(sqlite_base.connect(str(tmp_path / "x.db"), 1000, "FULL", RuntimeError)) as db:
        assert db.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY


async def test_group_commit_1000_concurrent_appends(store: MessageLogStore) -> None:
    writer = GroupCommitWriter(store, max_batch=256, max_delay_ms=2)
    try:
        recs = await asyncio.gather(*(writer.append(fields(i)) for i in range(1, 1001)))
    finally:
        await writer.close()
    seqs = [r.seq for r in recs]
    assert len(set(seqs)) == 1000
    assert sorted(seqs) == list(range(1, 1001))
    assert await store.count() == 1000
    stored = await store.range(1, 1000)
    assert sorted(recs, key=lambda r: r.seq) == stored
    assert verify_chain(stored) == []
    assert await store.verify(page_size=300) == []
    # Group commit actually happened: far fewer transactions than records.
    assert writer.stats.records == 1000
    assert writer.stats.batches <= 100, writer.stats


async def test_verify_while_appending_reports_nothing(store: MessageLogStore) -> None:
    writer = GroupCommitWriter(store, max_batch=8)
    appends = asyncio.gather(*(writer.append(fields(i)) for i in range(600)))
    try:
        for _ in range(20):
            assert await store.verify(page_size=50) == []
            await asyncio.sleep(0)
    finally:
        await appends
        await writer.close()
    assert await store.verify() == []


@pytest.mark.parametrize("column", ["body", "manifest", "signer_cert"])
async def test_one_flipped_byte_is_detected_and_named(store: MessageLogStore, backend: Backend, column: str) -> None:
    await append_n(store, 12)
    row = await backend.raw.fetch(7)
    blob = bytearray(row[column])
    blob[len(blob) // 2] ^= 0x01
    await backend.raw.update(7, **{column: bytes(blob)})
    problems = await store.verify()
    assert kinds(problems) == [("changed", 7, "m-7")], problems


async def test_deleted_row_is_detected(store: MessageLogStore, backend: Backend) -> None:
    await append_n(store, 12)
    await backend.raw.delete(5)
    problems = await store.verify()
    assert kinds(problems) == [("deleted", 5, None)], problems
    assert "m-4" in problems[0].detail and "m-6" in problems[0].detail


async def test_deleted_tail_is_detected(store: MessageLogStore, backend: Backend) -> None:
    await append_n(store, 12)
    await backend.raw.delete(12)
    await backend.raw.delete(11)
    problems = await store.verify()
    assert kinds(problems) == [("deleted", 11, None)], problems
    assert problems[0].end_seq == 12


async def test_deletion_hidden_by_renumbering_is_detected(store: MessageLogStore, backend: Backend) -> None:
    await append_n(store, 12)
    await backend.raw.delete(5)
    await backend.raw.renumber_from(6, -1)
    problems = await store.verify()
    assert ("deleted", 5, None) in kinds(problems), problems
    assert {p.kind for p in problems} <= {ProblemKind.DELETED, ProblemKind.RENUMBERED}


async def test_swapped_rows_are_detected_as_reordered(store: MessageLogStore, backend: Backend) -> None:
    await append_n(store, 12)
    a, b = await backend.raw.fetch(3), await backend.raw.fetch(9)
    await backend.raw.update(3, **{k: v for k, v in b.items() if k != "seq"})
    await backend.raw.update(9, **{k: v for k, v in a.items() if k != "seq"})
    problems = await store.verify()
    assert kinds(problems) == [("reordered", 3, "m-9"), ("reordered", 9, "m-3")], problems


async def test_inserted_forged_row_is_detected(store: MessageLogStore, backend: Backend) -> None:
    recs = await append_n(store, 12)
    # The strongest forger: makes room at seq 6 and chains the forged record correctly onto seq 5.
    await backend.raw.renumber_from(6, +1)
    forged = chain(recs[4].record_hash, 6, fields(666, tag="forged"))
    await backend.raw.insert(forged)
    problems = await store.verify()
    assert ("inserted", 6, "forged-666") in kinds(problems), problems
    assert {p.kind for p in problems} == {ProblemKind.INSERTED, ProblemKind.RENUMBERED}


async def test_forged_row_past_the_head_is_detected(store: MessageLogStore, backend: Backend) -> None:
    recs = await append_n(store, 5)
    await backend.raw.insert(chain(recs[-1].record_hash, 6, fields(6, tag="forged")))
    assert kinds(await store.verify()) == [("inserted", 6, "forged-6")]


async def test_body_none_stores_only_the_hash(store: MessageLogStore, backend: Backend) -> None:
    f = fields(1, log_body=False)
    full = fields(1)
    assert f.body is None and f.body_sha512 == full.body_sha512 == hashlib.sha512(full.body or b"").digest()
    await store.append_batch([f])
    row = await backend.raw.fetch(1)
    assert row["body"] is None
    assert bytes(row["body_sha512"]) == full.body_sha512
    assert (await store.by_xroad_id("m-1"))[0].body is None
    assert await store.verify() == []
    # The hash alone is still committed: changing it, or slipping a body in, breaks the chain.
    await backend.raw.update(1, body=full.body)
    assert kinds(await store.verify()) == [("changed", 1, "m-1")]
    await backend.raw.update(1, body=None, body_sha512=hashlib.sha512(b"other").digest())
    assert kinds(await store.verify()) == [("changed", 1, "m-1")]


async def test_retention_delete_through(store: MessageLogStore) -> None:
    recs = await append_n(store, 10)
    assert await store.delete_through(4) == 4
    assert await store.delete_through(3) == 0
    assert await store.count() == 6
    assert [r.seq for r in await store.range(1, 10)] == list(range(5, 11))
    state = await store.state()
    assert state.pruned == ChainHead(4, recs[3].record_hash)
    assert await store.verify() == []
    more = await store.append_batch([fields(11), fields(12)])
    assert [r.seq for r in more] == [11, 12] and more[0].prev_hash == recs[-1].record_hash
    # Pruning everything must not restart the chain: the head row keeps seq and hash.
    assert await store.delete_through(12) == 8
    assert await store.count() == 0 and await store.last() is None
    [after] = await store.append_batch([fields(13)])
    assert after.seq == 13 and after.prev_hash == more[-1].record_hash
    assert await store.verify() == []
    with pytest.raises(StoreError, match="chain head"):
        await store.delete_through(100)


async def test_retention_refuses_a_missing_anchor(store: MessageLogStore, backend: Backend) -> None:
    await append_n(store, 6)
    await backend.raw.delete(3)
    with pytest.raises(StoreError, match="missing"):
        await store.delete_through(3)
    assert await store.count() == 5


async def test_migrate_is_idempotent_refuses_newer_and_upgrades(store: MessageLogStore, backend: Backend) -> None:
    latest = len(store.migrations)  # type: ignore[attr-defined]
    assert await store.migrate() == latest
    assert await store.migrate() == latest
    assert await backend.raw.schema_versions() == list(range(1, latest + 1))
    upgraded = backend.make()
    upgraded.migrations = (  # type: ignore[attr-defined]
        *upgraded.migrations,  # type: ignore[attr-defined]
        Migration(latest + 1, "test upgrade", ("CREATE TABLE messagelog_upgrade_probe (x integer)",)),
    )
    await upgraded.open()
    try:
        assert await upgraded.migrate() == latest + 1
        assert await backend.raw.schema_versions() == list(range(1, latest + 2))
        with pytest.raises(SchemaError, match="newer"):
            await store.migrate()
    finally:
        await upgraded.close()
        # The PostgreSQL database is shared by the whole session: put it back.
        await backend.raw.execute(
            f"DELETE FROM schema_version WHERE component = 'messagelog' AND version = {latest + 1}"
        )
        await backend.raw.execute("DROP TABLE IF EXISTS messagelog_upgrade_probe")
    assert await store.migrate() == latest


async def test_two_nodes_of_one_gateway_keep_one_chain(store: MessageLogStore, backend: Backend) -> None:
    other = backend.make()
    await other.open()
    w1, w2 = GroupCommitWriter(store, max_batch=16), GroupCommitWriter(other, max_batch=16)
    try:
        recs = await asyncio.gather(
            *(w1.append(fields(i, tag="a")) for i in range(200)), *(w2.append(fields(i, tag="b")) for i in range(200))
        )
    finally:
        await w1.close()
        await w2.close()
        await other.close()
    assert sorted(r.seq for r in recs) == list(range(1, 401))
    assert await store.verify() == []


async def test_chains_are_per_gateway(store: MessageLogStore, backend: Backend) -> None:
    other = backend.make(gateway_id=f"{backend.gateway_id}-other")
    await other.open()
    try:
        if backend.name == "sqlite":
            await store.append_batch([fields(1)])
            with pytest.raises(StoreError, match="holds the message log of gateway"):
                await other.append_batch([fields(1)])
            return
        mine, theirs = await asyncio.gather(append_n(store, 20, tag="a"), append_n(other, 20, tag="b"))
        assert [r.seq for r in mine] == [r.seq for r in theirs] == list(range(1, 21))
        assert await store.verify() == [] and await other.verify() == []
        assert await store.by_xroad_id("b-3") == [] and await store.count() == 20
    finally:
        await other.close()


# -- the writer --------------------------------------------------------------------------------------------------


class GatedStore(MessageLogStore):
    """Delegates to a real store, but can hold appends at a gate or fail chosen calls."""

    def __init__(self, inner: MessageLogStore, fail_calls: Sequence[int] = ()) -> None:
        self.inner = inner
        self.gateway_id = inner.gateway_id
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0
        self.last_batch = 0
        self.fail_calls = set(fail_calls)

    async def append_batch(self, batch: Sequence[LogFields]) -> list[LogRecord]:
        self.calls += 1
        self.last_batch = len(batch)
        await self.gate.wait()
        if self.calls in self.fail_calls:
            raise ConnectionError("database went away")
        return await self.inner.append_batch(batch)

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def migrate(self) -> int:
        return await self.inner.migrate()

    async def state(self) -> ChainState:
        return await self.inner.state()

    async def last(self) -> LogRecord | None:
        return await self.inner.last()

    async def by_xroad_id(self, xroad_id: str) -> list[LogRecord]:
        return await self.inner.by_xroad_id(xroad_id)

    async def range(self, from_seq: int, to_seq: int) -> list[LogRecord]:
        return await self.inner.range(from_seq, to_seq)

    async def count(self) -> int:
        return await self.inner.count()

    async def delete_through(self, seq: int) -> int:
        return await self.inner.delete_through(seq)

    async def record_hashes(self, from_seq: int, to_seq: int) -> list[tuple[int, bytes]]:
        return await self.inner.record_hashes(from_seq, to_seq)

    async def add_timestamp(self, stamp: TimestampRecord) -> bool:
        return await self.inner.add_timestamp(stamp)

    async def timestamps(self, from_seq: int, to_seq: int) -> list[TimestampRecord]:
        return await self.inner.timestamps(from_seq, to_seq)

    async def add_archive(self, archive: ArchiveRecord) -> None:
        await self.inner.add_archive(archive)

    async def archives(self) -> list[ArchiveRecord]:
        return await self.inner.archives()


async def test_failed_commit_fails_every_waiter_of_that_batch(store: MessageLogStore) -> None:
    flaky = GatedStore(store, fail_calls=[2])
    writer = GroupCommitWriter(flaky, max_batch=10)
    try:
        first = await writer.append(fields(0))
        flaky.gate.clear()  # hold the next commit so that 10 records gather into batch 2
        tasks = [asyncio.create_task(writer.append(fields(i))) for i in range(1, 21)]
        await asyncio.sleep(0.01)
        flaky.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await writer.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    stored = [r for r in results if isinstance(r, LogRecord)]
    assert len(failed) == 10 and all(isinstance(e, MessageLogWriteError) for e in failed)
    assert all(isinstance(e.__cause__, ConnectionError) for e in failed)
    assert len(stored) == 10, "the writer must go on after a failed batch"
    assert writer.stats.failed_batches == 1 and writer.stats.failed_records == 10
    # Nothing of the failed batch reached the log, and what did forms one unbroken chain.
    assert await store.count() == 11
    assert sorted(r.seq for r in [first, *stored]) == list(range(1, 12))
    assert await store.verify() == []


async def test_writer_back_pressure_bounds_the_queue(store: MessageLogStore) -> None:
    gated = GatedStore(store)
    gated.gate.clear()
    writer = GroupCommitWriter(gated, max_batch=4, max_queue=8)
    tasks = [asyncio.create_task(writer.append(fields(i))) for i in range(50)]
    await asyncio.sleep(0.05)
    assert writer.pending <= 8
    assert not any(t.done() for t in tasks)
    gated.gate.set()
    recs = await asyncio.gather(*tasks)
    await writer.close()
    assert sorted(r.seq for r in recs) == list(range(1, 51))
    assert writer.stats.largest_batch <= 4
    assert await store.verify() == []


async def test_writer_commits_each_call_whole_and_counts_pending_records(store: MessageLogStore) -> None:
    gated = GatedStore(store)
    gated.gate.clear()
    writer = GroupCommitWriter(gated, max_batch=4, max_queue=100)
    tasks = [asyncio.create_task(writer.append_many([fields(3 * i), fields(3 * i + 1), fields(3 * i + 2)]))
             for i in range(10)]
    await asyncio.sleep(0.05)
    # The first batch is held at the gate: two whole calls, so six records although max_batch is 4. Everything
    # else waits in the queue, counted in records, not calls.
    assert gated.last_batch == 6
    assert writer.pending == 24
    gated.gate.set()
    results = await asyncio.gather(*tasks)
    await writer.close()
    for records in results:  # a call's records are consecutive: they went into one transaction, in order
        seqs = [r.seq for r in records]
        assert seqs == list(range(seqs[0], seqs[0] + 3))
    assert writer.pending == 0
    assert sorted(r.seq for records in results for r in records) == list(range(1, 31))
    assert await store.verify() == []


async def test_writer_close_flushes_and_then_refuses(store: MessageLogStore) -> None:
    writer = GroupCommitWriter(store, max_batch=32, max_queue=64)
    tasks = [asyncio.create_task(writer.append(fields(i))) for i in range(300)]
    await asyncio.sleep(0)
    await writer.close()
    assert all(t.done() for t in tasks)
    assert sorted(t.result().seq for t in tasks) == list(range(1, 301))
    assert await store.count() == 300
    with pytest.raises(WriterClosed):
        await writer.append(fields(301))


# -- durability across kill -9 -----------------------------------------------------------------------------------

CHILD = r"""
import asyncio, sys, time
sys.path.insert(0, sys.argv[5])
from tests.test_messagelog_store import fields
from gateway.messagelog.writer import GroupCommitWriter

async def main(kind, target, gateway_id, sync):
    if kind == "sqlite":
        from gateway.messagelog.sqlite_store import SqliteMessageLogStore
        store = SqliteMessageLogStore(target, gateway_id, synchronous=sync)
    else:
        from gateway.messagelog.postgres_store import PostgresMessageLogStore
        store = PostgresMessageLogStore(target, gateway_id)
    await store.open()
    await store.migrate()
    writer = GroupCommitWriter(store, max_batch=64)
    deadline = time.monotonic() + 60  # the parent kills us long before; this bounds a run gone wrong
    out = sys.stdout

    async def producer(p):
        for i in range(100_000):
            if time.monotonic() > deadline:
                return
            rec = await writer.append(fields(p * 100_000 + i, tag="k"))
            out.write(f"{rec.seq} {rec.xroad_id}\n")
            out.flush()

    await asyncio.gather(*(producer(p) for p in range(32)))

asyncio.run(main(*sys.argv[1:5]))
"""


@pytest.mark.parametrize("mode", ["sqlite-FULL", "sqlite-NORMAL", "postgres"])
async def test_acknowledged_records_survive_kill_9(mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    kind, _, sync = mode.partition("-")
    gw = f"gw-kill-{secrets.token_hex(4)}"
    target = request.getfixturevalue("pg_dsn") if kind == "postgres" else str(tmp_path / "kill.sqlite")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, kind, target, gw, sync or "FULL", str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    acked: dict[int, str] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    try:
        while len(acked) < 2000 and loop.time() < deadline:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            if not line:
                break
            seq, xroad_id = line.decode().split()
            acked[int(seq)] = xroad_id
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
    rest = await asyncio.wait_for(proc.stdout.read(), timeout=30)
    err = await proc.stderr.read()
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    for line in rest.split(b"\n")[:-1]:  # the last piece is empty or a line the kill cut short
        seq, xroad_id = line.decode().split()
        acked[int(seq)] = xroad_id
    assert len(acked) >= 2000, f"only {len(acked)} acknowledged before the kill: {err.decode()[-2000:]}"

    store: MessageLogStore = (
        SqliteMessageLogStore(target, gw) if kind == "sqlite" else PostgresMessageLogStore(target, gw)
    )
    async with store:
        state = await store.state()
        stored = {r.seq: r.xroad_id for r in await store.range(1, state.last.seq)}
        missing = {s: x for s, x in acked.items() if stored.get(s) != x}
        assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing.items())[:5]}"
        assert max(acked) <= state.last.seq
        assert len(stored) == state.last.seq
        assert await store.verify() == []
