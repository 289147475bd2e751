"""TLS contexts for the server side (mutual TLS against approved CAs) and pinned client connections to peers."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def _ca_pem(cas: Iterable[x509.Certificate]) -> str:
    return "".join(ca.public_bytes(Encoding.PEM).decode() for ca in cas)


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION


def server_context(certificate: Path, key: Path, approved_cas: list[x509.Certificate]) -> ssl.SSLContext:
    """Require a client certificate from an approved CA; which gateway it is, the handler checks by pin."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    ctx.load_cert_chain(certificate, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=_ca_pem(approved_cas))
    return ctx


def information_system_context(certificate: Path, key: Path, client_cas: Path | None) -> ssl.SSLContext:
    """TLS for the client side; with ``client_cas`` the information systems must present certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    ctx.load_cert_chain(certificate, key)
    if client_cas is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(client_cas))
    return ctx


class PinnedSSLObject(ssl.SSLObject):
    """Fails the handshake unless the peer's certificate is one the global configuration lists for that
    gateway, so a request is never sent to any other holder of an approved certificate."""

    allowed_fingerprints: frozenset[str] = frozenset()

    def do_handshake(self) -> None:
        super().do_handshake()
        der = self.getpeercert(binary_form=True)
        if der is None or hashlib.sha256(der).hexdigest() not in self.allowed_fingerprints:
            raise ssl.SSLCertVerificationError(
                "peer gateway's auth certificate is not the one the global configuration lists")


def pinned_client_context(certificate: Path, key: Path, approved_cas: list[x509.Certificate],
                          fingerprints: Iterable[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.check_hostname = False  # gateways are identified by certificate pin, not by host name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=_ca_pem(approved_cas))
    ctx.load_cert_chain(certificate, key)
    pinned = type("PinnedFor", (PinnedSSLObject,), {"allowed_fingerprints": frozenset(fingerprints)})
    ctx.sslobject_class = pinned
    return ctx


_fingerprints: dict[int, tuple[ssl.SSLObject, str | None]] = {}


def peer_fingerprint(ssl_object: ssl.SSLObject | None) -> str | None:
    """SHA-256 of the peer's certificate, remembered per connection: keep-alive connections carry
    thousands of requests, and the certificate cannot change within one."""
    if ssl_object is None:
        return None
    cached = _fingerprints.get(id(ssl_object))
    if cached is not None and cached[0] is ssl_object:
        return cached[1]
    der = ssl_object.getpeercert(binary_form=True)
    fp = hashlib.sha256(der).hexdigest() if der else None
    if len(_fingerprints) > 4096:  # closed connections are dropped wholesale; live ones re-enter on use
        _fingerprints.clear()
    _fingerprints[id(ssl_object)] = (ssl_object, fp)
    return fp
