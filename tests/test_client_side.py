"""The client side as legacy systems reach it: absolute-form targets, TLS and mutual TLS for information systems."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import yaml
from lxml import etree

from gateway.configfile import load_model
from gateway.core.identifiers import ServerId
from gateway.core.settings import GatewaySettings
from gateway.proxy.app import RunningGateway
from gateway.trust.pki import CertificateAuthority, new_key, save_certificate, save_key
from tests.conftest import Federation, free_ports, soap_request
from tests.test_exchange import ECHO


async def raw_http(port: int, request: bytes, ssl_context: ssl.SSLContext | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_context)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def test_absolute_form_request_target(federation: Federation) -> None:
    """Legacy systems configured to use the gateway as an HTTP proxy send absolute URIs."""
    port = federation.layout.ports.client_side["health"]
    body = soap_request(federation.subsystem("health"), ECHO, xroad_id="abs-1")
    head = (f"POST http://provider.example:8080/some/service HTTP/1.1\r\nHost: provider.example:8080\r\n"
            f"Content-Type: text/xml; charset=utf-8\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    reply = await raw_http(port, head.encode() + body)
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 200 " in status_line, reply[:500]
    envelope = etree.fromstring(rest.split(b"\r\n\r\n", 1)[1])
    assert envelope.findtext(".//echo") == "hello"


def _issue_tls(tmp: Path, ca: CertificateAuthority, name: str, client: bool = False) -> tuple[Path, Path]:
    key = new_key()
    save_key(tmp / f"{name}.key", key)
    cert = (ca.issue_auth_certificate(ServerId("DEMO", "GOV", "1003", name), key.public_key()) if client
            else ca.issue_tls_server_certificate(name, key.public_key()))
    save_certificate(tmp / f"{name}.pem", cert)
    return tmp / f"{name}.pem", tmp / f"{name}.key"


@pytest.mark.parametrize("mutual", [False, True])
async def test_client_side_tls_and_mutual_tls(federation: Federation, tmp_path: Path, mutual: bool) -> None:
    """A second gateway config for the health ministry, with TLS (and client certificates) on its client side."""
    ca = CertificateAuthority.create("Information systems CA")
    save_certificate(tmp_path / "is-ca.pem", ca.certificate)
    server_cert, server_key = _issue_tls(tmp_path, ca, "gateway")
    config = yaml.safe_load(federation.layout.gateway_files["health"].read_text())
    port = free_ports(1)[0]
    config["client_side"] = {"host": "127.0.0.1", "port": port, "tls": {
        "certificate": str(server_cert), "key": str(server_key),
        **({"client_cas": str(tmp_path / "is-ca.pem")} if mutual else {})}}
    config["server_side"]["port"] = 0
    config["state_dir"] = str(tmp_path / "state")
    config["message_log"] = {"enabled": False}
    for key in ("auth", ):
        for field in ("key", "certificate"):
            config[key][field] = str(federation.layout.directory / config[key][field])
    for entry in config["signing"]:
        for field in ("key", "certificate"):
            entry[field] = str(federation.layout.directory / entry[field])
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    gateway = RunningGateway(load_model(path, GatewaySettings))
    await gateway.start()
    try:
        ctx = ssl.create_default_context(cafile=str(tmp_path / "is-ca.pem"))
        ctx.check_hostname = False
        body = soap_request(federation.subsystem("health"), ECHO, xroad_id="tls-1")
        request = (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n"
                   "Connection: close\r\n\r\n").encode() + body
        if mutual:
            # Without a client certificate the handshake is refused.
            with pytest.raises((ssl.SSLError, ConnectionError)):
                reply = await raw_http(port, request, ctx)
                assert reply == b""  # TLS 1.3 reports the refusal on first read
                raise ConnectionError("refused")
            client_cert, client_key = _issue_tls(tmp_path, ca, "legacy-system", client=True)
            ctx.load_cert_chain(client_cert, client_key)
        reply = await raw_http(port, request, ctx)
        assert b" 200 " in reply.split(b"\r\n", 1)[0], reply[:300]
    finally:
        await gateway.stop()


async def test_adapter_route_identifies_the_caller_by_tls_certificate(federation: Federation, tmp_path: Path) -> None:
    """A legacy caller with no X-Road headers is the subsystem its TLS client certificate is mapped to."""
    from gateway.core.certificates import fingerprint
    from gateway.trust.pki import load_certificate

    ca = CertificateAuthority.create("Information systems CA")
    save_certificate(tmp_path / "is-ca.pem", ca.certificate)
    server_cert, server_key = _issue_tls(tmp_path, ca, "gateway")
    mapped_cert, mapped_key = _issue_tls(tmp_path, ca, "clinic-app", client=True)
    other_cert, other_key = _issue_tls(tmp_path, ca, "unknown-app", client=True)
    config = yaml.safe_load(federation.layout.gateway_files["health"].read_text())
    port = free_ports(1)[0]
    config["client_side"] = {"host": "127.0.0.1", "port": port, "tls": {
        "certificate": str(server_cert), "key": str(server_key), "client_cas": str(tmp_path / "is-ca.pem")}}
    config["adapters"] = [{"name": "by-cert", "protocol": "rest", "service": "DEMO/GOV/1002/tax-records/open",
                           "client_certificates": {
                               fingerprint(load_certificate(mapped_cert)): "DEMO/GOV/1003/patients"}}]
    config["server_side"]["port"] = 0
    config["state_dir"] = str(tmp_path / "state")
    config["message_log"] = {"enabled": False}
    for field in ("key", "certificate"):
        config["auth"][field] = str(federation.layout.directory / config["auth"][field])
        for entry in config["signing"]:
            entry[field] = str(federation.layout.directory / entry[field])
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    gateway = RunningGateway(load_model(path, GatewaySettings))
    await gateway.start()
    request = b"GET /adapters/by-cert/records/7?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    try:
        for cert, key, expect in ((mapped_cert, mapped_key, b" 200 "), (other_cert, other_key, b" 400 ")):
            ctx = ssl.create_default_context(cafile=str(tmp_path / "is-ca.pem"))
            ctx.check_hostname = False
            ctx.load_cert_chain(cert, key)
            reply = await raw_http(port, request, ctx)
            head, _, body = reply.partition(b"\r\n\r\n")
            assert expect in head.split(b"\r\n", 1)[0], reply[:400]
            if expect == b" 200 ":
                assert b'"X-Road-Client": "DEMO/GOV/1003/patients"' in body
                assert b'"path": "/rest/records/7"' in body
            else:
                assert b"Client.InvalidClientIdentifier" in body and b"not mapped" in body
    finally:
        await gateway.stop()
