"""Typed models of the declarative YAML files (the registry's federation file and a gateway's config)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from gateway.core import identifiers as ids
from gateway.core.access import AccessRule
from gateway.core.globalconf import ConfigurationAnchor, normalise_fingerprint


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _relative_to_file(cls: type, value: Path | None, info: ValidationInfo) -> Path | None:
    """Paths in a YAML file are relative to that file, not to the working directory."""
    base = (info.context or {}).get("base")
    if value is None or value.is_absolute() or base is None:
        return value
    return Path(base) / value


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must be an absolute {' or '.join(schemes)} URL")
    return value.rstrip("/")


def _check(parser: object, value: str) -> str:
    try:
        parser(value)  # type: ignore[operator]
    except ids.IdentifierError as exc:
        raise ValueError(str(exc)) from None
    return value


# -- the central registry's federation file ----------------------------------------------------------------------

class FederationCA(_Model):
    name: str
    certificate: Path
    ocsp_responders: list[str] = Field(default_factory=list)

    resolve_paths = field_validator("certificate")(_relative_to_file)


class FederationTSA(_Model):
    name: str
    url: str
    certificate: Path

    resolve_paths = field_validator("certificate")(_relative_to_file)


class FederationMember(_Model):
    member_class: str = Field(alias="class")
    code: str
    name: str
    subsystems: list[str] = Field(default_factory=list)

    @field_validator("member_class", "code")
    @classmethod
    def _part(cls, value: str) -> str:
        return ids.check_part("identifier part", value)

    @field_validator("subsystems")
    @classmethod
    def _subsystems(cls, values: list[str]) -> list[str]:
        for value in values:
            ids.check_part("subsystemCode", value)
        return values


class FederationGateway(_Model):
    server: str  # INST/CLASS/CODE/serverCode
    address: str
    auth_certificate: Path | None = None
    auth_cert_sha256: list[str] = Field(default_factory=list)
    clients: list[str] = Field(default_factory=list)

    resolve_paths = field_validator("auth_certificate")(_relative_to_file)

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        return _check(ids.parse_server, value)

    @field_validator("auth_cert_sha256")
    @classmethod
    def _fingerprints(cls, values: list[str]) -> list[str]:
        return [normalise_fingerprint(v) for v in values]

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_url(value, ("https",))

    @field_validator("clients")
    @classmethod
    def _clients(cls, values: list[str]) -> list[str]:
        return [_check(ids.parse_subsystem, v) for v in values]

    @model_validator(mode="after")
    def _has_cert(self) -> FederationGateway:
        if self.auth_certificate is None and not self.auth_cert_sha256:
            raise ValueError("give auth_certificate (a PEM file) or auth_cert_sha256")
        return self


class FederationGroup(_Model):
    code: str
    description: str = ""
    members: list[str]

    @field_validator("members")
    @classmethod
    def _members(cls, values: list[str]) -> list[str]:
        return [_check(ids.parse_client, v) for v in values]


class RegistrySettings(_Model):
    host: str = "127.0.0.1"
    port: int = 4400
    signing_key: Path
    signing_certificate: Path
    validity_seconds: int = Field(600, ge=30)
    refresh_seconds: int = Field(60, ge=1)

    resolve_paths = field_validator("signing_key", "signing_certificate")(_relative_to_file)


class FederationConfig(_Model):
    instance: str
    registry: RegistrySettings
    approved_cas: list[FederationCA] = Field(min_length=1)
    timestamping_authorities: list[FederationTSA] = Field(default_factory=list)
    members: list[FederationMember]
    gateways: list[FederationGateway]
    global_groups: list[FederationGroup] = Field(default_factory=list)
    monitoring_client: str | None = None

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        return ids.check_part("instance", value)

    @model_validator(mode="after")
    def _references(self) -> FederationConfig:
        members = {f"{self.instance}/{m.member_class}/{m.code}" for m in self.members}
        subsystems = {f"{self.instance}/{m.member_class}/{m.code}/{s}" for m in self.members for s in m.subsystems}
        for i, gw in enumerate(self.gateways):
            owner = ids.parse_server(gw.server).owner.path()
            if owner not in members:
                raise ValueError(f"gateways.{i}.server: owner {owner} is not a member")
            for client in gw.clients:
                if client not in subsystems:
                    raise ValueError(f"gateways.{i}.clients: {client} is not a registered subsystem")
        for i, group in enumerate(self.global_groups):
            for member in group.members:
                if member not in members and member not in subsystems:
                    raise ValueError(f"global_groups.{i}.members: {member} is not a member or subsystem")
        return self


# -- a gateway's own configuration --------------------------------------------------------------------------------

class ClientTLSSettings(_Model):
    """TLS on the client side; with ``client_cas`` information systems must present a certificate."""

    certificate: Path
    key: Path
    client_cas: Path | None = None

    resolve_paths = field_validator("certificate", "key", "client_cas")(_relative_to_file)


class ListenSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    tls: ClientTLSSettings | None = None  # client side only; the server side always uses mutual TLS


class KeyPair(_Model):
    key: Path
    certificate: Path

    resolve_paths = field_validator("key", "certificate")(_relative_to_file)


class SigningKey(KeyPair):
    member: str

    @field_validator("member")
    @classmethod
    def _member(cls, value: str) -> str:
        return _check(ids.parse_member, value)


class MessageLogSettings(_Model):
    """Where the tamper-evident message log lives: an embedded SQLite file (default) or PostgreSQL."""

    enabled: bool = True
    store: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path | None = None  # SQLite file; default: <state_dir>/messagelog.db
    dsn: str | None = None  # PostgreSQL, e.g. postgresql://user@host/db
    log_bodies: bool = True  # per service, ``log_body`` overrides this

    resolve_paths = field_validator("path")(_relative_to_file)

    @model_validator(mode="after")
    def _store_target(self) -> MessageLogSettings:
        if self.enabled and self.store == "postgresql" and not self.dsn:
            raise ValueError("dsn is required when store is postgresql")
        return self


class ServiceSettings(_Model):
    id: str  # INST/CLASS/CODE/SUBSYSTEM/serviceCode[/version]
    type: Literal["soap", "rest"]
    url: str
    timeout_seconds: float = Field(30.0, gt=0, le=3600)
    disabled: bool = False
    log_body: bool | None = None  # None: the message log's default
    allow: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _check(ids.parse_service, value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value, ("http", "https"))

    @field_validator("allow")
    @classmethod
    def _allow(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                parsed = ids.parse_typed(value)
            except ids.IdentifierError as exc:
                raise ValueError(str(exc)) from None
            if parsed.object_type.value not in ("SUBSYSTEM", "MEMBER", "GLOBALGROUP"):
                raise ValueError(f"{value}: access is granted to a SUBSYSTEM, MEMBER or GLOBALGROUP")
        return values

    @property
    def service_id(self) -> ids.ServiceId:
        return ids.parse_service(self.id)

    @property
    def access_rules(self) -> tuple[AccessRule, ...]:
        rules = []
        for value in self.allow:
            kind, _, path = value.partition(":")
            rules.append(AccessRule(kind, path))
        return tuple(rules)


class GatewaySettings(_Model):
    server: str  # this gateway's server id, INST/CLASS/CODE/serverCode
    anchor: ConfigurationAnchor
    state_dir: Path
    client_side: ListenSettings
    server_side: ListenSettings
    auth: KeyPair
    signing: list[SigningKey] = Field(min_length=1)
    services: list[ServiceSettings] = Field(default_factory=list)
    workers: int = Field(1, ge=1, le=64)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    peer_timeout_seconds: float = Field(60.0, gt=0)
    clock_skew_seconds: int = Field(300, ge=1)
    globalconf_refresh_seconds: float | None = Field(None, gt=0)
    message_log: MessageLogSettings = Field(default_factory=MessageLogSettings)

    resolve_paths = field_validator("state_dir")(_relative_to_file)

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        return _check(ids.parse_server, value)

    @model_validator(mode="after")
    def _unique_signers(self) -> GatewaySettings:
        members = [entry.member for entry in self.signing]
        for i, member in enumerate(members):
            if member in members[:i]:
                raise ValueError(f"signing.{i}.member: {member} has two sign keys; list each member once")
        return self

    @model_validator(mode="after")
    def _unique_services(self) -> GatewaySettings:
        seen: set[str] = set()
        for i, service in enumerate(self.services):
            key = service.service_id.unversioned().path()
            if key in seen:
                raise ValueError(f"services.{i}.id: service {key} is listed twice")
            seen.add(key)
        return self

    @property
    def server_id(self) -> ids.ServerId:
        return ids.parse_server(self.server)
