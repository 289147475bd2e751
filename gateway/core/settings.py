"""Typed models of the declarative YAML files (the registry's federation file and a gateway's config)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from gateway.core import descriptions, restbridge, restmap, validation
from gateway.core import identifiers as ids
from gateway.core.access import AccessRule, EndpointRule
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


class ManagementSettings(_Model):
    """The registry's management API: signed registration requests over mutual TLS (docs/onboarding.md)."""

    host: str = "127.0.0.1"
    port: int = Field(4401, ge=0, le=65535)
    tls_certificate: Path  # the registry's TLS server certificate, from an approved CA
    tls_key: Path
    state_dir: Path = Path("registry-state")  # the request queue and the audit trail
    auto_approve: list[Literal["register_member", "register_subsystem", "register_gateway", "add_client",
                               "remove_client", "remove_gateway", "remove_subsystem"]] = Field(default_factory=list)

    resolve_paths = field_validator("tls_certificate", "tls_key", "state_dir")(_relative_to_file)


class RegistrySettings(_Model):
    host: str = "127.0.0.1"
    port: int = 4400
    signing_key: Path
    signing_certificate: Path
    validity_seconds: int = Field(600, ge=30)
    refresh_seconds: int = Field(60, ge=1)
    # How old a stapled OCSP response may be (from its thisUpdate) before gateways refuse it; this bounds how
    # long a revoked certificate can still be used.
    ocsp_freshness_seconds: int = Field(3600, ge=2)
    management: ManagementSettings | None = None  # onboarding by signed registration requests
    # Signing certificates announced for a coming key switch (wasl registry rotate-signing-key).
    next_signing_certificates: list[Path] = Field(default_factory=list)

    resolve_paths = field_validator("signing_key", "signing_certificate")(_relative_to_file)

    @field_validator("next_signing_certificates")
    @classmethod
    def _next(cls, values: list[Path], info: ValidationInfo) -> list[Path]:
        return [_relative_to_file(cls, v, info) or v for v in values]


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


class Pkcs11Key(_Model):
    """A sign key held in a PKCS#11 token (an HSM, or SoftHSM2 for testing); docs/keys.md."""

    module: Path  # the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
    token_label: str
    key_label: str
    pin_env: str | None = None  # the environment variable holding the user PIN
    pin_file: Path | None = None  # or a file holding it (keep it 0600); the PIN is never in this YAML

    resolve_paths = field_validator("pin_file")(_relative_to_file)

    @model_validator(mode="after")
    def _one_pin_source(self) -> Pkcs11Key:
        if (self.pin_env is None) == (self.pin_file is None):
            raise ValueError("give exactly one of pin_env or pin_file")
        return self


class SigningKey(_Model):
    member: str
    certificate: Path
    key: Path | None = None  # a PEM private key file (0600) ...
    pkcs11: Pkcs11Key | None = None  # ... or a key in a PKCS#11 token

    resolve_paths = field_validator("key", "certificate")(_relative_to_file)

    @field_validator("member")
    @classmethod
    def _member(cls, value: str) -> str:
        return _check(ids.parse_member, value)

    @model_validator(mode="after")
    def _one_key(self) -> SigningKey:
        if (self.key is None) == (self.pkcs11 is None):
            raise ValueError("give exactly one of key (a PEM file) or pkcs11 (a token key)")
        return self


class MessageLogSettings(_Model):
    """Where the tamper-evident message log lives: an embedded SQLite file (default) or PostgreSQL."""

    enabled: bool = True
    store: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path | None = None  # SQLite file; default: <state_dir>/messagelog.db
    dsn: str | None = None  # PostgreSQL, e.g. postgresql://user@host/db
    log_bodies: bool = True  # per service, ``log_body`` overrides this
    # Timestamping, encryption at rest, archives: see docs/messagelog.md.
    timestamping: bool = True  # RFC 3161 tokens from the global configuration's TSAs
    timestamp_interval_seconds: float = Field(60.0, gt=0)
    timestamp_max_records: int = Field(10_000, ge=1, le=60_000)  # records per token (an archive holds whole batches)
    timestamp_timeout_seconds: float = Field(10.0, gt=0)
    timestamp_grace_seconds: float | None = Field(14_400.0, ge=0)  # then refuse messages; None: never
    timestamp_immediately: bool = False  # each message waits for a token; per service, ``timestamp_immediately``
    # Services this gateway *calls* (provided elsewhere) whose messages are stamped at once here too.
    timestamp_immediately_services: list[str] = Field(default_factory=list)
    body_key_file: Path | None = None  # AES-256 key (base64 or hex) that encrypts stored bodies
    body_key_env: str | None = None  # or: the environment variable holding it
    archive_dir: Path | None = None  # ``wasl log archive``; default: <state_dir>/archive
    archive_max_records: int = Field(10_000, ge=1, le=60_000)  # per archive file (whole batches)
    retention_days: float = Field(30.0, ge=0)  # archived records leave the database this long after

    resolve_paths = field_validator("path", "body_key_file", "archive_dir")(_relative_to_file)

    @field_validator("timestamp_immediately_services")
    @classmethod
    def _services(cls, values: list[str]) -> list[str]:
        return [_check(ids.parse_service, v) for v in values]

    @model_validator(mode="after")
    def _store_target(self) -> MessageLogSettings:
        if self.enabled and self.store == "postgresql" and not self.dsn:
            raise ValueError("dsn is required when store is postgresql")
        if self.body_key_file is not None and self.body_key_env is not None:
            raise ValueError("give body_key_file or body_key_env, not both")
        return self


class OpMonitoringSettings(_Model):
    """Operational monitoring: one record per exchange and side, no payload (docs/monitoring.md). The store follows
    the message log's choice unless ``store`` says otherwise."""

    enabled: bool = True
    store: Literal["sqlite", "postgresql"] | None = None  # default: the message log's store
    path: Path | None = None  # SQLite file; default: <state_dir>/opmon.db
    dsn: str | None = None  # PostgreSQL; default: the message log's dsn
    retention_hours: float = Field(168.0, gt=0)  # records older than this are deleted
    batch_size: int = Field(500, ge=1, le=10_000)  # records per transaction at most
    max_pending: int = Field(50_000, ge=100)  # queued beyond this, records are dropped (and counted), not waited on
    flush_seconds: float = Field(0.1, gt=0, le=10)  # how long records may wait to form a batch

    resolve_paths = field_validator("path")(_relative_to_file)


MAX_DESCRIPTION_BYTES = 4 * 1024 * 1024
# X-Road reserves these service codes for its metaservices (PR-META, PR-MREST).
RESERVED_SERVICE_CODES = frozenset({"listClients", "listMethods", "allowedMethods", "getWsdl", "getOpenAPI",
                                    "getSecurityServerOperationalData"})


def _read_description(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_DESCRIPTION_BYTES + 1)
    except OSError as exc:
        raise descriptions.DescriptionError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_DESCRIPTION_BYTES:
        raise descriptions.DescriptionError(f"{path}: larger than {MAX_DESCRIPTION_BYTES} bytes")
    return data


def _schema_file(location: str, referrer: str) -> tuple[bytes, str]:
    """schemaLocation values in a WSDL or schema file are relative to that file."""
    path = (Path(referrer).parent / location).resolve()
    return _read_description(path), str(path)


class DescriptionSettings(_Model):
    """A service's description, loaded and checked when the configuration is: a WSDL or an OpenAPI 3 file."""

    wsdl: Path | None = None  # SOAP services
    openapi: Path | None = None  # REST services, JSON or YAML
    operation: str | None = None  # the WSDL operation the service is; default: the service code
    validation: bool = False  # check requests and responses against this description

    resolve_paths = field_validator("wsdl", "openapi")(_relative_to_file)
    _loaded: descriptions.WsdlDescription | descriptions.OpenApiDescription | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _load(self) -> DescriptionSettings:
        if (self.wsdl is None) == (self.openapi is None):
            raise ValueError("give exactly one of wsdl (SOAP) or openapi (REST)")
        if self.operation is not None and self.wsdl is None:
            raise ValueError("operation: only a WSDL description has operations")
        try:
            if self.wsdl is not None:
                self._loaded = descriptions.parse_wsdl(_read_description(self.wsdl), str(self.wsdl), _schema_file)
            elif self.openapi is not None:
                self._loaded = descriptions.parse_openapi(_read_description(self.openapi), str(self.openapi))
        except descriptions.DescriptionError as exc:
            raise ValueError(f"{'wsdl' if self.wsdl is not None else 'openapi'}: {exc}") from None
        return self

    @property
    def loaded_wsdl(self) -> descriptions.WsdlDescription | None:
        return self._loaded if isinstance(self._loaded, descriptions.WsdlDescription) else None

    @property
    def loaded_openapi(self) -> descriptions.OpenApiDescription | None:
        return self._loaded if isinstance(self._loaded, descriptions.OpenApiDescription) else None


class NamespaceRewrite(_Model):
    backend: str  # the namespace the legacy backend speaks
    federation: str  # the namespace clients see in the published WSDL and in messages


class RestRouteSettings(_Model):
    """One endpoint of a legacy REST backend: the federation's method and path, mapped to the backend's."""

    method: str = "*"
    path: str  # e.g. /persons/{id}
    backend_method: str | None = None  # default: the caller's method
    backend_path: str  # e.g. /legacy/api/person; may use {id}
    query: dict[str, str] = Field(default_factory=dict)  # added backend query parameters; values may use {id}
    set_headers: dict[str, str] = Field(default_factory=dict)
    rename_headers: dict[str, str] = Field(default_factory=dict)  # caller's name -> the backend's
    remove_headers: list[str] = Field(default_factory=list)
    json_response: bool = False  # the backend declares JSON: anything else is ServiceFailed

    def route(self) -> restmap.Route:
        return restmap.Route(self.method.upper(), self.path, self.backend_method.upper() if self.backend_method
                             else None, self.backend_path, self.query, self.set_headers, self.rename_headers,
                             self.remove_headers, self.json_response)

    @model_validator(mode="after")
    def _usable(self) -> RestRouteSettings:
        try:
            restmap.check_route(self.route())
        except restmap.RouteError as exc:
            raise ValueError(str(exc)) from None
        return self


class SoapOperationSettings(_Model):
    """A SOAP operation that stands for one REST call (soap-to-rest adapter)."""

    name: str  # the operation, and its request element
    method: str = "GET"
    path: str  # {field} placeholders come from the request's fields
    fields: list[str] = Field(default_factory=list)  # the request's child elements (plain values)
    query: list[str] = Field(default_factory=list)  # fields sent as query parameters
    json_body: bool = False  # the other fields as a JSON object body

    def operation(self) -> restbridge.RestOperation:
        return restbridge.RestOperation(self.name, self.method.upper(), self.path, tuple(self.fields),
                                        tuple(self.query), self.json_body)

    @model_validator(mode="after")
    def _usable(self) -> SoapOperationSettings:
        if self.method.upper() not in restmap.METHODS:
            raise ValueError(f"method: {self.method!r} is not an HTTP method")
        try:
            restbridge.check(self.operation())
        except restbridge.BridgeError as exc:
            raise ValueError(str(exc)) from None
        return self


class AdapterSettings(_Model):
    """How the gateway translates for a backend that does not speak X-Road (docs/adapters.md).

    ``legacy-soap``: a SOAP backend unaware of X-Road headers; the description is its own WSDL.
    ``rest-to-soap``: REST/JSON callers reach a SOAP backend described by ``wsdl``.
    ``legacy-rest``: a REST backend with its own paths, methods and headers, mapped by ``routes``.
    ``soap-to-rest``: SOAP callers reach a REST/JSON backend; ``operations`` declare the calls, and the gateway
    publishes a WSDL for them in ``target_namespace``."""

    kind: Literal["legacy-soap", "rest-to-soap", "legacy-rest", "soap-to-rest"]
    namespace: NamespaceRewrite | None = None  # legacy-soap only
    wsdl: Path | None = None  # rest-to-soap only: the SOAP backend's WSDL
    routes: list[RestRouteSettings] = Field(default_factory=list)  # legacy-rest only
    operations: list[SoapOperationSettings] = Field(default_factory=list)  # soap-to-rest only
    target_namespace: str | None = None  # soap-to-rest only: the published WSDL's namespace

    resolve_paths = field_validator("wsdl")(_relative_to_file)
    _backend_wsdl: descriptions.WsdlDescription | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _fits_kind(self) -> AdapterSettings:
        if (self.kind == "soap-to-rest") != bool(self.operations) or \
                (self.kind == "soap-to-rest") != (self.target_namespace is not None):
            raise ValueError("operations, target_namespace: a soap-to-rest adapter declares both, and only it does")
        if self.kind == "soap-to-rest":
            names = [o.name for o in self.operations]
            if len(set(names)) != len(names):
                raise ValueError("operations: an operation is declared twice")
            if self.namespace is not None or self.wsdl is not None or self.routes:
                raise ValueError("a soap-to-rest adapter takes operations and target_namespace only")
            return self
        if (self.kind == "legacy-rest") != bool(self.routes):
            raise ValueError("routes: a legacy-rest adapter lists its routes, and only it does")
        if self.kind == "legacy-rest":
            if self.namespace is not None or self.wsdl is not None:
                raise ValueError("a legacy-rest adapter takes routes only (no namespace, no wsdl)")
            return self
        if self.kind == "rest-to-soap":
            if self.wsdl is None:
                raise ValueError("wsdl: a rest-to-soap adapter needs the SOAP backend's WSDL")
            if self.namespace is not None:
                raise ValueError("namespace: only a legacy-soap adapter rewrites namespaces")
            try:
                self._backend_wsdl = descriptions.parse_wsdl(_read_description(self.wsdl), str(self.wsdl),
                                                             _schema_file)
            except descriptions.DescriptionError as exc:
                raise ValueError(f"wsdl: {exc}") from None
        elif self.wsdl is not None:
            raise ValueError("wsdl: a legacy-soap adapter publishes the service's description.wsdl")
        return self

    @property
    def backend_wsdl(self) -> descriptions.WsdlDescription | None:
        return self._backend_wsdl


def _check_allow(values: list[str]) -> list[str]:
    for value in values:
        try:
            parsed = ids.parse_typed(value)
        except ids.IdentifierError as exc:
            raise ValueError(str(exc)) from None
        if parsed.object_type.value not in ("SUBSYSTEM", "MEMBER", "GLOBALGROUP"):
            raise ValueError(f"{value}: access is granted to a SUBSYSTEM, MEMBER or GLOBALGROUP")
    return values


def _rules(values: list[str]) -> tuple[AccessRule, ...]:
    return tuple(AccessRule(kind, path) for kind, _, path in (v.partition(":") for v in values))


class EndpointSettings(_Model):
    """Access to one endpoint of a REST service (X-Road's endpoint-level rights): ``{name}`` or ``*`` is one path
    segment, ``**`` any rest of the path."""

    method: str = "*"
    path: str
    allow: list[str] = Field(min_length=1)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value != "*" and value.upper() not in restmap.METHODS:
            raise ValueError(f"{value!r} is not an HTTP method (or *)")
        return value.upper()

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with /")
        return value

    @field_validator("allow")
    @classmethod
    def _allow(cls, values: list[str]) -> list[str]:
        return _check_allow(values)

    def rule(self) -> EndpointRule:
        return EndpointRule(self.method, self.path, _rules(self.allow))


class ServiceSettings(_Model):
    id: str  # INST/CLASS/CODE/SUBSYSTEM/serviceCode[/version]
    type: Literal["soap", "rest"]
    url: str
    timeout_seconds: float = Field(30.0, gt=0, le=3600)
    disabled: bool = False
    log_body: bool | None = None  # None: the message log's default
    timestamp_immediately: bool | None = None  # None: the message log's default
    allow: list[str] = Field(default_factory=list)  # rights to the whole service
    endpoints: list[EndpointSettings] = Field(default_factory=list)  # REST: rights to single endpoints
    description: DescriptionSettings | None = None
    adapter: AdapterSettings | None = None

    _published: descriptions.WsdlDescription | None = PrivateAttr(None)
    _generated_openapi: descriptions.OpenApiDescription | None = PrivateAttr(None)
    _validator: validation.Validator | None = PrivateAttr(None)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        _check(ids.parse_service, value)
        code = ids.parse_service(value).service_code
        if code in RESERVED_SERVICE_CODES:
            raise ValueError(f"service code {code} is reserved for X-Road's metaservices")
        return value

    @model_validator(mode="after")
    def _description_fits(self) -> ServiceSettings:
        described = self.description
        if described is None:
            return self
        if self.type == "soap" and described.wsdl is None:
            raise ValueError("description: a SOAP service is described by a wsdl file")
        if self.type == "rest" and described.openapi is None:
            raise ValueError("description: a REST service is described by an openapi file")
        wsdl = described.loaded_wsdl
        if wsdl is not None:
            operation = described.operation or self.service_id.service_code
            if operation not in wsdl.operations:
                field = "description.operation" if described.operation else "id (service code, the default operation)"
                raise ValueError(f"{field}: operation {operation!r} is not defined in {described.wsdl}; it defines "
                                 f"{', '.join(wsdl.operations)}")
        return self

    @model_validator(mode="after")
    def _adapter_fits(self) -> ServiceSettings:
        adapter = self.adapter
        if adapter is None:
            return self
        if adapter.kind == "soap-to-rest":
            if self.type != "soap":
                raise ValueError("adapter: a soap-to-rest adapter serves SOAP callers, so the service type is soap")
            if self.description is not None:
                raise ValueError("description: a soap-to-rest service is described by the WSDL the gateway generates")
            names = [o.name for o in adapter.operations]
            if self.service_id.service_code not in names:
                raise ValueError(f"adapter.operations: the service code {self.service_id.service_code!r} must be one "
                                 f"of the operations ({', '.join(names)})")
            assert adapter.target_namespace is not None
            generated = restbridge.wsdl(self.service_id.service_code, adapter.target_namespace,
                                        [o.operation() for o in adapter.operations])
            try:
                self._published = descriptions.published_for_xroad(
                    descriptions.parse_wsdl(generated, f"{self.service_id.service_code} (generated)"))
            except descriptions.DescriptionError as exc:
                raise ValueError(f"adapter: {exc}") from None
            return self
        if adapter.kind in ("rest-to-soap", "legacy-rest"):
            if self.type != "rest":
                raise ValueError(f"adapter: a {adapter.kind} adapter serves REST callers, so the service type is rest")
            if self.description is None or self.description.openapi is None:
                # Callers still get a description: its endpoints for listMethods, and getOpenAPI.
                code = self.service_id.service_code
                if adapter.backend_wsdl is not None:
                    self._generated_openapi = descriptions.bridge_openapi(code, adapter.backend_wsdl)
                else:
                    self._generated_openapi = descriptions.generated_openapi(f"{code} (mapped REST)", [
                        (m.lower(), r.path, f"mapped to {r.backend_method or m} {r.backend_path}")
                        for r in adapter.routes for m in ([r.method] if r.method != "*" else ["GET", "POST"])])
            return self
        wsdl = self.description.loaded_wsdl if self.description else None
        if self.type != "soap" or wsdl is None:
            raise ValueError("adapter: a legacy-soap adapter needs type soap and the backend's description.wsdl")
        rewrite = (adapter.namespace.backend, adapter.namespace.federation) if adapter.namespace else None
        if rewrite is not None and not any(e.startswith(f"{{{rewrite[0]}}}") for e in wsdl.input_elements.values()):
            raise ValueError(f"adapter.namespace.backend: {rewrite[0]!r} is not the namespace of any operation's "
                             f"request in {wsdl.source}")
        try:
            self._published = descriptions.published_for_xroad(wsdl, rewrite)
        except descriptions.DescriptionError as exc:
            raise ValueError(f"adapter: {exc}") from None
        return self

    @model_validator(mode="after")
    def _build_validator(self) -> ServiceSettings:
        if self.description is None or not self.description.validation:
            return self
        try:
            wsdl, openapi = self.published_wsdl, self.description.loaded_openapi
            self._validator = validation.WsdlValidator(wsdl) if wsdl is not None else \
                validation.OpenApiValidator(openapi) if openapi is not None else None
        except validation.ValidationSetupError as exc:
            raise ValueError(f"description.validation: {exc}") from None
        return self

    @functools.cached_property
    def validator(self) -> validation.Validator | None:
        return self._validator  # pydantic's private-attribute lookup is slow, and this is read on every request

    @property
    def operation(self) -> str:
        """The WSDL operation this service is (default: the service code)."""
        if self.description is not None and self.description.operation:
            return self.description.operation
        return self.service_id.service_code

    @property
    def openapi(self) -> descriptions.OpenApiDescription | None:
        """The OpenAPI description getOpenAPI hands out: the configured one, or one generated for an adapter."""
        if self.description is not None and self.description.loaded_openapi is not None:
            return self.description.loaded_openapi
        return self._generated_openapi

    @property
    def published_wsdl(self) -> descriptions.WsdlDescription | None:
        """The WSDL getWsdl hands out: a legacy backend's own, with X-Road's headers added, or the description."""
        if self._published is not None:
            return self._published
        return self.description.loaded_wsdl if self.description else None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value, ("http", "https"))

    @field_validator("allow")
    @classmethod
    def _allow(cls, values: list[str]) -> list[str]:
        return _check_allow(values)

    @model_validator(mode="after")
    def _endpoints_are_rest(self) -> ServiceSettings:
        if self.endpoints and self.type != "rest":
            raise ValueError("endpoints: endpoint rights are for REST services; a SOAP service is one operation")
        return self

    # Cached: read on every request, and the model is frozen.
    @functools.cached_property
    def endpoint_rules(self) -> tuple[EndpointRule, ...]:
        return tuple(e.rule() for e in self.endpoints)

    @functools.cached_property
    def service_id(self) -> ids.ServiceId:
        return ids.parse_service(self.id)

    @functools.cached_property
    def access_rules(self) -> tuple[AccessRule, ...]:
        return _rules(self.allow)


class ClientAdapterSettings(_Model):
    """A route for a legacy caller that cannot speak X-Road: ``/adapters/{name}/...`` on the client side acts as
    ``client`` calling ``service``, so the caller only changes its base URL."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    client: str | None = None  # INST/CLASS/CODE/SUBSYSTEM, a client of this gateway
    # Or: callers identified by their TLS client certificate (SHA-256) on the client side, each mapped to a
    # subsystem; a caller without a mapped certificate is refused.
    client_certificates: dict[str, str] = Field(default_factory=dict)
    service: str  # INST/CLASS/CODE/SUBSYSTEM/serviceCode[/version]
    protocol: Literal["rest", "soap"]
    user_id: str | None = None  # X-Road userId sent for the caller, who has no way to say it

    @field_validator("client")
    @classmethod
    def _client(cls, value: str | None) -> str | None:
        return None if value is None else _check(ids.parse_subsystem, value)

    @field_validator("client_certificates")
    @classmethod
    def _certificates(cls, values: dict[str, str]) -> dict[str, str]:
        return {normalise_fingerprint(fp): _check(ids.parse_subsystem, sub) for fp, sub in values.items()}

    @model_validator(mode="after")
    def _identified(self) -> ClientAdapterSettings:
        if (self.client is None) == (not self.client_certificates):
            raise ValueError("give either client or client_certificates")
        return self

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        return _check(ids.parse_service, value)


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
    message_log: MessageLogSettings = Field(default_factory=lambda: MessageLogSettings())
    op_monitoring: OpMonitoringSettings = Field(default_factory=lambda: OpMonitoringSettings())
    certificate_warning_days: float = Field(14.0, ge=0)  # readiness warns this long before a certificate expires
    description_cache_seconds: float = Field(300.0, ge=0)  # client side: service descriptions fetched for /wsdl
    adapters: list[ClientAdapterSettings] = Field(default_factory=list)  # client side: routes for legacy callers

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
    def _op_monitoring_store(self) -> GatewaySettings:
        op = self.op_monitoring
        if op.enabled and (op.store or self.message_log.store) == "postgresql" and not (op.dsn or self.message_log.dsn):
            raise ValueError("op_monitoring.dsn: a PostgreSQL store needs a dsn (its own or the message log's)")
        return self

    @model_validator(mode="after")
    def _unique_adapters(self) -> GatewaySettings:
        names = [a.name for a in self.adapters]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"adapters.{i}.name: route {name} is listed twice")
        return self

    @model_validator(mode="after")
    def _tls_where_it_applies(self) -> GatewaySettings:
        if self.server_side.tls is not None:
            raise ValueError("server_side.tls: the server side always uses mutual TLS with the auth certificate "
                             "(auth:); remove this field")
        client_cas = self.client_side.tls.client_cas if self.client_side.tls else None
        for i, adapter in enumerate(self.adapters):
            if adapter.client_certificates and client_cas is None:
                raise ValueError(f"adapters.{i}.client_certificates: callers present no certificate unless "
                                 "client_side.tls.client_cas is set")
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
