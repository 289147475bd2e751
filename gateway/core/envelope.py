"""The gateway-to-gateway message: a signed JSON manifest over the raw body bytes, built and verified.

The body travels byte for byte as the client sent it (in a peer-link frame, see core/frames.py). Everything
else that matters (identifiers, method, path, the headers that cross, the body's SHA-512 and length, the time)
is in a compact JSON *manifest*; the signature covers the manifest's exact bytes. Nothing is canonicalised, so
the receiver verifies exactly what the sender signed, and the body can be hashed as it streams.
See docs/envelope.md.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core import batchsig
from gateway.core.faults import Code, Fault, Origin

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 16 * 1024
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def body_digest(body: bytes) -> str:
    """SHA-512 of the raw body, base64: X-Road's requestHash algorithm, so one hash serves both."""
    return b64(hashlib.sha512(body).digest())


def request_hash(manifest: bytes) -> str:
    """What a response is bound to: SHA-512 over the signed request manifest, which commits to the body."""
    return b64(hashlib.sha512(manifest).digest())


@dataclass(slots=True)  # not frozen: frozen dataclasses cost a setattr call per field on every message
class RequestManifest:
    protocol: str  # "soap" or "rest"
    xroad_id: str
    request_id: str
    client: str  # path form, e.g. INST/GOV/1234/sub
    service: str  # path form, with version if any
    method: str
    path: str  # REST: the service-relative path; SOAP: ""
    query: str
    headers: tuple[tuple[str, str], ...]
    body_sha512: str
    body_length: int
    created_ms: int
    user_id: str | None = None
    issue: str | None = None
    protocol_version: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    target_server: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": FORMAT_VERSION, "type": "request", "protocol": self.protocol, "id": self.xroad_id,
            "request_id": self.request_id, "client": self.client, "service": self.service,
            "method": self.method, "path": self.path, "query": self.query,
            "headers": [list(h) for h in self.headers], "body_sha512": self.body_sha512,
            "body_length": self.body_length, "created_ms": self.created_ms,
        }
        for key in ("user_id", "issue", "protocol_version", "traceparent", "tracestate", "target_server"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data


@dataclass(slots=True)
class ResponseManifest:
    xroad_id: str
    request_id: str
    request_hash: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body_sha512: str
    body_length: int
    created_ms: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION, "type": "response", "id": self.xroad_id, "request_id": self.request_id,
            "request_hash": self.request_hash, "status": self.status,
            "headers": [list(h) for h in self.headers], "body_sha512": self.body_sha512,
            "body_length": self.body_length, "created_ms": self.created_ms, **self.extra,
        }


@dataclass(frozen=True, slots=True)
class SignedParts:
    """What crosses between gateways beside the body: the manifest bytes, the signature, the signer's cert."""

    manifest: bytes
    signature: bytes
    signer_cert: bytes  # DER
    ocsp: bytes = b""  # the signer certificate's OCSP response (DER), when its CA runs a responder


def encode_manifest(manifest: RequestManifest | ResponseManifest) -> bytes:
    # orjson writes the same compact UTF-8 as json.dumps(separators=(",", ":"), ensure_ascii=False), 4x faster.
    return orjson.dumps(manifest.to_json())


def sign_bytes(data: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A DER ECDSA P-256/SHA-256 signature: over a manifest, or over a batch root (core/batchsig.py)."""
    return key.sign(data, _ECDSA_SHA256)


def sign(manifest: bytes, key: ec.EllipticCurvePrivateKey, signer_cert_der: bytes) -> SignedParts:
    return SignedParts(manifest, sign_bytes(manifest, key), signer_cert_der)


def _malformed(origin: Origin, message: str) -> Fault:
    return Fault(origin, Code.MALFORMED_SIGNATURE, message)


def signed_content(parts: SignedParts) -> tuple[bytes, bytes]:
    """(the bytes the ECDSA signature covers, the DER ECDSA signature): the manifest itself, or for a batch
    signature (core/batchsig.py) the batch root recomputed from the manifest and its proof path."""
    if batchsig.is_batch(parts.signature):
        return batchsig.signed_root(parts.manifest, parts.signature)
    return parts.manifest, parts.signature


def verify_signature(parts: SignedParts, public_key: ec.EllipticCurvePublicKey, origin: Origin,
                     verified: VerifiedSignatures | None = None) -> None:
    """Check the signature over the manifest; ``verified`` skips the ECDSA step for a batch root seen before."""
    try:
        content, signature = signed_content(parts)
    except batchsig.BatchSignatureError as exc:
        raise _malformed(origin, str(exc)) from None
    memo_key = (content, signature, parts.signer_cert)
    if verified is not None and memo_key in verified:
        return
    try:
        public_key.verify(signature, content, _ECDSA_SHA256)
    except InvalidSignature:
        raise Fault(origin, Code.INVALID_SIGNATURE_VALUE, "signature does not match the message") from None
    if verified is not None and content is not parts.manifest:  # only batch roots come back
        verified.add(memo_key)


class VerifiedSignatures:
    """Batch-root signatures already verified, per signer certificate: the messages of one batch arrive
    together, and only the first of them pays for the ECDSA verification. Bounded; cleared when full."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._seen: set[tuple[bytes, bytes, bytes]] = set()
        self._max = max_entries

    def __contains__(self, key: tuple[bytes, bytes, bytes]) -> bool:
        return key in self._seen

    def add(self, key: tuple[bytes, bytes, bytes]) -> None:
        if len(self._seen) >= self._max:
            self._seen.clear()
        self._seen.add(key)


def _decode(manifest: bytes, expected_type: str, origin: Origin) -> dict[str, Any]:
    try:
        data = orjson.loads(manifest)
    except orjson.JSONDecodeError:  # also invalid UTF-8, lone surrogates and integers beyond 64 bits
        raise _malformed(origin, "manifest is not valid JSON") from None
    if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION or data.get("type") != expected_type:
        raise _malformed(origin, f"manifest is not a version {FORMAT_VERSION} {expected_type}")
    return data


def _headers(value: Any, origin: Origin) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(
            isinstance(h, list) and len(h) == 2 and all(isinstance(s, str) for s in h) for h in value):
        raise _malformed(origin, "manifest headers are malformed")
    return tuple((h[0], h[1]) for h in value)


def _check_body(data: dict[str, Any], body: bytes, origin: Origin) -> None:
    if data.get("body_length") != len(body) or data.get("body_sha512") != body_digest(body):
        raise Fault(origin, Code.INVALID_SIGNATURE_VALUE, "message body does not match its signed digest")


def _opt_str(data: dict[str, Any], key: str, origin: Origin) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise _malformed(origin, f"manifest field {key} must be a string")
    return value


def _str(data: dict[str, Any], key: str, origin: Origin) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _malformed(origin, f"manifest field {key} is missing")
    return value


def _int(data: dict[str, Any], key: str, origin: Origin) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _malformed(origin, f"manifest field {key} must be an integer")
    return value


def parse_request(parts: SignedParts, body: bytes, origin: Origin = Origin.SERVER_PROXY) -> RequestManifest:
    """Decode a request manifest whose signature was already verified, and check the body against it."""
    data = _decode(parts.manifest, "request", origin)
    _check_body(data, body, origin)
    protocol = _str(data, "protocol", origin)
    if protocol not in ("soap", "rest"):
        raise _malformed(origin, "manifest protocol must be soap or rest")
    return RequestManifest(
        protocol=protocol, xroad_id=_str(data, "id", origin), request_id=_str(data, "request_id", origin),
        client=_str(data, "client", origin), service=_str(data, "service", origin),
        method=_str(data, "method", origin), path=_str(data, "path", origin), query=_str(data, "query", origin),
        headers=_headers(data.get("headers"), origin), body_sha512=_str(data, "body_sha512", origin),
        body_length=_int(data, "body_length", origin), created_ms=_int(data, "created_ms", origin),
        user_id=_opt_str(data, "user_id", origin), issue=_opt_str(data, "issue", origin),
        protocol_version=_opt_str(data, "protocol_version", origin),
        traceparent=_opt_str(data, "traceparent", origin), tracestate=_opt_str(data, "tracestate", origin),
        target_server=_opt_str(data, "target_server", origin),
    )


def parse_response(parts: SignedParts, body: bytes, expected_request_hash: str,
                   origin: Origin = Origin.CLIENT_PROXY) -> ResponseManifest:
    """Decode a verified response manifest; it must answer exactly the request we sent."""
    data = _decode(parts.manifest, "response", origin)
    _check_body(data, body, origin)
    if data.get("request_hash") != expected_request_hash:
        raise Fault(origin, Code.INCONSISTENT_RESPONSE, "response is not bound to the request that was sent")
    return ResponseManifest(
        xroad_id=_str(data, "id", origin), request_id=_str(data, "request_id", origin),
        request_hash=expected_request_hash, status=_int(data, "status", origin),
        headers=_headers(data.get("headers"), origin), body_sha512=_str(data, "body_sha512", origin),
        body_length=_int(data, "body_length", origin), created_ms=_int(data, "created_ms", origin),
    )


def load_signer(parts: SignedParts, origin: Origin) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(parts.signer_cert)
    except ValueError:
        raise _malformed(origin, "signer certificate is not valid DER") from None
