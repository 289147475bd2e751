"""The development CA's certificate status database: which certificates it issued, and which it revoked."""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from gateway.core.ocsp import Status
from gateway.storage import sqlite_base

REASONS = {r.name: r for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl}


@dataclass(frozen=True)
class Revocation:
    serial: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags


class StatusDatabase:
    """Issued and revoked certificates of one CA, in ``<ca dir>/status.db``. Each call opens its own connection,
    so the CLI and a running responder can share the file."""

    def __init__(self, ca_dir: Path) -> None:
        self.path = Path(ca_dir) / "status.db"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS issued (serial TEXT PRIMARY KEY, subject TEXT NOT NULL, "
                   "not_after TEXT NOT NULL, issued_at TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS revoked (serial TEXT PRIMARY KEY, revoked_at TEXT NOT NULL, "
                   "reason TEXT NOT NULL)")
        return db

    def record_issued(self, cert: x509.Certificate) -> None:
        with closing(self._connect()) as db:
            db.execute("INSERT OR IGNORE INTO issued VALUES (?, ?, ?, ?)",
                       (f"{cert.serial_number:x}", cert.subject.rfc4514_string(),
                        cert.not_valid_after_utc.isoformat(), dt.datetime.now(dt.UTC).isoformat()))

    def revoke(self, serial: int, reason: x509.ReasonFlags, at: dt.datetime | None = None) -> Revocation:
        """Mark ``serial`` revoked; raise KeyError if this CA never issued it, ValueError if already revoked."""
        when = (at or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        def insert(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM issued WHERE serial = ?", (f"{serial:x}",)).fetchone() is None:
                raise KeyError(f"this CA has no record of issuing serial {serial:x}")
            if db.execute("SELECT 1 FROM revoked WHERE serial = ?", (f"{serial:x}",)).fetchone():
                raise ValueError(f"serial {serial:x} is already revoked")
            db.execute("INSERT INTO revoked VALUES (?, ?, ?)", (f"{serial:x}", when.isoformat(), reason.name))

        with closing(self._connect()) as db:
            sqlite_base.transaction(db, insert)
        return Revocation(serial, when, reason)

    def status(self, serial: int) -> tuple[Status, Revocation | None]:
        with closing(self._connect()) as db:
            row = db.execute("SELECT revoked_at, reason FROM revoked WHERE serial = ?", (f"{serial:x}",)).fetchone()
            if row is not None:
                return Status.REVOKED, Revocation(serial, dt.datetime.fromisoformat(row[0]),
                                                  x509.ReasonFlags[row[1]])
            known = db.execute("SELECT 1 FROM issued WHERE serial = ?", (f"{serial:x}",)).fetchone()
        return (Status.GOOD if known else Status.UNKNOWN), None
