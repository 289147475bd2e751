"""Audit-trail entries and their SHA-256 hash chain: canonical encoding, chaining and verification, with no I/O."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64
RESULTS = frozenset({"ok", "failed", "refused"})


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One administrative action. ``prev`` and ``hash`` chain it to the entry before, so an edit anywhere shows."""

    seq: int
    at: str  # ISO 8601, UTC
    actor: str  # who: an operating-system user, a certificate subject, a member id, or "policy:auto-approve"
    action: str  # what, dotted: "registration.approve", "pki.revoke", "key.rotate", "config.reload"
    target: str  # what it acted on: a request id, a member path, a certificate serial
    result: str  # "ok", "failed" or "refused"
    detail: Mapping[str, Any] = field(default_factory=dict)
    prev: str = GENESIS
    hash: str = ""

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "actor": self.actor, "action": self.action, "target": self.target,
                "result": self.result, "detail": dict(self.detail), "prev": self.prev}

    def to_line(self) -> bytes:
        return json.dumps({**self.body(), "hash": self.hash}, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _digest(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(b"wasl.audit.v1\x00" + canonical).hexdigest()


def chain(previous: AuditEntry | None, *, actor: str, action: str, target: str, result: str,
          detail: Mapping[str, Any] | None = None, at: dt.datetime | None = None) -> AuditEntry:
    """The entry that follows ``previous`` (None for the first), with its hash computed."""
    if result not in RESULTS:
        raise ValueError(f"audit result must be one of {sorted(RESULTS)}, not {result!r}")
    when = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="milliseconds")
    entry = AuditEntry(seq=(previous.seq + 1) if previous else 1, at=when, actor=actor, action=action,
                       target=target, result=result, detail=dict(detail or {}),
                       prev=previous.hash if previous else GENESIS)
    return AuditEntry(**{**entry.body(), "hash": _digest(entry.body())})


def parse_line(line: bytes | str) -> AuditEntry:
    data = json.loads(line)
    return AuditEntry(seq=int(data["seq"]), at=str(data["at"]), actor=str(data["actor"]),
                      action=str(data["action"]), target=str(data["target"]), result=str(data["result"]),
                      detail=dict(data.get("detail") or {}), prev=str(data["prev"]), hash=str(data["hash"]))


def verify(entries: Iterable[AuditEntry]) -> list[str]:
    """Every break in the chain, as a sentence naming the entry; an empty list means the trail is intact."""
    problems: list[str] = []
    expected_prev, expected_seq = GENESIS, 1
    for entry in entries:
        if entry.seq != expected_seq:
            problems.append(f"entry {entry.seq}: expected sequence number {expected_seq} (missing or reordered)")
        if entry.prev != expected_prev:
            problems.append(f"entry {entry.seq}: does not follow the entry before it")
        if _digest(entry.body()) != entry.hash:
            problems.append(f"entry {entry.seq}: its content was changed after it was written")
        expected_prev, expected_seq = entry.hash, entry.seq + 1
    return problems
