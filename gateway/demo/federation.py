"""Lays out a complete local federation on disk: a fresh PKI, the registry's federation file, gateway configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gateway.core import identifiers as ids
from gateway.trust.pki import CertificateAuthority, fingerprint, new_key, save_certificate, save_key

INSTANCE = "DEMO"


@dataclass(frozen=True)
class Agency:
    key: str  # short name used for folders and ports, e.g. "civil"
    member_class: str
    member_code: str
    name: str
    subsystem: str
    server_code: str

    @property
    def member(self) -> ids.MemberId:
        return ids.MemberId(INSTANCE, self.member_class, self.member_code)

    @property
    def subsystem_id(self) -> ids.SubsystemId:
        return ids.SubsystemId(INSTANCE, self.member_class, self.member_code, self.subsystem)

    @property
    def server(self) -> ids.ServerId:
        return ids.ServerId(INSTANCE, self.member_class, self.member_code, self.server_code)


@dataclass(frozen=True)
class Service:
    agency: str  # key of the providing agency
    code: str
    type: str  # "soap" or "rest"
    url: str
    allow: tuple[str, ...]
    version: str | None = None
    timeout_seconds: float = 10.0
    disabled: bool = False
    description: Mapping[str, object] | None = None  # e.g. {"wsdl": "/path/population.wsdl"} or {"openapi": ...}
    adapter: Mapping[str, object] | None = None  # e.g. {"kind": "rest-to-soap", "wsdl": "/path/population.wsdl"}
    endpoints: tuple[dict[str, object], ...] = ()  # REST endpoint rights: {"method", "path", "allow"}


DEMO_AGENCIES = (
    Agency("civil", "GOV", "1001", "Civil Registry Agency", "population", "gw-civil"),
    Agency("tax", "GOV", "1002", "Tax Authority", "tax-records", "gw-tax"),
    Agency("health", "GOV", "1003", "Ministry of Health", "patients", "gw-health"),
)


@dataclass
class Ports:
    registry: int
    client_side: dict[str, int] = field(default_factory=dict)
    server_side: dict[str, int] = field(default_factory=dict)


@dataclass
class Layout:
    directory: Path
    federation_file: Path
    gateway_files: dict[str, Path]
    ports: Ports
    agencies: tuple[Agency, ...]
    ca: CertificateAuthority


def ports_from(base: int, agencies: tuple[Agency, ...]) -> Ports:
    ports = Ports(registry=base)
    for i, agency in enumerate(agencies):
        ports.client_side[agency.key] = base + 1 + i
        ports.server_side[agency.key] = base + 11 + i
    return ports


def _write_yaml(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def build(directory: Path, ports: Ports, services: list[Service], agencies: tuple[Agency, ...] = DEMO_AGENCIES,
          global_groups: Sequence[Mapping[str, object]] | None = None, validity_seconds: int = 600,
          refresh_seconds: int = 60, gateway_overrides: Mapping[str, Mapping[str, object]] | None = None,
          tsa_url: str | None = None, ocsp_url: str | None = None, ocsp_freshness_seconds: int = 3600,
          management_port: int | None = None, auto_approve: tuple[str, ...] = ()) -> Layout:
    """Generate keys and certificates at run time (never committed) and write every configuration file. With
    ``tsa_url``, a TSA key and certificate go to ``pki/tsa/`` and the federation lists that TSA (``wasl tsa serve``
    must then run there). With ``ocsp_url``, the federation lists that OCSP responder for the CA (``wasl pki ocsp
    serve --ca pki/ca`` must then run there) and every signed message must carry a fresh status."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = directory / "pki"
    ca = CertificateAuthority.create()
    ca.save(pki / "ca")
    registry_key = new_key()
    save_key(pki / "registry" / "signing.key", registry_key)
    save_certificate(pki / "registry" / "signing.pem",
                     ca.issue_signing_certificate("Wasl Central Registry", registry_key.public_key()))
    gateways = []
    for agency in agencies:
        sign_key, auth_key = new_key(), new_key()
        folder = pki / agency.key
        save_key(folder / "sign.key", sign_key)
        save_certificate(folder / "sign.pem", ca.issue_sign_certificate(agency.member, agency.name,
                                                                         sign_key.public_key()))
        save_key(folder / "auth.key", auth_key)
        auth_cert = ca.issue_auth_certificate(agency.server, auth_key.public_key())
        save_certificate(folder / "auth.pem", auth_cert)
        gateways.append({
            "server": agency.server.path(),
            "address": f"https://127.0.0.1:{ports.server_side[agency.key]}",
            "auth_cert_sha256": [fingerprint(auth_cert)],
            "clients": [agency.subsystem_id.path()],
        })
    federation = {
        "instance": INSTANCE,
        "registry": {"host": "127.0.0.1", "port": ports.registry, "signing_key": "pki/registry/signing.key",
                     "signing_certificate": "pki/registry/signing.pem", "validity_seconds": validity_seconds,
                     "refresh_seconds": refresh_seconds, "ocsp_freshness_seconds": ocsp_freshness_seconds},
        "approved_cas": [{"name": "Wasl Development Root CA", "certificate": "pki/ca/ca.pem",
                          "ocsp_responders": [ocsp_url] if ocsp_url else []}],
        "members": [{"class": a.member_class, "code": a.member_code, "name": a.name, "subsystems": [a.subsystem]}
                    for a in agencies],
        "gateways": gateways,
        "global_groups": list(global_groups or []),
    }
    if management_port is not None:
        tls_key = new_key()
        save_key(pki / "registry" / "tls.key", tls_key)
        save_certificate(pki / "registry" / "tls.pem",
                         ca.issue_tls_server_certificate("Wasl Central Registry", tls_key.public_key()))
        federation["registry"]["management"] = {  # type: ignore[index]
            "host": "127.0.0.1", "port": management_port, "tls_certificate": "pki/registry/tls.pem",
            "tls_key": "pki/registry/tls.key", "state_dir": "registry-state", "auto_approve": list(auto_approve)}
    if tsa_url is not None:
        from gateway.trust.tsa import issue_tsa_certificate

        tsa_key = new_key()
        save_key(pki / "tsa" / "tsa.key", tsa_key)
        save_certificate(pki / "tsa" / "tsa.pem", issue_tsa_certificate(ca, tsa_key))
        federation["timestamping_authorities"] = [
            {"name": "Wasl Development TSA", "url": tsa_url, "certificate": "pki/tsa/tsa.pem"}]
    federation_file = directory / "federation.yaml"
    _write_yaml(federation_file, federation)
    from gateway.configfile import load_model
    from gateway.core.settings import FederationConfig
    from gateway.registry.publisher import Publisher  # the anchor needs the registry's signing certificate

    publisher = Publisher.from_files(load_model(federation_file, FederationConfig))
    anchor = publisher.anchor(f"http://127.0.0.1:{ports.registry}").model_dump()
    gateway_files = {}
    for agency in agencies:
        own = [s for s in services if s.agency == agency.key]
        config: dict[str, object] = {
            "server": agency.server.path(),
            "anchor": anchor,
            "state_dir": f"state/{agency.key}",
            "client_side": {"host": "127.0.0.1", "port": ports.client_side[agency.key]},
            "server_side": {"host": "127.0.0.1", "port": ports.server_side[agency.key]},
            "auth": {"key": f"pki/{agency.key}/auth.key", "certificate": f"pki/{agency.key}/auth.pem"},
            "signing": [{"member": agency.member.path(), "key": f"pki/{agency.key}/sign.key",
                         "certificate": f"pki/{agency.key}/sign.pem"}],
            "services": [{
                "id": ids.ServiceId(INSTANCE, agency.member_class, agency.member_code, agency.subsystem,
                                    s.code, s.version).path(),
                "type": s.type, "url": s.url, "timeout_seconds": s.timeout_seconds, "disabled": s.disabled,
                "allow": list(s.allow), **({"description": s.description} if s.description else {}),
                **({"adapter": s.adapter} if s.adapter else {}),
                **({"endpoints": list(s.endpoints)} if s.endpoints else {})}
                for s in own],
        }
        config.update((gateway_overrides or {}).get(agency.key, {}))
        path = directory / f"gateway-{agency.key}.yaml"
        _write_yaml(path, config)
        gateway_files[agency.key] = path
    return Layout(directory, federation_file, gateway_files, ports, agencies, ca)
