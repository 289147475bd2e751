"""The peer link's wire format, sans I/O: length-prefixed frames that carry signed messages between gateways.

Gateways talk to each other over long-lived mutual-TLS connections. Each connection multiplexes many
exchanges: a frame names its stream, so responses may come back in any order. The format is deliberately
small: HTTP's parsing and header handling cost more CPU than the signature itself.

    frame   = u32 length-of-rest | u32 stream | u8 kind | u32 len | manifest | u16 len | signature
              | u16 len | signer certificate (DER) | u16 len | OCSP response (DER, may be empty)
              | u32 len | body                                                  (all big-endian)

A fault frame carries the fault as JSON in the manifest slot and leaves the others empty.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

_HEAD = struct.Struct(">IIB")  # length of the rest, stream id, kind
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
MAX_STREAM_ID = 2**32 - 1


class Kind(IntEnum):
    REQUEST = 1
    RESPONSE = 2
    FAULT = 3


class FrameError(ValueError):
    """The peer sent bytes that are not a valid frame; the connection cannot be trusted further."""


@dataclass(slots=True)
class Frame:
    stream: int
    kind: Kind
    manifest: bytes
    signature: bytes
    signer_cert: bytes
    body: bytes
    ocsp: bytes = b""  # the signer certificate's stapled OCSP response (core/ocsp.py)


def encode(frame: Frame) -> list[bytes]:
    """Frame bytes as chunks for ``writelines``, so the body is never copied."""
    if len(frame.signature) > 0xFFFF or len(frame.signer_cert) > 0xFFFF or len(frame.ocsp) > 0xFFFF:
        raise FrameError("signature, certificate or OCSP response too large for a frame")
    meta = b"".join((
        _U32.pack(len(frame.manifest)), frame.manifest,
        _U16.pack(len(frame.signature)), frame.signature,
        _U16.pack(len(frame.signer_cert)), frame.signer_cert,
        _U16.pack(len(frame.ocsp)), frame.ocsp,
        _U32.pack(len(frame.body)),
    ))
    rest = 5 + len(meta) + len(frame.body)  # stream id + kind + meta + body
    return [_HEAD.pack(rest, frame.stream, frame.kind), meta, frame.body]


@dataclass(slots=True)
class Oversized:
    """A frame larger than the limit: its bytes were discarded unread, and its stream gets a fault."""

    stream: int
    size: int


class Decoder:
    """Feed it bytes as they arrive; it returns the complete frames. A frame over the size limit is skipped
    (reported as ``Oversized``) so one large message does not cost the other exchanges on the connection;
    malformed input raises FrameError."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._skipping = 0  # bytes of an oversized frame still to discard

    def feed(self, data: bytes) -> list[Frame | Oversized]:
        if self._skipping:
            dropped = min(self._skipping, len(data))
            self._skipping -= dropped
            data = data[dropped:]
        self._buffer += data
        frames: list[Frame | Oversized] = []
        buf = self._buffer
        offset = 0
        while len(buf) - offset >= 4:
            (rest,) = _U32.unpack_from(buf, offset)
            if rest < 5 + 4 + 2 + 2 + 2 + 4:
                raise FrameError("frame is too short")
            if rest > self.max_frame_bytes:
                if len(buf) - offset < 8:
                    break  # wait for the stream id
                (stream,) = _U32.unpack_from(buf, offset + 4)
                frames.append(Oversized(stream, rest))
                available = len(buf) - offset - 4
                if available >= rest:
                    offset += 4 + rest
                    continue
                self._skipping = rest - available
                offset = len(buf)
                break
            if len(buf) - offset - 4 < rest:
                break
            frames.append(self._parse(memoryview(buf)[offset + 4:offset + 4 + rest]))
            offset += 4 + rest
        if offset:
            del buf[:offset]
        return frames

    @staticmethod
    def _parse(view: memoryview) -> Frame:
        end = len(view)

        def field(pos: int, width: struct.Struct) -> tuple[bytes, int]:
            if pos + width.size > end:
                raise FrameError("frame is truncated")
            (n,) = width.unpack_from(view, pos)
            start = pos + width.size
            if start + n > end:
                raise FrameError("frame field runs past the frame")
            return bytes(view[start:start + n]), start + n

        stream = _U32.unpack_from(view, 0)[0]
        try:
            kind = Kind(view[4])
        except ValueError:
            raise FrameError(f"unknown frame kind {view[4]}") from None
        manifest, pos = field(5, _U32)
        signature, pos = field(pos, _U16)
        cert, pos = field(pos, _U16)
        ocsp, pos = field(pos, _U16)
        body, pos = field(pos, _U32)
        if pos != end:
            raise FrameError("frame has trailing bytes")
        return Frame(stream, kind, manifest, signature, cert, body, ocsp)
