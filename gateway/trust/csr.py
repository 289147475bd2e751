"""Certificate signing requests: gateways build them for their keys; the development CA checks and signs them."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.core.identifiers import MemberId, ServerId
from gateway.trust.pki import CertificateAuthority, auth_certificate_subject, sign_certificate_subject


class CsrError(ValueError):
    """A CSR the CA refuses to sign; the message says why."""


def sign_csr_for(member: MemberId, member_name: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return (x509.CertificateSigningRequestBuilder().subject_name(sign_certificate_subject(member, member_name))
            .sign(key, hashes.SHA256()))


def auth_csr_for(server: ServerId, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return (x509.CertificateSigningRequestBuilder().subject_name(auth_certificate_subject(server))
            .sign(key, hashes.SHA256()))


def _named(csr: x509.CertificateSigningRequest) -> str | None:
    values = csr.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(values[0].value) if values else None


def _checked_key(csr: x509.CertificateSigningRequest, expected: str, what: str) -> ec.EllipticCurvePublicKey:
    if not csr.is_signature_valid:
        raise CsrError("the CSR's signature does not verify: it was altered or not made with its key")
    named = _named(csr)
    if named != expected:
        raise CsrError(f"the CSR's subject names {named!r}, not the {what} {expected!r}")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CsrError("the CSR must hold an EC key")
    return key


def issue_sign_certificate(ca: CertificateAuthority, csr: x509.CertificateSigningRequest, member: MemberId,
                           member_name: str, days: int = 365) -> x509.Certificate:
    """A sign certificate for ``member``, only if the CSR is self-consistent and names exactly that member."""
    return ca.issue_sign_certificate(member, member_name, _checked_key(csr, member.path(), "member"), days=days)


def issue_auth_certificate(ca: CertificateAuthority, csr: x509.CertificateSigningRequest, server: ServerId,
                           days: int = 365) -> x509.Certificate:
    """An auth certificate for ``server``, only if the CSR is self-consistent and names exactly that gateway."""
    return ca.issue_auth_certificate(server, _checked_key(csr, server.path(), "gateway"), days=days)
