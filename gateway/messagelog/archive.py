"""The message-log archive format without I/O: record and manifest encodings, which ranges to archive, and retention.

An archive is a canonical ZIP (zipcanon.py) holding, in this order:

- ``records/<seq:012d>.json``: one record each, every field of the stored record (blobs in base64, hashes in hex),
  the signer certificate by reference;
- ``tokens/<first:012d>-<last:012d>.tst``: the DER RFC 3161 token of each batch in the range;
- ``certs/<sha256>.der``: the signer certificates the records reference;
- ``trust/ca-<sha256>.der``, ``trust/tsa-<sha256>.der``: the approved CAs and TSAs of the global configuration at
  archiving time, which the offline verifier trusts unless told otherwise;
- ``globalconf.json``: that signed global configuration, as downloaded (when the gateway has one);
- ``manifest.json``, last: the range, the chain hashes it starts from and ends with, every entry's SHA-256, the
  batches, and the SHA-256 of the previous archive's manifest, which links archives into a chain of their own.

An archive always holds whole timestamp batches, so every record in it can be checked against a token using the
archive alone. See docs/messagelog.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.messagelog.records import DIRECTIONS, SIDES, LogRecord
from gateway.messagelog.store import ArchiveRecord, TimestampRecord

FORMAT = "wasl-messagelog-archive/1"
MANIFEST = "manifest.json"
GLOBALCONF = "globalconf.json"


class ArchiveError(ValueError):
    """An archive entry that cannot be read as what it claims to be; the message says why."""


def record_entry(seq: int) -> str:
    return f"records/{seq:012d}.json"


def seq_of_entry(name: str) -> int | None:
    """The seq a ``records/...json`` entry name claims, or None for any other name."""
    if not (name.startswith("records/") and name.endswith(".json")):
        return None
    digits = name[len("records/"):-len(".json")]
    return int(digits) if digits.isdigit() else None


def token_entry(first_seq: int, last_seq: int) -> str:
    return f"tokens/{first_seq:012d}-{last_seq:012d}.tst"


def cert_entry(cert_der: bytes) -> str:
    return f"certs/{hashlib.sha256(cert_der).hexdigest()}.der"


def trust_entry(kind: str, cert_der: bytes) -> str:
    return f"trust/{kind}-{hashlib.sha256(cert_der).hexdigest()}.der"


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _dump(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ArchiveError(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ArchiveError(f"{what} is not valid base64") from None


def _unhex(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ArchiveError(f"{what} must be hex text")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ArchiveError(f"{what} is not valid hex") from None
    if size is not None and len(raw) != size:
        raise ArchiveError(f"{what} must be {size} bytes")
    return raw


def record_to_json(r: LogRecord) -> bytes:
    """One record as its archive entry: deterministic JSON of every stored field."""
    return _dump({
        "seq": r.seq, "created_ms": r.created_ms, "direction": r.direction, "side": r.side,
        "xroad_id": r.xroad_id, "request_id": r.request_id, "client": r.client, "service": r.service,
        "manifest": _b64(r.manifest), "signature": _b64(r.signature),
        "signer_cert_sha256": hashlib.sha256(r.signer_cert).hexdigest(),
        "body": None if r.body is None else _b64(r.body), "body_encrypted": bool(r.body_encrypted),
        "body_sha512": _b64(r.body_sha512), "prev_hash": r.prev_hash.hex(), "record_hash": r.record_hash.hex(),
    })


def record_from_json(data: bytes | memoryview, certs: dict[str, bytes]) -> LogRecord:
    """Parse a record entry; ``certs`` maps SHA-256 hex to DER. Raises ArchiveError. The record is NOT checked
    against its hash here: that is verify_chain's job, which names what is wrong."""
    try:
        raw = json.loads(bytes(data))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArchiveError("not valid JSON") from None
    if not isinstance(raw, dict):
        raise ArchiveError("not a JSON object")
    expected = {"seq", "created_ms", "direction", "side", "xroad_id", "request_id", "client", "service", "manifest",
                "signature", "signer_cert_sha256", "body", "body_encrypted", "body_sha512", "prev_hash", "record_hash"}
    if set(raw) != expected:
        raise ArchiveError(f"fields differ from a record's: {sorted(set(raw) ^ expected)}")
    for key in ("seq", "created_ms"):
        if not isinstance(raw[key], int) or isinstance(raw[key], bool):
            raise ArchiveError(f"{key} must be an integer")
    for key in ("direction", "side", "xroad_id", "request_id", "client", "service"):
        if not isinstance(raw[key], str):
            raise ArchiveError(f"{key} must be text")
    if raw["direction"] not in DIRECTIONS or raw["side"] not in SIDES:
        raise ArchiveError("direction or side has an unknown value")
    if not isinstance(raw["body_encrypted"], bool):
        raise ArchiveError("body_encrypted must be true or false")
    cert_hash = raw["signer_cert_sha256"]
    if not isinstance(cert_hash, str) or cert_hash not in certs:
        raise ArchiveError("its signer certificate is not in the archive")
    return LogRecord(
        raw["seq"], raw["created_ms"], raw["direction"], raw["side"], raw["xroad_id"], raw["request_id"],
        raw["client"], raw["service"], _unb64(raw["manifest"], "manifest"), _unb64(raw["signature"], "signature"),
        certs[cert_hash], None if raw["body"] is None else _unb64(raw["body"], "body"),
        _unb64(raw["body_sha512"], "body_sha512"), _unhex(raw["prev_hash"], "prev_hash", 32),
        _unhex(raw["record_hash"], "record_hash", 32), raw["body_encrypted"],
    )


# -- the manifest -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreviousArchive:
    name: str
    manifest_sha256: bytes


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` states about its archive."""

    gateway_id: str
    first_seq: int
    last_seq: int
    prev_record_hash: bytes  # the hash record first_seq links to (GENESIS, or the last record of the archive before)
    last_record_hash: bytes
    previous: PreviousArchive | None
    created_ms: int
    records: tuple[tuple[int, str, str], ...]  # (seq, xroad_id, SHA-256 hex of the entry)
    timestamps: tuple[TimestampRecord, ...]  # token bytes left empty: they are in tokens/ entries
    token_sha256: tuple[str, ...]  # per timestamp, the SHA-256 hex of its entry
    files: tuple[tuple[str, str], ...]  # (entry name, SHA-256 hex): certificates, trust anchors, globalconf

    def entry_hashes(self) -> dict[str, str]:
        """Every entry the manifest lists, with its SHA-256 hex."""
        out = {record_entry(seq): digest for seq, _, digest in self.records}
        out.update((token_entry(t.first_seq, t.last_seq), d) for t, d in zip(self.timestamps, self.token_sha256,
                                                                              strict=True))
        out.update(self.files)
        return out


def build_manifest(m: Manifest) -> bytes:
    return _dump({
        "format": FORMAT, "gateway_id": m.gateway_id, "first_seq": m.first_seq, "last_seq": m.last_seq,
        "prev_record_hash": m.prev_record_hash.hex(), "last_record_hash": m.last_record_hash.hex(),
        "previous_archive": None if m.previous is None else {
            "name": m.previous.name, "manifest_sha256": m.previous.manifest_sha256.hex()},
        "created_ms": m.created_ms,
        "records": [[seq, xroad_id, digest] for seq, xroad_id, digest in m.records],
        "timestamps": [{
            "first_seq": t.first_seq, "last_seq": t.last_seq, "merkle_root": t.merkle_root.hex(),
            "tsa_name": t.tsa_name, "tsa_url": t.tsa_url, "gen_time_ms": t.gen_time_ms, "created_ms": t.created_ms,
            "entry": token_entry(t.first_seq, t.last_seq), "sha256": digest,
        } for t, digest in zip(m.timestamps, m.token_sha256, strict=True)],
        "files": [{"entry": name, "sha256": digest} for name, digest in m.files],
    })


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ArchiveError(f"manifest field {key} must be an integer")
    return value


def _str(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ArchiveError(f"manifest field {key} must be text")
    return value


def parse_manifest(data: bytes | memoryview) -> Manifest:
    """Read ``manifest.json``; raises ArchiveError naming the field that is wrong."""
    try:
        raw = json.loads(bytes(data))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArchiveError("manifest.json is not valid JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArchiveError(f"manifest.json is not a {FORMAT} manifest")
    prev = raw.get("previous_archive")
    previous = None
    if prev is not None:
        if not isinstance(prev, dict):
            raise ArchiveError("manifest field previous_archive must be an object or null")
        previous = PreviousArchive(_str(prev, "name"), _unhex(prev.get("manifest_sha256"), "previous manifest", 32))
    records = []
    for item in raw.get("records") or []:
        if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], int)
                or not isinstance(item[1], str) or not isinstance(item[2], str)):
            raise ArchiveError("manifest field records holds a malformed entry")
        records.append((item[0], item[1], item[2]))
    stamps, token_hashes = [], []
    for item in raw.get("timestamps") or []:
        if not isinstance(item, dict):
            raise ArchiveError("manifest field timestamps holds a malformed entry")
        stamps.append(TimestampRecord(_int(item, "first_seq"), _int(item, "last_seq"),
                                      _unhex(item.get("merkle_root"), "merkle_root", 32), b"", _str(item, "tsa_name"),
                                      _str(item, "tsa_url"), _int(item, "gen_time_ms"), _int(item, "created_ms")))
        token_hashes.append(_str(item, "sha256"))
    files = []
    for item in raw.get("files") or []:
        if not isinstance(item, dict):
            raise ArchiveError("manifest field files holds a malformed entry")
        files.append((_str(item, "entry"), _str(item, "sha256")))
    return Manifest(
        gateway_id=_str(raw, "gateway_id"), first_seq=_int(raw, "first_seq"), last_seq=_int(raw, "last_seq"),
        prev_record_hash=_unhex(raw.get("prev_record_hash"), "prev_record_hash", 32),
        last_record_hash=_unhex(raw.get("last_record_hash"), "last_record_hash", 32), previous=previous,
        created_ms=_int(raw, "created_ms"), records=tuple(records), timestamps=tuple(stamps),
        token_sha256=tuple(token_hashes), files=tuple(files),
    )


# -- planning and retention ---------------------------------------------------------------------------------------

def archive_name(gateway_id: str, first_seq: int, last_seq: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in gateway_id)
    return f"{safe}-{first_seq:012d}-{last_seq:012d}.zip"


def plan_archives(next_seq: int, stamped_seq: int, batches: Sequence[tuple[int, int]],
                  max_records: int) -> list[tuple[int, int]]:
    """The (first_seq, last_seq) of each archive to write: closed ranges, from ``next_seq`` (one after the last
    archive) through the stamped prefix, made of whole timestamp batches, each at most ``max_records`` long unless
    a single batch is longer. ``batches`` are the stored (first, last) ranges in order."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    end = next_seq - 1
    for first, last in batches:
        if last < next_seq or last > stamped_seq:
            continue
        if first < next_seq:
            # A batch that began before the last archive's end: only its remainder is still to archive.
            first = next_seq
        if first != end + 1:
            raise ArchiveError(f"the timestamp batches leave a gap at seqs {end + 1}..{first - 1}")
        if start is not None and last - start + 1 > max_records:
            out.append((start, end))
            start = None
        if start is None:
            start = first
        end = last
    if start is not None:
        out.append((start, end))
    return out


def retention_through(archives: Sequence[ArchiveRecord], pruned_seq: int, cutoff_ms: int) -> int | None:
    """The seq through which records may leave the live database: the end of the newest archive whose records
    are all older than ``cutoff_ms``, taking archives in order and stopping at the first too young; None if that
    prunes nothing. Records that are not archived never qualify."""
    through = None
    for a in archives:
        if a.last_created_ms > cutoff_ms:
            break
        through = a.last_seq
    return through if through is not None and through > pruned_seq else None
