"""Turn the registry's federation file into a signed global configuration document."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.core import globalconf as gc
from gateway.core.certificates import fingerprint
from gateway.core.envelope import b64
from gateway.core.settings import FederationConfig
from gateway.trust.pki import load_certificate, load_key


@dataclass(frozen=True)
class Publisher:
    """Everything needed to publish: the federation, the certificates it references, and the signing key."""

    federation: FederationConfig
    signing_key: ec.EllipticCurvePrivateKey
    signing_certificate: x509.Certificate
    ca_certificates: tuple[x509.Certificate, ...]
    tsa_certificates: tuple[x509.Certificate, ...]
    auth_fingerprints: tuple[tuple[str, ...], ...]  # per gateway, in federation order

    @classmethod
    def from_files(cls, federation: FederationConfig) -> Publisher:
        reg = federation.registry
        fps = []
        for gw in federation.gateways:
            listed = list(gw.auth_cert_sha256)
            if gw.auth_certificate is not None:
                listed.append(fingerprint(load_certificate(gw.auth_certificate)))
            fps.append(tuple(dict.fromkeys(listed)))
        return cls(
            federation=federation,
            signing_key=load_key(reg.signing_key),
            signing_certificate=load_certificate(reg.signing_certificate),
            ca_certificates=tuple(load_certificate(ca.certificate) for ca in federation.approved_cas),
            tsa_certificates=tuple(load_certificate(t.certificate) for t in federation.timestamping_authorities),
            auth_fingerprints=tuple(fps),
        )

    def document(self, now: dt.datetime) -> bytes:
        fed = self.federation
        return gc.build_document(
            instance=fed.instance,
            serial=int(now.timestamp() * 1000),
            generated_at=now,
            validity=dt.timedelta(seconds=fed.registry.validity_seconds),
            refresh_seconds=fed.registry.refresh_seconds,
            approved_cas=[gc.ApprovedCA(name=ca.name, certificate=b64(cert.public_bytes(Encoding.DER)),
                                        ocsp_responders=ca.ocsp_responders)
                          for ca, cert in zip(fed.approved_cas, self.ca_certificates, strict=True)],
            timestamping_authorities=[
                gc.TimestampingAuthority(name=t.name, url=t.url, certificate=b64(cert.public_bytes(Encoding.DER)))
                for t, cert in zip(fed.timestamping_authorities, self.tsa_certificates, strict=True)],
            members=[gc.Member(member_class=m.member_class, member_code=m.code, name=m.name,
                               subsystems=[gc.Subsystem(code=s) for s in m.subsystems]) for m in fed.members],
            gateways=[gc.Gateway(server=gw.server, address=gw.address, auth_cert_sha256=list(fps),
                                 clients=gw.clients)
                      for gw, fps in zip(fed.gateways, self.auth_fingerprints, strict=True)],
            global_groups=[gc.GlobalGroup(code=g.code, description=g.description, members=g.members)
                           for g in fed.global_groups],
            monitoring_client=fed.monitoring_client,
            ocsp_freshness_seconds=fed.registry.ocsp_freshness_seconds,
            management_service=(f"https://{fed.registry.management.host}:{fed.registry.management.port}"
                                if fed.registry.management else None),
            next_signing_cert_sha256=self.next_signing_fingerprints(),
        )

    def next_signing_fingerprints(self) -> list[str]:
        return [fingerprint(load_certificate(p)) for p in self.federation.registry.next_signing_certificates]

    def publish(self, now: dt.datetime) -> bytes:
        return gc.sign_document(self.document(now), self.signing_key, self.signing_certificate)

    def anchor(self, registry_url: str) -> gc.ConfigurationAnchor:
        # During a key switch the anchor trusts the announced key too, so new gateways survive the switch.
        return gc.ConfigurationAnchor(instance=self.federation.instance, registry_url=registry_url,
                                      signing_cert_sha256=[fingerprint(self.signing_certificate),
                                                           *self.next_signing_fingerprints()])
