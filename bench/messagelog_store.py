"""Benchmark the message log: group-commit writer vs one transaction per record, on SQLite and PostgreSQL, one run.

    python bench/messagelog_store.py [--n 20000] [--producers 200] [--time-limit 60] [--no-postgres]

Every run starts from an empty store, appends ``n`` records with a ~2 KB body from ``producers`` concurrent tasks,
and stops early at ``--time-limit`` seconds (rows/s is then over what was done). The baseline is the same load
calling ``store.append_batch([record])`` directly: one transaction, and one fsync, per record. Figures drift from
run to run on a shared 2-core machine, so compare the ratios printed in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from gateway.messagelog.postgres_store import PostgresMessageLogStore
from gateway.messagelog.records import LogFields
from gateway.messagelog.sqlite_store import SqliteMessageLogStore
from gateway.messagelog.store import MessageLogStore
from gateway.messagelog.writer import GroupCommitWriter

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def make_records(n: int, body_size: int) -> list[LogFields]:
    cert = os.urandom(600)  # about a P-256 signing certificate in DER
    out = []
    for i in range(n):
        body = (f'<SOAP-ENV:Envelope id="{i}">'.encode() + os.urandom(body_size))[:body_size]
        out.append(
            LogFields.for_message(
                created_ms=int(time.time() * 1000),
                direction="request" if i % 2 else "response",
                side="client",
                xroad_id=f"bench-{i}",
                request_id=f"req-{i}",
                client="WASL/GOV/1234/portal",
                service="WASL/COM/5678/registry/getPerson/v1",
                manifest=b'{"alg":"ES256","body":"' + hashlib.sha256(body).hexdigest().encode() + b'"}',
                signature=os.urandom(72),
                signer_cert=cert,
                body=body,
            )
        )
    return out


@dataclass
class Result:
    label: str
    rows: int
    seconds: float
    latencies_ms: list[float]
    loop_lag_ms: list[float]
    batches: int | None
    problems: int

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat) if lat else 0.0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        lag = max(self.loop_lag_ms, default=0.0)
        batches = f"{self.batches:>6}" if self.batches is not None else f"{self.rows:>6}"
        return (
            f"{self.label:<34} {self.rows:>6} rows {self.seconds:7.2f} s {self.rate:>9,.0f} rows/s  "
            f"append p50/p99 {p50:6.2f}/{p99:7.2f} ms  txns {batches}  loop lag max {lag:5.1f} ms  "
            f"chain {'ok' if self.problems == 0 else f'{self.problems} PROBLEMS'}"
        )


async def _lag_monitor(samples: list[float], stop: asyncio.Event) -> None:
    # How late a 1 ms sleep wakes: a store that blocked the event loop on disk would show here.
    loop = asyncio.get_running_loop()
    while not stop.is_set() and len(samples) < 1_000_000:
        t0 = loop.time()
        await asyncio.sleep(0.001)
        samples.append(max(0.0, (loop.time() - t0 - 0.001) * 1000))


async def drive(
    label: str,
    store: MessageLogStore,
    records: list[LogFields],
    producers: int,
    time_limit: float,
    use_writer: bool,
) -> Result:
    writer = GroupCommitWriter(store) if use_writer else None
    append: Callable[[LogFields], Awaitable[object]]
    if writer is not None:
        append = writer.append
    else:

        async def append(f: LogFields) -> object:
            return await store.append_batch([f])

    next_index: Iterator[int] = iter(range(len(records)))
    latencies: list[float] = []
    deadline = time.perf_counter() + time_limit

    async def producer() -> None:
        for i in next_index:  # shared iterator: bounded by the record count, and by the deadline below
            if time.perf_counter() > deadline:
                return
            t0 = time.perf_counter()
            await append(records[i])
            latencies.append((time.perf_counter() - t0) * 1000)

    lag: list[float] = []
    stop = asyncio.Event()
    monitor = asyncio.create_task(_lag_monitor(lag, stop))
    t0 = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    if writer is not None:
        await writer.close()
    seconds = time.perf_counter() - t0
    stop.set()
    await monitor
    problems = await store.verify()
    return Result(
        label,
        len(latencies),
        seconds,
        latencies,
        lag,
        writer.stats.batches if writer is not None else None,
        len(problems),
    )


@asynccontextmanager
async def pg_database(admin_dsn: str):  # type: ignore[no-untyped-def]
    name = f"wasl_bench_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--producers", type=int, default=200)
    ap.add_argument("--body-size", type=int, default=2048)
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds, per run")
    ap.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()

    records = make_records(args.n, args.body_size)
    row_bytes = sum(len(f.manifest) + len(f.signature) + len(f.signer_cert) + len(f.body or b"") for f in records[:100])
    print(
        f"{args.n} records (~{row_bytes // 100} B of blobs each, {args.body_size} B body), {args.producers} producers, "
        f"{os.cpu_count()} CPUs, loop {type(asyncio.get_running_loop()).__module__}"
    )
    results: dict[str, Result] = {}

    with tempfile.TemporaryDirectory(prefix="wasl-bench-") as tmp:
        for sync in ("FULL", "NORMAL"):
            for use_writer in (True, False):
                label = f"sqlite {sync} {'group commit' if use_writer else 'txn per record'}"
                path = Path(tmp) / f"{sync}-{use_writer}.sqlite"
                async with SqliteMessageLogStore(path, "bench", synchronous=sync) as store:
                    await store.migrate()
                    results[label] = r = await drive(label, store, records, args.producers, args.time_limit, use_writer)
                print(r.line(), flush=True)

    if not args.no_postgres:
        try:
            async with pg_database(args.pg_admin_dsn) as dsn:
                for use_writer in (True, False):
                    label = f"postgres {'group commit' if use_writer else 'txn per record'}"
                    async with PostgresMessageLogStore(dsn, f"bench-{use_writer}", max_size=10) as store:
                        await store.migrate()
                        r = await drive(label, store, records, args.producers, args.time_limit, use_writer)
                        results[label] = r
                    print(r.line(), flush=True)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            print(f"postgres: skipped ({exc!r})")

    print()
    for prefix in ("sqlite FULL", "sqlite NORMAL", "postgres"):
        grouped, single = results.get(f"{prefix} group commit"), results.get(f"{prefix} txn per record")
        if grouped and single and single.rate:
            print(f"{prefix:<14} group commit / txn per record = {grouped.rate / single.rate:5.1f}x")
    full, normal = results.get("sqlite FULL group commit"), results.get("sqlite NORMAL group commit")
    if full and normal and normal.rate:
        print(f"sqlite group commit FULL / NORMAL = {full.rate / normal.rate:4.2f}x")


if __name__ == "__main__":
    try:
        import uvloop  # the gateway runs on uvloop, so measure there
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
