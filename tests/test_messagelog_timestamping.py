"""Message-log timestamping: Merkle batches, tokens checked by openssl, TSA outage and grace period, immediate stamps,
and bodies encrypted at rest, over real sockets on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.messagelog import merkle
from gateway.messagelog.bodycrypt import BodyKey, BodyKeyError, decrypt_body, encrypt_fields, plaintext_body
from gateway.messagelog.records import GENESIS, ChainHead, chain_many, verify_chain
from gateway.messagelog.stamping import StampHealth, StampState, batch_digest, plan_batches
from gateway.messagelog.store import ArchiveRecord, StoreError, TimestampRecord
from gateway.trust.pki import load_certificate
from tests import messagelog_support as support
from tests.messagelog_support import LogFederation, openssl_or_skip, start_log_federation, stop_log_federation
from tests.test_messagelog_store import fields

pg_database = support.pg_database  # fixtures
store_settings = support.store_settings

FAST = {"timestamp_interval_seconds": 0.2, "timestamp_timeout_seconds": 2.0}


# -- pure logic -----------------------------------------------------------------------------------------------------

def _rfc6962_root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(_rfc6962_root(leaves[:k]), _rfc6962_root(leaves[k:]))


def test_merkle_tree_is_rfc6962_and_every_path_proves_its_leaf() -> None:
    for n in range(1, 40):
        leaves = [hashlib.sha256(f"{n}-{i}".encode()).digest() for i in range(n)]
        root = merkle.root(leaves)
        assert root == _rfc6962_root(leaves)
        for i, leaf in enumerate(leaves):
            path = merkle.audit_path(leaves, i)
            assert len(path) <= n.bit_length()
            assert merkle.root_from_path(leaf, path) == root
            assert merkle.root_from_path(hashlib.sha256(leaf).digest(), path) != root
    # A leaf can never pass for an inner node (second-preimage resistance of the tree shape).
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    assert merkle.root([merkle.leaf_hash(a) + merkle.leaf_hash(b)]) != merkle.root([a, b])


def test_batch_planning_and_digest_binding() -> None:
    assert plan_batches(0, 0, 10) == []
    assert plan_batches(0, 25, 10) == [(1, 10), (11, 20), (21, 25)]
    assert plan_batches(20, 21, 10_000) == [(21, 21)]
    root = hashlib.sha256(b"root").digest()
    d = batch_digest("DEMO/GOV/1/gw", 1, 10, root)
    assert d != batch_digest("DEMO/GOV/2/gw", 1, 10, root)
    assert d != batch_digest("DEMO/GOV/1/gw", 2, 10, root)
    assert d != batch_digest("DEMO/GOV/1/gw", 1, 10, bytes(32))


def test_grace_period_counts_from_the_oldest_waiting_record() -> None:
    h = StampHealth()
    assert h.state(1_000, 60) is StampState.OK
    h.failed(100_000, "TSA unreachable", stamped_seq=5, backlog=3, oldest_unstamped_ms=90_000)
    assert h.state(100_000, 60) is StampState.FAILING
    assert h.state(150_001, 60) is StampState.FAILED  # 60 s after the oldest record waited, not after the failure
    assert h.state(10**9, None) is StampState.FAILING  # no grace limit: never refuse
    h.failed(160_000, "still down", 5, 9, 90_000)
    assert h.failing_since_ms == 100_000 and "9 record(s) wait" in h.describe(160_000, 60)
    h.succeeded(170_000, 14, 0, None)
    assert h.state(170_000, 60) is StampState.OK and h.failing_for_ms(170_000) == 0


def test_encrypted_bodies_keep_the_chain_verifiable_without_the_key() -> None:
    key, other = BodyKey.generate(), BodyKey.generate()
    plain = [fields(i) for i in range(1, 6)]
    secret = [encrypt_fields(key, f) for f in plain]
    assert all(s.body_encrypted and s.body != p.body and s.body_sha512 == p.body_sha512
               for s, p in zip(secret, plain, strict=True))
    recs = chain_many(ChainHead(0, GENESIS), secret)
    assert verify_chain(recs) == []  # no key needed
    assert [plaintext_body(r, [key]) for r in recs] == [f.body for f in plain]
    with pytest.raises(BodyKeyError, match="not among the keys"):
        plaintext_body(recs[0], [other])
    # The ciphertext is bound to its record's body hash: moved to another record, it does not decrypt.
    assert recs[0].body is not None
    with pytest.raises(BodyKeyError, match="authenticate"):
        decrypt_body([key], recs[0].body, recs[1].body_sha512)
    # Changing a ciphertext byte is a changed record, found without the key.
    body = bytearray(recs[2].body or b"")
    body[-1] ^= 1
    tampered = [*recs[:2], recs[2]._replace(body=bytes(body)), *recs[3:]]
    assert [(p.kind.value, p.seq) for p in verify_chain(tampered)] == [("changed", 3)]
    assert BodyKey.parse(key.text(), "x") == key and BodyKey.parse(key.key.hex() + "\n", "x") == key
    with pytest.raises(BodyKeyError, match="32-byte key"):
        BodyKey.parse("c2hvcnQ=", "the file")


# -- the stores -----------------------------------------------------------------------------------------------------

async def test_tokens_and_archives_continue_their_prefix(store_settings: dict[str, Any], tmp_path: Path) -> None:
    from gateway.core.settings import MessageLogSettings
    from gateway.messagelog.gateway_log import open_store

    store = open_store(MessageLogSettings(**store_settings), tmp_path, "DEMO/GOV/1/gw")
    async with store:
        await store.migrate()
        recs = await store.append_batch([fields(i) for i in range(1, 11)])
        assert await store.record_hashes(3, 5) == [(r.seq, r.record_hash) for r in recs[2:5]]

        def stamp(first: int, last: int) -> TimestampRecord:
            return TimestampRecord(first, last, bytes(32), b"token", "tsa", "http://tsa", 1, 2)

        assert await store.add_timestamp(stamp(1, 4))
        assert not await store.add_timestamp(stamp(1, 4))  # another node got there first: nothing stored
        with pytest.raises(StoreError, match="does not continue"):
            await store.add_timestamp(stamp(6, 8))
        with pytest.raises(StoreError, match="does not continue"):
            await store.add_timestamp(stamp(5, 11))  # beyond the head
        assert await store.add_timestamp(stamp(5, 10))
        assert (await store.state()).stamped_seq == 10
        assert [(t.first_seq, t.last_seq) for t in await store.timestamps(4, 6)] == [(1, 4), (5, 10)]
        with pytest.raises(StoreError, match="does not continue"):
            await store.add_archive(ArchiveRecord(2, 4, "a.zip", bytes(32), 1, 1))
        await store.add_archive(ArchiveRecord(1, 4, "a.zip", bytes(32), 1, 1))
        assert [a.name for a in await store.archives()] == ["a.zip"]
        assert await store.delete_through(4) == 4
        assert [(t.first_seq, t.last_seq) for t in await store.timestamps(0, 100)] == [(5, 10)]
        assert await store.verify() == []


# -- over real sockets ------------------------------------------------------------------------------------------

async def _wait(predicate: Any, seconds: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _fully_stamped(f: LogFederation, agency: str) -> bool:
    log = f.gateways[agency].runtime.message_log
    assert log.store is not None
    state = await log.store.state()
    return state.last.seq > 0 and state.stamped_seq == state.last.seq


async def test_batches_are_stamped_and_openssl_verifies_every_token(tmp_path: Path,
                                                                    store_settings: dict[str, Any]) -> None:
    openssl = openssl_or_skip()
    f = await start_log_federation(tmp_path, {**store_settings, **FAST, "timestamp_max_records": 7})
    try:
        results = await asyncio.gather(*(f.rest(i) for i in range(12)))
        assert all(status == 200 for status, _, _ in results)
        await _wait(lambda: _fully_stamped(f, "civil"), what="civil's log to be stamped")
        await _wait(lambda: _fully_stamped(f, "tax"), what="tax's log to be stamped")
        store = f.gateways["civil"].runtime.message_log.store
        assert store is not None
        state = await store.state()
        stamps = await store.timestamps(1, state.last.seq)
        assert stamps[0].first_seq == 1 and stamps[-1].last_seq == state.last.seq
        assert all(t.last_seq - t.first_seq < 7 for t in stamps) and len(stamps) >= 24 // 7
        pki = tmp_path / "pki"
        (tmp_path / "ca.pem").write_bytes(load_certificate(pki / "ca" / "ca.pem").public_bytes(
            serialization.Encoding.PEM))
        for i, stamp in enumerate(stamps):
            leaves = await store.record_hashes(stamp.first_seq, stamp.last_seq)
            root = merkle.root([h for _, h in leaves])
            assert root == stamp.merkle_root
            # Every record's own Merkle path leads to the stamped root.
            for j, (_, h) in enumerate(leaves):
                assert merkle.root_from_path(h, merkle.audit_path([x for _, x in leaves], j)) == root
            digest = batch_digest("DEMO/GOV/1001/gw-civil", stamp.first_seq, stamp.last_seq, root)
            token = tmp_path / f"token-{i}.tst"
            token.write_bytes(stamp.token)
            cmd = [openssl, "ts", "-verify", "-in", str(token), "-token_in", "-CAfile", str(tmp_path / "ca.pem"),
                   "-untrusted", str(pki / "tsa" / "tsa.pem")]
            ok = subprocess.run([*cmd, "-digest", digest.hex()], capture_output=True, text=True, timeout=30)
            assert "Verification: OK" in ok.stdout, ok.stdout + ok.stderr
            # The token is bound to this batch: the same records under another range or gateway fail.
            other = batch_digest("DEMO/GOV/1001/gw-civil", stamp.first_seq, stamp.last_seq + 1, root)
            bad = subprocess.run([*cmd, "-digest", other.hex()], capture_output=True, text=True, timeout=30)
            assert "Verification: OK" not in bad.stdout and "message imprint mismatch" in bad.stderr
    finally:
        await stop_log_federation(f)


async def _metrics(f: LogFederation, agency: str) -> dict[str, float]:
    async with f.session.get(f.client_url(agency, "/metrics")) as resp:
        text = await resp.text()
    out = {}
    for line in text.splitlines():
        if line.startswith("wasl_messagelog_timestamping_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def _readyz(f: LogFederation, agency: str) -> tuple[int, str]:
    async with f.session.get(f.client_url(agency, "/readyz")) as resp:
        return resp.status, await resp.text()


async def test_tsa_outage_grace_period_then_refusal_then_backlog_stamped(tmp_path: Path,
                                                                        store_settings: dict[str, Any]) -> None:
    grace = 1.5
    f = await start_log_federation(tmp_path, {**store_settings, **FAST, "timestamp_grace_seconds": grace})
    try:
        assert (await f.rest(0))[0] == 200
        # Both sides stamped: the grace period counts from the oldest record waiting for a token.
        await _wait(lambda: _fully_stamped(f, "tax"), what="the first records to be stamped")
        await _wait(lambda: _fully_stamped(f, "civil"), what="the first records to be stamped")
        assert (await _metrics(f, "tax"))["wasl_messagelog_timestamping_state"] == 0

        await f.tsa.stop()
        outage = time.monotonic()
        served, refused = [], []
        warned = False
        while time.monotonic() - outage < grace + 5:
            status, headers, body = await f.rest(len(served) + len(refused) + 1)
            at = time.monotonic() - outage
            if status == 200:
                assert not refused, f"served again at {at:.2f} s after refusing"
                served.append(at)
                if not warned and at > 0.5:
                    m = await _metrics(f, "tax")
                    if m["wasl_messagelog_timestamping_state"] == 1:
                        assert m["wasl_messagelog_timestamping_backlog_records"] > 0
                        status_r, text = await _readyz(f, "tax")
                        assert status_r == 200 and "warning: message log: timestamping failing" in text, text
                        warned = True
            else:
                refused.append((at, status, headers, body))
                if len(refused) >= 3:
                    break
            await asyncio.sleep(0.05)
        assert warned, "no readiness warning or metric during the grace period"
        assert refused, "the gateway never refused while the TSA was down"
        first_refusal, status, headers, body = refused[0]
        assert served and max(served) >= grace * 0.9, f"served only until {max(served, default=0):.2f} s"
        assert grace * 0.9 <= first_refusal <= grace + 3.0
        assert status == 503 and headers.get("X-Road-Error", "").endswith("LoggingFailed.TimestamperFailed")
        assert b"LoggingFailed.TimestamperFailed" in body
        status_r, text = await _readyz(f, "tax")
        assert status_r == 503 and "not ready: message log: timestamping failing" in text, text
        assert (await _metrics(f, "tax"))["wasl_messagelog_timestamping_state"] == 2

        # The TSA returns: the backlog is stamped and messages flow again.
        await f.tsa.start()

        async def serving() -> bool:
            return (await f.rest("again"))[0] == 200

        await _wait(serving, what="the gateway to serve again")
        await _wait(lambda: _fully_stamped(f, "tax"), what="the backlog to be stamped")
        await _wait(lambda: _fully_stamped(f, "civil"), what="the client side's backlog to be stamped")
        m = await _metrics(f, "tax")
        assert m["wasl_messagelog_timestamping_state"] == 0 and m["wasl_messagelog_timestamping_backlog_records"] == 0
        assert (await _readyz(f, "tax")) == (200, "ready\n")
        for agency in ("tax", "civil"):
            store = f.gateways[agency].runtime.message_log.store
            assert store is not None and await store.verify() == []
            state = await store.state()
            stamps = await store.timestamps(1, state.last.seq)
            covered = [s for t in stamps for s in range(t.first_seq, t.last_seq + 1)]
            assert covered == list(range(1, state.last.seq + 1))
    finally:
        await stop_log_federation(f)


def _immediate(agency: str, config: dict[str, Any]) -> None:
    for service in config.get("services", []):
        if service["id"].endswith("/taxpayers"):
            service["timestamp_immediately"] = True
    if agency == "civil":  # the consumer of taxpayers asks for the same on its side
        config.setdefault("message_log", {})["timestamp_immediately_services"] = [
            "DEMO/GOV/1002/tax-records/taxpayers"]


async def test_immediate_timestamping_per_service(tmp_path: Path, store_settings: dict[str, Any]) -> None:
    # A long interval: only immediate stamping can cover a record within the test.
    settings = {**store_settings, "timestamp_interval_seconds": 3600, "timestamp_timeout_seconds": 2.0}
    f = await start_log_federation(tmp_path, settings, edit=_immediate)
    try:
        await asyncio.sleep(0.2)  # the start-up stamping round (nothing to stamp) is over
        tax = f.gateways["tax"].runtime.message_log.store
        assert tax is not None
        status, headers, _ = await f.rest(1, xroad_id="immediate-1")
        assert status == 200
        records = await tax.by_xroad_id("immediate-1")
        assert [r.direction for r in records] == ["request", "response"]
        state = await tax.state()
        assert state.stamped_seq >= records[-1].seq, "the provider answered before its records were stamped"
        consumer = f.gateways["civil"].runtime.message_log.store
        assert consumer is not None
        consumer_records = await consumer.by_xroad_id("immediate-1")
        assert (await consumer.state()).stamped_seq >= consumer_records[-1].seq, "the consumer answered unstamped"
        # A service without the option waits for the batch.
        civil_status, _, _ = await _soap_echo(f, "lazy-1")
        assert civil_status == 200
        civil = f.gateways["civil"].runtime.message_log.store
        assert civil is not None
        lazy = await civil.by_xroad_id("lazy-1")
        assert (await civil.state()).stamped_seq < lazy[-1].seq

        # With the TSA down, the immediate service fails at once (no grace period); the others still work.
        await f.tsa.stop()
        status, headers, _ = await f.rest(2, xroad_id="immediate-2")
        assert status == 503 and headers["X-Road-Error"] == "Server.ServerProxy.LoggingFailed.TimestamperFailed"
        assert (await _soap_echo(f, "lazy-2"))[0] == 200
        await f.tsa.start()
        assert (await f.rest(3, xroad_id="immediate-3"))[0] == 200
    finally:
        await stop_log_federation(f)


async def _soap_echo(f: LogFederation, xroad_id: str) -> tuple[int, bytes, bytes]:
    from gateway.core import identifiers as ids
    from tests.conftest import soap_request

    client = ids.parse_subsystem("DEMO/GOV/1003/patients")
    service = ids.parse_service("DEMO/GOV/1001/population/echo")
    payload = soap_request(client, service, xroad_id=xroad_id)
    async with f.session.post(f.client_url("health", "/"), data=payload,
                              headers={"Content-Type": "text/xml"}) as resp:
        return resp.status, payload, await resp.read()


async def test_bodies_encrypted_at_rest_with_a_key_from_the_environment(
        tmp_path: Path, store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    key = BodyKey.generate()
    monkeypatch.setenv("WASL_TEST_BODY_KEY", key.text())
    f = await start_log_federation(tmp_path, {**store_settings, **FAST, "body_key_env": "WASL_TEST_BODY_KEY"})
    try:
        status, payload, answer = await _soap_echo(f, "secret-1")
        assert status == 200
        for agency, side in (("health", "client"), ("civil", "provider")):
            store = f.gateways[agency].runtime.message_log.store
            assert store is not None
            records = await store.by_xroad_id("secret-1")
            assert [(r.side, r.direction) for r in records] == [(side, "request"), (side, "response")]
            for r in records:
                assert r.body_encrypted and r.body is not None and r.body.startswith(b"WB1")
                assert b"hello" not in r.body  # the echoed text stays out of the stored bytes
            assert plaintext_body(records[0], [key]) == payload
            assert plaintext_body(records[1], [key]) == answer
            assert await store.verify() == []
        await _wait(lambda: _fully_stamped(f, "civil"), what="civil's log to be stamped")
    finally:
        await stop_log_federation(f)


async def test_pki_issue_tsa_and_tsa_serve_as_processes(tmp_path: Path) -> None:
    import signal
    import sys

    import aiohttp

    from gateway.core.timestamp import verify_timestamp_response
    from gateway.trust.tsa import request_timestamp
    from tests.conftest import free_ports

    openssl = openssl_or_skip()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=support.ROOT, capture_output=True,
                              text=True, timeout=60)

    assert cli("pki", "init", "--dir", str(tmp_path / "ca")).returncode == 0
    issued = cli("pki", "issue", "tsa", "--ca", str(tmp_path / "ca"), "--out", str(tmp_path / "tsa"),
                 "--name", "Test TSA")
    assert issued.returncode == 0 and "tsa.pem" in issued.stdout, issued.stderr
    [port] = free_ports(1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "tsa", "serve", "--key", str(tmp_path / "tsa" / "tsa.key"),
        "--cert", str(tmp_path / "tsa" / "tsa.pem"), "--chain", str(tmp_path / "ca" / "ca.pem"), "--port", str(port),
        cwd=support.ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        banner = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"CN=Test TSA on http://127.0.0.1" in banner, banner  # printed once it listens
        digest = hashlib.sha256(b"a batch root").digest()
        async with aiohttp.ClientSession() as session:
            token = await request_timestamp(session, f"http://127.0.0.1:{port}/", digest, timeout=5)
        ca = load_certificate(tmp_path / "ca" / "ca.pem")
        assert verify_timestamp_response(token, digest, [ca]).digest == digest
        (tmp_path / "token.tst").write_bytes(token)
        result = subprocess.run([openssl, "ts", "-verify", "-digest", digest.hex(), "-in", str(tmp_path / "token.tst"),
                                 "-token_in", "-CAfile", str(tmp_path / "ca" / "ca.pem")],
                                capture_output=True, text=True, timeout=30)
        assert "Verification: OK" in result.stdout, result.stdout + result.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
