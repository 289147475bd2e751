"""The development certificate authority: root CA, member sign certificates and gateway auth certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.configfile import ConfigError
from gateway.core.certificates import fingerprint, member_of_sign_certificate
from gateway.core.identifiers import MemberId, ServerId

__all__ = ["CertificateAuthority", "fingerprint", "member_of_sign_certificate"]

PrivateKey = ec.EllipticCurvePrivateKey


def new_key() -> PrivateKey:
    """ECDSA P-256: fast to sign and verify, and widely supported by HSMs."""
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None, serial: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if serial:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int, not_before: dt.datetime | None) -> x509.CertificateBuilder:
    start = (not_before or _now()) - dt.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


@dataclass(frozen=True)
class Issued:
    key: PrivateKey
    certificate: x509.Certificate


class CertificateAuthority:
    """A root CA that issues the two certificate profiles the federation uses."""

    def __init__(self, key: PrivateKey, certificate: x509.Certificate, directory: Path | None = None) -> None:
        self.key = key
        self.certificate = certificate
        self.directory = directory  # when set, every issued certificate is recorded in its status database

    @classmethod
    def create(cls, name: str = "Wasl Development Root CA", days: int = 3650) -> CertificateAuthority:
        key = new_key()
        subject = _name(name, "Wasl Development PKI")
        cert = (
            _builder(subject, subject, key.public_key(), days, None)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True,
                              crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        return cls(load_key(directory / "ca.key"), load_certificate(directory / "ca.pem"), directory)

    def save(self, directory: Path) -> None:
        save_key(directory / "ca.key", self.key)
        save_certificate(directory / "ca.pem", self.certificate)
        self.directory = directory

    def _issue(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            builder
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        if self.directory is not None:  # so the OCSP responder answers "good" for it, not "unknown"
            from gateway.trust.ca_status import StatusDatabase

            StatusDatabase(self.directory).record_issued(cert)
        return cert

    def issue_sign_certificate(self, member: MemberId, member_name: str, public_key: ec.EllipticCurvePublicKey,
                               days: int = 365, not_before: dt.datetime | None = None) -> x509.Certificate:
        """A member's signing certificate: non-repudiation, the subject names the member."""
        subject = sign_certificate_subject(member, member_name)
        builder = _builder(subject, self.certificate.subject, public_key, days, not_before).add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        return self._issue(builder)

    def issue_auth_certificate(self, server: ServerId, public_key: ec.EllipticCurvePublicKey,
                               days: int = 365, hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost"),
                               not_before: dt.datetime | None = None) -> x509.Certificate:
        """A gateway's TLS certificate, usable as both client and server in mutual TLS."""
        subject = auth_certificate_subject(server)
        alt_names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        builder = (
            _builder(subject, self.certificate.subject, public_key, days, not_before)
            .add_extension(  # ECDHE key exchange: an EC key signs the handshake; it never enciphers keys
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False,
                              crl_sign=False, encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        )
        return self._issue(builder)

    def issue_tls_server_certificate(self, common_name: str, public_key: ec.EllipticCurvePublicKey,
                                     days: int = 365) -> x509.Certificate:
        """A plain TLS server certificate for loopback services (registry, TSA, demo backends)."""
        builder = (
            _builder(_name(common_name), self.certificate.subject, public_key, days, None)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        )
        return self._issue(builder)

    def issue_signing_certificate(self, common_name: str, public_key: ec.EllipticCurvePublicKey,
                                  days: int = 365) -> x509.Certificate:
        """A plain digital-signature certificate (the registry's configuration-signing key)."""
        builder = _builder(_name(common_name, "Wasl Central Registry"), self.certificate.subject,
                           public_key, days, None).add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        return self._issue(builder)


def auth_certificate_subject(server: ServerId) -> x509.Name:
    """The subject profile of an auth certificate: serialNumber carries the gateway's server id in path form."""
    return _name(server.server_code, server.owner.path(), server.path())


def sign_certificate_subject(member: MemberId, member_name: str) -> x509.Name:
    """The subject profile of a sign certificate: serialNumber carries the member id in path form."""
    return _name(member.member_code, member_name, member.path())


def holds_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    """Whether ``cert`` certifies the public half of ``key`` (before installing a rotated pair)."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(serialization.Encoding.DER, spki) == key.public_key().public_bytes(
        serialization.Encoding.DER, spki)


def save_key(path: Path, key: PrivateKey) -> None:
    """Write a private key readable by its owner only (0600), never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def save_certificate(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None


def load_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path, "private key"), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: only EC private keys are supported")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, "certificate"))
    except ValueError:
        raise ConfigError(f"{path}: not a PEM certificate") from None
