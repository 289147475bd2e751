"""Pure certificate checks: fingerprints, the member a sign certificate names, and chain validation."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID


class CertificateError(ValueError):
    """A certificate that must not be trusted; the message says why."""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 over the DER encoding, lower-case hex: how the global configuration names certificates."""
    return cert.fingerprint(hashes.SHA256()).hex()


def member_of_sign_certificate(cert: x509.Certificate) -> str | None:
    """The member path (``INST/CLASS/CODE``) a sign certificate names in its serialNumber, or None."""
    values = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(values[0].value) if values else None


def check_validity(cert: x509.Certificate, now: dt.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateError(f"certificate {cert.subject.rfc4514_string()} is not valid yet")
    if now > cert.not_valid_after_utc:
        raise CertificateError(f"certificate {cert.subject.rfc4514_string()} expired at "
                               f"{cert.not_valid_after_utc.isoformat()}")


def check_issued_by_approved_ca(cert: x509.Certificate, approved_cas: list[x509.Certificate],
                                now: dt.datetime) -> x509.Certificate:
    """Return the approved CA that issued ``cert``, or raise. Both must be within their validity."""
    check_validity(cert, now)
    for ca in approved_cas:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError):
            continue
        check_validity(ca, now)
        return ca
    raise CertificateError(f"certificate {cert.subject.rfc4514_string()} is not issued by an approved CA")


def check_sign_certificate(cert: x509.Certificate, approved_cas: list[x509.Certificate], member_path: str,
                           now: dt.datetime) -> x509.Certificate:
    """A sign certificate is trusted for ``member_path`` if an approved CA issued it, it is valid now,
    it allows non-repudiation or digital signatures, and its subject names that member. Returns that CA."""
    issuer = check_issued_by_approved_ca(cert, approved_cas, now)
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise CertificateError("sign certificate has no key usage") from exc
    if not (usage.content_commitment or usage.digital_signature):
        raise CertificateError("sign certificate does not allow signing")
    named = member_of_sign_certificate(cert)
    if named != member_path:
        raise CertificateError(f"sign certificate names member {named!r}, not {member_path!r}")
    return issuer
