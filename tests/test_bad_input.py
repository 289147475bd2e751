"""Bad input of every kind gets a clear X-Road fault, and the gateways keep serving afterwards."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

import pytest
import yaml
from lxml import etree

from gateway.core import envelope
from gateway.core import identifiers as ids
from gateway.core.certificates import fingerprint
from gateway.core.frames import Frame, Kind
from gateway.proxy import tls
from gateway.proxy.peerlink import PeerLinkClient, PeerLinkServer, PeerUnreachable
from gateway.trust.pki import CertificateAuthority, load_certificate, new_key, save_certificate, save_key
from tests.conftest import Federation, free_ports, soap_request, start_federation, stop_federation
from tests.test_exchange import ECHO, fault_code, post_soap


async def soap_fault(f: Federation, payload: bytes, agency: str = "health", **headers: str) -> str:
    status, body, _ = await post_soap(f, agency, payload, **headers)
    assert status == 500, body
    return fault_code(body)


async def still_serves(f: Federation) -> None:
    status, body, _ = await post_soap(f, "health", soap_request(f.subsystem("health"), ECHO))
    assert status == 200, body


def edit_header(payload: bytes, old: bytes, new: bytes) -> bytes:
    assert old in payload
    return payload.replace(old, new, 1)


async def test_malformed_xml(federation: Federation) -> None:
    assert await soap_fault(federation, b"<SOAP-ENV:Envelope><unclosed>") == "Client.InvalidSoap"
    assert await soap_fault(federation, b"") == "Client.MissingBody"
    assert await soap_fault(federation, b"<a/>") == "Client.InvalidSoap"
    await still_serves(federation)


async def test_wrong_content_type(federation: Federation) -> None:
    payload = soap_request(federation.subsystem("health"), ECHO)
    async with federation.session.post(federation.client_url("health"), data=payload,
                                       headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 500
        assert fault_code(await resp.read()) == "Client.InvalidContentType"


async def test_missing_and_duplicate_headers(federation: Federation) -> None:
    payload = soap_request(federation.subsystem("health"), ECHO, xroad_id="dup-1")
    missing = etree.fromstring(payload)
    header = missing.find("{http://schemas.xmlsoap.org/soap/envelope/}Header")
    header.remove(header.find("{http://x-road.eu/xsd/xroad.xsd}id"))
    assert await soap_fault(federation, etree.tostring(missing)) == "Client.MissingHeader"
    doubled = edit_header(payload, b"<xrd:id>dup-1</xrd:id>", b"<xrd:id>dup-1</xrd:id><xrd:id>dup-2</xrd:id>")
    assert await soap_fault(federation, doubled) == "Client.DuplicateHeaderField"


async def test_contradictory_rest_client_header(federation: Federation) -> None:
    url = federation.client_url("civil", "/r1/DEMO/GOV/1002/tax-records/taxpayers/1")
    headers = [("X-Road-Client", "DEMO/GOV/1001/population"), ("X-Road-Client", "DEMO/GOV/1003/patients")]
    async with federation.session.get(url, headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["type"] == "Client.InconsistentHeaders"
    async with federation.session.get(url) as resp:
        assert resp.status == 400
        assert (await resp.json())["type"] == "Client.MissingHeader"
    async with federation.session.get(url, headers={"X-Road-Client": "DEMO/GOV/1001/popu lation"}) as resp:
        body = await resp.json()
        assert body["type"] == "Client.InvalidClientIdentifier"
        assert "subsystemCode" in body["message"]


async def test_protocol_version(federation: Federation) -> None:
    payload = edit_header(soap_request(federation.subsystem("health"), ECHO),
                          b"<xrd:protocolVersion>4.0<", b"<xrd:protocolVersion>3.1<")
    assert await soap_fault(federation, payload) == "Client.InvalidProtocolVersion"


async def test_client_that_is_not_ours(federation: Federation) -> None:
    payload = soap_request(federation.subsystem("tax"), ECHO)  # a real subsystem, but of another gateway
    assert await soap_fault(federation, payload, agency="health") == "Client.InvalidClientIdentifier"


async def test_unknown_service_and_member(federation: Federation) -> None:
    unknown_service = ids.ServiceId("DEMO", "GOV", "1001", "population", "noSuchService")
    assert await soap_fault(federation, soap_request(federation.subsystem("health"), unknown_service)) == \
        "Server.ServerProxy.UnknownService"
    unknown_member = ids.ServiceId("DEMO", "GOV", "9999", "nobody", "echo")
    assert await soap_fault(federation, soap_request(federation.subsystem("health"), unknown_member)) == \
        "Server.ClientProxy.UnknownMember"
    disabled = ids.ServiceId("DEMO", "GOV", "1001", "population", "disabledService")
    assert await soap_fault(federation, soap_request(federation.subsystem("health"), disabled)) == \
        "Server.ServerProxy.ServiceDisabled"


async def test_oversized_body(federation: Federation) -> None:
    big = soap_request(federation.subsystem("health"), ECHO, text="x" * (2 * 1024 * 1024))
    assert await soap_fault(federation, big) == "Client.MessageTooLarge"
    url = federation.client_url("civil", "/r1/DEMO/GOV/1002/tax-records/taxpayers/1")
    async with federation.session.post(url, data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                                       headers={"X-Road-Client": "DEMO/GOV/1001/population"}) as resp:
        assert resp.status == 413
        assert (await resp.json())["type"] == "Client.MessageTooLarge"
    await still_serves(federation)


async def test_xml_bomb_and_external_entity(federation: Federation) -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">'
            b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]>'
            b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
            b"<x>&lol3;</x></SOAP-ENV:Body></SOAP-ENV:Envelope>")
    assert await soap_fault(federation, bomb) == "Client.InvalidSoap"
    xxe = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
           b"<x>&e;</x></SOAP-ENV:Body></SOAP-ENV:Envelope>")
    status, body, _ = await post_soap(federation, "health", xxe)
    assert status == 500
    assert fault_code(body) == "Client.InvalidSoap"
    assert b"root:" not in body
    await still_serves(federation)


async def test_backend_timeout_and_reset(federation: Federation) -> None:
    slow = ids.ServiceId("DEMO", "GOV", "1001", "population", "slow")
    started = time.monotonic()
    assert await soap_fault(federation, soap_request(federation.subsystem("health"), slow)) == \
        "Server.ServerProxy.ServiceTimeout"
    assert time.monotonic() - started < 5
    broken = ids.ServiceId("DEMO", "GOV", "1001", "population", "broken")
    assert await soap_fault(federation, soap_request(federation.subsystem("health"), broken)) == \
        "Server.ServerProxy.ServiceFailed"
    url = federation.client_url("health", "/r1/DEMO/GOV/1002/tax-records/slowrest")
    async with federation.session.get(url, headers={"X-Road-Client": "DEMO/GOV/1003/patients"}) as resp:
        assert resp.status == 504
        assert (await resp.json())["type"] == "Server.ServerProxy.ServiceTimeout"
    await still_serves(federation)


# -- the federation changes under the gateways ---------------------------------------------------------------------

async def republish(f: Federation, edit) -> None:  # type: ignore[no-untyped-def]
    """Edit the registry's federation file, publish, and wait until every gateway holds the new copy."""
    data = yaml.safe_load(f.layout.federation_file.read_text())
    edit(data)
    f.layout.federation_file.write_text(yaml.safe_dump(data, sort_keys=False))
    await asyncio.sleep(0.002)  # serials are milliseconds
    f.registry.regenerate()
    serial = json.loads(envelope.unb64(json.loads(f.registry.current)["document"]))["serial"]
    deadline = time.monotonic() + 10
    while any(gw.runtime.conf.current.serial != serial for gw in f.gateways.values()):
        assert time.monotonic() < deadline, "gateways did not pick up the new global configuration"
        await asyncio.sleep(0.05)


async def test_gateway_down_fails_over_then_faults(federation: Federation) -> None:
    dead_port = free_ports(1)[0]

    def add_dead_first(data: dict) -> None:
        civil = next(g for g in data["gateways"] if g["server"].endswith("gw-civil"))
        dead = dict(civil, server="DEMO/GOV/1001/gw-civil-2", address=f"https://127.0.0.1:{dead_port}")
        data["gateways"].insert(0, dead)

    await republish(federation, add_dead_first)
    for _ in range(3):  # the first call fails over; later ones skip the dead node
        await still_serves(federation)
    health = federation.gateways["health"].runtime.health
    assert health[f"https://127.0.0.1:{dead_port}"].consecutive_failures >= 1
    # With no node of the provider up, the caller gets a network fault naming the cause.
    await federation.gateways["tax"].stop()
    url = federation.client_url("civil", "/r1/DEMO/GOV/1002/tax-records/taxpayers/1")
    async with federation.session.get(url, headers={"X-Road-Client": "DEMO/GOV/1001/population"}) as resp:
        assert resp.status == 502
        body = await resp.json()
    assert body["type"] == "Server.ClientProxy.NetworkError"
    federation.gateways.pop("tax")


async def test_expired_global_configuration(tmp_path: Path) -> None:
    f = await start_federation(tmp_path, validity_seconds=30)
    try:
        await still_serves(f)
        # The registry goes away; once the held copy expires, relaying stops with a clear fault.
        for gw in f.gateways.values():
            gw.runtime.conf.refresh_override = 3600
        conf = f.gateways["health"].runtime.conf.current
        expired = conf.document.model_copy(update={"expires_at": conf.document.generated_at})
        f.gateways["health"].runtime.conf.current = type(conf)(expired, conf.raw)
        assert await soap_fault(f, soap_request(f.subsystem("health"), ECHO)) == \
            "Server.ClientProxy.OutdatedGlobalConf"
        async with f.session.get(f.client_url("health", "/readyz")) as resp:
            assert resp.status == 503
    finally:
        await stop_federation(f)


# -- a hostile or broken peer ---------------------------------------------------------------------------------------

class Relay:
    """A man in the middle holding both gateways' keys, which flips one byte of what passes through."""

    def __init__(self, f: Federation, target_port: int, flip: str) -> None:
        self.flip = flip
        pki = f.layout.directory / "pki"
        ca = [load_certificate(pki / "ca" / "ca.pem")]
        self.server_ctx = tls.server_context(pki / "civil" / "auth.pem", pki / "civil" / "auth.key", ca)
        client_ctx = tls.pinned_client_context(pki / "health" / "auth.pem", pki / "health" / "auth.key", ca,
                                               [fingerprint(load_certificate(pki / "civil" / "auth.pem"))])
        self.upstream = PeerLinkClient("127.0.0.1", target_port, client_ctx)

    async def handle(self, fingerprint: str | None, frame: Frame) -> Frame:
        if self.flip == "request-body":
            frame.body = flip_byte(frame.body)
        if self.flip == "request-signature":
            frame.signature = flip_byte(frame.signature)
        reply = await self.upstream.request(frame, 5)
        if self.flip == "response-body":
            reply.body = flip_byte(reply.body)
        return reply


def flip_byte(data: bytes) -> bytes:
    return data[:-20] + bytes([data[-20] ^ 1]) + data[-19:]


@pytest.mark.parametrize(("flip", "expected"), [
    ("request-body", "Server.ServerProxy.InvalidSignatureValue"),
    ("request-signature", "Server.ServerProxy.InvalidSignatureValue"),
    ("response-body", "Server.ClientProxy.InvalidSignatureValue"),
])
async def test_tampering_between_gateways(federation: Federation, flip: str, expected: str) -> None:
    relay = Relay(federation, federation.layout.ports.server_side["civil"], flip)
    server = PeerLinkServer(relay.handle, max_frame_bytes=1 << 24)
    port = await server.start("127.0.0.1", 0, relay.server_ctx)
    try:
        def through_relay(data: dict) -> None:
            civil = next(g for g in data["gateways"] if g["server"].endswith("gw-civil"))
            civil["address"] = f"https://127.0.0.1:{port}"

        await republish(federation, through_relay)
        assert await soap_fault(federation, soap_request(federation.subsystem("health"), ECHO)) == expected
    finally:
        relay.upstream.close()
        await server.close()


async def _send_frame(f: Federation, ctx: ssl.SSLContext, frame: Frame) -> dict:
    link = PeerLinkClient("127.0.0.1", f.layout.ports.server_side["civil"], ctx)
    try:
        reply = await link.request(frame, 5)
    finally:
        link.close()
    assert reply.kind is Kind.FAULT
    return json.loads(reply.manifest)


def _client_ctx(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    ctx.load_cert_chain(cert, key)
    return ctx


async def test_unlisted_auth_certificate_and_foreign_ca(federation: Federation, tmp_path: Path) -> None:
    pki = federation.layout.directory / "pki"
    ca = CertificateAuthority.load(pki / "ca")
    rogue_key = new_key()
    save_key(tmp_path / "rogue.key", rogue_key)
    save_certificate(tmp_path / "rogue.pem", ca.issue_auth_certificate(
        ids.ServerId("DEMO", "GOV", "1003", "rogue"), rogue_key.public_key()))
    # An approved CA's certificate that the configuration does not list: a clear fault from the handler.
    body = await _send_frame(
        federation, _client_ctx(tmp_path / "rogue.pem", tmp_path / "rogue.key", pki / "ca" / "ca.pem"),
        Frame(0, Kind.REQUEST, b"{}", b"", b"", b"x"))
    assert body["type"] == "Server.ServerProxy.SslAuthenticationFailed"
    # A certificate from a CA the federation does not approve: refused in the TLS handshake.
    foreign = CertificateAuthority.create("Foreign CA")
    save_certificate(tmp_path / "foreign.pem", foreign.issue_auth_certificate(
        ids.ServerId("DEMO", "GOV", "1003", "gw-health"), rogue_key.public_key()))
    with pytest.raises((PeerUnreachable, ConnectionError)):
        await _send_frame(federation, _client_ctx(tmp_path / "foreign.pem", tmp_path / "rogue.key",
                                                  pki / "ca" / "ca.pem"), Frame(0, Kind.REQUEST, b"{}", b"", b"", b"x"))
    await still_serves(federation)


async def test_sign_certificate_from_unapproved_ca(federation: Federation) -> None:
    pki = federation.layout.directory / "pki"
    foreign = CertificateAuthority.create("Foreign CA")
    key = new_key()
    health = next(a for a in federation.layout.agencies if a.key == "health")
    cert = foreign.issue_sign_certificate(health.member, health.name, key.public_key())
    body = soap_request(federation.subsystem("health"), ECHO)
    manifest = envelope.RequestManifest(
        protocol="soap", xroad_id="id-1", request_id="r-1", client=health.subsystem_id.path(),
        service=ECHO.path(), method="POST", path="", query="", headers=(("content-type", "text/xml"),),
        body_sha512=envelope.body_digest(body), body_length=len(body), created_ms=int(time.time() * 1000))
    from cryptography.hazmat.primitives.serialization import Encoding

    parts = envelope.sign(envelope.encode_manifest(manifest), key, cert.public_bytes(Encoding.DER))
    ctx = _client_ctx(pki / "health" / "auth.pem", pki / "health" / "auth.key", pki / "ca" / "ca.pem")
    fault = await _send_frame(federation, ctx, Frame(0, Kind.REQUEST, parts.manifest, parts.signature,
                                                     parts.signer_cert, body))
    assert fault["type"] == "Server.ServerProxy.CertValidation"
    assert "approved CA" in fault["message"]


async def test_service_version_must_match(federation: Federation) -> None:
    other_version = ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v9")
    assert await soap_fault(federation, soap_request(federation.subsystem("health"), other_version)) == \
        "Server.ServerProxy.UnknownService"


async def test_bad_percent_encoding_is_a_client_fault(federation: Federation) -> None:
    url = federation.client_url("civil", "/r1/DEMO/GOV/1002/tax-records/taxpayers/%ff%fe")
    async with federation.session.get(url, headers={"X-Road-Client": "DEMO/GOV/1001/population"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["type"] == "Client.InvalidRest"


async def test_provider_correlation_id_reaches_the_caller(federation: Federation, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    caplog.set_level(logging.INFO, logger="wasl.serverproxy")
    service = ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1")
    status, body, _ = await post_soap(federation, "tax", soap_request(federation.subsystem("tax"), service))
    assert status == 500
    detail = etree.fromstring(body).findtext(".//faultDetail")
    assert any(detail in record.getMessage() for record in caplog.records if record.name == "wasl.serverproxy")
