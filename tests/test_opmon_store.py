"""Operational records: trace context, histograms, query validation and scoping, both stores, the batching writer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import pytest

from gateway.core import envelope
from gateway.monitoring import opquery, oprecords, opstats, tracecontext
from gateway.monitoring.metrics import Exchange
from gateway.monitoring.opstore import OpStore
from gateway.monitoring.opstore_postgres import PostgresOpStore
from gateway.monitoring.opstore_sqlite import SqliteOpStore
from gateway.monitoring.opwriter import OpMonitor
from tests.conftest import IN_CI

PG_ADMIN_DSN = os.environ.get("WASL_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


# -- pure pieces ----------------------------------------------------------------------------------------------------

def test_traceparent_kept_when_valid_and_started_when_not() -> None:
    assert tracecontext.ensure(TP, "a=1") == (TP, "a=1")
    assert tracecontext.trace_id_of(TP) == "0af7651916cd43dd8448eb211c80319c"
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01", "ff-" + TP[3:], TP + "-extra",
                TP.upper()):
        new, state = tracecontext.ensure(bad, "a=1")
        assert tracecontext.trace_id_of(new) is not None and new != bad
        assert state is None  # tracestate belongs to the trace that could not be read
    future = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-later"
    assert tracecontext.ensure(future, None)[0] == future  # a later version's extra fields are allowed
    assert len({tracecontext.new_traceparent() for _ in range(1000)}) == 1000


def test_new_trace_ids_start_with_their_time_so_they_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = tracecontext.trace_id_of(tracecontext.new_traceparent())
    time.sleep(0.003)
    second = tracecontext.trace_id_of(tracecontext.new_traceparent())
    after = time.time_ns() // 1_000_000
    assert first is not None and second is not None
    assert before <= int(first[:12], 16) < int(second[:12], 16) <= after
    assert first < second  # so the trace-id index appends instead of scattering
    # The other 80 bits are random (W3C level 2 asks for the right-most 7 bytes).
    assert len({tracecontext.trace_id_of(tracecontext.new_traceparent())[12:] for _ in range(1000)}) == 1000


def test_histogram_percentiles_are_within_five_percent() -> None:
    values = [float(v) for v in range(1, 1001)]  # 1..1000 ms
    p50, p95, p99 = opstats.percentiles(opstats.histogram(values))
    for got, want in ((p50, 500), (p95, 950), (p99, 990)):
        assert abs(got - want) / want < 0.05, (got, want)
    merged = opstats.merge_into(opstats.histogram(values[:500]), opstats.histogram(values[500:]))
    assert opstats.percentiles(merged) == [p50, p95, p99]
    assert opstats.percentiles({}) == [None, None, None]
    assert opstats.bucket_of(0) == 0 and opstats.bucket_of(float("nan")) == 0


def test_query_validation_names_the_field() -> None:
    assert opquery.parse({"kind": "records", "xroad_ids": ["a"]}).xroad_ids == ("a",)
    assert opquery.parse({"service": "DEMO/GOV/1001/population/getPerson/v1"}).service == \
        "DEMO/GOV/1001/population/getPerson"
    for bad, words in (([], "JSON object"), ({"kind": "all"}, "kind"), ({"limit": 0}, "limit"),
                       ({"limit": True}, "limit"), ({"from_ms": 5, "to_ms": 5}, "to_ms"),
                       ({"trace_id": "XYZ"}, "trace_id"), ({"client": "DEMO/GOV"}, "client"),
                       ({"service": "a/b"}, "service"), ({"status": "good"}, "status"),
                       ({"before": [1, 2, 3]}, "before"), ({"sql": "1"}, "unknown field sql"),
                       ({"kind": "aggregate", "from_ms": 0, "to_ms": 10**10, "bucket_ms": 1000}, "bucket_ms"),
                       ({"xroad_ids": ["x" * 256]}, "xroad_ids")):
        with pytest.raises(opquery.QueryError, match=words):
            opquery.parse(bad)


def test_scope_owner_and_monitoring_client_see_all_members_their_own() -> None:
    assert opquery.scope_for("DEMO/GOV/1001/monitoring", "DEMO/GOV/1002", "DEMO/GOV/1001/monitoring").everything
    assert opquery.scope_for("DEMO/GOV/1001/other", "DEMO/GOV/1002", "DEMO/GOV/1001").everything  # member named
    assert opquery.scope_for("DEMO/GOV/1002/tax", "DEMO/GOV/1002", None).everything  # the owner
    scope = opquery.scope_for("DEMO/GOV/1003/patients", "DEMO/GOV/1001", "DEMO/GOV/1001/monitoring")
    assert not scope.everything and scope.member == "DEMO/GOV/1003"
    opquery.authorise(opquery.OpQuery(client="DEMO/GOV/1003", provider="DEMO/GOV/1001"), scope)
    opquery.authorise(opquery.OpQuery(client="DEMO/GOV/1002"), scope)  # narrowed to 1003 as provider: allowed
    with pytest.raises(opquery.Denied, match="only transactions where it is the client or the provider"):
        opquery.authorise(opquery.OpQuery(client="DEMO/GOV/1002", provider="DEMO/GOV/1001"), scope)
    with pytest.raises(opquery.Denied, match="health"):
        opquery.authorise(opquery.OpQuery(kind="health"), scope)


# -- records -------------------------------------------------------------------------------------------------------

def make_record(i: int, *, side: str = "client", t: int | None = None, ok: bool = True, client: str = "DEMO/GOV/1003/p",
                service: str = "DEMO/GOV/1001/pop/echo", ms: float = 10.0) -> oprecords.OpRecord:
    manifest = envelope.RequestManifest(
        protocol="rest", xroad_id=f"x-{i}", request_id=f"r-{i}", client=client, service=service, method="GET",
        path="/items", query="", headers=(), body_sha512="", body_length=0, created_ms=0, user_id="u", issue=None,
        traceparent=f"00-{i:032x}-b7ad6b7169203331-01" if i else None)
    start = t if t is not None else int(time.time() * 1000) - 1000 + i
    return oprecords.build(side=side, started_ms=start, total_s=ms / 1000, waited_s=ms / 2000,
                           wait_ended_ms=start + round(ms * 0.75), manifest=manifest, fallback_client="",
                           fallback_service="", protocol="rest", status=200 if ok else 500,
                           fault_code="" if ok else "Server.ServerProxy.ServiceFailed",
                           fault_message=None if ok else "backend broke", request_bytes=10, response_bytes=20,
                           own_server="DEMO/GOV/1003/gw", peer_server="DEMO/GOV/1001/gw")


def test_record_fields_and_overhead() -> None:
    r = make_record(7, ms=40.0)
    assert (r.xroad_id, r.request_id, r.user_id, r.trace_id) == ("x-7", "r-7", "u", f"{7:032x}")
    assert (r.client_member, r.provider_member, r.service_key) == ("DEMO/GOV/1003", "DEMO/GOV/1001",
                                                                   "DEMO/GOV/1001/pop/echo")
    assert (r.rest_method, r.rest_path, r.client_server, r.service_server) == ("GET", "/items", "DEMO/GOV/1003/gw",
                                                                               "DEMO/GOV/1001/gw")
    assert r.backend_ms == 20.0 and r.overhead_ms == 20.0 and r.duration_ms == 40.0
    assert r.request_in_ms <= r.request_out_ms <= r.response_in_ms <= r.response_out_ms
    assert oprecords.is_operational_query("DEMO/GOV/1001/pop/getSecurityServerOperationalData")


def run_sync(coro):  # type: ignore[no-untyped-def]
    """Run ``coro`` on a fresh loop in another thread, whether or not this thread runs a loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    name = f"wasl_opmon_test_{os.getpid()}_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        run_sync(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {exc!r}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {exc!r}")
    yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    run_sync(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpStore]:
    if request.param == "sqlite":
        s: OpStore = SqliteOpStore(tmp_path / "opmon.db", "gw")
    else:
        s = PostgresOpStore(request.getfixturevalue("pg_dsn"), f"gw-{secrets.token_hex(4)}")
    await s.open()
    assert await s.migrate() == 1
    assert await s.migrate() == 1  # idempotent
    try:
        yield s
    finally:
        await s.close()


async def test_store_query_scope_page_aggregate_prune(store: OpStore) -> None:
    now = int(time.time() * 1000)
    records = [make_record(i, t=now - 60_000 + i * 100, ok=i % 5 != 0, ms=float(i + 1)) for i in range(1, 51)]
    records += [make_record(100 + i, t=now - 60_000 + i * 100, client="DEMO/GOV/1002/tax") for i in range(10)]
    records += [make_record(200, t=now - 10 * 86_400_000)]  # old: retention removes it
    await store.insert(records)
    everything = opquery.Scope(True)
    rows = await store.records(opquery.OpQuery(xroad_ids=("x-7",)), everything)
    assert len(rows) == 1 and rows[0][oprecords.COLUMNS.index("xroad_id")] == "x-7"
    rows = await store.records(opquery.OpQuery(trace_id=f"{7:032x}"), everything)
    assert len(rows) == 1
    # Keyset pages, newest first, never overlap and end.
    seen, before = [], None
    for _ in range(20):
        q = opquery.OpQuery(client="DEMO/GOV/1003", from_ms=now - 3_600_000, limit=20, before=before)
        rows = await store.records(q, everything)
        page = rows[:20]
        seen += [r[oprecords.COLUMNS.index("xroad_id")] for r in page]
        if len(rows) <= 20:
            break
        last = page[-1]
        before = (last[1], last[oprecords.COLUMNS.index("xroad_id")], last[oprecords.COLUMNS.index("request_id")])
    assert len(seen) == len(set(seen)) == 50
    failed = await store.records(opquery.OpQuery(status="failed", from_ms=now - 3_600_000), everything)
    assert len(failed) == 10
    # A member-scoped asker sees its own transactions only.
    tax = opquery.Scope(False, "DEMO/GOV/1002")
    assert len(await store.records(opquery.OpQuery(from_ms=now - 3_600_000), tax)) == 10
    by_provider = opquery.OpQuery(provider="DEMO/GOV/1001/pop", from_ms=now - 3_600_000, limit=1000)
    assert len(await store.records(by_provider, everything)) == 60
    agg = await store.aggregate(opquery.OpQuery(kind="aggregate", from_ms=now - 120_000, to_ms=now,
                                                bucket_ms=60_000), everything)
    assert sum(r[3] for r in agg.traffic) == 60 and sum(r[1] for r in agg.series) == 60
    assert sum(r[-1] for r in agg.faults) == 10 and agg.backend == []
    packed = agg.packed()
    assert sum(sum(r[5][1::2]) for r in packed["traffic"]) == 60  # histograms hold every transaction
    assert [r[6] for r in packed["traffic"] if r[4]] == [["Server.ServerProxy.ServiceFailed", 10]]
    assert sum(r[3] for r in packed["traffic"]) == 60 and sum(r[4] for r in packed["traffic"]) == 10
    assert {r[0] for r in packed["traffic"]} == {"DEMO/GOV/1003", "DEMO/GOV/1002"}
    assert sum(r[1] for r in packed["series"]) == 60
    await store.insert([make_record(300 + i, side="provider", t=now - 30_000) for i in range(4)])
    agg = await store.aggregate(opquery.OpQuery(kind="aggregate", from_ms=now - 120_000, to_ms=now,
                                                bucket_ms=60_000), everything)
    assert agg.packed()["backend"][0][:2] == ["DEMO/GOV/1001/pop/echo", 4]
    assert await store.count() == 65
    assert await store.delete_before(now - 86_400_000) == 1
    assert await store.count() == 64


def fake_exchange(i: int) -> Exchange:
    ex = Exchange("client", "rest")
    ex.describe(envelope.RequestManifest(
        protocol="rest", xroad_id=f"w-{i}", request_id=f"r-{i}", client="DEMO/GOV/1003/p",
        service="DEMO/GOV/1001/pop/echo", method="GET", path="", query="", headers=(), body_sha512="",
        body_length=0, created_ms=0), "DEMO/GOV/1001/gw")
    return ex


async def test_writer_batches_off_the_request_path_and_drops_when_full(tmp_path: Path) -> None:
    monitor = OpMonitor(SqliteOpStore(tmp_path / "opmon.db", "gw"), "DEMO/GOV/1003/gw", batch_size=100,
                        max_pending=300, flush_seconds=0.05)
    await monitor.open()
    try:
        started = time.perf_counter()
        for i in range(1000):  # far more than fits: record() must neither wait nor raise
            monitor.record(fake_exchange(i), total_s=0.01, client_member="", service="", status=200, fault_code="",
                           request_bytes=1, response_bytes=2)
        assert time.perf_counter() - started < 1.0
        assert monitor.dropped == 700
        await monitor.flush()
        assert monitor.written == 300 and await monitor.store.count() == 300
        # Queries of the operational data itself are not recorded.
        ex = Exchange("client", "rest")
        ex.describe(SimpleNamespace(service="DEMO/GOV/1001/pop/getSecurityServerOperationalData"), None)
        monitor.record(ex, total_s=0.01, client_member="", service="", status=200, fault_code="", request_bytes=1,
                       response_bytes=2)
        assert monitor.pending == 0
    finally:
        await monitor.close()


async def test_writer_survives_a_failing_store(tmp_path: Path) -> None:
    class Broken(SqliteOpStore):
        async def insert(self, batch):  # type: ignore[no-untyped-def]
            raise OSError("disk full")

    monitor = OpMonitor(Broken(tmp_path / "opmon.db", "gw"), "gw", flush_seconds=0.01)
    await monitor.open()
    try:
        for i in range(5):
            monitor.record(fake_exchange(i), total_s=0.01, client_member="", service="", status=200,
                           fault_code="", request_bytes=1, response_bytes=2)
        await monitor.flush()
        assert monitor.dropped == 5 and monitor.written == 0
    finally:
        await monitor.close()


async def test_retention_task_prunes_by_age(tmp_path: Path) -> None:
    store = SqliteOpStore(tmp_path / "opmon.db", "gw")
    monitor = OpMonitor(store, "gw", retention_seconds=3600, prune_every_seconds=0.05)
    await monitor.open()
    try:
        now = int(time.time() * 1000)
        await store.insert([make_record(1, t=now - 7_200_000), make_record(2, t=now)])
        for _ in range(100):
            if await store.count() == 1:
                break
            await asyncio.sleep(0.02)
        assert await store.count() == 1
    finally:
        await monitor.close()


def test_the_store_follows_the_message_log_unless_told_otherwise(tmp_path: Path) -> None:
    from gateway.core.settings import MessageLogSettings, OpMonitoringSettings
    from gateway.monitoring.opwriter import from_settings

    def settings(op: OpMonitoringSettings, mlog: MessageLogSettings) -> SimpleNamespace:
        return SimpleNamespace(op_monitoring=op, message_log=mlog, state_dir=tmp_path, server="DEMO/GOV/1001/gw")

    pg = MessageLogSettings(store="postgresql", dsn="postgresql://x@127.0.0.1/db")
    monitor = from_settings(settings(OpMonitoringSettings(), pg))
    assert isinstance(monitor.store, PostgresOpStore) and monitor.store.dsn == pg.dsn
    monitor = from_settings(settings(OpMonitoringSettings(store="sqlite", retention_hours=2), pg))
    assert isinstance(monitor.store, SqliteOpStore) and monitor.store.path == str(tmp_path / "opmon.db")
    assert monitor.retention_seconds == 7200
    assert from_settings(settings(OpMonitoringSettings(enabled=False), pg)) is None
