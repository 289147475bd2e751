"""The timestamper task of a gateway: stamps new log records in Merkle batches at a TSA of the global configuration.

Every ``timestamp_interval_seconds`` (and at start) it plans batches of at most ``timestamp_max_records`` from the
end of the stamped prefix to the chain head, asks the configured TSAs in order for an RFC 3161 token over each
batch's digest (stamping.batch_digest), checks the token against that TSA's certificate from the global
configuration, and stores it (store.add_timestamp), which moves the stamped prefix on. While it fails, it retries
more often and its StampHealth tells the message log when to refuse new messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
from cryptography import x509

from gateway.core.timestamp import TimestampError, verify_timestamp_response
from gateway.messagelog import merkle
from gateway.messagelog.stamping import StampHealth, StampState, batch_digest, plan_batches
from gateway.messagelog.store import MessageLogStore, StoreError, TimestampRecord

log = logging.getLogger("wasl.messagelog.timestamper")

# While failing, retry at least this often, so that a TSA that comes back is noticed soon even with a long interval.
RETRY_SECONDS = 10.0
# Merkle trees over more leaves than this are built in a thread (10,000 leaves take ~15 ms of SHA-256).
_INLINE_LEAVES = 512


@dataclass(frozen=True)
class TsaEndpoint:
    """A timestamping authority listed in the global configuration."""

    name: str
    url: str
    certificate: x509.Certificate


# (session, url, digest, timeout) -> DER token; gateway.trust.tsa.request_timestamp fits, via a lambda.
TsaClient = Callable[[aiohttp.ClientSession, str, bytes, float], Awaitable[bytes]]


class TimestamperFailed(RuntimeError):
    """Records could not be timestamped (the message says why)."""


class _NoConfiguration(Exception):
    """No global configuration is held yet, so no TSA is known: not a timestamping failure, just too early."""


class Timestamper:
    def __init__(self, store: MessageLogStore, gateway_id: str, *, interval_seconds: float, max_records: int,
                 timeout_seconds: float, grace_seconds: float | None,
                 tsa_source: Callable[[], Sequence[TsaEndpoint] | None], tsa_client: TsaClient,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.gateway_id = gateway_id
        self.interval = interval_seconds
        self.max_records = max_records
        self.timeout = timeout_seconds
        self.grace = grace_seconds
        self.tsa_source = tsa_source
        self.tsa_client = tsa_client
        self.clock = clock
        self.health = StampHealth()
        self.tokens = 0  # tokens stored by this process
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._waiting_for_conf = False

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- what the message log asks on every message (no I/O) ------------------------------------------------------

    def state(self) -> StampState:
        return self.health.state(self.now_ms(), self.grace)

    def describe(self) -> str:
        return self.health.describe(self.now_ms(), self.grace)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self, run: bool = True) -> None:
        """Open the HTTP session and (unless ``run`` is False: stamp only when called) start the periodic task."""
        self._session = aiohttp.ClientSession()
        if run:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="messagelog-timestamper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        """Stamp now rather than at the next interval."""
        self._wake.set()

    async def _run(self) -> None:
        delay = 0.0  # a backlog left by the last run (or an outage) is stamped at once
        while True:
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            await self.stamp_pending()
            if self._waiting_for_conf:
                delay = min(self.interval, 0.5)
            elif self.health.failing_since_ms is None:
                delay = self.interval
            else:
                delay = min(self.interval, RETRY_SECONDS)

    # -- stamping -------------------------------------------------------------------------------------------------

    async def stamp_pending(self) -> bool:
        """Stamp everything up to the current head; True on success (also when there was nothing to do)."""
        async with self._lock:
            return await self._stamp_locked()

    async def stamp_through(self, seq: int) -> None:
        """Return once record ``seq`` is covered by a token (immediate timestamping); raise TimestamperFailed.
        Concurrent callers share the attempts: whoever holds the lock stamps everything up to the head."""
        if self.health.stamped_seq >= seq:
            return
        async with self._lock:
            if self.health.stamped_seq >= seq:
                return
            if not await self._stamp_locked() or self.health.stamped_seq < seq:
                raise TimestamperFailed(self.health.last_error or f"record {seq} is not timestamped")

    async def _stamp_locked(self) -> bool:
        stamped = self.health.stamped_seq
        self._waiting_for_conf = False
        try:
            for _ in range(8):  # another node of this gateway may stamp the same range first: re-plan and go on
                state = await self.store.state()
                stamped = state.stamped_seq
                raced = False
                for first, last in plan_batches(stamped, state.last.seq, self.max_records):
                    stamp = await self._stamp_batch(first, last)
                    if not await self.store.add_timestamp(stamp):
                        raced = True
                        break
                    self.tokens += 1
                    stamped = last
                    log.debug("timestamped seqs %d..%d at %s", first, last, stamp.tsa_name)
                if not raced:
                    break
            state = await self.store.state()
            backlog = state.last.seq - state.stamped_seq
            self.health.succeeded(self.now_ms(), state.stamped_seq, backlog,
                                  await self._oldest_unstamped(state.stamped_seq) if backlog else None)
            return True
        except _NoConfiguration:
            # Just started: the global configuration is still being loaded. Not a failure; try again soon.
            self._waiting_for_conf = True
            self.health.last_error = "no global configuration yet, so no timestamping authority is known"
            return False
        except (TimestampError, StoreError, OSError, aiohttp.ClientError) as exc:
            await self._failed(str(exc), stamped)
            return False
        except Exception as exc:  # a bug must not kill the task that keeps the gateway's log timestamped
            log.exception("timestamping failed unexpectedly")
            await self._failed(f"internal error: {exc!r}", stamped)
            return False

    async def _failed(self, error: str, stamped: int) -> None:
        backlog, oldest = self.health.backlog, self.health.oldest_unstamped_ms
        with contextlib.suppress(Exception):  # the store may be what failed
            state = await self.store.state()
            stamped = state.stamped_seq
            backlog = state.last.seq - stamped
            oldest = await self._oldest_unstamped(stamped) if backlog else None
        first = self.health.failing_since_ms is None
        self.health.failed(self.now_ms(), error, stamped, backlog, oldest)
        (log.warning if first else log.info)("timestamping failed (%d record(s) wait): %s", backlog, error)

    async def _oldest_unstamped(self, stamped_seq: int) -> int | None:
        rows = await self.store.range(stamped_seq + 1, stamped_seq + 1)
        return rows[0].created_ms if rows else None

    async def _stamp_batch(self, first: int, last: int) -> TimestampRecord:
        leaves = await self.store.record_hashes(first, last)
        if [s for s, _ in leaves] != list(range(first, last + 1)):
            raise StoreError(f"records of seqs {first}..{last} are missing: the batch cannot be timestamped")
        hashes = [h for _, h in leaves]
        root = merkle.root(hashes) if len(hashes) <= _INLINE_LEAVES else await asyncio.to_thread(merkle.root, hashes)
        digest = batch_digest(self.gateway_id, first, last, root)
        listed = self.tsa_source()
        if listed is None:
            raise _NoConfiguration
        endpoints = list(listed)
        if not endpoints:
            raise TimestampError("no timestamping authority is listed in the global configuration")
        if self._session is None:
            raise TimestampError("the timestamper is not started")
        errors = []
        for tsa in endpoints:
            try:
                token = await self.tsa_client(self._session, tsa.url, digest, self.timeout)
                # Pinned to the certificate the global configuration lists for this TSA.
                info = verify_timestamp_response(token, digest, [tsa.certificate])
            except TimestampError as exc:
                errors.append(f"{tsa.name}: {exc}")
                continue
            return TimestampRecord(first, last, root, token, tsa.name, tsa.url,
                                   int(info.gen_time.timestamp() * 1000), self.now_ms())
        raise TimestampError("; ".join(errors))
