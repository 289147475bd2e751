"""The time-stamping authority's certificate, its HTTP service (RFC 3161 over HTTP) and an async client for it."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.core.timestamp import TimestampAuthority, TimestampError, build_timestamp_request, extract_timestamp_token
from gateway.trust.pki import CertificateAuthority

__all__ = [
    "DEFAULT_POLICY",
    "MAX_QUERY_BYTES",
    "QUERY_CONTENT_TYPE",
    "REPLY_CONTENT_TYPE",
    "issue_tsa_certificate",
    "load_authority",
    "make_tsa_app",
    "request_timestamp",
    "serve",
]

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"
# A TimeStampReq is ~60–100 bytes; anything near this limit is abuse, not a request.
MAX_QUERY_BYTES = 64 * 1024
# A reply carries the token plus the certificate chain; this bounds what a hostile TSA can make us buffer.
MAX_REPLY_BYTES = 1024 * 1024
# The built-in TSA's policy: a UUID-derived OID (ITU-T X.667), unique without registering an arc.
DEFAULT_POLICY = "2.25.27762265758767524316792882887235035503"


def random_serial() -> int:
    """A token serial number: 159 random bits plus one, unique per token with overwhelming probability and within
    RFC 3161's 160 bits, with no state to keep across restarts."""
    return secrets.randbits(159) + 1


def load_authority(key_file: Path, certificate_file: Path, chain_files: Sequence[Path] = (),
                   policy: str = DEFAULT_POLICY) -> TimestampAuthority:
    """A TimestampAuthority from PEM files: the TSA key, its certificate, and CA certificates sent along."""
    from gateway.trust.pki import load_certificate, load_key

    return TimestampAuthority(load_key(key_file), load_certificate(certificate_file),
                              [load_certificate(p) for p in chain_files], policy, random_serial)


def issue_tsa_certificate(ca: CertificateAuthority,
                          key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey,
                          common_name: str = "Wasl Development TSA", days: int = 365) -> x509.Certificate:
    """A TSA certificate per RFC 3161 §2.3: the sole, critical extended key usage is timeStamping."""
    public_key = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    # Back-dated by five minutes, like every certificate of the development PKI, to absorb clock skew.
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Wasl Development PKI")]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(ca.key, hashes.SHA256())
    )


def make_tsa_app(authority: TimestampAuthority) -> web.Application:
    """``POST /`` and ``POST /tsa`` stamp a DER TimeStampReq; ``GET /livez`` answers "ok"."""
    # client_max_size makes request.read() itself answer 413 for chunked bodies that announce no length.
    app = web.Application(client_max_size=MAX_QUERY_BYTES)

    async def stamp(request: web.Request) -> web.Response:
        if request.content_type != QUERY_CONTENT_TYPE:
            raise web.HTTPUnsupportedMediaType(text=f"send {QUERY_CONTENT_TYPE}, not {request.content_type}")
        if request.content_length is not None and request.content_length > MAX_QUERY_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_QUERY_BYTES, actual_size=request.content_length)
        body = await request.read()
        # Signing takes well under a millisecond, so it stays on the event loop; a thread hop would cost more.
        reply = authority.respond(body, dt.datetime.now(dt.UTC))
        return web.Response(body=reply, content_type=REPLY_CONTENT_TYPE)

    async def livez(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_post("/", stamp)
    app.router.add_post("/tsa", stamp)
    app.router.add_get("/livez", livez)
    return app


async def request_timestamp(session: aiohttp.ClientSession, url: str, digest: bytes, *, timeout: float,
                            hash_alg: str = "sha256") -> bytes:
    """Ask the TSA at ``url`` to stamp ``digest`` and return the DER token, after checking the reply's status,
    imprint and a fresh nonce. The token's signature is for ``verify_timestamp_response`` to check."""
    nonce = secrets.randbits(64)
    query = build_timestamp_request(digest, hash_alg, nonce=nonce, cert_req=True)
    try:
        async with session.post(url, data=query, headers={"Content-Type": QUERY_CONTENT_TYPE},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise TimestampError(f"TSA {url} answered HTTP {response.status} {response.reason}")
            if response.content_type != REPLY_CONTENT_TYPE:
                raise TimestampError(f"TSA {url} answered {response.content_type}, not {REPLY_CONTENT_TYPE}")
            if response.content_length is not None and response.content_length > MAX_REPLY_BYTES:
                raise TimestampError(f"TSA {url} reply of {response.content_length} bytes is too large")
            reply = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                reply += chunk
                if len(reply) > MAX_REPLY_BYTES:
                    raise TimestampError(f"TSA {url} reply exceeds {MAX_REPLY_BYTES} bytes")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TimestampError(f"TSA {url} unreachable: {exc!r}") from exc
    return extract_timestamp_token(bytes(reply), digest, hash_alg=hash_alg, nonce=nonce)


def serve(authority: TimestampAuthority, host: str, port: int, banner: str | None = None) -> None:
    """Run the TSA over HTTP until SIGINT or SIGTERM (``wasl tsa serve``)."""
    run_service(make_tsa_app(authority), host, port, banner)


def run_service(app: web.Application, host: str, port: int, banner: str | None = None) -> None:
    """Run one of the development trust services (TSA, OCSP responder) until SIGINT or SIGTERM; ``banner`` is
    printed once it listens and handles those signals."""

    def started(_: str) -> None:
        if banner is not None:
            print(banner, flush=True)

    web.run_app(app, host=host, port=port, access_log=None, print=started, handle_signals=True,
                shutdown_timeout=1.0)
