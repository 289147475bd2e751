"""Timestamping decisions without I/O: which batches to stamp, what a token covers, and when to refuse messages."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

BATCH_TAG = b"wasl.messagelog.batch.v1\x00"
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


def batch_digest(gateway_id: str, first_seq: int, last_seq: int, merkle_root: bytes) -> bytes:
    """The SHA-256 a batch's RFC 3161 token stamps (its message imprint).

    It binds the Merkle root of the batch's record hashes to the gateway and to the seq range, so a token can be
    neither moved to another gateway's log nor to another stretch of this one. ``openssl ts -verify -digest`` takes
    this value in hex.
    """
    gw = gateway_id.encode("utf-8")
    return hashlib.sha256(
        BATCH_TAG + _U64.pack(len(gw)) + gw + _I64.pack(first_seq) + _I64.pack(last_seq) + merkle_root
    ).digest()


def plan_batches(stamped_seq: int, head_seq: int, max_records: int) -> list[tuple[int, int]]:
    """The (first_seq, last_seq) ranges that stamp everything after ``stamped_seq`` up to the head, each at most
    ``max_records`` long, oldest first. A backlog after an outage becomes several full batches and one remainder."""
    if max_records < 1:
        raise ValueError("max_records must be >= 1")
    out = []
    first = stamped_seq + 1
    while first <= head_seq:
        last = min(head_seq, first + max_records - 1)
        out.append((first, last))
        first = last + 1
    return out


class StampState(IntEnum):
    """The value of the ``wasl_messagelog_timestamping_state`` gauge."""

    OK = 0  # every attempt so far succeeded (or nothing needed stamping)
    FAILING = 1  # the last attempt failed; messages are still accepted within the grace period
    FAILED = 2  # failing for longer than the grace period: new messages are refused


@dataclass(slots=True)
class StampHealth:
    """What the timestamper knows about its own progress. Times are Unix milliseconds, passed in (no clock here).

    ``failing_since_ms`` is when the current run of failures began; ``oldest_unstamped_ms`` is the created_ms of
    the oldest record still waiting for a token. The grace period counts from the earlier of the two, so it also
    survives a restart: a gateway restarted during an outage does not get a fresh grace period, because its oldest
    waiting record is as old as before.
    """

    failing_since_ms: int | None = None
    oldest_unstamped_ms: int | None = None
    last_error: str | None = None
    last_success_ms: int | None = None
    backlog: int = 0  # records not yet covered by a token
    stamped_seq: int = 0

    def succeeded(self, now_ms: int, stamped_seq: int, backlog: int, oldest_unstamped_ms: int | None) -> None:
        self.failing_since_ms = None
        self.last_error = None
        self.last_success_ms = now_ms
        self.stamped_seq = stamped_seq
        self.backlog = backlog
        self.oldest_unstamped_ms = oldest_unstamped_ms

    def failed(self, now_ms: int, error: str, stamped_seq: int, backlog: int, oldest_unstamped_ms: int | None) -> None:
        if self.failing_since_ms is None:
            self.failing_since_ms = now_ms
        self.last_error = error
        self.stamped_seq = stamped_seq
        self.backlog = backlog
        self.oldest_unstamped_ms = oldest_unstamped_ms

    def failing_for_ms(self, now_ms: int) -> int:
        """How long the grace period has been running (0 while timestamping works)."""
        if self.failing_since_ms is None:
            return 0
        start = self.failing_since_ms
        if self.oldest_unstamped_ms is not None:
            start = min(start, self.oldest_unstamped_ms)
        return max(0, now_ms - start)

    def state(self, now_ms: int, grace_seconds: float | None) -> StampState:
        """OK, FAILING (within the grace period) or FAILED (refuse new messages). ``grace_seconds=None`` never
        refuses."""
        if self.failing_since_ms is None:
            return StampState.OK
        if grace_seconds is not None and self.failing_for_ms(now_ms) > grace_seconds * 1000:
            return StampState.FAILED
        return StampState.FAILING

    def describe(self, now_ms: int, grace_seconds: float | None) -> str:
        """One line for /readyz, faults and logs."""
        state = self.state(now_ms, grace_seconds)
        if state is StampState.OK:
            return "timestamping ok"
        failing = self.failing_for_ms(now_ms) / 1000
        grace = "no grace limit" if grace_seconds is None else f"grace period {grace_seconds:g} s"
        verdict = "new messages are refused" if state is StampState.FAILED else "messages are still accepted"
        return (f"timestamping failing for {failing:.0f} s ({grace}; {verdict}); {self.backlog} record(s) wait "
                f"for a token; last error: {self.last_error}")
