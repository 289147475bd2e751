"""A gateway's message log: opens the configured store, and logs each signed message durably before it moves on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.core.faults import Code, Fault, Origin
from gateway.core.settings import MessageLogSettings
from gateway.messagelog.bodycrypt import BodyKey, BodyKeyError, encrypt_fields
from gateway.messagelog.records import LogFields
from gateway.messagelog.stamping import StampState
from gateway.messagelog.store import MessageLogStore
from gateway.messagelog.timestamper import Timestamper, TimestamperFailed, TsaClient, TsaEndpoint
from gateway.messagelog.writer import GroupCommitWriter, MessageLogWriteError

log = logging.getLogger("wasl.messagelog")
# Bodies larger than this are encrypted in a thread (AES-GCM runs at ~1 GB/s: 1 MB is about a millisecond).
_INLINE_ENCRYPT_BYTES = 256 * 1024


def open_store(settings: MessageLogSettings, state_dir: Path, gateway_id: str) -> MessageLogStore:
    if settings.store == "postgresql":
        from gateway.messagelog.postgres_store import PostgresMessageLogStore

        assert settings.dsn is not None
        return PostgresMessageLogStore(settings.dsn, gateway_id)
    from gateway.messagelog.sqlite_store import SqliteMessageLogStore

    path = settings.path or state_dir / "messagelog.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteMessageLogStore(path, gateway_id)


def load_body_key(settings: MessageLogSettings) -> BodyKey | None:
    """The key that encrypts bodies at rest, from ``body_key_file`` or ``body_key_env``; None when neither is set.
    Raises BodyKeyError naming the source (never the key)."""
    if settings.body_key_file is not None:
        try:
            text = settings.body_key_file.read_bytes()
        except OSError as exc:
            raise BodyKeyError(f"{settings.body_key_file}: cannot read the body key: {exc.strerror}") from None
        return BodyKey.parse(text, str(settings.body_key_file))
    if settings.body_key_env is not None:
        value = os.environ.get(settings.body_key_env)
        if value is None:
            raise BodyKeyError(f"environment variable {settings.body_key_env} (the body key) is not set")
        return BodyKey.parse(value, f"environment variable {settings.body_key_env}")
    return None


class GatewayMessageLog:
    """Every signed request and response a gateway sends or receives goes through ``record``; it returns only
    once the records are durable (group commit keeps that cheap under load).

    ``record`` also enforces timestamping: once timestamping has failed for longer than the grace period it refuses
    new messages with ``LoggingFailed.TimestamperFailed``, and for services with immediate timestamping it returns
    only once a token covers the records.
    """

    def __init__(self, settings: MessageLogSettings, state_dir: Path, gateway_id: str, *,
                 immediate_services: frozenset[str] = frozenset(),
                 not_immediate_services: frozenset[str] = frozenset(),
                 tsa_source: Callable[[], Sequence[TsaEndpoint] | None] | None = None,
                 tsa_client: TsaClient | None = None) -> None:
        """``immediate_services``: unversioned service paths (INST/CLASS/CODE/SUB/code) stamped at once;
        ``not_immediate_services``: services whose own setting turns the gateway-wide default off;
        ``tsa_source`` lists the TSAs of the current global configuration (None while there is none yet);
        ``tsa_client`` asks one TSA for a token."""
        self.settings = settings
        self.gateway_id = gateway_id
        self.enabled = settings.enabled
        self.store = open_store(settings, state_dir, gateway_id) if settings.enabled else None
        self.writer: GroupCommitWriter | None = None
        self.timestamper: Timestamper | None = None
        self.body_key: BodyKey | None = None
        self._immediate_all = settings.timestamp_immediately
        self._immediate = immediate_services
        self._not_immediate = not_immediate_services
        self._tsa_source = tsa_source or (lambda: ())
        self._tsa_client = tsa_client

    async def open(self) -> None:
        if self.store is None:
            return
        self.body_key = await asyncio.to_thread(load_body_key, self.settings)
        await self.store.open()
        await self.store.migrate()
        # Under load a short linger lets the records of the next few loop turns join the batch (fewer commits);
        # a longer one parks every waiting exchange at once and leaves the cores idle. Measured with two gateways
        # under wrk on 2 cores: 4 ms: ~1700 exchanges/s at 30% idle; 0.3 ms: ~1900 at 20% idle; 0: about as
        # fast, at ~10% more CPU per exchange. A gateway without traffic commits at once.
        self.writer = GroupCommitWriter(self.store, linger_ms=0.3)
        self.writer.start()
        if self.settings.timestamping:
            if self._tsa_client is None:
                raise ValueError("timestamping is on but no TSA client was given")
            s = self.settings
            self.timestamper = Timestamper(
                self.store, self.gateway_id, interval_seconds=s.timestamp_interval_seconds,
                max_records=s.timestamp_max_records, timeout_seconds=s.timestamp_timeout_seconds,
                grace_seconds=s.timestamp_grace_seconds, tsa_source=self._tsa_source, tsa_client=self._tsa_client)
            await self.timestamper.start()

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        if self.timestamper is not None:
            # A clean stop leaves the log stamped through its last record, if the TSA answers promptly.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.timestamper.stamp_pending(),
                                       min(5.0, self.settings.timestamp_timeout_seconds))
            await self.timestamper.close()
        if self.store is not None:
            await self.store.close()

    def timestamping_problem(self) -> tuple[bool, str] | None:
        """None while timestamping works (or is off); else (refusing, description) for /readyz."""
        ts = self.timestamper
        if ts is None:
            return None
        state = ts.state()
        if state is StampState.OK:
            return None
        return state is StampState.FAILED, ts.describe()

    def _immediate_for(self, fields: Sequence[LogFields]) -> bool:
        if not self._immediate_all and not self._immediate:
            return False
        # A service path is INST/CLASS/CODE/SUB/code[/version]; the setting ignores the version.
        services = {"/".join(f.service.split("/", 5)[:5]) for f in fields}
        if self._immediate_all:
            return not services <= self._not_immediate  # a service's own ``false`` overrides the default
        return bool(services & self._immediate)

    async def record(self, *fields: LogFields, origin: Origin) -> None:
        if self.writer is None:
            return
        ts = self.timestamper
        if ts is not None and ts.state() is StampState.FAILED:
            raise Fault(origin, Code.TIMESTAMPER_FAILED, "the message log cannot get its records timestamped: "
                        "new messages are refused until the timestamping authority is reachable again")
        if self.body_key is not None:
            key = self.body_key
            if sum(len(f.body or b"") for f in fields) <= _INLINE_ENCRYPT_BYTES:
                fields = tuple(encrypt_fields(key, f) for f in fields)
            else:
                fields = tuple(await asyncio.to_thread(lambda: [encrypt_fields(key, f) for f in fields]))
        try:
            records = await self.writer.append_many(fields)
        except MessageLogWriteError as exc:
            log.error("message log write failed: %s", exc.__cause__ or exc)
            raise Fault(origin, Code.LOGGING_FAILED, "the message could not be written to the message log") from None
        if ts is not None and self._immediate_for(fields):
            try:
                await ts.stamp_through(max(r.seq for r in records))
            except TimestamperFailed as exc:
                log.error("immediate timestamping failed: %s", exc)
                raise Fault(origin, Code.TIMESTAMPER_FAILED,
                            "the message could not be timestamped immediately, as this service requires") from None
