"""The audit-trail file: append one entry at a time, durably, and read the whole trail back."""

from __future__ import annotations

import getpass
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gateway.audit.entries import AuditEntry, chain, parse_line


def current_user() -> str:
    """The operating-system user behind a CLI action, as the audit trail's "who"."""
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"os:uid={os.getuid()}"


class AuditTrail:
    """An append-only JSON Lines file, one hash-chained entry per line, fsynced before ``record`` returns.

    Administrative actions are rare, so each is written and synced on its own: an action that returned is on disk.
    Records are serialised by a lock and by an exclusive flock, so CLI commands and servers can share one file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, *, actor: str, action: str, target: str, result: str,
               detail: Mapping[str, Any] | None = None) -> AuditEntry:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                entry = chain(self._last(fd), actor=actor, action=action, target=target, result=result,
                              detail=detail)
                os.write(fd, entry.to_line())
                os.fsync(fd)
                return entry
            finally:
                os.close(fd)  # also releases the flock

    @staticmethod
    def _last(fd: int) -> AuditEntry | None:
        size = os.lseek(fd, 0, os.SEEK_END)
        if size == 0:
            return None
        # Read back from the end until a whole last line is in hand; entries are small.
        chunk = 4096
        while True:
            start = max(0, size - chunk)
            data = os.pread(fd, size - start, start)
            lines = data.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or start == 0:
                return parse_line(lines[-1])
            chunk *= 2

    def entries(self) -> Iterator[AuditEntry]:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    yield parse_line(line)
