"""The `wasl log` commands' work: archive the log, verify archives and the live database, show a transaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.configfile import ConfigError, load_model
from gateway.core.envelope import unb64
from gateway.core.globalconf import GlobalConf, GlobalConfError, verify_container
from gateway.core.settings import GatewaySettings
from gateway.messagelog import archive as fmt
from gateway.messagelog import merkle, zipcanon
from gateway.messagelog.bodycrypt import BodyKey, BodyKeyError, plaintext_body
from gateway.messagelog.gateway_log import load_body_key, open_store
from gateway.messagelog.records import GENESIS, LogRecord, compute_hash
from gateway.messagelog.store import ArchiveRecord, MessageLogStore, TimestampRecord
from gateway.messagelog.verify import (
    Finding,
    SignerMemo,
    check_message,
    check_token,
    verify_archive,
    verify_links,
)

PAGE = 500  # records read from the database at a time
GLOBALCONF_FILE = "globalconf.json"  # where the gateway keeps its last good global configuration


# -- shared ---------------------------------------------------------------------------------------------------------

@dataclass
class Context:
    settings: GatewaySettings
    gateway_id: str
    store: MessageLogStore
    conf: GlobalConf | None
    cas: list[x509.Certificate] = field(default_factory=list)
    tsas: list[x509.Certificate] = field(default_factory=list)


def _load_conf(settings: GatewaySettings) -> GlobalConf | None:
    try:
        blob = (settings.state_dir / GLOBALCONF_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return verify_container(blob, settings.anchor, dt.datetime.now(dt.UTC), allow_expired=True)
    except GlobalConfError as exc:
        raise ConfigError(f"{settings.state_dir / GLOBALCONF_FILE}: {exc}") from None


async def _context(config: Path) -> Context:
    settings = await asyncio.to_thread(load_model, config, GatewaySettings)
    if not settings.message_log.enabled:
        raise ConfigError(f"{config}: the message log is not enabled")
    gateway_id = settings.server_id.path()
    conf = await asyncio.to_thread(_load_conf, settings)
    store = await asyncio.to_thread(open_store, settings.message_log, settings.state_dir, gateway_id)
    await store.open()
    await store.migrate()
    ctx = Context(settings, gateway_id, store, conf)
    if conf is not None:
        ctx.cas = list(conf.approved_ca_certificates)
        ctx.tsas = [x509.load_der_x509_certificate(unb64(t.certificate))
                    for t in conf.document.timestamping_authorities]
    return ctx


def read_pems(paths: Sequence[Path] | None) -> list[x509.Certificate] | None:
    if not paths:
        return None
    out = []
    for path in paths:
        try:
            out += x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable PEM certificate file: {exc}") from None
    return out


def _print_findings(findings: Sequence[Finding], out: IO[str]) -> None:
    for f in findings:
        print(f"  PROBLEM {f}", file=out)


# -- wasl log archive -------------------------------------------------------------------------------------------

class _ZipStream:
    """Writes a canonical archive ZIP entry by entry (file I/O only; run it in a thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("wb")
        self.offset = 0
        self.entries: list[zipcanon.Entry] = []

    def add(self, items: Sequence[tuple[str, bytes]]) -> None:
        for name, data in items:
            crc = zipcanon.crc32(data)
            header = zipcanon.local_header(name, len(data), crc)
            self.file.write(header)
            self.file.write(data)
            self.entries.append(zipcanon.Entry(name, self.offset, self.offset + len(header), len(data), crc))
            self.offset += len(header) + len(data)
            if self.offset > zipcanon.MAX_OFFSET:
                raise zipcanon.ZipError("the archive would exceed 4 GiB; lower message_log.archive_max_records")

    def finish(self) -> None:
        directory = zipcanon.central_directory(self.entries)
        self.file.write(directory)
        self.file.write(zipcanon.end_record(len(self.entries), len(directory), self.offset))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def abort(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _publish(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself is durable before the database remembers the archive
    finally:
        os.close(fd)


async def _previous_hash(ctx: Context, next_seq: int) -> bytes:
    if next_seq == 1:
        return GENESIS
    state = await ctx.store.state()
    if state.pruned.seq == next_seq - 1:
        return state.pruned.hash
    rows = await ctx.store.range(next_seq - 1, next_seq - 1)
    if not rows:
        raise ConfigError(f"record {next_seq - 1}, which the next archive links to, is missing from the log")
    return rows[0].record_hash


async def _write_archive(ctx: Context, folder: Path, first: int, last: int, prev_hash: bytes,
                         previous: fmt.PreviousArchive | None, stamps: list[TimestampRecord]) -> ArchiveRecord:
    name = fmt.archive_name(ctx.gateway_id, first, last)
    tmp = folder / f".{name}.partial"
    stream = await asyncio.to_thread(_ZipStream, tmp)
    try:
        listed: list[tuple[int, str, str]] = []
        certs: dict[str, bytes] = {}
        newest_ms = 0
        last_hash = prev_hash
        for start in range(first, last + 1, PAGE):
            page = await ctx.store.range(start, min(last, start + PAGE - 1))
            if [r.seq for r in page] != list(range(start, min(last, start + PAGE - 1) + 1)):
                raise ConfigError(f"records of seqs {start}..{min(last, start + PAGE - 1)} are missing from the "
                                  "log: run wasl log verify --config first")
            items = []
            for r in page:
                data = fmt.record_to_json(r)
                items.append((fmt.record_entry(r.seq), data))
                listed.append((r.seq, r.xroad_id, fmt.sha256_hex(data)))
                certs.setdefault(fmt.cert_entry(r.signer_cert), r.signer_cert)
                newest_ms = max(newest_ms, r.created_ms)
                last_hash = r.record_hash
            await asyncio.to_thread(stream.add, items)
        files: list[tuple[str, bytes]] = [(fmt.token_entry(t.first_seq, t.last_seq), t.token) for t in stamps]
        files += sorted(certs.items())
        if ctx.conf is not None:
            files += [(fmt.trust_entry("ca", c.public_bytes(Encoding.DER)), c.public_bytes(Encoding.DER))
                      for c in ctx.cas]
            files += [(fmt.trust_entry("tsa", c.public_bytes(Encoding.DER)), c.public_bytes(Encoding.DER))
                      for c in ctx.tsas]
            files.append((fmt.GLOBALCONF, ctx.conf.raw))
        files = list(dict(files).items())  # one entry per name
        manifest = fmt.build_manifest(fmt.Manifest(
            gateway_id=ctx.gateway_id, first_seq=first, last_seq=last, prev_record_hash=prev_hash,
            last_record_hash=last_hash, previous=previous, created_ms=int(time.time() * 1000), records=tuple(listed),
            timestamps=tuple(stamps), token_sha256=tuple(fmt.sha256_hex(t.token) for t in stamps),
            files=tuple((n, fmt.sha256_hex(d)) for n, d in files if not n.startswith("tokens/"))))
        await asyncio.to_thread(stream.add, [*files, (fmt.MANIFEST, manifest)])
        await asyncio.to_thread(stream.finish)
        await asyncio.to_thread(_publish, tmp, folder / name)
    except BaseException:
        await asyncio.to_thread(stream.abort)
        raise
    return ArchiveRecord(first, last, name, hashlib.sha256(manifest).digest(), newest_ms, int(time.time() * 1000))


async def archive_log(config: Path, out: Path | None, retention_days: float | None, stdout: IO[str]) -> int:
    ctx = await _context(config)
    try:
        s = ctx.settings.message_log
        folder = out or s.archive_dir or ctx.settings.state_dir / "archive"
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        if ctx.conf is None:
            print("warning: no global configuration in the state folder: the archives carry no CA or TSA "
                  "certificates; verify them with --trust-ca and --trust-tsa", file=stdout)
        state = await ctx.store.state()
        archives = await ctx.store.archives()
        next_seq = archives[-1].last_seq + 1 if archives else state.pruned.seq + 1
        previous = fmt.PreviousArchive(archives[-1].name, archives[-1].manifest_sha256) if archives else None
        stamps = await ctx.store.timestamps(next_seq, state.stamped_seq)
        plan = fmt.plan_archives(next_seq, state.stamped_seq, [(t.first_seq, t.last_seq) for t in stamps],
                                 s.archive_max_records)
        if not plan:
            print(f"nothing to archive: seqs before {next_seq} are archived, the log is timestamped through seq "
                  f"{state.stamped_seq}, its head is at seq {state.last.seq}", file=stdout)
        for first, last in plan:
            batch = [t for t in stamps if t.last_seq >= first and t.first_seq <= last]
            prev_hash = await _previous_hash(ctx, first)
            written = await _write_archive(ctx, folder, first, last, prev_hash, previous, batch)
            await ctx.store.add_archive(written)
            archives.append(written)
            previous = fmt.PreviousArchive(written.name, written.manifest_sha256)
            print(f"archived seqs {first}..{last} ({last - first + 1} records, {len(batch)} token(s)) to "
                  f"{folder / written.name}", file=stdout)
        days = s.retention_days if retention_days is None else retention_days
        cutoff = int(time.time() * 1000 - days * 86_400_000)
        through = fmt.retention_through(archives, state.pruned.seq, cutoff)
        if through is not None:
            deleted = await ctx.store.delete_through(through)
            print(f"retention: removed {deleted} archived record(s) through seq {through} from the database "
                  f"(archived more than {days:g} day(s) ago)", file=stdout)
        return 0
    finally:
        await ctx.store.close()


# -- wasl log verify --------------------------------------------------------------------------------------------

def verify_files(files: Sequence[Path], trust_cas: list[x509.Certificate] | None,
                 trust_tsas: list[x509.Certificate] | None, keys: Sequence[BodyKey], stdout: IO[str]) -> int:
    reports = []
    problems = 0
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=stdout)
            problems += 1
            continue
        report = verify_archive(path.name, data, trust_cas=trust_cas, trust_tsas=trust_tsas, body_keys=keys)
        reports.append(report)
        m = report.manifest
        span = f"seqs {m.first_seq}..{m.last_seq} of {m.gateway_id}" if m is not None else "unreadable manifest"
        verdict = "OK" if not report.findings else f"{len(report.findings)} PROBLEM(S)"
        print(f"{path}: {verdict}: {span}, {report.records} record(s), {report.tokens} token(s); trusted "
              f"{report.trusted_cas} CA and {report.trusted_tsas} TSA certificate(s)"
              + (" given on the command line" if trust_cas is not None or trust_tsas is not None else
                 " carried in the archive"), file=stdout)
        _print_findings(report.findings, stdout)
        problems += len(report.findings)
    links, notes = verify_links(reports)
    if links:
        print("across archives:", file=stdout)
        _print_findings(links, stdout)
    for note in notes:
        print(f"note: {note}", file=stdout)
    problems += len(links)
    print(f"{len(files)} archive(s) verified: {'no problems' if not problems else f'{problems} problem(s)'}",
          file=stdout)
    return 1 if problems else 0


async def verify_database(config: Path, keys: Sequence[BodyKey], stdout: IO[str]) -> int:
    """The live log: chain, tokens over what is still stored, every record's signature and signer."""
    ctx = await _context(config)
    findings: list[Finding] = []
    try:
        for p in await ctx.store.verify():
            findings.append(Finding(p.kind.value, p.seq, p.xroad_id, p.detail, "database"))
        state = await ctx.store.state()
        stamps = await ctx.store.timestamps(state.pruned.seq + 1, state.stamped_seq)
        for stamp in stamps:
            if stamp.first_seq <= state.pruned.seq:
                continue  # partly pruned: its archive holds the whole batch
            leaves = await ctx.store.record_hashes(stamp.first_seq, stamp.last_seq)
            if [s for s, _ in leaves] != list(range(stamp.first_seq, stamp.last_seq + 1)):
                continue  # missing records are already reported by the chain check
            root = merkle.root([h for _, h in leaves])
            _, why = check_token(ctx.gateway_id, stamp, stamp.token, root, ctx.tsas, None)
            if why is not None:
                findings.append(Finding("timestamp", None, None, f"token for seqs {stamp.first_seq}.."
                                        f"{stamp.last_seq}: {why}", "database"))
        checked = 0
        memo = SignerMemo()
        for start in range(state.pruned.seq + 1, state.last.seq + 1, PAGE):
            for r in await ctx.store.range(start, start + PAGE - 1):
                checked += 1
                for kind, detail in check_message(r, ctx.cas, memo):
                    findings.append(Finding(kind, r.seq, r.xroad_id, detail, "database"))
                if keys and r.body_encrypted:
                    try:
                        plaintext_body(r, list(keys))
                    except BodyKeyError as exc:
                        findings.append(Finding("body", r.seq, r.xroad_id, str(exc), "database"))
        verdict = "OK" if not findings else f"{len(findings)} PROBLEM(S)"
        print(f"database of {ctx.gateway_id}: {verdict}: {checked} record(s) (seqs {state.pruned.seq + 1}.."
              f"{state.last.seq}), {len(stamps)} token(s), timestamped through seq {state.stamped_seq}", file=stdout)
        _print_findings(sorted(findings, key=lambda f: (f.seq is None, f.seq or 0)), stdout)
        return 1 if findings else 0
    finally:
        await ctx.store.close()


# -- wasl log show ------------------------------------------------------------------------------------------------

def _body_text(record: LogRecord, keys: list[BodyKey], full: bool) -> str:
    if record.body is None:
        return f"(not stored; SHA-512 {record.body_sha512.hex()[:32]}...)"
    if record.body_encrypted and not keys:
        return "(encrypted at rest; configure message_log.body_key_file or body_key_env to read it)"
    try:
        body = plaintext_body(record, keys)
    except BodyKeyError as exc:
        return f"(cannot decrypt: {exc})"
    assert body is not None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"({len(body)} bytes of binary data)"
    return text if full or len(text) <= 4000 else text[:4000] + f"... ({len(text)} characters in all)"


async def _record_checks(ctx: Context, r: LogRecord) -> list[tuple[str, bool | None, str]]:
    """(check, passed (None = pending), detail) for one record in the live database."""
    out: list[tuple[str, bool | None, str]] = []
    intact = compute_hash(r) == r.record_hash and (
        r.body is None or r.body_encrypted or hashlib.sha512(r.body).digest() == r.body_sha512)
    out.append(("record hash", intact, "content matches its record_hash" if intact else "content was changed"))
    state = await ctx.store.state()
    if r.seq - 1 == state.pruned.seq:
        prev_ok = r.prev_hash == state.pruned.hash
    else:
        before = await ctx.store.range(r.seq - 1, r.seq - 1)
        prev_ok = bool(before) and before[0].record_hash == r.prev_hash
    after = await ctx.store.range(r.seq + 1, r.seq + 1)
    next_ok = (after[0].prev_hash == r.record_hash) if after else r.seq == state.last.seq and \
        state.last.hash == r.record_hash
    out.append(("chain", prev_ok and next_ok,
                "linked to its neighbours" if prev_ok and next_ok else "a link to a neighbouring record is broken"))
    problems = check_message(r, ctx.cas)
    for kind, good in (("signature", "ECDSA signature over the signed manifest verifies"),
                       ("certificate", "signer certificate chains to an approved CA")):
        bad = [d for k, d in problems if k == kind]
        out.append((kind, not bad, "; ".join(bad) or good))
    stamps = [t for t in await ctx.store.timestamps(r.seq, r.seq) if t.first_seq <= r.seq <= t.last_seq]
    if not stamps:
        out.append(("timestamp", None, "not timestamped yet: waits for the next batch"))
        return out
    stamp = stamps[0]
    leaves = await ctx.store.record_hashes(stamp.first_seq, stamp.last_seq)
    hashes = [h for _, h in leaves]
    seqs = [s for s, _ in leaves]
    if seqs != list(range(stamp.first_seq, stamp.last_seq + 1)):
        out.append(("timestamp", False, f"records of its batch {stamp.first_seq}..{stamp.last_seq} are missing"))
        return out
    path = merkle.audit_path(hashes, r.seq - stamp.first_seq)
    in_tree = merkle.root_from_path(r.record_hash, path) == stamp.merkle_root
    info, why = check_token(ctx.gateway_id, stamp, stamp.token, merkle.root(hashes), ctx.tsas, r.created_ms)
    if in_tree and why is None and info is not None:
        out.append(("timestamp", True, f"in batch {stamp.first_seq}..{stamp.last_seq} ({len(path)}-step Merkle "
                                       f"path), token of {stamp.tsa_name} at {info.gen_time.isoformat()}"))
    else:
        out.append(("timestamp", False, why or "the record's Merkle path does not lead to the stamped root"))
    return out


def _print_record(r: LogRecord, checks: list[tuple[str, bool | None, str]], keys: list[BodyKey], full: bool,
                  stdout: IO[str]) -> None:
    when = dt.datetime.fromtimestamp(r.created_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
    print(f"\n== seq {r.seq}: {r.side} side, {r.direction}, {when}", file=stdout)
    print(f"   client {r.client}  service {r.service}  request_id {r.request_id}", file=stdout)
    print(f"   signed manifest: {r.manifest.decode('utf-8', 'replace')}", file=stdout)
    for name, ok, detail in checks:
        mark = "PENDING" if ok is None else ("OK" if ok else "FAILED")
        print(f"   [{mark}] {name}: {detail}", file=stdout)
    print("   body:", file=stdout)
    for line in _body_text(r, keys, full).splitlines() or [""]:
        print(f"     {line}", file=stdout)


async def show(config: Path, xroad_id: str, full: bool, stdout: IO[str]) -> int:
    ctx = await _context(config)
    try:
        keys = [k for k in [await asyncio.to_thread(load_body_key, ctx.settings.message_log)] if k is not None]
        records = await ctx.store.by_xroad_id(xroad_id)
        if not records:
            return await _show_from_archives(ctx, xroad_id, keys, full, stdout)
        print(f"X-Road id {xroad_id}: {len(records)} record(s) in the message log of {ctx.gateway_id}", file=stdout)
        failed = False
        for r in records:
            checks = await _record_checks(ctx, r)
            failed |= any(ok is False for _, ok, _ in checks)
            _print_record(r, checks, keys, full, stdout)
        directions = {r.direction for r in records}
        if directions != {"request", "response"}:
            print(f"\nnote: only the {', '.join(sorted(directions))} of this transaction is in this log", file=stdout)
        print(f"\n{'every record verifies' if not failed else 'VERIFICATION FAILED'}", file=stdout)
        return 1 if failed else 0
    finally:
        await ctx.store.close()


async def _show_from_archives(ctx: Context, xroad_id: str, keys: list[BodyKey], full: bool, stdout: IO[str]) -> int:
    folder = ctx.settings.message_log.archive_dir or ctx.settings.state_dir / "archive"
    for archived in reversed(await ctx.store.archives()):
        path = folder / archived.name
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            continue
        report = await asyncio.to_thread(verify_archive, archived.name, data, body_keys=keys)
        if report.manifest is None:
            continue
        seqs = [seq for seq, xid, _ in report.manifest.records if xid == xroad_id]
        if not seqs:
            continue
        entries, _ = zipcanon.read_entries(data)
        by_name = {e.name: data[e.data_offset:e.data_offset + e.size] for e in entries}
        certs = {n[len("certs/"):-len(".der")]: bytes(d) for n, d in by_name.items() if n.startswith("certs/")}
        print(f"X-Road id {xroad_id}: no longer in the database; found in archive {path}", file=stdout)
        failed = False
        for seq in seqs:
            r = fmt.record_from_json(by_name[fmt.record_entry(seq)], certs)
            mine = [f for f in report.findings if f.seq == seq]
            checks: list[tuple[str, bool | None, str]] = [
                ("archive checks", not mine, "; ".join(str(f) for f in mine) or "record, chain, signature, "
                                                                                "certificate and token verify")]
            failed |= bool(mine)
            _print_record(r, checks, keys, full, stdout)
        others = [f for f in report.findings if f.seq not in seqs]
        if others:
            print(f"\nnote: the archive has {len(others)} other problem(s); run wasl log verify {path}", file=stdout)
            failed = True
        return 1 if failed else 0
    print(f"X-Road id {xroad_id}: not found in the message log of {ctx.gateway_id} nor in its archives",
          file=stdout)
    return 1
