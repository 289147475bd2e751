"""The development CA's certificate status: what it issued and revoked, its OCSP responder, and a client for it.

The responder signs with a delegated responder certificate (``ocsp.pem``/``ocsp.key`` beside ``ca.pem``), issued
by the CA with the OCSPSigning extended key usage and id-pkix-ocsp-nocheck, so the CA key is not needed online.
Statuses live in ``status.db`` (SQLite) in the CA folder: ``wasl pki issue`` and ``sign-csr`` record each
certificate there, ``wasl pki revoke`` marks one revoked, and the responder reads it for every request, so a
revocation is answered at once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.core.ocsp import MAX_RESPONSE_BYTES, Status, build_request
from gateway.trust.ca_status import StatusDatabase
from gateway.trust.pki import CertificateAuthority, load_certificate, load_key, new_key, save_certificate, save_key

REQUEST_CONTENT_TYPE = "application/ocsp-request"
RESPONSE_CONTENT_TYPE = "application/ocsp-response"
MAX_REQUEST_BYTES = 16 * 1024


# -- the responder ------------------------------------------------------------------------------------------------

def issue_responder_certificate(ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey,
                                days: int = 365) -> x509.Certificate:
    """A delegated OCSP responder certificate (RFC 6960 4.2.2.2): OCSPSigning, and no status check of itself."""
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Wasl Development OCSP Responder"),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Wasl Development PKI")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=True)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


@dataclass(frozen=True)
class Responder:
    """Answers OCSP requests about one CA's certificates from its status database."""

    ca_certificate: x509.Certificate
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    statuses: StatusDatabase
    validity: dt.timedelta = dt.timedelta(minutes=10)  # nextUpdate - thisUpdate

    @classmethod
    def for_ca_dir(cls, ca_dir: Path, validity: dt.timedelta = dt.timedelta(minutes=10)) -> Responder:
        """Load the responder of ``ca_dir``, issuing its certificate first if the folder has none."""
        ca_dir = Path(ca_dir)
        if not (ca_dir / "ocsp.key").exists():
            ca = CertificateAuthority.load(ca_dir)
            key = new_key()
            save_key(ca_dir / "ocsp.key", key)
            save_certificate(ca_dir / "ocsp.pem", issue_responder_certificate(ca, key))
        return cls(load_certificate(ca_dir / "ca.pem"), load_certificate(ca_dir / "ocsp.pem"),
                   load_key(ca_dir / "ocsp.key"), StatusDatabase(ca_dir), validity)

    def respond(self, request_der: bytes, now: dt.datetime) -> bytes:
        """The DER OCSPResponse for ``request_der``; a malformed request gets malformedRequest, unsigned."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            serial = request.serial_number
            algorithm = request.hash_algorithm
        except (ValueError, NotImplementedError):
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if (request.issuer_key_hash, request.issuer_name_hash) != issuer_hashes(self.ca_certificate, algorithm):
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)  # not a certificate of this CA
        status, revocation = self.statuses.status(serial)
        cert_status = {Status.GOOD: ocsp.OCSPCertStatus.GOOD, Status.REVOKED: ocsp.OCSPCertStatus.REVOKED,
                       Status.UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN}[status]
        this_update = now.replace(microsecond=0)
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash, issuer_key_hash=request.issuer_key_hash,
            serial_number=serial, algorithm=algorithm, cert_status=cert_status,
            this_update=this_update, next_update=this_update + self.validity,
            revocation_time=revocation.revoked_at if revocation else None,
            revocation_reason=revocation.reason if revocation else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, self.certificate).certificates([self.certificate])
        for extension in request.extensions:
            if isinstance(extension.value, x509.OCSPNonce):
                builder = builder.add_extension(extension.value, critical=False)
        response = builder.sign(self.key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)


def issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """(issuerKeyHash, issuerNameHash) of a CertID under ``issuer``: hashes of its public key bits and its DER name."""
    public_key = issuer.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("the development CA has an EC key")
    key_bits = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return (hashlib.new(algorithm.name, key_bits).digest(),
            hashlib.new(algorithm.name, issuer.subject.public_bytes()).digest())


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def make_responder_app(responder: Responder) -> web.Application:
    """RFC 6960 appendix A: ``POST /`` with a DER request, or ``GET /{base64 request}``; ``GET /livez``."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)

    def answer(request_der: bytes) -> web.Response:
        return web.Response(body=responder.respond(request_der, dt.datetime.now(dt.UTC)),
                            content_type=RESPONSE_CONTENT_TYPE)

    async def post(request: web.Request) -> web.Response:
        if request.content_type != REQUEST_CONTENT_TYPE:
            raise web.HTTPUnsupportedMediaType(text=f"send {REQUEST_CONTENT_TYPE}, not {request.content_type}")
        return answer(await request.read())

    async def get(request: web.Request) -> web.Response:
        encoded = request.match_info["encoded"]
        if len(encoded) > MAX_REQUEST_BYTES:
            raise web.HTTPRequestURITooLong()
        try:
            der = base64.b64decode(encoded.replace("-", "+").replace("_", "/"), validate=False)
        except (binascii.Error, ValueError):
            return web.Response(body=_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
                                content_type=RESPONSE_CONTENT_TYPE)
        return answer(der)

    async def livez(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/livez", livez)
    app.router.add_post("/", post)
    app.router.add_get("/{encoded:.+}", get)
    return app


def serve(responder: Responder, host: str, port: int, banner: str | None = None) -> None:
    """Run the responder until SIGINT or SIGTERM (``wasl pki ocsp serve``)."""
    from gateway.trust.tsa import run_service

    run_service(make_responder_app(responder), host, port, banner)


# -- the client ---------------------------------------------------------------------------------------------------

class OcspFetchError(RuntimeError):
    """The responder could not be asked, or did not answer with an OCSP response."""


async def fetch_response(session: aiohttp.ClientSession, url: str, cert: x509.Certificate,
                         issuer: x509.Certificate, timeout: float) -> bytes:
    """POST an OCSP request for ``cert`` to ``url`` and return the DER response, unchecked (the caller checks)."""
    try:
        async with session.post(url, data=build_request(cert, issuer),
                                headers={"Content-Type": REQUEST_CONTENT_TYPE},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise OcspFetchError(f"OCSP responder {url} answered HTTP {response.status}")
            if response.content_type != RESPONSE_CONTENT_TYPE:
                raise OcspFetchError(f"OCSP responder {url} answered {response.content_type}")
            body = await response.content.read(MAX_RESPONSE_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OcspFetchError(f"OCSP responder {url} unreachable: {exc!r}") from exc
    if len(body) > MAX_RESPONSE_BYTES:
        raise OcspFetchError(f"OCSP responder {url} sent more than {MAX_RESPONSE_BYTES} bytes")
    return body
