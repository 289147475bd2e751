"""A gateway's operational monitoring: records queued without waiting, written in batches by one task, pruned by age."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from gateway.monitoring import metrics, oprecords
from gateway.monitoring.opstore import OpStore

log = logging.getLogger("wasl.opmon")


def open_store(store: str, path: Path | None, dsn: str | None, state_dir: Path, gateway_id: str) -> OpStore:
    """The configured store: a SQLite file (default ``<state_dir>/opmon.db``) or a PostgreSQL database."""
    if store == "postgresql":
        from gateway.monitoring.opstore_postgres import PostgresOpStore

        assert dsn is not None
        return PostgresOpStore(dsn, gateway_id)
    from gateway.monitoring.opstore_sqlite import SqliteOpStore

    path = path or state_dir / "opmon.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteOpStore(path, gateway_id)


class OpMonitor:
    """Takes one record per finished exchange and never makes the exchange wait for it.

    ``record`` only appends to a bounded list; a single task commits what accumulated every ``flush_seconds`` (or
    at once when ``batch_size`` records wait). When the store falls behind and the list is full, new records are
    dropped and counted (wasl_opmon_dropped_records_total): monitoring must not slow or fail the traffic it watches.
    """

    def __init__(self, store: OpStore, server_id: str, *, retention_seconds: float = 7 * 24 * 3600,
                 batch_size: int = 500, max_pending: int = 50_000, flush_seconds: float = 0.1,
                 prune_every_seconds: float = 300.0) -> None:
        self.store = store
        self.server_id = server_id
        self.retention_seconds = retention_seconds
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.flush_seconds = flush_seconds
        self.prune_every_seconds = prune_every_seconds
        self._pending: list[oprecords.OpRecord] = []
        self._in_flight = 0
        self._wake: asyncio.Event | None = None
        self._hurry = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.written = 0
        self.dropped = 0
        self._last_error_log = 0.0

    # -- the request path ---------------------------------------------------------------------------------------

    def record(self, exchange: Any, *, total_s: float, client_member: str, service: str, status: int,
               fault_code: str, request_bytes: int, response_bytes: int) -> None:
        """Called by metrics.Exchange.finish: build the record and queue it (no I/O, no waiting)."""
        manifest = exchange.manifest
        if oprecords.is_operational_query(manifest.service if manifest is not None else service):
            return
        if self._closing or self._wake is None:
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            metrics.OPMON_DROPPED.inc()
            return
        self._pending.append(oprecords.build(
            side=exchange.side, started_ms=exchange.started_ms, total_s=total_s, waited_s=exchange.backend_seconds,
            wait_ended_ms=exchange.wait_ended_ms, manifest=manifest, fallback_client=client_member,
            fallback_service=service, protocol=exchange.protocol, status=status, fault_code=fault_code,
            fault_message=exchange.fault_message, request_bytes=request_bytes, response_bytes=response_bytes,
            own_server=self.server_id, peer_server=exchange.peer_server))
        if len(self._pending) == 1 or len(self._pending) >= self.batch_size:
            self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------------------------------

    async def open(self) -> None:
        await self.store.open()
        await self.store.migrate()
        self._wake = asyncio.Event()
        self._tasks = [asyncio.create_task(self._write_forever(), name="opmon-writer"),
                       asyncio.create_task(self._prune_forever(), name="opmon-retention")]

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._tasks:
            writer, pruner = self._tasks
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(writer, 10)
        self._tasks = []
        await self.store.close()

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until what this process queued so far is committed: a query then sees its own records."""
        deadline = time.monotonic() + timeout
        self._hurry = True
        if self._wake is not None and self._pending:
            self._wake.set()
        while (self._pending or self._in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)

    @property
    def pending(self) -> int:
        return len(self._pending) + self._in_flight

    # -- the tasks --------------------------------------------------------------------------------------------------

    async def _write_forever(self) -> None:
        assert self._wake is not None
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            if len(self._pending) < self.batch_size and not (self._closing or self._hurry):
                # Let records accumulate: one transaction per hundreds of records, not one per record.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
                self._wake.clear()
            self._hurry = False
            batch, self._pending = self._pending[:self.batch_size], self._pending[self.batch_size:]
            self._in_flight = len(batch)
            try:
                await self.store.insert(batch)
                self.written += len(batch)
                metrics.OPMON_WRITTEN.inc(len(batch))
            except Exception as exc:  # statistics are lost, the traffic is not: log (at most every 10 s) and go on
                self.dropped += len(batch)
                metrics.OPMON_DROPPED.inc(len(batch))
                now = time.monotonic()
                if now - self._last_error_log > 10:
                    self._last_error_log = now
                    log.error("operational records not written (%d dropped): %r", len(batch), exc)
            finally:
                self._in_flight = 0

    async def _prune_forever(self) -> None:
        while True:
            try:
                cutoff = int((time.time() - self.retention_seconds) * 1000)
                while await self.store.delete_before(cutoff) >= 10_000:
                    await asyncio.sleep(0)  # big backlogs go in slices, so writers get the lock in between
            except Exception as exc:
                log.warning("operational-record retention failed: %r", exc)
            await asyncio.sleep(self.prune_every_seconds)


def from_settings(settings: Any) -> OpMonitor | None:
    """The gateway's OpMonitor from its GatewaySettings, or None when operational monitoring is off. The store
    follows the message log's choice (SQLite or PostgreSQL) unless op_monitoring names its own."""
    op = settings.op_monitoring
    if not op.enabled:
        return None
    mlog = settings.message_log
    store = op.store or mlog.store
    dsn = op.dsn or mlog.dsn
    return OpMonitor(open_store(store, op.path, dsn, settings.state_dir, settings.server), settings.server,
                     retention_seconds=op.retention_hours * 3600, batch_size=op.batch_size,
                     max_pending=op.max_pending, flush_seconds=op.flush_seconds)
