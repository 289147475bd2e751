"""Message-log records and their SHA-256 hash chain: canonical encoding, chaining and verification, with no I/O."""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

GENESIS = bytes(32)
"""The prev_hash of the first record of every chain."""

HASH_LEN = 32
DIRECTIONS = frozenset({"request", "response"})
SIDES = frozenset({"client", "provider"})

# A domain tag in front of every encoding, so a record hash can never collide with a hash of some other structure
# and a future encoding (v2) can never be confused with this one.
_TAG = b"wasl.messagelog.record.v1\x00"
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_ABSENT = b"\x00"
_PRESENT = b"\x01"
# An encrypted body (see bodycrypt.py): the chain commits to the stored ciphertext, and to the plaintext's SHA-512
# through body_sha512, so it verifies without the key. Plaintext and absent bodies encode exactly as before.
_ENCRYPTED = b"\x02"


@dataclass(frozen=True, slots=True)
class LogFields:
    """What a caller hands to the store: one message's record before the store gives it a seq and chains it."""

    created_ms: int
    direction: str
    side: str
    xroad_id: str
    request_id: str
    client: str
    service: str
    manifest: bytes
    signature: bytes
    signer_cert: bytes
    body: bytes | None
    body_sha512: bytes
    body_encrypted: bool = False  # body holds bodycrypt ciphertext of the plaintext whose SHA-512 is body_sha512

    def __post_init__(self) -> None:
        # Checked once, here, so that a record whose body fails its own hash can never reach the chain, where it
        # would read as tampering forever after; the writer and the stores rely on it and do not check again.
        check_fields(self)

    @classmethod
    def for_message(
        cls,
        *,
        created_ms: int,
        direction: str,
        side: str,
        xroad_id: str,
        request_id: str,
        client: str,
        service: str,
        manifest: bytes,
        signature: bytes,
        signer_cert: bytes,
        body: bytes,
        log_body: bool = True,
        body_sha512: bytes | None = None,
        body_encrypted: bool = False,
    ) -> LogFields:
        """Build fields from a raw body; with ``log_body=False`` only the body's SHA-512 is kept.

        Pass ``body_sha512`` only when it was computed from exactly these bytes (say, the digest in a manifest this
        gateway made or verified): it is then trusted, not recomputed. A wrong one would make the record read as
        tampered forever after. With ``body_encrypted`` the body is bodycrypt ciphertext and ``body_sha512`` (the
        plaintext's) is required.
        """
        if body_encrypted and body_sha512 is None:
            raise RecordError("an encrypted body needs the plaintext's body_sha512")
        fields = cls(
            created_ms=created_ms,
            direction=direction,
            side=side,
            xroad_id=xroad_id,
            request_id=request_id,
            client=client,
            service=service,
            manifest=manifest,
            signature=signature,
            signer_cert=signer_cert,
            body=None,
            body_sha512=hashlib.sha512(body).digest() if body_sha512 is None else body_sha512,
        )
        if body_encrypted and log_body:
            return dataclasses.replace(fields, body=body, body_encrypted=True)
        if log_body:
            if not isinstance(body, bytes):
                raise RecordError(f"body must be bytes, not {type(body).__name__}")
            # The digest was made from this very body (above, or by the caller): attaching the body afterwards spares
            # __post_init__ a second SHA-512 (~8 µs for 2 KB, the largest cost of building a record).
            object.__setattr__(fields, "body", body)
        return fields


class LogRecord(NamedTuple):
    """One stored, chained message-log record.

    A named tuple rather than a frozen dataclass: just as immutable, and it is built for every record chained or
    read, where a frozen dataclass paid ~2.7 µs for its sixteen guarded attribute writes and a tuple ~0.4 µs. Its
    field order is the store's column order (store.RECORD_COLUMNS), so a record is its own row."""

    seq: int
    created_ms: int
    direction: str
    side: str
    xroad_id: str
    request_id: str
    client: str
    service: str
    manifest: bytes
    signature: bytes
    signer_cert: bytes
    body: bytes | None
    body_sha512: bytes
    prev_hash: bytes
    record_hash: bytes
    body_encrypted: bool = False

    @property
    def fields(self) -> LogFields:
        """The record without seq and hashes; raises RecordError for a record whose body fails its own hash."""
        return LogFields(
            self.created_ms,
            self.direction,
            self.side,
            self.xroad_id,
            self.request_id,
            self.client,
            self.service,
            self.manifest,
            self.signature,
            self.signer_cert,
            self.body,
            self.body_sha512,
            bool(self.body_encrypted),
        )


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A point in a chain: the seq of a record and its record_hash (seq 0 with GENESIS before the first record)."""

    seq: int
    hash: bytes


class ProblemKind(StrEnum):
    CHANGED = "changed"  # the record's content no longer matches its hash, or it was rewritten with a new hash
    DELETED = "deleted"  # records are missing: a seq gap, or the tail before the known chain head
    REORDERED = "reordered"  # an intact record sits at a seq that is not its own
    RENUMBERED = "renumbered"  # a run of intact records shifted to make room for an insert or to hide a delete
    INSERTED = "inserted"  # a record that is not part of the chain
    BROKEN_LINK = "broken_link"  # a record does not commit to its predecessor's hash


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """One finding of verify_chain; ``seq`` is the stored seq (for DELETED the first missing seq, to ``end_seq``)."""

    kind: ProblemKind
    seq: int
    xroad_id: str | None
    detail: str
    end_seq: int | None = None

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.end_seq is None else f"seqs {self.seq}..{self.end_seq}"
        who = f" xroad_id={self.xroad_id!r}" if self.xroad_id is not None else ""
        return f"{self.kind}: {where}{who}: {self.detail}"


class RecordError(ValueError):
    """Fields that cannot be logged as given (bad direction, side, hash length, or a body that fails its SHA-512)."""


_SEQ_AND_TIME = struct.Struct(">qq")


@functools.lru_cache(maxsize=1024)
def _prefixed(text: str) -> bytes:
    """A text field as its length and its UTF-8 bytes. Cached for the few values that recur in every record
    (direction, side, client, service)."""
    data = text.encode("utf-8")
    return _U64.pack(len(data)) + data


def _pieces(seq: int, f: LogFields | LogRecord, prev_hash: bytes) -> tuple[bytes, ...]:
    # Every variable-length field carries its length, so no two field tuples share an encoding. Laid out as one
    # tuple for a single join, as this is the chain's hot path (one generator over the fields cost ~20% more).
    pack = _U64.pack
    xroad_id, request_id = f.xroad_id.encode("utf-8"), f.request_id.encode("utf-8")
    body = f.body
    if body is None:
        # An absent body differs from an empty one; the body's SHA-512 below is committed either way.
        body_head, body = _ABSENT, b""
    else:
        body_head = (_ENCRYPTED if f.body_encrypted else _PRESENT) + pack(len(body))
    return (
        _TAG, _SEQ_AND_TIME.pack(seq, f.created_ms), _prefixed(f.direction), _prefixed(f.side),
        pack(len(xroad_id)), xroad_id, pack(len(request_id)), request_id, _prefixed(f.client), _prefixed(f.service),
        pack(len(f.manifest)), f.manifest, pack(len(f.signature)), f.signature, pack(len(f.signer_cert)),
        f.signer_cert, body_head, body, pack(len(f.body_sha512)), f.body_sha512, pack(len(prev_hash)), prev_hash,
    )


def canonical_bytes(record: LogRecord) -> bytes:
    """The unambiguous, length-prefixed encoding of every field of ``record`` except record_hash."""
    return b"".join(_pieces(record.seq, record, record.prev_hash))


def _hash(seq: int, f: LogFields | LogRecord, prev_hash: bytes) -> bytes:
    # test_record_hashes_keep_their_v1_encoding pins the result.
    return hashlib.sha256(prev_hash + b"".join(_pieces(seq, f, prev_hash))).digest()


def compute_hash(record: LogRecord, seq: int | None = None) -> bytes:
    """SHA-256(prev_hash || canonical_bytes(record)), optionally as if the record had ``seq``."""
    return _hash(record.seq if seq is None else seq, record, record.prev_hash)


def check_fields(f: LogFields) -> None:
    """Raise RecordError unless ``f`` is loggable (LogFields runs this when built)."""
    # Wrong types would otherwise surface only when the batch is chained, failing every other record in it.
    if not isinstance(f.created_ms, int):
        raise RecordError(f"created_ms must be an int, not {type(f.created_ms).__name__}")
    for name in ("direction", "side", "xroad_id", "request_id", "client", "service"):
        if not isinstance(getattr(f, name), str):
            raise RecordError(f"{name} must be a str, not {type(getattr(f, name)).__name__}")
    for name in ("manifest", "signature", "signer_cert", "body_sha512"):
        if not isinstance(getattr(f, name), bytes):
            raise RecordError(f"{name} must be bytes, not {type(getattr(f, name)).__name__}")
    if f.body is not None and not isinstance(f.body, bytes):
        raise RecordError(f"body must be bytes or None, not {type(f.body).__name__}")
    if not isinstance(f.body_encrypted, bool):
        raise RecordError(f"body_encrypted must be a bool, not {type(f.body_encrypted).__name__}")
    if f.body_encrypted and f.body is None:
        raise RecordError("body_encrypted is set but there is no body")
    if f.direction not in DIRECTIONS:
        raise RecordError(f"direction must be one of {sorted(DIRECTIONS)}, not {f.direction!r}")
    if f.side not in SIDES:
        raise RecordError(f"side must be one of {sorted(SIDES)}, not {f.side!r}")
    if len(f.body_sha512) != 64:
        raise RecordError(f"body_sha512 must be 64 bytes, not {len(f.body_sha512)}")
    if f.body is not None and not f.body_encrypted and hashlib.sha512(f.body).digest() != f.body_sha512:
        raise RecordError(f"body_sha512 does not match the body of xroad_id {f.xroad_id!r}")


def chain(prev_hash: bytes, seq: int, fields: LogFields) -> LogRecord:
    """Return ``fields`` as record ``seq`` chained onto ``prev_hash``."""
    if len(prev_hash) != HASH_LEN:
        raise RecordError(f"prev_hash must be {HASH_LEN} bytes, not {len(prev_hash)}")
    f = fields
    return LogRecord(
        seq,
        f.created_ms,
        f.direction,
        f.side,
        f.xroad_id,
        f.request_id,
        f.client,
        f.service,
        f.manifest,
        f.signature,
        f.signer_cert,
        f.body,
        f.body_sha512,
        prev_hash,
        _hash(seq, f, prev_hash),
        f.body_encrypted,
    )


def chain_many(head: ChainHead, batch: Sequence[LogFields]) -> list[LogRecord]:
    """Chain ``batch`` in order on top of ``head``, giving seqs head.seq+1, head.seq+2, ..."""
    out: list[LogRecord] = []
    prev, seq = head.hash, head.seq
    for fields in batch:
        seq += 1
        rec = chain(prev, seq, fields)
        out.append(rec)
        prev = rec.record_hash
    return out


def _intact(r: LogRecord, seq: int) -> bool:
    if len(r.prev_hash) != HASH_LEN or len(r.record_hash) != HASH_LEN:
        return False
    if r.body is not None and not r.body_encrypted and hashlib.sha512(r.body).digest() != r.body_sha512:
        return False
    return _hash(seq, r, r.prev_hash) == r.record_hash


def _gaps(lo: int, hi: int, occupied: set[int]) -> list[tuple[int, int]]:
    """The runs (first, last) of ints in [lo, hi] not in ``occupied``, never materialising the range itself."""
    out: list[tuple[int, int]] = []
    expect = lo
    for s in sorted(v for v in occupied if lo <= v <= hi):
        if s > expect:
            out.append((expect, s - 1))
        expect = s + 1
    if expect <= hi:
        out.append((expect, hi))
    return out


def verify_chain(
    records: Iterable[LogRecord],
    start_prev_hash: bytes = GENESIS,
    *,
    start_seq: int | None = None,
    end: ChainHead | None = None,
) -> list[ChainProblem]:
    """Check records (in stored seq order) against their hashes and links; return one problem per finding.

    ``start_prev_hash`` is the hash the first record must link to (GENESIS, or the retention anchor); ``start_seq``
    the seq it must have (default: whatever the first record has). ``end``, the chain head the store recorded,
    catches a truncated or extended tail, which hashes alone cannot: the chain has no secret, so anyone who can
    write the table can append or rewrite a consistent suffix. Only an external anchor (a timestamp over a
    record_hash) closes that gap.

    Each record's "true seq" is the seq under which its hash verifies: its stored seq if intact in place, else the
    seq implied by the record it links to, by its neighbour, or by a small shift. Records whose hash verifies under
    no candidate are CHANGED; intact ones at another seq are REORDERED (or RENUMBERED, when the shift is explained
    by inserted or deleted rows); true seqs nobody holds are DELETED; two records claiming one true seq mean one
    is INSERTED. Memory is linear in the number of records: verify a long log in pages (MessageLogStore.verify).
    """
    recs = list(records)
    problems: list[ChainProblem] = []
    if not recs:
        if end is not None and start_seq is not None and end.seq >= start_seq:
            problems.append(
                ChainProblem(
                    ProblemKind.DELETED, start_seq, None, f"no records, but the chain head is at seq {end.seq}", end.seq
                )
            )
        return problems

    n = len(recs)
    first_seq = recs[0].seq if start_seq is None else start_seq
    referenced = {r.prev_hash for r in recs}

    true: list[int | None] = [r.seq if _intact(r, r.seq) else None for r in recs]

    children: dict[bytes, list[int]] = {}
    for i, r in enumerate(recs):
        children.setdefault(r.prev_hash, []).append(i)

    def propagate(work: list[int]) -> None:
        while work:
            j = work.pop()
            nxt = true[j] + 1  # type: ignore[operator]
            for c in children.get(recs[j].record_hash, ()):
                if true[c] is None and _intact(recs[c], nxt):
                    true[c] = nxt
                    work.append(c)

    def settle(i: int, s: int) -> bool:
        """Try true seq ``s`` for record i; on success, propagate along the links to the records that follow it."""
        if true[i] is not None or not _intact(recs[i], s):
            return False
        true[i] = s
        propagate([i])
        return True

    # Each record's true seq follows from the one it links to, so resolution walks the links out from every intact
    # record (a worklist, not repeated passes: a fully reversed log costs O(n) hashes, not O(n^2)).
    propagate([i for i in range(n) if true[i] is not None])
    for i in children.get(start_prev_hash, ()):
        settle(i, first_seq)
    # What links to nothing left (the first record after a hidden deletion) gets its neighbour's successor or a
    # small shift; a second pass picks up records whose left neighbour resolved only later in the first.
    for _ in range(2):
        for i in range(n):
            if true[i] is not None:
                continue
            seq = recs[i].seq
            tries = [true[i - 1] + 1] if i > 0 and true[i - 1] is not None else []  # type: ignore[operator]
            tries += [seq + d for d in (1, -1, 2, -2, 3, -3)]
            for s in dict.fromkeys(tries):
                if settle(i, s):
                    break
    unresolved = [i for i in range(n) if true[i] is None]

    for i in unresolved:
        r = recs[i]
        problems.append(ChainProblem(ProblemKind.CHANGED, r.seq, r.xroad_id, "content does not match its record_hash"))

    # Which records hold each true seq; the genuine one among several is the one its successor (or the chain
    # head) commits to.
    holders: dict[int, list[int]] = {}
    for i in range(n):
        t = true[i]
        if t is not None:
            holders.setdefault(t, []).append(i)
    inserted: set[int] = set()
    genuine: dict[int, int] = {}
    end_hash = end.hash if end is not None else None
    for t, idx in holders.items():
        if len(idx) == 1:
            genuine[t] = idx[0]
            continue
        linked = [i for i in idx if recs[i].record_hash in referenced or recs[i].record_hash == end_hash]
        if len(linked) == 1:
            genuine[t] = linked[0]
            forged = [i for i in idx if i != linked[0]]
            why = f"a second record claims seq {t}, and the chain continues from the other one"
        else:
            forged = idx
            why = f"{len(idx)} records claim seq {t} and the chain cannot tell which is genuine"
        for i in forged:
            inserted.add(i)
            problems.append(ChainProblem(ProblemKind.INSERTED, recs[i].seq, recs[i].xroad_id, why))

    if end is not None:
        for t, i in genuine.items():
            if t > end.seq:
                inserted.add(i)
                problems.append(
                    ChainProblem(
                        ProblemKind.INSERTED, recs[i].seq, recs[i].xroad_id, f"beyond the chain head at seq {end.seq}"
                    )
                )
        at_end = genuine.get(end.seq)
        if at_end is not None and recs[at_end].record_hash != end.hash:
            problems.append(
                ChainProblem(
                    ProblemKind.CHANGED,
                    recs[at_end].seq,
                    recs[at_end].xroad_id,
                    "the chain head recorded a different hash for this seq (rewritten with a new hash)",
                )
            )

    # Seqs no genuine record holds. A CHANGED record is assumed to sit at its own seq.
    occupied = {t for t, i in genuine.items() if i not in inserted}
    occupied.update(recs[i].seq for i in unresolved)
    top = max(occupied) if occupied else first_seq - 1
    if end is not None:
        top = max(top, end.seq)
    gaps = _gaps(first_seq, top, occupied)
    for lo, hi in gaps:
        before = genuine.get(lo - 1)
        after = genuine.get(hi + 1)
        ctx = []
        if before is not None:
            ctx.append(f"after seq {lo - 1} (xroad_id {recs[before].xroad_id!r})")
        if after is not None:
            ctx.append(f"before seq {hi + 1} (xroad_id {recs[after].xroad_id!r})")
        what = f"{hi - lo + 1} record(s) missing"
        if hi == top and end is not None:
            what += " at the tail, up to the chain head"
        problems.append(ChainProblem(ProblemKind.DELETED, lo, None, " ".join([what, *ctx]), hi if hi != lo else None))
    gap_starts = [lo for lo, _ in gaps]
    gap_sizes_before = [0]
    for lo, hi in gaps:
        gap_sizes_before.append(gap_sizes_before[-1] + hi - lo + 1)

    def missing_below(t: int) -> int:
        k = bisect.bisect_left(gap_starts, t)
        if k == 0:
            return 0
        lo, hi = gaps[k - 1]
        return gap_sizes_before[k - 1] + min(hi, t - 1) - lo + 1

    # Records away from their own seq. A shift equal to (inserted rows before it) - (deleted seqs before it) is the
    # renumbering an insert or a hidden delete needs; report such a run once. Any other displacement is a reorder.
    inserted_positions = sorted(inserted)
    run: list[int] = []

    def flush_run() -> None:
        if not run:
            return
        a, b = recs[run[0]], recs[run[-1]]
        shift = a.seq - true[run[0]]  # type: ignore[operator]
        problems.append(
            ChainProblem(
                ProblemKind.RENUMBERED,
                a.seq,
                a.xroad_id,
                f"{len(run)} intact record(s) stored {shift:+d} from their own seqs",
                b.seq if b is not a else None,
            )
        )
        run.clear()

    for i in range(n):
        t = true[i]
        r = recs[i]
        if t is None or i in inserted or t == r.seq:
            flush_run()
            continue
        expected_shift = bisect.bisect_left(inserted_positions, i) - missing_below(t)
        if expected_shift != 0 and r.seq - t == expected_shift:
            if run and (true[run[-1]] != t - 1 or run[-1] != i - 1):
                flush_run()
            run.append(i)
            continue
        flush_run()
        problems.append(
            ChainProblem(ProblemKind.REORDERED, r.seq, r.xroad_id, f"holds the record whose own seq is {t}")
        )
    flush_run()

    # Links between genuine neighbours. Only intact records are checked: a changed one is already named, and a link
    # into a missing seq is already a deletion.
    for t, i in sorted(genuine.items()):
        if i in inserted:
            continue
        r = recs[i]
        if t == first_seq:
            if r.prev_hash != start_prev_hash:
                problems.append(
                    ChainProblem(
                        ProblemKind.BROKEN_LINK,
                        r.seq,
                        r.xroad_id,
                        "does not link to the expected start of the chain (start hash or retention anchor)",
                    )
                )
            continue
        p = genuine.get(t - 1)
        if p is None or p in inserted:
            continue
        if r.prev_hash != recs[p].record_hash:
            problems.append(
                ChainProblem(
                    ProblemKind.BROKEN_LINK,
                    r.seq,
                    r.xroad_id,
                    f"does not commit to the hash of seq {recs[p].seq} (xroad_id {recs[p].xroad_id!r}): "
                    "one of the two was rewritten with a recomputed hash, or this one was forged",
                )
            )
    problems.sort(key=lambda p: (p.seq, p.kind))
    return problems
