"""A gateway's message log: opens the configured store, and logs each signed message durably before it moves on."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gateway.core.faults import Code, Fault, Origin
from gateway.core.settings import MessageLogSettings
from gateway.messagelog.records import LogFields
from gateway.messagelog.store import MessageLogStore
from gateway.messagelog.writer import GroupCommitWriter, MessageLogWriteError

log = logging.getLogger("wasl.messagelog")


def open_store(settings: MessageLogSettings, state_dir: Path, gateway_id: str) -> MessageLogStore:
    if settings.store == "postgresql":
        from gateway.messagelog.postgres_store import PostgresMessageLogStore

        assert settings.dsn is not None
        return PostgresMessageLogStore(settings.dsn, gateway_id)
    from gateway.messagelog.sqlite_store import SqliteMessageLogStore

    path = settings.path or state_dir / "messagelog.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteMessageLogStore(path, gateway_id)


class GatewayMessageLog:
    """Every signed request and response a gateway sends or receives goes through ``record``; it returns only
    once the records are durable (group commit keeps that cheap under load)."""

    def __init__(self, settings: MessageLogSettings, state_dir: Path, gateway_id: str) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.store = open_store(settings, state_dir, gateway_id) if settings.enabled else None
        self.writer: GroupCommitWriter | None = None

    async def open(self) -> None:
        if self.store is None:
            return
        await self.store.open()
        await self.store.migrate()
        # A few milliseconds of linger under load turn one transaction per record into one per dozens
        # (measured with bench/exchange.py); a gateway without traffic still commits at once.
        self.writer = GroupCommitWriter(self.store, linger_ms=4.0)
        self.writer.start()

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        if self.store is not None:
            await self.store.close()

    async def record(self, *fields: LogFields, origin: Origin) -> None:
        if self.writer is None:
            return
        try:
            if len(fields) == 1:
                await self.writer.append(fields[0])
            else:
                await asyncio.gather(*(self.writer.append(f) for f in fields))
        except MessageLogWriteError as exc:
            log.error("message log write failed: %s", exc.__cause__ or exc)
            raise Fault(origin, Code.LOGGING_FAILED, "the message could not be written to the message log") from None
