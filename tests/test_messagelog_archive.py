"""`wasl log archive / verify / show`: archives of real traffic, retention, and tamper detection that names the record,
with the real CLI as a subprocess, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import random
import sqlite3
import subprocess
import sys
import time
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg

from gateway.core import identifiers as ids
from gateway.messagelog import archive as fmt
from gateway.messagelog import tools, zipcanon
from gateway.messagelog.records import compute_hash
from gateway.messagelog.verify import verify_archive, verify_links
from tests import messagelog_support as support
from tests.conftest import soap_request
from tests.messagelog_support import ROOT, LogFederation, start_log_federation, stop_log_federation

pg_database = support.pg_database  # fixtures
store_settings = support.store_settings

FAST = {"timestamp_interval_seconds": 0.2, "timestamp_timeout_seconds": 2.0, "timestamp_max_records": 6}


# -- the canonical ZIP, alone ---------------------------------------------------------------------------------------

def test_canonical_zip_is_a_zip_and_any_flipped_byte_shows() -> None:
    entries = [("records/000000000001.json", b'{"a":1}' * 20), ("tokens/x.tst", bytes(range(256))),
               ("manifest.json", b"{}")]
    data = zipcanon.encode(entries)
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as z:
        assert z.testzip() is None and [(i.filename, z.read(i)) for i in z.infolist()] == entries
    found, disagree = zipcanon.read_entries(data)
    assert not disagree and zipcanon.differences(data, found) == []
    for i in range(len(data)):
        for mask in (0x01, 0x80):
            edited = bytearray(data)
            edited[i] ^= mask
            try:
                found, disagree = zipcanon.read_entries(bytes(edited))
            except zipcanon.ZipError:
                continue  # unreadable is detected too
            diffs = [*disagree, *zipcanon.differences(bytes(edited), found)]
            contents = [bytes(edited[e.data_offset:e.data_offset + e.size]) for e in found]
            changed_data = contents != [d for _, d in entries]
            assert diffs or changed_data, f"byte {i} ^ {mask:#x} went unnoticed"


# -- real traffic -----------------------------------------------------------------------------------------------

async def _traffic(f: LogFederation, tag: str, rest: int = 4, soap: int = 3) -> list[str]:
    """REST calls civil -> tax (civil is the client) and SOAP calls health -> civil (civil is the provider)."""
    xroad_ids = []
    for i in range(rest):
        status, _, _ = await f.rest(i, xroad_id=f"{tag}-rest-{i}")
        assert status == 200
        xroad_ids.append(f"{tag}-rest-{i}")
    client = ids.parse_subsystem("DEMO/GOV/1003/patients")
    service = ids.parse_service("DEMO/GOV/1001/population/echo")
    for i in range(soap):
        payload = soap_request(client, service, xroad_id=f"{tag}-soap-{i}", text=f"message {i}")
        async with f.session.post(f.client_url("health", "/"), data=payload,
                                  headers={"Content-Type": "text/xml"}) as resp:
            assert resp.status == 200, await resp.text()
        xroad_ids.append(f"{tag}-soap-{i}")
    return xroad_ids


async def _stamped(f: LogFederation, agency: str = "civil") -> None:
    store = f.gateways[agency].runtime.message_log.store
    assert store is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = await store.state()
        if state.stamped_seq == state.last.seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the log was not stamped in time")


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the gateways, registry and TSA of the test run in this event loop.
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gateway.cli", *args], cwd=ROOT,
                                   capture_output=True, text=True, timeout=120)


async def _tool(fn: Any, *args: Any) -> tuple[int, str]:
    """A `wasl log` command's work in-process (on a loop of its own, in a thread), for the steps where a
    subprocess would only add start-up time; the steps whose exit status matters run the real CLI."""
    out = io.StringIO()

    def run() -> int:
        result = fn(*args, out)
        return asyncio.run(result) if asyncio.iscoroutine(result) else result

    return await asyncio.to_thread(run), out.getvalue()


async def _flip_in_database(f: LogFederation, settings: dict[str, Any], seq: int) -> None:
    """Play the attacker with direct database access: flip one byte of a record's body."""
    gw = f.settings("civil")
    if settings["store"] == "sqlite":
        with closing(sqlite3.connect(gw.state_dir / "messagelog.db", isolation_level=None, timeout=10)) as db:
            body = bytearray(db.execute("SELECT body FROM messagelog_record WHERE seq = ?", (seq,)).fetchone()[0])
            body[len(body) // 2] ^= 0x01
            db.execute("UPDATE messagelog_record SET body = ? WHERE seq = ?", (bytes(body), seq))
        return
    conn = await asyncpg.connect(settings["dsn"])
    try:
        gid = gw.server_id.path()
        body = bytearray(await conn.fetchval("SELECT body FROM messagelog_record WHERE gateway_id = $1 AND seq = $2",
                                             gid, seq))
        body[len(body) // 2] ^= 0x01
        await conn.execute("UPDATE messagelog_record SET body = $3 WHERE gateway_id = $1 AND seq = $2", gid, seq,
                           bytes(body))
    finally:
        await conn.close()


async def test_archive_verify_retention_show_and_tampering(tmp_path: Path, store_settings: dict[str, Any]) -> None:
    f = await start_log_federation(tmp_path, {**store_settings, **FAST})
    config = str(f.layout.gateway_files["civil"])
    folder = f.settings("civil").state_dir / "archive"
    try:
        first_ids = await _traffic(f, "one")
        await _stamped(f)
        done = await _cli("log", "archive", "--config", config)
        assert done.returncode == 0, done.stdout + done.stderr
        [first] = sorted(folder.glob("*.zip"))
        assert "archived seqs 1.." in done.stdout and "retention: removed" not in done.stdout
        with zipfile.ZipFile(first) as z:  # any ZIP tool reads it
            assert z.testzip() is None and z.namelist()[-1] == "manifest.json"
        checked = await _cli("log", "verify", str(first))
        assert checked.returncode == 0 and "1 archive(s) verified: no problems" in checked.stdout, checked.stdout

        await _traffic(f, "two", rest=3, soap=2)
        await _stamped(f)
        rc, out = await _tool(tools.archive_log, Path(config), None, 0.0)
        assert rc == 0 and "retention: removed" in out, out
        second = next(p for p in sorted(folder.glob("*.zip")) if p != first)
        store = f.gateways["civil"].runtime.message_log.store
        assert store is not None
        state = await store.state()
        assert await store.count() == state.last.seq - state.pruned.seq and state.pruned.seq > 0
        rc, out = await _tool(tools.verify_files, [first, second], None, None, [])
        assert rc == 0 and "2 archive(s) verified: no problems" in out, out

        # Pruned records are still found, in their archive; live ones in the database. Both messages, verified.
        rc, out = await _tool(tools.show, Path(config), first_ids[0], False)
        assert rc == 0 and "found in archive" in out, out
        assert "client side, request" in out and "client side, response" in out
        live_ids = await _traffic(f, "three", rest=1, soap=1)
        await _stamped(f)
        shown = await _cli("log", "show", "--config", config, "--id", live_ids[-1])
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "provider side, request" in shown.stdout and "provider side, response" in shown.stdout
        assert shown.stdout.count("[OK] timestamp") == 2 and shown.stdout.count("[OK] signature") == 2
        assert "message 0" in shown.stdout  # the body
        rc, out = await _tool(tools.verify_database, Path(config), [])
        assert rc == 0, out

        # One byte changed in the live database: named by seq and X-Road id.
        victim = (await store.by_xroad_id(live_ids[-1]))[0]
        await _flip_in_database(f, store_settings, victim.seq)
        live = await _cli("log", "verify", "--config", config)
        assert live.returncode == 1, live.stdout
        assert f"changed: seq {victim.seq} xroad_id={live_ids[-1]!r}" in live.stdout, live.stdout
        rc, out = await _tool(tools.show, Path(config), live_ids[-1], False)
        assert rc == 1 and "[FAILED] record hash" in out, out

        # One byte changed in an archive: named, and the CLI exits non-zero.
        data = first.read_bytes()
        manifest = fmt.parse_manifest(json.dumps(json.loads(zipfile.ZipFile(first).read("manifest.json"))).encode())
        seq, xroad_id, _ = manifest.records[3]
        entry = next(e for e in zipcanon.read_entries(data)[0] if e.name == fmt.record_entry(seq))
        edited = bytearray(data)
        edited[entry.data_offset + entry.size // 2] ^= 0x04
        bad = tmp_path / "edited.zip"
        bad.write_bytes(bytes(edited))
        checked = await _cli("log", "verify", str(bad), str(second))
        assert checked.returncode == 1, checked.stdout
        assert f"seq {seq} xroad_id={xroad_id!r}" in checked.stdout, checked.stdout
        if store_settings["store"] == "sqlite":  # the archive's bytes do not depend on the store: check once
            _every_edit_is_named(data, first.name, manifest)
        _recomputed_forgeries_are_named(data, first.name, second.read_bytes(), second.name)
    finally:
        await stop_log_federation(f)


def _regions(data: bytes) -> list[tuple[int, int, str | None]]:
    """(start, end, entry name) of every byte of a canonical archive: headers, data, directory records, end."""
    entries, _ = zipcanon.read_entries(data)
    out = [(e.header_offset, e.data_offset, e.name) for e in entries]
    out += [(e.data_offset, e.data_offset + e.size, e.name) for e in entries]
    pos = entries[-1].data_offset + entries[-1].size
    for e in entries:
        size = 46 + len(e.name.encode())
        out.append((pos, pos + size, e.name))
        pos += size
    out.append((pos, len(data), None))
    return out


def _every_edit_is_named(data: bytes, name: str, manifest: fmt.Manifest) -> None:
    """A sample of single-byte edits over every part of the file (each byte of a record entry's local header and
    of its directory record, the end record, and random bytes anywhere): each is found, and one inside a record's
    entry names that record."""
    regions = _regions(data)
    xroad_of = {seq: xid for seq, xid, _ in manifest.records}
    target = fmt.record_entry(manifest.records[2][0])
    positions = {i for start, end, entry in regions if entry in (target, None) and end - start < 200
                 for i in range(start, end)}
    rng = random.Random(4)
    positions |= {rng.randrange(len(data)) for _ in range(120)}
    for i in sorted(positions):
        edited = bytearray(data)
        edited[i] ^= 1 << rng.randrange(8)
        report = verify_archive(name, bytes(edited))
        assert report.findings, f"an edit of byte {i} went unnoticed"
        entry = next(e for s, end, e in regions if s <= i < end)
        seq = fmt.seq_of_entry(entry) if entry is not None else None
        if seq is not None:
            assert any(f.seq == seq and f.xroad_id == xroad_of[seq] for f in report.findings), \
                (i, entry, [str(f) for f in report.findings])


def _recomputed_forgeries_are_named(data: bytes, name: str, next_data: bytes, next_name: str) -> None:
    """Edits by someone who rewrites the ZIP properly (valid CRCs), so only the content checks can catch them."""
    entries, _ = zipcanon.read_entries(data)
    items = [(e.name, data[e.data_offset:e.data_offset + e.size]) for e in entries]
    manifest = fmt.parse_manifest(items[-1][1])
    records = [(i, n) for i, (n, _) in enumerate(items) if fmt.seq_of_entry(n) is not None]

    def check(changed: list[tuple[str, bytes]], *expect: tuple[str, int]) -> None:
        report = verify_archive(name, zipcanon.encode(changed))
        got = {(f.kind, f.seq) for f in report.findings}
        for kind, seq in expect:
            assert (kind, seq) in got, (kind, seq, [str(f) for f in report.findings])
            assert any(f.seq == seq and f.xroad_id for f in report.findings)

    (i, a), (j, b) = records[1], records[4]
    swapped = list(items)
    swapped[i], swapped[j] = (a, items[j][1]), (b, items[i][1])
    check(swapped, ("reordered", fmt.seq_of_entry(a)), ("reordered", fmt.seq_of_entry(b)))  # type: ignore[arg-type]

    k, victim = records[3]
    check([x for x in items if x[0] != victim], ("deleted", fmt.seq_of_entry(victim)))  # type: ignore[arg-type]

    # A request rewritten with a recomputed record_hash, and the manifest updated to match: its signature no
    # longer covers it, the next record's link breaks, and the batch's token no longer covers the records.
    k, victim = next((i, n) for i, n in records if json.loads(items[i][1])["direction"] == "request")
    certs = {n[len("certs/"):-len(".der")]: d for n, d in items if n.startswith("certs/")}
    original = fmt.record_from_json(items[k][1], certs)
    changed = original._replace(client="DEMO/GOV/1003/forged")
    changed = changed._replace(record_hash=compute_hash(changed))
    forged_bytes = fmt.record_to_json(changed)
    forged = list(items)
    forged[k] = (victim, forged_bytes)
    mdata = json.loads(items[-1][1])
    mdata["records"] = [[s, x, fmt.sha256_hex(forged_bytes) if s == changed.seq else h]
                        for s, x, h in mdata["records"]]
    forged[-1] = ("manifest.json", json.dumps(mdata, sort_keys=True, separators=(",", ":")).encode())
    report = verify_archive(name, zipcanon.encode(forged))
    kinds = {(f.kind, f.seq) for f in report.findings}
    assert ("signature", changed.seq) in kinds, report.findings
    assert ("broken_link", changed.seq + 1) in kinds or ("changed", changed.seq) in kinds, report.findings
    assert any(f.kind == "timestamp" and "Merkle root" in f.detail for f in report.findings), report.findings
    # Across archives: the changed manifest no longer matches the next archive's link to it.
    first_report = verify_archive(name, zipcanon.encode(forged))
    links, _ = verify_links([first_report, verify_archive(next_name, next_data)])
    assert [f.kind for f in links] == ["link"], links
    assert manifest.first_seq == 1
