"""Registration requests: building and signing them, verifying one, and applying approved ones to the federation.

No I/O. A member's gateway asks the central registry to change the federation (a new member, subsystem, gateway,
or client of a gateway, and the matching removals) with a request signed by the member's sign key. The registry
verifies it (``verify``), checks it against the federation as it stands (``check``), queues it, and once an
administrator approves it, ``apply`` folds it into the federation the next global configuration is built from.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.core import identifiers as ids
from gateway.core.certificates import (
    CertificateError,
    check_issued_by_approved_ca,
    check_sign_certificate,
    fingerprint,
    member_of_sign_certificate,
)
from gateway.core.envelope import b64, unb64
from gateway.core.settings import FederationConfig, FederationGateway, FederationMember

FORMAT = "wasl-registration/1"
MAX_REQUEST_BYTES = 64 * 1024
MAX_AGE = dt.timedelta(minutes=10)  # a signed request older than this (or dated this far ahead) is refused
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class Kind(StrEnum):
    REGISTER_MEMBER = "register_member"
    REGISTER_SUBSYSTEM = "register_subsystem"
    REGISTER_GATEWAY = "register_gateway"
    ADD_CLIENT = "add_client"
    REMOVE_CLIENT = "remove_client"
    REMOVE_GATEWAY = "remove_gateway"
    REMOVE_SUBSYSTEM = "remove_subsystem"


class RegistrationError(ValueError):
    """A request the registry refuses; the message says why, naming the field or the conflict."""


@dataclass(frozen=True)
class Request:
    """What a member asks for. Which fields matter depends on ``kind``."""

    kind: Kind
    member: str  # INST/CLASS/CODE: the member asking, whose sign key signs the request
    nonce: str
    created_at: dt.datetime
    member_name: str = ""  # register_member
    subsystem: str = ""  # register/remove_subsystem: the subsystem code
    server: str = ""  # gateway requests: INST/CLASS/CODE/serverCode
    address: str = ""  # register_gateway: https://host:port of its server side
    auth_certificate: bytes = b""  # register_gateway: DER
    client: str = ""  # add/remove_client: a subsystem path

    def target(self) -> str:
        """What the request is about, for queues and audit entries."""
        return {Kind.REGISTER_MEMBER: self.member,
                Kind.REGISTER_SUBSYSTEM: f"{self.member}/{self.subsystem}",
                Kind.REMOVE_SUBSYSTEM: f"{self.member}/{self.subsystem}",
                Kind.REGISTER_GATEWAY: self.server, Kind.REMOVE_GATEWAY: self.server,
                Kind.ADD_CLIENT: f"{self.client} at {self.server}",
                Kind.REMOVE_CLIENT: f"{self.client} at {self.server}"}[self.kind]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT, "kind": self.kind.value, "member": self.member,
                                "nonce": self.nonce, "created_at": self.created_at.isoformat()}
        for name in ("member_name", "subsystem", "server", "address", "client"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        if self.auth_certificate:
            data["auth_certificate"] = b64(self.auth_certificate)
        return data


def new_request(kind: Kind, member: str, now: dt.datetime | None = None, **fields: Any) -> Request:
    return Request(kind=kind, member=member, nonce=secrets.token_hex(16),
                   created_at=(now or dt.datetime.now(dt.UTC)).replace(microsecond=0), **fields)


def sign(request: Request, key: ec.EllipticCurvePrivateKey | Callable[[bytes], bytes],
         sign_certificate: x509.Certificate) -> bytes:
    """The signed request as sent: the request's exact JSON bytes, an ECDSA signature over them, and the cert.
    ``key`` is a private key, or a function returning a DER ECDSA P-256/SHA-256 signature (a token key)."""
    document = json.dumps(request.to_json(), separators=(",", ":"), sort_keys=True).encode()
    signature = key.sign(document, _ECDSA_SHA256) if isinstance(key, ec.EllipticCurvePrivateKey) else key(document)
    return json.dumps({"request": b64(document), "signature": b64(signature),
                       "sign_certificate": b64(sign_certificate.public_bytes(Encoding.DER))}).encode()


@dataclass(frozen=True)
class Verified:
    request: Request
    sign_certificate: x509.Certificate
    raw: bytes  # the signed request exactly as received, kept as evidence


def _field(data: dict[str, Any], name: str, required: bool = True) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise RegistrationError(f"request field {name} is missing or not a string")
    return value


def _parse(document: bytes) -> Request:
    try:
        data = json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RegistrationError("request is not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RegistrationError(f"request format must be {FORMAT}")
    try:
        kind = Kind(str(data.get("kind")))
    except ValueError:
        raise RegistrationError(f"request kind must be one of {', '.join(k.value for k in Kind)}") from None
    try:
        member = ids.parse_member(_field(data, "member")).path()
        created_at = dt.datetime.fromisoformat(_field(data, "created_at"))
    except (ids.IdentifierError, ValueError) as exc:
        raise RegistrationError(f"request field: {exc}") from None
    if created_at.tzinfo is None:
        raise RegistrationError("request field created_at needs a time zone")
    auth = _field(data, "auth_certificate", required=False)
    try:
        auth_der = unb64(auth) if auth else b""
    except ValueError:
        raise RegistrationError("request field auth_certificate is not base64") from None
    return Request(kind=kind, member=member, nonce=_field(data, "nonce"), created_at=created_at,
                   member_name=_field(data, "member_name", False), subsystem=_field(data, "subsystem", False),
                   server=_field(data, "server", False), address=_field(data, "address", False),
                   auth_certificate=auth_der, client=_field(data, "client", False))


def parse_signed(raw: bytes) -> Request:
    """The request inside a signed request already verified (as stored in the registry's queue)."""
    try:
        return _parse(unb64(json.loads(raw)["request"]))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise RegistrationError("stored request is malformed") from None


def verify(raw: bytes, approved_cas: list[x509.Certificate], now: dt.datetime) -> Verified:
    """Check the signature, that the sign certificate is trusted and names the requesting member, and the time."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RegistrationError(f"request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        container = json.loads(raw)
        document, signature = unb64(container["request"]), unb64(container["signature"])
        cert = x509.load_der_x509_certificate(unb64(container["sign_certificate"]))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise RegistrationError("signed request is malformed (want request, signature, sign_certificate)") from None
    request = _parse(document)
    named = member_of_sign_certificate(cert)
    if named != request.member:
        raise RegistrationError(f"request for member {request.member} is signed by a certificate of {named}")
    try:
        check_sign_certificate(cert, approved_cas, request.member, now)
    except CertificateError as exc:
        raise RegistrationError(f"sign certificate not trusted: {exc}") from None
    public_key = cert.public_key()
    try:
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidSignature
        public_key.verify(signature, document, _ECDSA_SHA256)
    except InvalidSignature:
        raise RegistrationError("request signature does not verify") from None
    if abs(now - request.created_at) > MAX_AGE:
        raise RegistrationError("request is too old or dated in the future; sign a new one")
    return Verified(request, cert, raw)


def check_submitter(request: Request, tls_certificate: x509.Certificate) -> None:
    """The mutual-TLS certificate must be an auth certificate of a gateway of the requesting member (for a new
    gateway: exactly the auth certificate it registers)."""
    server = member_of_sign_certificate(tls_certificate) or ""  # an auth certificate names its gateway alike
    try:
        owner = ids.parse_server(server).owner.path()
    except ids.IdentifierError:
        raise RegistrationError("the TLS client certificate does not name a gateway") from None
    if owner != request.member:
        raise RegistrationError(f"gateway {server} may not send requests for member {request.member}")
    if request.kind is Kind.REGISTER_GATEWAY and tls_certificate.public_bytes(Encoding.DER) != request.auth_certificate:
        raise RegistrationError("register a gateway from that gateway, over TLS with the auth certificate it registers")


# -- the federation as requests change it ------------------------------------------------------------------------

def _members(fed: FederationConfig) -> dict[str, FederationMember]:
    return {f"{fed.instance}/{m.member_class}/{m.code}": m for m in fed.members}


def _gateways(fed: FederationConfig) -> dict[str, FederationGateway]:
    return {gw.server: gw for gw in fed.gateways}


def check(fed: FederationConfig, request: Request, approved_cas: list[x509.Certificate],
          now: dt.datetime) -> None:
    """Refuse a request that cannot apply to ``fed``: a duplicate, an unknown target, a foreign one."""
    members, gateways = _members(fed), _gateways(fed)
    member_id = ids.parse_member(request.member)
    if member_id.instance != fed.instance:
        raise RegistrationError(f"member {request.member} is not of instance {fed.instance}")
    if request.kind is Kind.REGISTER_MEMBER:
        if request.member in members:
            raise RegistrationError(f"member {request.member} is already registered")
        if not request.member_name:
            raise RegistrationError("register_member needs member_name")
        return
    member = members.get(request.member)
    if member is None:
        raise RegistrationError(f"member {request.member} is not registered; register the member first")
    if request.kind in (Kind.REGISTER_SUBSYSTEM, Kind.REMOVE_SUBSYSTEM):
        try:
            ids.check_part("subsystem", request.subsystem)
        except ids.IdentifierError as exc:
            raise RegistrationError(str(exc)) from None
        exists = request.subsystem in member.subsystems
        if request.kind is Kind.REGISTER_SUBSYSTEM and exists:
            raise RegistrationError(f"subsystem {request.target()} is already registered")
        if request.kind is Kind.REMOVE_SUBSYSTEM and not exists:
            raise RegistrationError(f"subsystem {request.target()} is not registered")
        return
    try:
        server = ids.parse_server(request.server)
    except ids.IdentifierError as exc:
        raise RegistrationError(f"request field server: {exc}") from None
    gateway = gateways.get(request.server)
    if request.kind is Kind.REGISTER_GATEWAY:
        if server.owner.path() != request.member:
            raise RegistrationError(f"gateway {request.server} is not owned by member {request.member}")
        if gateway is not None:
            raise RegistrationError(f"gateway {request.server} is already registered")
        if not request.address.startswith("https://"):
            raise RegistrationError("register_gateway needs the https:// address of the gateway's server side")
        try:
            auth = x509.load_der_x509_certificate(request.auth_certificate)
            check_issued_by_approved_ca(auth, approved_cas, now)
        except (ValueError, CertificateError) as exc:
            raise RegistrationError(f"auth certificate not usable: {exc}") from None
        if member_of_sign_certificate(auth) != request.server:
            raise RegistrationError(f"auth certificate does not name gateway {request.server}")
        return
    if gateway is None:
        raise RegistrationError(f"gateway {request.server} is not registered")
    if request.kind is Kind.REMOVE_GATEWAY:
        if server.owner.path() != request.member:
            raise RegistrationError(f"gateway {request.server} is not owned by member {request.member}")
        return
    try:
        client = ids.parse_subsystem(request.client)
    except ids.IdentifierError as exc:
        raise RegistrationError(f"request field client: {exc}") from None
    if client.member.path() != request.member or client.subsystem_code not in member.subsystems:
        raise RegistrationError(f"client {request.client} is not a registered subsystem of {request.member}")
    listed = request.client in gateway.clients
    if request.kind is Kind.ADD_CLIENT and listed:
        raise RegistrationError(f"{request.client} is already a client of {request.server}")
    if request.kind is Kind.REMOVE_CLIENT and not listed:
        raise RegistrationError(f"{request.client} is not a client of {request.server}")


def apply(fed: FederationConfig, request: Request) -> FederationConfig:
    """``fed`` with an approved (and checked) request applied."""
    members = list(fed.members)
    gateways = list(fed.gateways)
    member_path = request.member
    index = next((i for i, m in enumerate(members) if f"{fed.instance}/{m.member_class}/{m.code}" == member_path),
                 None)
    if request.kind is Kind.REGISTER_MEMBER:
        member_id = ids.parse_member(member_path)
        members.append(FederationMember.model_validate(
            {"class": member_id.member_class, "code": member_id.member_code, "name": request.member_name}))
    elif request.kind in (Kind.REGISTER_SUBSYSTEM, Kind.REMOVE_SUBSYSTEM):
        assert index is not None
        m = members[index]
        subsystems = ([*m.subsystems, request.subsystem] if request.kind is Kind.REGISTER_SUBSYSTEM
                      else [s for s in m.subsystems if s != request.subsystem])
        members[index] = m.model_copy(update={"subsystems": subsystems})
        if request.kind is Kind.REMOVE_SUBSYSTEM:
            gone = f"{member_path}/{request.subsystem}"
            gateways = [gw.model_copy(update={"clients": [c for c in gw.clients if c != gone]}) for gw in gateways]
    elif request.kind is Kind.REGISTER_GATEWAY:
        auth = x509.load_der_x509_certificate(request.auth_certificate)
        gateways.append(FederationGateway(server=request.server, address=request.address,
                                          auth_cert_sha256=[fingerprint(auth)], clients=[]))
    elif request.kind is Kind.REMOVE_GATEWAY:
        gateways = [gw for gw in gateways if gw.server != request.server]
    else:
        gateways = [gw.model_copy(update={"clients": (
            [*gw.clients, request.client] if request.kind is Kind.ADD_CLIENT
            else [c for c in gw.clients if c != request.client])}) if gw.server == request.server else gw
            for gw in gateways]
    return fed.model_copy(update={"members": members, "gateways": gateways})
