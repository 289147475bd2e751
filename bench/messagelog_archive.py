"""Benchmark timestamping, body encryption, archiving and offline verification of the message log, in one run.

    python bench/messagelog_archive.py [--n 10000]

Builds ``n`` really signed ~2 KB records in a SQLite store, stamps them as one batch at the built-in TSA over
HTTP (hashes from the store, Merkle root, token, verification, store), writes them to one archive file as
`wasl log archive` does, and verifies that archive offline as `wasl log verify` does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from gateway.core import envelope
from gateway.core import identifiers as ids
from gateway.core.timestamp import TimestampAuthority
from gateway.messagelog import tools
from gateway.messagelog.bodycrypt import BodyKey, encrypt_fields
from gateway.messagelog.records import GENESIS, LogFields
from gateway.messagelog.sqlite_store import SqliteMessageLogStore
from gateway.messagelog.timestamper import Timestamper, TsaEndpoint
from gateway.messagelog.verify import verify_archive
from gateway.trust.pki import CertificateAuthority, new_key
from gateway.trust.tsa import issue_tsa_certificate, make_tsa_app, request_timestamp

GATEWAY = "DEMO/GOV/1001/gw-bench"


async def main(n: int) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    folder = Path(tempfile.mkdtemp(prefix="wasl-mlbench-"))
    ca = CertificateAuthority.create()
    key = new_key()
    cert = ca.issue_sign_certificate(ids.parse_member("DEMO/GOV/1001"), "Bench", key.public_key())
    cert_der = cert.public_bytes(Encoding.DER)
    tsa_key = new_key()
    tsa_cert = issue_tsa_certificate(ca, tsa_key)
    authority = TimestampAuthority(tsa_key, tsa_cert, [ca.certificate], "1.2.3.4", itertools.count(1).__next__)
    runner = web.AppRunner(make_tsa_app(authority), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    tsa_url = f"http://127.0.0.1:{runner.addresses[0][1]}/"

    body = b"<x>" + b"a" * 2000 + b"</x>"
    fields = []
    for i in range(n):
        manifest = json.dumps({"v": 1, "type": "request", "id": f"id-{i}", "request_id": f"r-{i}",
                               "client": "DEMO/GOV/1001/sub", "service": "DEMO/GOV/1001/sub/svc",
                               "body_sha512": envelope.body_digest(body)}).encode()
        parts = envelope.sign(manifest, key, cert_der)
        fields.append(LogFields.for_message(
            created_ms=int(time.time() * 1000), direction="request", side="client", xroad_id=f"id-{i}",
            request_id=f"r-{i}", client="DEMO/GOV/1001/sub", service="DEMO/GOV/1001/sub/svc",
            manifest=parts.manifest, signature=parts.signature, signer_cert=cert_der, body=body))

    body_key = BodyKey.generate()
    started = time.perf_counter()
    for f in fields[:2000]:
        encrypt_fields(body_key, f)
    print(f"encrypt a 2 KB body: {(time.perf_counter() - started) / 2000 * 1e6:.1f} us")

    store = SqliteMessageLogStore(folder / "messagelog.db", GATEWAY)
    await store.open()
    await store.migrate()
    for i in range(0, n, 500):
        await store.append_batch(fields[i:i + 500])
    stamper = Timestamper(store, GATEWAY, interval_seconds=3600, max_records=max(n, 1), timeout_seconds=10,
                          grace_seconds=None, tsa_source=lambda: [TsaEndpoint("bench", tsa_url, tsa_cert)],
                          tsa_client=lambda s, u, d, t: request_timestamp(s, u, d, timeout=t))
    await stamper.start(run=False)
    started = time.perf_counter()
    assert await stamper.stamp_pending()
    print(f"stamp one batch of {n} records (hashes, Merkle root, TSA over HTTP, verify, store): "
          f"{(time.perf_counter() - started) * 1000:.1f} ms")
    await stamper.close()

    ctx = tools.Context(None, GATEWAY, store, None, [ca.certificate], [tsa_cert])  # type: ignore[arg-type]
    state = await store.state()
    stamps = await store.timestamps(1, state.stamped_seq)
    started = time.perf_counter()
    written = await tools._write_archive(ctx, folder, 1, state.stamped_seq, GENESIS, None, stamps)
    elapsed = time.perf_counter() - started
    path = folder / written.name
    print(f"archive {state.stamped_seq} records: {elapsed:.2f} s ({state.stamped_seq / elapsed:.0f} records/s), "
          f"{path.stat().st_size / 1e6:.1f} MB")
    data = path.read_bytes()
    started = time.perf_counter()
    report = verify_archive(written.name, data, trust_cas=[ca.certificate], trust_tsas=[tsa_cert])
    elapsed = time.perf_counter() - started
    print(f"verify the archive offline: {elapsed:.2f} s ({report.records / elapsed:.0f} records/s), "
          f"{len(report.findings)} problem(s)")
    await store.close()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    asyncio.run(main(parser.parse_args().n))
