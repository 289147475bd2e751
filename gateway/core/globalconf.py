"""The global configuration: its document model, building and signing it, and verifying a downloaded copy."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.core.certificates import fingerprint
from gateway.core.envelope import b64, unb64
from gateway.core.faults import Code, Fault, Origin

DOCUMENT_FORMAT = "wasl-globalconf/1"
CONTAINER_FORMAT = "wasl-signed-globalconf/1"
MAX_CONTAINER_BYTES = 8 * 1024 * 1024
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class GlobalConfError(ValueError):
    """A downloaded global configuration that must not be used; ``code`` is the X-Road fault code."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApprovedCA(_Model):
    name: str
    certificate: str  # base64 DER
    ocsp_responders: list[str] = Field(default_factory=list)


class TimestampingAuthority(_Model):
    name: str
    url: str
    certificate: str  # base64 DER


class Subsystem(_Model):
    code: str


class Member(_Model):
    member_class: str
    member_code: str
    name: str
    subsystems: list[Subsystem] = Field(default_factory=list)


class Gateway(_Model):
    server: str  # INST/CLASS/CODE/serverCode
    address: str  # https://host:port of the server side
    auth_cert_sha256: list[str]
    clients: list[str]  # subsystem paths this gateway serves

    @field_validator("auth_cert_sha256")
    @classmethod
    def _hex(cls, values: list[str]) -> list[str]:
        return [normalise_fingerprint(v) for v in values]


class GlobalGroup(_Model):
    code: str
    description: str = ""
    members: list[str]  # client paths (member or subsystem)


class GlobalConfDocument(_Model):
    format: Literal["wasl-globalconf/1"] = "wasl-globalconf/1"
    instance: str
    serial: int  # strictly increasing; a copy with a lower serial than the one held is refused
    generated_at: dt.datetime
    expires_at: dt.datetime
    refresh_seconds: int = 60
    approved_cas: list[ApprovedCA]
    timestamping_authorities: list[TimestampingAuthority] = Field(default_factory=list)
    members: list[Member]
    gateways: list[Gateway]
    global_groups: list[GlobalGroup] = Field(default_factory=list)
    monitoring_client: str | None = None
    ocsp_freshness_seconds: int = 3600
    management_service: str | None = None
    # Configuration-signing certificates the registry will switch to, announced under the current key, so that
    # gateways trust them before the switch (docs/keys.md); SHA-256 fingerprints.
    next_signing_cert_sha256: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class GlobalConf:
    """A verified global configuration with the look-up indexes every request needs."""

    document: GlobalConfDocument
    raw: bytes  # the signed container exactly as downloaded, kept on disk as the last good copy
    members: frozenset[str] = field(init=False)
    subsystems: frozenset[str] = field(init=False)
    gateways_by_client: dict[str, tuple[Gateway, ...]] = field(init=False)
    gateway_by_fingerprint: dict[str, Gateway] = field(init=False)
    group_members: dict[str, frozenset[str]] = field(init=False)
    member_names: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        doc = self.document
        members = {f"{doc.instance}/{m.member_class}/{m.member_code}": m for m in doc.members}
        object.__setattr__(self, "members", frozenset(members))
        object.__setattr__(self, "member_names", {path: m.name for path, m in members.items()})
        object.__setattr__(self, "subsystems", frozenset(
            f"{path}/{s.code}" for path, m in members.items() for s in m.subsystems))
        by_client: dict[str, list[Gateway]] = {}
        by_fp: dict[str, Gateway] = {}
        for gw in doc.gateways:
            for client in gw.clients:
                by_client.setdefault(client, []).append(gw)
            for fp in gw.auth_cert_sha256:
                by_fp[fp] = gw
        object.__setattr__(self, "gateways_by_client", {k: tuple(v) for k, v in by_client.items()})
        object.__setattr__(self, "gateway_by_fingerprint", by_fp)
        object.__setattr__(self, "group_members", {g.code: frozenset(g.members) for g in doc.global_groups})

    @property
    def instance(self) -> str:
        return self.document.instance

    @property
    def serial(self) -> int:
        return self.document.serial

    @cached_property
    def approved_ca_certificates(self) -> list[x509.Certificate]:
        return [x509.load_der_x509_certificate(unb64(ca.certificate)) for ca in self.document.approved_cas]

    @cached_property
    def ocsp_responders_by_ca(self) -> dict[bytes, tuple[str, ...]]:
        """The OCSP responder URLs of each approved CA, keyed by the CA certificate's DER."""
        return {unb64(ca.certificate): tuple(ca.ocsp_responders) for ca in self.document.approved_cas}

    def ocsp_responders_for(self, ca: x509.Certificate) -> tuple[str, ...]:
        """Where to ask about certificates ``ca`` issued; empty when the CA runs no OCSP (no status check)."""
        if not any(self.ocsp_responders_by_ca.values()):
            return ()  # the common case without OCSP costs no encoding per message
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.ocsp_responders_by_ca.get(ca.public_bytes(Encoding.DER), ())

    @property
    def ocsp_freshness(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.document.ocsp_freshness_seconds)

    def is_expired(self, now: dt.datetime) -> bool:
        return now >= self.document.expires_at

    def require_fresh(self, now: dt.datetime, origin: Origin) -> None:
        if self.is_expired(now):
            raise Fault(origin, Code.OUTDATED_GLOBALCONF,
                        f"global configuration expired at {self.document.expires_at.isoformat()}; "
                        "waiting for a fresh copy from the central registry")

    def gateways_for(self, client_path: str) -> tuple[Gateway, ...]:
        return self.gateways_by_client.get(client_path, ())

    def groups_of(self, client_path: str) -> frozenset[str]:
        """Global group codes whose members include this client or its member."""
        member_path = "/".join(client_path.split("/")[:3])
        return frozenset(code for code, members in self.group_members.items()
                         if client_path in members or member_path in members)

    def is_known_client(self, client_path: str) -> bool:
        return client_path in self.subsystems or client_path in self.members


def build_document(*, instance: str, serial: int, generated_at: dt.datetime, validity: dt.timedelta,
                   refresh_seconds: int, approved_cas: list[ApprovedCA], members: list[Member],
                   gateways: list[Gateway], global_groups: list[GlobalGroup],
                   timestamping_authorities: list[TimestampingAuthority] | None = None,
                   monitoring_client: str | None = None, ocsp_freshness_seconds: int = 3600,
                   management_service: str | None = None,
                   next_signing_cert_sha256: list[str] | None = None) -> bytes:
    doc = GlobalConfDocument(
        instance=instance, serial=serial, generated_at=generated_at, expires_at=generated_at + validity,
        refresh_seconds=refresh_seconds, approved_cas=approved_cas, members=members, gateways=gateways,
        global_groups=global_groups, timestamping_authorities=timestamping_authorities or [],
        monitoring_client=monitoring_client, ocsp_freshness_seconds=ocsp_freshness_seconds,
        management_service=management_service, next_signing_cert_sha256=next_signing_cert_sha256 or [],
    )
    return doc.model_dump_json().encode()


def sign_document(document: bytes, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> bytes:
    """Wrap the document bytes with a detached ECDSA signature and the signing certificate."""
    from cryptography.hazmat.primitives.serialization import Encoding

    container = {
        "format": CONTAINER_FORMAT,
        "document": b64(document),
        "signature_algorithm": "ecdsa-p256-sha256",
        "signature": b64(key.sign(document, _ECDSA_SHA256)),
        "signing_certificate": b64(certificate.public_bytes(Encoding.DER)),
    }
    return json.dumps(container, indent=1).encode()


def normalise_fingerprint(value: str) -> str:
    """Accept a SHA-256 fingerprint as printed by openssl (colons, upper case) or as plain hex."""
    text = value.strip().lower().replace(":", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"{value!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return text


class ConfigurationAnchor(_Model):
    """How a gateway bootstraps trust: where the registry is and which signing certificates to accept."""

    instance: str
    registry_url: str
    signing_cert_sha256: list[str] = Field(min_length=1)

    @field_validator("signing_cert_sha256")
    @classmethod
    def _fingerprints(cls, values: list[str]) -> list[str]:
        return [normalise_fingerprint(v) for v in values]


def verify_container(blob: bytes, anchor: ConfigurationAnchor, now: dt.datetime,
                     held_serial: int | None = None, allow_expired: bool = False) -> GlobalConf:
    """Accept a downloaded configuration only if the anchor's key signed it, it is well-formed,
    of our instance, not older than the copy held, and not expired."""
    if len(blob) > MAX_CONTAINER_BYTES:
        raise GlobalConfError(Code.MALFORMED_GLOBALCONF, "global configuration is too large")
    try:
        container: Any = json.loads(blob)
        if not isinstance(container, dict) or container.get("format") != CONTAINER_FORMAT:
            raise ValueError
        document = unb64(container["document"])
        signature = unb64(container["signature"])
        signer_der = unb64(container["signing_certificate"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise GlobalConfError(Code.MALFORMED_GLOBALCONF, "global configuration is not a signed container") from None
    try:
        signer = x509.load_der_x509_certificate(signer_der)
    except ValueError:
        raise GlobalConfError(Code.MALFORMED_GLOBALCONF, "signing certificate is not valid DER") from None
    if fingerprint(signer) not in anchor.signing_cert_sha256:
        raise GlobalConfError(Code.MALFORMED_GLOBALCONF,
                              "global configuration is signed by a key the configuration anchor does not trust")
    public_key = signer.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise GlobalConfError(Code.MALFORMED_GLOBALCONF, "signing key must be ECDSA")
    try:
        public_key.verify(signature, document, _ECDSA_SHA256)
    except InvalidSignature:
        raise GlobalConfError(Code.MALFORMED_GLOBALCONF,
                              "global configuration signature does not verify (tampered?)") from None
    try:
        doc = GlobalConfDocument.model_validate_json(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise GlobalConfError(Code.MALFORMED_GLOBALCONF,
                              f"global configuration field {where}: {first['msg']}") from None
    if doc.instance != anchor.instance:
        raise GlobalConfError(Code.MALFORMED_GLOBALCONF,
                              f"global configuration is for instance {doc.instance!r}, not {anchor.instance!r}")
    if held_serial is not None and doc.serial < held_serial:
        raise GlobalConfError(Code.MALFORMED_GLOBALCONF,
                              f"global configuration serial {doc.serial} is older than the held {held_serial}")
    if now >= doc.expires_at and not allow_expired:
        raise GlobalConfError(Code.OUTDATED_GLOBALCONF,
                              f"global configuration expired at {doc.expires_at.isoformat()}")
    return GlobalConf(doc, blob)

