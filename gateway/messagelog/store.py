"""The message-log store interface: append chained records durably, read them back, prune, and migrate the schema."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from gateway.messagelog.records import GENESIS, ChainHead, ChainProblem, LogFields, LogRecord, verify_chain

COMPONENT = "messagelog"
"""This component's key in the shared ``schema_version`` table."""

RECORD_COLUMNS: tuple[str, ...] = LogRecord._fields
"""The message-log table's columns, in the order of a LogRecord: a record is its row."""


class StoreError(RuntimeError):
    """The store cannot do what was asked (wrong gateway, damaged log, not open); the message says why."""


class SchemaError(StoreError):
    """The database schema is newer than this code, or not migrated."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChainState:
    """Where one gateway's chain stands: its head, the anchor left by retention (seq 0 and GENESIS if none), and
    ``stamped_seq``, the end of the prefix that timestamp tokens cover (seq 0 if none)."""

    gateway_id: str
    last: ChainHead
    pruned: ChainHead
    stamped_seq: int = 0

    @classmethod
    def empty(cls, gateway_id: str) -> ChainState:
        return cls(gateway_id, ChainHead(0, GENESIS), ChainHead(0, GENESIS))


@dataclass(frozen=True, slots=True)
class TimestampRecord:
    """One RFC 3161 token over the Merkle root of the record hashes of seqs first_seq..last_seq (a batch).

    The token stamps ``stamping.batch_digest(gateway_id, first_seq, last_seq, merkle_root)``; see merkle.py and
    docs/messagelog.md.
    """

    first_seq: int
    last_seq: int
    merkle_root: bytes
    token: bytes  # DER ContentInfo (a TimeStampToken), certificates included
    tsa_name: str
    tsa_url: str
    gen_time_ms: int  # the token's genTime
    created_ms: int  # when this gateway stored it


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """An archive file written by ``wasl log archive``: its seq range and the SHA-256 of its manifest, which the
    next archive's manifest links to."""

    first_seq: int
    last_seq: int
    name: str
    manifest_sha256: bytes
    last_created_ms: int  # created_ms of the newest record in it: retention counts from here
    created_ms: int


def check_migrations(migrations: Sequence[Migration]) -> int:
    """Return the newest version, after checking versions run 1, 2, 3, ... with no gap (a typo must not skip one)."""
    for i, m in enumerate(migrations, start=1):
        if m.version != i:
            raise SchemaError(f"migration list out of order: position {i} holds version {m.version}")
    return len(migrations)


class MessageLogStore(abc.ABC):
    """One gateway's tamper-evident message log.

    ``append_batch`` chains its records on top of the gateway's chain head and commits them, with the new head, in
    one transaction; when it returns, the records are durable. The chain head lives in its own row rather than being
    derived from the last record, so retention can delete every record without restarting the chain, and a missing
    tail is detectable (see ``verify``).
    """

    gateway_id: str

    async def __aenter__(self) -> MessageLogStore:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect. Call ``migrate()`` before the first use of a new database."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> int:
        """Create or upgrade the schema; return its version. Safe to call on every start and from several nodes."""

    @abc.abstractmethod
    async def append_batch(self, batch: Sequence[LogFields]) -> list[LogRecord]:
        """Chain ``batch`` in order after the current head and commit it in ONE transaction; durable on return."""

    @abc.abstractmethod
    async def state(self) -> ChainState:
        """The chain head and retention anchor of this gateway."""

    @abc.abstractmethod
    async def last(self) -> LogRecord | None:
        """The stored record with the highest seq, or None when there is none (empty, or pruned away)."""

    @abc.abstractmethod
    async def by_xroad_id(self, xroad_id: str) -> list[LogRecord]:
        """Every record of one message id (request and response, either side), in seq order."""

    @abc.abstractmethod
    async def range(self, from_seq: int, to_seq: int) -> list[LogRecord]:
        """Records with from_seq <= seq <= to_seq, in seq order."""

    @abc.abstractmethod
    async def count(self) -> int:
        """How many records are stored (counted, not derived from the head)."""

    @abc.abstractmethod
    async def delete_through(self, seq: int) -> int:
        """Retention: delete records with seq <= ``seq`` (and the timestamp tokens wholly within them), remember
        record ``seq``'s hash as the anchor the rest verifies from, and return how many records were deleted.
        Raises StoreError beyond the head, or if record ``seq`` is missing (its hash would be lost)."""

    @abc.abstractmethod
    async def record_hashes(self, from_seq: int, to_seq: int) -> list[tuple[int, bytes]]:
        """(seq, record_hash) of the records with from_seq <= seq <= to_seq, in seq order: the Merkle leaves."""

    @abc.abstractmethod
    async def add_timestamp(self, stamp: TimestampRecord) -> bool:
        """Store a token and move ``stamped_seq`` to its last_seq, in one transaction, if it continues the stamped
        prefix (first_seq == stamped_seq + 1, last_seq <= head); return False, storing nothing, if another node
        stamped that range first. Raises StoreError for a range that does not fit the chain."""

    @abc.abstractmethod
    async def timestamps(self, from_seq: int, to_seq: int) -> list[TimestampRecord]:
        """The stored tokens whose batches overlap from_seq..to_seq, in seq order."""

    @abc.abstractmethod
    async def add_archive(self, archive: ArchiveRecord) -> None:
        """Remember an archive written; it must continue the last one (first_seq == its last_seq + 1) and lie
        within the stamped prefix, else StoreError."""

    @abc.abstractmethod
    async def archives(self) -> list[ArchiveRecord]:
        """Every archive remembered, in seq order."""

    async def verify(self, page_size: int = 10_000) -> list[ChainProblem]:
        """Verify the whole stored chain, page by page, from the retention anchor to the recorded head."""
        # The newest record is read before the head: appends landing in between then raise the head, not the stored
        # maximum, so a live log yields no false "inserted past the head". (A prune running meanwhile can still show
        # as a deletion: verify a log that is not being pruned.)
        newest = await self.last()
        state = await self.state()
        top = max(state.last.seq, newest.seq if newest is not None else 0)
        problems: list[ChainProblem] = []
        prev_hash, next_seq = state.pruned.hash, state.pruned.seq + 1
        frm = next_seq
        while frm <= top:
            to = min(frm + page_size - 1, top)
            page = await self.range(frm, to)
            final = to >= top
            found = verify_chain(page, prev_hash, start_seq=next_seq, end=state.last if final else None)
            problems.extend(found)
            if page:
                # The next page continues from this page's last stored record: a gap spanning an empty page is then
                # still reported once, by the next page that has records (or by the head check).
                prev_hash, next_seq = page[-1].record_hash, page[-1].seq + 1
            frm = to + 1
        return problems
