"""The peer-link frame codec: round trips in any chunking, oversized frames skipped, malformed input refused."""

from __future__ import annotations

import pytest

from gateway.core.frames import Decoder, Frame, FrameError, Kind, Oversized, encode


def frame(stream: int, body: bytes = b"body", kind: Kind = Kind.REQUEST) -> Frame:
    return Frame(stream, kind, b'{"v":1}', b"sig", b"cert", body)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 10_000])
def test_round_trip_in_any_chunking(chunk: int) -> None:
    frames = [frame(1), frame(2, b""), frame(3, b"x" * 5000, Kind.RESPONSE)]
    data = b"".join(b"".join(encode(f)) for f in frames)
    decoder = Decoder(1 << 20)
    out: list[Frame | Oversized] = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i:i + chunk])
    assert out == frames


def test_oversized_frame_is_skipped_and_the_next_one_decodes() -> None:
    data = b"".join(encode(frame(9, b"x" * 2000))) + b"".join(encode(frame(10)))
    decoder = Decoder(1000)
    out: list[Frame | Oversized] = []
    for i in range(0, len(data), 100):
        out += decoder.feed(data[i:i + 100])
    assert out[0] == Oversized(9, len(data) - len(b"".join(encode(frame(10)))) - 4)
    assert out[1] == frame(10)


@pytest.mark.parametrize("mutate", ["short", "kind", "field-overrun", "trailing"])
def test_malformed_frames_raise(mutate: str) -> None:
    data = bytearray(b"".join(encode(frame(1))))
    if mutate == "short":
        data = bytearray(b"\x00\x00\x00\x03abc")
    elif mutate == "kind":
        data[8] = 99
    elif mutate == "field-overrun":
        data[9:13] = (10_000).to_bytes(4, "big")  # manifest length beyond the frame
    elif mutate == "trailing":
        data[0:4] = (int.from_bytes(data[0:4], "big") + 2).to_bytes(4, "big")
        data += b"zz"
    with pytest.raises(FrameError):
        Decoder(1 << 20).feed(bytes(data))
