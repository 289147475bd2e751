"""Canonical ZIP files without I/O: the exact bytes of a stored (uncompressed) ZIP, and a strict reader for them.

Message-log archives are ordinary ZIP files (``unzip -l`` lists them), but written one way only: entries stored,
no extra fields, no comments, no data descriptors, a fixed 1980-01-01 timestamp. Their bytes are therefore a pure
function of the entries (name, data) in order, and the verifier checks an archive by rebuilding those bytes from
the entries it reads and comparing: *any* changed byte, in a header, the central directory or the data (through
its CRC-32), shows up as a difference that falls inside one named entry. Entries are stored, not deflated, so the
rebuild does not depend on a compressor's version: an archive verifies the same in twenty years.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_LOCAL_SIG = 0x04034B50
_CENTRAL_SIG = 0x02014B50
_END_SIG = 0x06054B50
_VERSION = 20  # 2.0, made by MS-DOS: no Unix mode bits to vary
_FLAGS = 0x0800  # names are UTF-8
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_DOS_TIME = 0
MAX_ENTRIES = 0xFFFF - 1
MAX_OFFSET = 0xFFFFFFFF - 1  # no ZIP64: an archive stays below 4 GiB


class ZipError(ValueError):
    """Bytes that are not a canonical archive ZIP, or entries that cannot be written as one."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry as found in (or written to) a file: where its data is, how long, and the CRC-32 its headers state."""

    name: str
    header_offset: int
    data_offset: int
    size: int
    crc: int


@dataclass(frozen=True, slots=True)
class Difference:
    """A stretch of the file that differs from the canonical encoding; ``entry`` is the entry it belongs to, or
    None for the end record."""

    offset: int
    entry: str | None
    part: str  # "local header", "data", "central directory", "end record", "trailing bytes"
    detail: str


def crc32(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not raw or len(raw) > 0xFFFF or raw.startswith(b"/") or b"\\" in raw or b".." in raw.split(b"/"):
        raise ZipError(f"unusable entry name {name!r}")
    return raw


def local_header(name: str, size: int, crc: int) -> bytes:
    raw = _name(name)
    if size > MAX_OFFSET:
        raise ZipError(f"entry {name} is too large for an archive without ZIP64")
    return _LOCAL.pack(_LOCAL_SIG, _VERSION, _FLAGS, 0, _DOS_TIME, _DOS_DATE, crc, size, size, len(raw), 0) + raw


def central_directory(entries: Sequence[Entry]) -> bytes:
    if len(entries) > MAX_ENTRIES:
        raise ZipError(f"{len(entries)} entries: more than an archive without ZIP64 can hold")
    out = []
    for e in entries:
        raw = _name(e.name)
        if e.header_offset > MAX_OFFSET:
            raise ZipError("the archive is larger than 4 GiB, which needs ZIP64")
        out.append(_CENTRAL.pack(_CENTRAL_SIG, _VERSION, _VERSION, _FLAGS, 0, _DOS_TIME, _DOS_DATE, e.crc, e.size,
                                 e.size, len(raw), 0, 0, 0, 0, 0, e.header_offset) + raw)
    return b"".join(out)


def end_record(count: int, directory_size: int, directory_offset: int) -> bytes:
    if directory_offset > MAX_OFFSET:
        raise ZipError("the archive is larger than 4 GiB, which needs ZIP64")
    return _END.pack(_END_SIG, 0, 0, count, count, directory_size, directory_offset, 0)


def encode(entries: Sequence[tuple[str, bytes]]) -> bytes:
    """The canonical ZIP of ``entries`` in memory (tests and small archives; the archiver streams the same bytes)."""
    parts: list[bytes] = []
    found: list[Entry] = []
    offset = 0
    for name, data in entries:
        header = local_header(name, len(data), crc32(data))
        found.append(Entry(name, offset, offset + len(header), len(data), crc32(data)))
        parts += (header, data)
        offset += len(header) + len(data)
    directory = central_directory(found)
    return b"".join([*parts, directory, end_record(len(found), len(directory), offset)])


# -- reading ------------------------------------------------------------------------------------------------------

def _walk_local(buf: bytes | memoryview) -> list[Entry] | None:
    """Entries found by walking the local headers from the start; None if the walk does not end where the
    central directory starts."""
    entries: list[Entry] = []
    offset, end = 0, len(buf)
    while offset + 4 <= end and struct.unpack_from("<I", buf, offset)[0] == _LOCAL_SIG:
        if offset + _LOCAL.size > end:
            return None
        _, _, _, _, _, _, crc, csize, size, name_len, extra_len = _LOCAL.unpack_from(buf, offset)
        data_offset = offset + _LOCAL.size + name_len + extra_len
        if csize != size or data_offset + size > end:
            return None
        try:
            name = bytes(buf[offset + _LOCAL.size:offset + _LOCAL.size + name_len]).decode("utf-8")
        except UnicodeDecodeError:
            return None
        entries.append(Entry(name, offset, data_offset, size, crc))
        offset = data_offset + size
    if offset + 4 > end or struct.unpack_from("<I", buf, offset)[0] != _CENTRAL_SIG:
        return None
    return entries


def _walk_central(buf: bytes | memoryview) -> list[Entry] | None:
    """Entries found through the end record and the central directory; None if those are unreadable."""
    end = len(buf)
    if end < _END.size:
        return None
    sig, _, _, _, count, dir_size, dir_offset, _ = _END.unpack_from(buf, end - _END.size)
    if sig != _END_SIG or dir_offset + dir_size > end - _END.size:
        return None
    entries: list[Entry] = []
    offset = dir_offset
    for _ in range(count):
        if offset + _CENTRAL.size > end:
            return None
        fields = _CENTRAL.unpack_from(buf, offset)
        if fields[0] != _CENTRAL_SIG:
            return None
        crc, size, name_len, extra_len, comment_len, header_offset = (fields[7], fields[9], fields[10], fields[11],
                                                                       fields[12], fields[16])
        try:
            name = bytes(buf[offset + _CENTRAL.size:offset + _CENTRAL.size + name_len]).decode("utf-8")
        except UnicodeDecodeError:
            return None
        data_offset = header_offset + _LOCAL.size + name_len
        if data_offset + size > end:
            return None
        entries.append(Entry(name, header_offset, data_offset, size, crc))
        offset += _CENTRAL.size + name_len + extra_len + comment_len
    return entries


def read_entries(buf: bytes | memoryview) -> tuple[list[Entry], list[Difference]]:
    """The entries of an archive, located by its local headers or, if those are damaged, by its central
    directory (one damaged byte cannot break both), and where the two disagree. Raises ZipError if neither can be
    read."""
    local, central = _walk_local(buf), _walk_central(buf)
    entries = local if local is not None else central
    if entries is None:
        raise ZipError("not a readable archive: neither its local headers nor its central directory can be read")
    disagree: list[Difference] = []
    if local is not None and central is not None:
        for i, (a, b) in enumerate(zip(local, central, strict=False)):
            if (a.name, a.header_offset, a.size, a.crc) != (b.name, b.header_offset, b.size, b.crc):
                for name in dict.fromkeys((a.name, b.name)):
                    disagree.append(Difference(a.header_offset, name, "central directory",
                                               f"entry {i} reads as {a.name!r} in its local header and as "
                                               f"{b.name!r} in the central directory"))
        if len(local) != len(central):
            disagree.append(Difference(0, None, "central directory",
                                       f"{len(local)} entries in the file, {len(central)} in the central directory"))
    return entries, disagree


def _first_difference(actual: bytes | memoryview, expected: bytes) -> int | None:
    if bytes(actual) == expected:
        return None
    for i, (a, b) in enumerate(zip(bytes(actual), expected, strict=False)):
        if a != b:
            return i
    return min(len(actual), len(expected))


def differences(buf: bytes | memoryview, entries: Sequence[Entry]) -> list[Difference]:
    """Where ``buf`` differs from the canonical encoding of ``entries`` (with the data as found in ``buf``). An
    entry whose data no longer matches the CRC-32 its headers state shows as a difference in its local header and
    its central-directory record. Empty iff the file is exactly canonical."""
    out: list[Difference] = []
    rebuilt: list[Entry] = []
    offset = 0
    for e in entries:
        data = buf[e.data_offset:e.data_offset + e.size]
        crc = crc32(data)
        try:
            header = local_header(e.name, e.size, crc)
        except ZipError as exc:
            out.append(Difference(e.header_offset, e.name, "local header", str(exc)))
            continue
        if e.header_offset != offset:
            out.append(Difference(offset, e.name, "local header",
                                  f"entry starts at byte {e.header_offset}, expected {offset}"))
        at = _first_difference(buf[e.header_offset:e.header_offset + len(header)], header)
        if at is not None:
            what = "its data does not match the CRC-32 its headers state" if crc != e.crc else "header bytes differ"
            out.append(Difference(e.header_offset + at, e.name, "local header", what))
        rebuilt.append(Entry(e.name, offset, offset + len(header), e.size, crc))
        offset += len(header) + e.size
    try:
        directory = central_directory(rebuilt)
    except ZipError as exc:
        return [*out, Difference(offset, None, "central directory", str(exc))]
    record_starts = []
    pos = offset
    for e in rebuilt:
        record_starts.append((pos, e.name))
        pos += _CENTRAL.size + len(e.name.encode("utf-8"))
    at = _first_difference(buf[offset:offset + len(directory)], directory)
    if at is not None:
        owner = None
        for start, name in record_starts:
            if start <= offset + at:
                owner = name
        out.append(Difference(offset + at, owner, "central directory", "central directory bytes differ"))
    end = end_record(len(rebuilt), len(directory), offset)
    tail = offset + len(directory)
    at = _first_difference(buf[tail:tail + len(end)], end)
    if at is not None:
        out.append(Difference(tail + at, None, "end record", "end-of-archive record differs"))
    if len(buf) > tail + len(end):
        out.append(Difference(tail + len(end), None, "trailing bytes", f"{len(buf) - tail - len(end)} bytes appended"))
    return out
