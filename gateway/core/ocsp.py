"""Certificate status by OCSP (RFC 6960): building requests and deciding whether a response proves a certificate good.

No I/O. A gateway fetches a response for each of its own certificates and staples the sign certificate's response
to every message it signs; the receiver calls ``check_response`` on it. A response counts only if it is a
successful, signed answer about exactly this certificate, from the issuing CA itself or from a responder the CA
delegated (a certificate it issued with the OCSPSigning extended key usage), and no older than the freshness limit
the global configuration sets.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.core.faults import Code

MAX_RESPONSE_BYTES = 64 * 1024
# A response dated slightly in the future is a clock difference, not an attack.
CLOCK_SKEW = dt.timedelta(seconds=60)


class Status(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class OcspError(ValueError):
    """A response that does not prove the certificate good; ``code`` is the fault code to report."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class CheckedStatus:
    """A response that proved a certificate good, and until when it may be relied on."""

    serial: int
    this_update: dt.datetime
    fresh_until: dt.datetime  # this_update + the freshness limit, capped by next_update


def build_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """The DER OCSPRequest for ``cert`` (SHA-1 CertID, as RFC 6960 responders expect by default)."""
    return (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
            .build().public_bytes(serialization.Encoding.DER))


def _verify(public_key: object, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None) -> None:
    if algorithm is None:
        raise InvalidSignature
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    else:
        raise InvalidSignature


def _responder(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime) -> x509.Certificate:
    """The certificate whose key signed the response: the CA, or a responder the CA delegated."""
    by_hash = response.responder_key_hash
    by_name = response.responder_name
    candidates = [issuer, *response.certificates]
    for cert in candidates:
        key_hash = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest  # type: ignore[arg-type]
        if (by_hash is not None and by_hash == key_hash) or (by_name is not None and by_name == cert.subject):
            break
    else:
        raise OcspError(Code.CERT_VALIDATION, "OCSP response is signed by a responder the CA did not authorise")
    if cert is issuer:
        return issuer
    # A delegated responder: issued directly by the CA, for OCSP signing, and valid now (RFC 6960 4.2.2.2).
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise OcspError(Code.CERT_VALIDATION, "OCSP responder certificate is not issued by the CA") from None
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        raise OcspError(Code.CERT_VALIDATION, "OCSP responder certificate is not authorised for OCSP signing")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise OcspError(Code.CERT_VALIDATION, "OCSP responder certificate is not valid now")
    return cert


def check_response(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime,
                   freshness: dt.timedelta) -> CheckedStatus:
    """Accept ``der`` only as a fresh, correctly signed proof that ``cert`` is good; raise OcspError otherwise.

    Revoked is ``CertificateRevoked``-style (Code.CERT_REVOKED); every other failure is a validation error
    naming what is wrong.
    """
    if len(der) > MAX_RESPONSE_BYTES:
        raise OcspError(Code.CERT_VALIDATION, "OCSP response is too large")
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError:
        raise OcspError(Code.CERT_VALIDATION, "OCSP response is not valid DER") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(Code.CERT_VALIDATION, f"OCSP responder answered {response.response_status.name}")
    try:
        single = next(iter(response.responses))
        if sum(1 for _ in response.responses) != 1:
            raise StopIteration
    except (StopIteration, ValueError):
        raise OcspError(Code.CERT_VALIDATION, "OCSP response must hold exactly one certificate status") from None
    # The CertID must name this certificate and this issuer, hashed the way the response says.
    algorithm = single.hash_algorithm
    expected = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    if (single.serial_number != cert.serial_number or single.issuer_key_hash != expected.issuer_key_hash
            or single.issuer_name_hash != expected.issuer_name_hash):
        raise OcspError(Code.CERT_VALIDATION, "OCSP response is about another certificate")
    responder = _responder(response, issuer, now)
    try:
        _verify(responder.public_key(), response.signature, response.tbs_response_bytes,
                response.signature_hash_algorithm)
    except InvalidSignature:
        raise OcspError(Code.CERT_VALIDATION, "OCSP response signature does not verify") from None
    this_update = single.this_update_utc
    next_update = single.next_update_utc
    if this_update > now + CLOCK_SKEW:
        raise OcspError(Code.CERT_VALIDATION, "OCSP response is dated in the future")
    fresh_until = this_update + freshness
    if next_update is not None:
        fresh_until = min(fresh_until, next_update)
    if now > fresh_until:
        raise OcspError(Code.CERT_VALIDATION,
                        f"OCSP response is too old (thisUpdate {this_update.isoformat(timespec='seconds')})")
    if single.certificate_status is ocsp.OCSPCertStatus.REVOKED:
        when = single.revocation_time_utc
        raise OcspError(Code.CERT_REVOKED, "certificate is revoked"
                        + (f" since {when.isoformat(timespec='seconds')}" if when else ""))
    if single.certificate_status is not ocsp.OCSPCertStatus.GOOD:
        raise OcspError(Code.CERT_VALIDATION, "OCSP responder does not know the certificate (status unknown)")
    return CheckedStatus(cert.serial_number, this_update, fresh_until)
