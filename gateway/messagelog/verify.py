"""Offline verification decisions, no I/O: a record's signature and signer, a batch's token, and whole archives.

Everything here takes bytes and certificates and returns findings; the ``wasl log`` commands read the files or the
database and print them. What is checked is listed in docs/messagelog.md ("What verify checks").
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core import envelope
from gateway.core.certificates import (
    CertificateError,
    check_issued_by_approved_ca,
    check_sign_certificate,
    check_validity,
)
from gateway.core.envelope import SignedParts
from gateway.core.faults import Fault, Origin
from gateway.core.timestamp import TimestampError, TimestampInfo, verify_timestamp_response
from gateway.messagelog import archive as fmt
from gateway.messagelog import merkle, zipcanon
from gateway.messagelog.bodycrypt import BodyKey, BodyKeyError, decrypt_body
from gateway.messagelog.records import GENESIS, ChainHead, LogRecord, verify_chain
from gateway.messagelog.stamping import batch_digest
from gateway.messagelog.store import TimestampRecord

# A token stamped noticeably before a record it covers was created means a clock, or the log, is wrong.
TOKEN_SKEW_MS = 300_000


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: what kind, which record (seq and X-Road id, when it concerns one), and where it was found."""

    kind: str  # changed, deleted, inserted, reordered, renumbered, broken_link, signature, certificate, timestamp,
    #            body, archive, link
    seq: int | None
    xroad_id: str | None
    detail: str
    where: str = ""

    def __str__(self) -> str:
        who = "" if self.seq is None else f" seq {self.seq}"
        who += "" if self.xroad_id is None else f" xroad_id={self.xroad_id!r}"
        place = f"{self.where}: " if self.where else ""
        return f"{place}{self.kind}:{who}: {self.detail}" if who else f"{place}{self.kind}: {self.detail}"


def _when(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _member(path: str) -> str:
    return "/".join(path.split("/")[:3])


class SignerMemo:
    """What check_message learns about a signer certificate once and reuses for every record it signed: the
    parsed certificate and key, and the approved CA that issued it for a member. Only the validity of both at
    each record's time is checked again, so the result is exactly that of ``check_sign_certificate``."""

    def __init__(self) -> None:
        self.parsed: dict[bytes, tuple[x509.Certificate, object]] = {}
        self.issuer: dict[tuple[bytes, str], x509.Certificate] = {}
        self.verified = envelope.VerifiedSignatures()  # batch roots, verified once for all their records

    def load(self, der: bytes) -> tuple[x509.Certificate, object]:
        hit = self.parsed.get(der)
        if hit is None:
            cert = x509.load_der_x509_certificate(der)
            hit = self.parsed[der] = (cert, cert.public_key())
        return hit

    def check_signer(self, der: bytes, cert: x509.Certificate, cas: Sequence[x509.Certificate], member: str,
                     at: dt.datetime) -> None:
        ca = self.issuer.get((der, member))
        if ca is not None:
            check_validity(cert, at)
            check_validity(ca, at)
            return
        check_sign_certificate(cert, list(cas), member, at)
        self.issuer[(der, member)] = check_issued_by_approved_ca(cert, list(cas), at)


def check_message(record: LogRecord, cas: Sequence[x509.Certificate],
                  memo: SignerMemo | None = None) -> list[tuple[str, str]]:
    """(kind, detail) for each way the record's signed message fails: the ECDSA signature over the manifest with
    the signer certificate in the record, the manifest's agreement with the record, and the signer certificate's
    chain to an approved CA at the record's time, naming the member that had to sign (the client for a request,
    the service's provider for a response). Pass one ``memo`` for many records of the same signers."""
    out: list[tuple[str, str]] = []
    memo = memo or SignerMemo()
    try:
        cert, key = memo.load(record.signer_cert)
    except ValueError:
        return [("certificate", "the signer certificate is not valid DER")]
    if not isinstance(key, ec.EllipticCurvePublicKey):
        out.append(("signature", "the signer certificate does not hold an ECDSA key"))
    else:
        try:
            envelope.verify_signature(SignedParts(record.manifest, record.signature, record.signer_cert), key,
                                      Origin.SERVER_PROXY, memo.verified)
        except Fault as exc:
            out.append(("signature", f"the signature does not verify over the signed manifest: {exc.message}"))
    try:
        manifest = json.loads(record.manifest)
        if not isinstance(manifest, dict):
            raise ValueError
    except ValueError:
        out.append(("signature", "the signed manifest is not a JSON object"))
        manifest = {}
    if manifest:
        expected = {"type": record.direction, "id": record.xroad_id, "request_id": record.request_id,
                    "body_sha512": base64.b64encode(record.body_sha512).decode("ascii")}
        if record.direction == "request":
            expected.update(client=record.client, service=record.service)
        for key_name, value in expected.items():
            if manifest.get(key_name) != value:
                out.append(("signature", f"the signed manifest's {key_name} differs from the record's"))
    member = _member(record.client if record.direction == "request" else record.service)
    if not cas:
        out.append(("certificate", "no trusted CA certificate to check the signer against"))
    else:
        try:
            memo.check_signer(record.signer_cert, cert, cas, member, _when(record.created_ms))
        except CertificateError as exc:
            out.append(("certificate", f"signer certificate not valid for {member} at the record's time: {exc}"))
    return out


def check_token(gateway_id: str, stamp: TimestampRecord, token: bytes, root: bytes, tsas: Sequence[x509.Certificate],
                newest_created_ms: int | None) -> tuple[TimestampInfo | None, str | None]:
    """Verify a batch's token over the digest of ``root`` (recomputed by the caller from the records); return the
    token's assertion, or why it fails."""
    if root != stamp.merkle_root:
        return None, "the records' Merkle root differs from the one recorded for this token: a record hash changed"
    if not tsas:
        return None, "no trusted TSA certificate to check the token against"
    digest = batch_digest(gateway_id, stamp.first_seq, stamp.last_seq, root)
    try:
        info = verify_timestamp_response(token, digest, list(tsas))
    except TimestampError as exc:
        return None, f"the token does not verify: {exc}"
    gen_ms = int(info.gen_time.timestamp() * 1000)
    if newest_created_ms is not None and gen_ms + TOKEN_SKEW_MS < newest_created_ms:
        return info, "the token's time precedes records it covers"
    return info, None


# -- archives -------------------------------------------------------------------------------------------------

@dataclass
class ArchiveReport:
    name: str
    manifest: fmt.Manifest | None = None
    manifest_sha256: bytes | None = None
    findings: list[Finding] = field(default_factory=list)
    records: int = 0
    tokens: int = 0
    trusted_cas: int = 0
    trusted_tsas: int = 0


def _load_certs(data: Sequence[bytes]) -> list[x509.Certificate]:
    out = []
    for der in data:
        try:
            out.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    return out


def verify_archive(name: str, buf: bytes | memoryview, *, trust_cas: Sequence[x509.Certificate] | None = None,
                   trust_tsas: Sequence[x509.Certificate] | None = None,
                   body_keys: Sequence[BodyKey] = ()) -> ArchiveReport:
    """Check one archive file's bytes completely; ``trust_*`` replace the CA and TSA certificates the archive
    carries (pass them to anchor trust outside the archive). With ``body_keys``, encrypted bodies are decrypted
    and checked too."""
    report = ArchiveReport(name)
    xroad_ids: dict[int, str] = {}

    def add(kind: str, seq: int | None, detail: str) -> None:
        report.findings.append(Finding(kind, seq, xroad_ids.get(seq) if seq is not None else None, detail, name))

    try:
        entries, disagreements = zipcanon.read_entries(buf)
    except zipcanon.ZipError as exc:
        add("archive", None, str(exc))
        return report
    data = {e.name: buf[e.data_offset:e.data_offset + e.size] for e in entries}
    layout = [*disagreements, *zipcanon.differences(buf, entries)]
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            layout.append(zipcanon.Difference(e.header_offset, e.name, "local header", "a second entry of this name"))
        seen.add(e.name)

    manifest = None
    if fmt.MANIFEST not in data:
        add("archive", None, "manifest.json is missing")
    else:
        raw_manifest = bytes(data[fmt.MANIFEST])
        report.manifest_sha256 = hashlib.sha256(raw_manifest).digest()
        try:
            manifest = fmt.parse_manifest(raw_manifest)
        except fmt.ArchiveError as exc:
            add("archive", None, str(exc))
    report.manifest = manifest
    if manifest is not None:
        xroad_ids.update((seq, xid) for seq, xid, _ in manifest.records)

    # Certificates: an entry is usable only if its name is its own hash.
    signer_certs: dict[str, bytes] = {}
    cas: list[bytes] = []
    tsas: list[bytes] = []
    for entry_name, blob in data.items():
        for prefix, bucket in (("certs/", None), ("trust/ca-", cas), ("trust/tsa-", tsas)):
            if entry_name.startswith(prefix) and entry_name.endswith(".der"):
                digest = entry_name[len(prefix):-len(".der")]
                if fmt.sha256_hex(blob) != digest:
                    add("archive", None, f"{entry_name} does not match its own hash: the certificate was changed")
                elif bucket is None:
                    signer_certs[digest] = bytes(blob)
                else:
                    bucket.append(bytes(blob))
    ca_certs = list(trust_cas) if trust_cas is not None else _load_certs(cas)
    tsa_certs = list(trust_tsas) if trust_tsas is not None else _load_certs(tsas)
    report.trusted_cas, report.trusted_tsas = len(ca_certs), len(tsa_certs)

    # Every entry against the manifest.
    if manifest is not None:
        listed = manifest.entry_hashes()
        for entry_name, digest in listed.items():
            seq = fmt.seq_of_entry(entry_name)
            if entry_name not in data:
                add("deleted" if seq is not None else "archive", seq, f"{entry_name} is missing from the archive")
            elif fmt.sha256_hex(data[entry_name]) != digest:
                add("changed" if seq is not None else "archive", seq,
                    f"{entry_name} does not match the SHA-256 the manifest lists")
        for entry_name in data:
            if entry_name != fmt.MANIFEST and entry_name not in listed:
                add("inserted" if fmt.seq_of_entry(entry_name) is not None else "archive",
                    fmt.seq_of_entry(entry_name), f"{entry_name} is not listed in the manifest")
        seqs = [seq for seq, _, _ in manifest.records]
        if seqs != list(range(manifest.first_seq, manifest.last_seq + 1)):
            add("archive", None, f"the manifest does not list exactly seqs {manifest.first_seq}..{manifest.last_seq}")

    # Records: parse, then the chain over them in stored order.
    records: list[LogRecord] = []
    for entry_name in sorted(n for n in data if fmt.seq_of_entry(n) is not None):
        seq = fmt.seq_of_entry(entry_name)
        try:
            record = fmt.record_from_json(data[entry_name], signer_certs)
        except fmt.ArchiveError as exc:
            add("changed", seq, f"{entry_name} is unreadable: {exc}")
            continue
        xroad_ids.setdefault(record.seq, record.xroad_id)
        if record.seq != seq:
            add("reordered", seq, f"{entry_name} holds the record of seq {record.seq}")
        if manifest is not None and seq in xroad_ids and xroad_ids[seq] != record.xroad_id:
            add("changed", seq, f"the manifest lists xroad_id {xroad_ids[seq]!r}, the record holds "
                                f"{record.xroad_id!r}")
        records.append(record)
    report.records = len(records)
    if manifest is not None:
        problems = verify_chain(records, manifest.prev_record_hash, start_seq=manifest.first_seq,
                                end=ChainHead(manifest.last_seq, manifest.last_record_hash))
    else:
        problems = verify_chain(records)
    for p in problems:
        report.findings.append(Finding(p.kind.value, p.seq, p.xroad_id or xroad_ids.get(p.seq), p.detail, name))

    # Signatures and certificates; bodies when a key is given.
    memo = SignerMemo()
    for record in records:
        for kind, detail in check_message(record, ca_certs, memo):
            add(kind, record.seq, detail)
        if body_keys and record.body_encrypted and record.body is not None:
            try:
                decrypt_body(list(body_keys), record.body, record.body_sha512)
            except BodyKeyError as exc:
                add("body", record.seq, str(exc))

    # Tokens: each batch's root from the records, the token over it, and together they must cover the range.
    hashes = {r.seq: r.record_hash for r in records}
    created = {r.seq: r.created_ms for r in records}
    if manifest is not None:
        stamps = list(manifest.timestamps)
        covered_to = manifest.first_seq - 1
        for stamp in stamps:
            report.tokens += 1
            if stamp.first_seq != covered_to + 1:
                add("timestamp", None, f"seqs {covered_to + 1}..{stamp.first_seq - 1} are covered by no token")
            covered_to = max(covered_to, stamp.last_seq)
            token = data.get(fmt.token_entry(stamp.first_seq, stamp.last_seq))
            if token is None:
                continue  # already reported as missing
            batch = range(stamp.first_seq, stamp.last_seq + 1)
            missing = [s for s in batch if s not in hashes]
            if missing:
                add("timestamp", missing[0], f"the token for seqs {stamp.first_seq}..{stamp.last_seq} cannot be "
                                             f"checked: {len(missing)} of its records are missing or unreadable")
                continue
            root = merkle.root([hashes[s] for s in batch])
            _, why = check_token(manifest.gateway_id, stamp, bytes(token), root, tsa_certs,
                                 max(created[s] for s in batch))
            if why is not None:
                add("timestamp", None, f"token for seqs {stamp.first_seq}..{stamp.last_seq}: {why}")
        if covered_to < manifest.last_seq:
            add("timestamp", None, f"seqs {covered_to + 1}..{manifest.last_seq} are covered by no token")

    # Byte-level findings last, named by the record whose entry they fall in.
    for diff in layout:
        seq = fmt.seq_of_entry(diff.entry) if diff.entry is not None else None
        what = f"{diff.part} of {diff.entry}" if diff.entry is not None else diff.part
        add("changed" if seq is not None else "archive", seq, f"byte {diff.offset} ({what}): {diff.detail}")
    report.findings.sort(key=lambda f: (f.seq is None, f.seq or 0, f.kind))
    return report


def verify_links(reports: Sequence[ArchiveReport]) -> tuple[list[Finding], list[str]]:
    """Findings about how the archives given fit together (continuity of seqs and hashes, and each archive's link
    to the previous one's manifest), plus notes that are not failures (where the given set starts)."""
    findings: list[Finding] = []
    notes: list[str] = []
    readable = sorted((r for r in reports if r.manifest is not None), key=lambda r: r.manifest.first_seq)  # type: ignore[union-attr]
    by_gateway: dict[str, list[ArchiveReport]] = {}
    for r in readable:
        by_gateway.setdefault(r.manifest.gateway_id, []).append(r)  # type: ignore[union-attr]
    for gateway_id, chain in by_gateway.items():
        first = chain[0].manifest
        assert first is not None
        if first.previous is None and (first.first_seq != 1 or first.prev_record_hash != GENESIS):
            findings.append(Finding("link", first.first_seq, None, "the first archive of the log does not start the "
                                    "chain at seq 1", chain[0].name))
        elif first.previous is not None:
            notes.append(f"{gateway_id}: the archives given start at seq {first.first_seq}, after archive "
                         f"{first.previous.name}, which was not given: the chain is checked from there on")
        for a, b in itertools.pairwise(chain):
            ma, mb = a.manifest, b.manifest
            assert ma is not None and mb is not None
            if mb.first_seq > ma.last_seq + 1:
                findings.append(Finding("deleted", ma.last_seq + 1, None, f"seqs {ma.last_seq + 1}..{mb.first_seq - 1}"
                                        f" are in none of the archives given (between {a.name} and {b.name})", b.name))
                continue
            if mb.first_seq <= ma.last_seq:
                findings.append(Finding("inserted", mb.first_seq, None, f"{b.name} overlaps {a.name} (seqs "
                                        f"{mb.first_seq}..{ma.last_seq} are in both)", b.name))
                continue
            if mb.prev_record_hash != ma.last_record_hash:
                findings.append(Finding("broken_link", mb.first_seq, None, f"the first record of {b.name} does not "
                                        f"link to the last record of {a.name}", b.name))
            if mb.previous is None or mb.previous.manifest_sha256 != a.manifest_sha256:
                findings.append(Finding("link", None, None, f"{b.name} does not link to the manifest of {a.name}: "
                                        "that archive was changed or replaced", b.name))
    return findings, notes
