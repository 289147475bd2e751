"""The peer link on its own, over real mutual TLS: many streams on one connection, frames coalesced into writes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from gateway.core import identifiers as ids
from gateway.core.certificates import fingerprint
from gateway.core.frames import Frame, Kind
from gateway.proxy import tls
from gateway.proxy.peerlink import PeerLinkClient, PeerLinkServer
from gateway.trust.pki import CertificateAuthority, load_certificate, new_key, save_certificate, save_key


def auth_pair(ca: CertificateAuthority, directory: Path, code: str) -> tuple[Path, Path]:
    key = new_key()
    cert = ca.issue_auth_certificate(ids.ServerId("DEMO", "GOV", "1", code), key.public_key())
    save_key(directory / f"{code}.key", key)
    save_certificate(directory / f"{code}.pem", cert)
    return directory / f"{code}.pem", directory / f"{code}.key"


async def test_interleaved_streams_of_every_size_get_their_own_answers(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("Peer link test CA")
    server_cert, server_key = auth_pair(ca, tmp_path, "server")
    client_cert, client_key = auth_pair(ca, tmp_path, "client")
    peers: set[str | None] = set()

    async def echo(peer: str | None, frame: Frame) -> Frame:
        peers.add(peer)
        await asyncio.sleep(random.random() / 100)  # answers leave in another order than the requests came
        return Frame(0, Kind.RESPONSE, frame.manifest, frame.signature, frame.signer_cert, frame.body[::-1])

    server = PeerLinkServer(echo, max_frame_bytes=1 << 22)
    port = await server.start("127.0.0.1", 0, tls.server_context(server_cert, server_key, [ca.certificate]))
    client = PeerLinkClient("127.0.0.1", port, tls.pinned_client_context(
        client_cert, client_key, [ca.certificate], [fingerprint(load_certificate(server_cert))]), connections=1)
    # Sizes around and far above the 16 KiB write threshold, many at once on one connection.
    sizes = [0, 1, 100, 3000, 16 * 1024 - 40, 16 * 1024, 40_000, 300_000] * 40
    random.shuffle(sizes)
    try:
        async def one(i: int, size: int) -> None:
            body = bytes([i % 251]) * size + str(i).encode()
            reply = await client.request(Frame(0, Kind.REQUEST, f"m{i}".encode(), b"sig", b"cert", body), 10)
            assert (reply.kind, reply.manifest, reply.body) == (Kind.RESPONSE, f"m{i}".encode(), body[::-1])

        await asyncio.gather(*(one(i, size) for i, size in enumerate(sizes)))
    finally:
        client.close()
        await server.close()
    assert peers == {fingerprint(load_certificate(client_cert))}


async def test_a_frame_finished_later_is_sent_then_and_a_failure_sends_nothing(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("Peer link test CA")
    server_cert, server_key = auth_pair(ca, tmp_path, "server")
    client_cert, client_key = auth_pair(ca, tmp_path, "client")
    served: list[bytes] = []

    async def echo(peer: str | None, frame: Frame) -> Frame:
        served.append(frame.manifest)
        return Frame(0, Kind.RESPONSE, frame.manifest, b"", b"", frame.body)

    server = PeerLinkServer(echo, max_frame_bytes=1 << 22)
    port = await server.start("127.0.0.1", 0, tls.server_context(server_cert, server_key, [ca.certificate]))
    client = PeerLinkClient("127.0.0.1", port, tls.pinned_client_context(
        client_cert, client_key, [ca.certificate], [fingerprint(load_certificate(server_cert))]), connections=1)
    loop = asyncio.get_running_loop()
    try:
        def finish_later(send) -> None:  # type: ignore[no-untyped-def]
            loop.call_later(0.05, send, Frame(0, Kind.REQUEST, b"late", b"sig", b"cert", b"body"))

        reply = await client.request_later(finish_later, 5)
        assert (reply.manifest, reply.body) == (b"late", b"body")

        def fail(send) -> None:  # type: ignore[no-untyped-def]
            send(RuntimeError("could not sign"))

        with pytest.raises(RuntimeError, match="could not sign"):
            await client.request_later(fail, 5)
        # Nothing went out for the failed one; the connection still serves the next request.
        reply = await client.request(Frame(0, Kind.REQUEST, b"next", b"sig", b"cert", b""), 5)
        assert reply.manifest == b"next"
        assert served == [b"late", b"next"]
    finally:
        client.close()
        await server.close()
