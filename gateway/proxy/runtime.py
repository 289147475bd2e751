"""A gateway's shared state: settings, keys, the global configuration, connection pools to peers and backends."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import logging
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.core import envelope
from gateway.core import identifiers as ids
from gateway.core.faults import Code, Fault, Origin
from gateway.core.globalconf import Gateway, GlobalConf
from gateway.core.routing import PeerHealth
from gateway.core.settings import GatewaySettings, ServiceSettings, SigningKey
from gateway.core.signers import SignerTrust
from gateway.messagelog.gateway_log import GatewayMessageLog
from gateway.messagelog.records import LogFields
from gateway.messagelog.timestamper import TsaEndpoint
from gateway.monitoring import metrics, opwriter
from gateway.proxy import tls
from gateway.proxy.backendclient import BackendPool
from gateway.proxy.batchsigner import BatchSigner
from gateway.proxy.confclient import GlobalConfClient
from gateway.proxy.httpio import read_limited
from gateway.proxy.ocspstaple import OwnCertificateStatus
from gateway.proxy.peerlink import PeerLinkClient
from gateway.trust.pkcs11_signer import Pkcs11Signer
from gateway.trust.pki import load_certificate, load_key
from gateway.trust.tsa import request_timestamp

log = logging.getLogger("wasl.gateway")
try:
    BUILD_VERSION = importlib.metadata.version("wasl")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    BUILD_VERSION = "unknown"
# Responses from providers are bounded by their own limits; this guards against a peer that is not.
MAX_PEER_FRAME_BYTES = 256 * 1024 * 1024


def _request_timestamp(session: aiohttp.ClientSession, url: str, digest: bytes, timeout: float) -> Awaitable[bytes]:
    return request_timestamp(session, url, digest, timeout=timeout)


@dataclass(frozen=True)
class SigningIdentity:
    """A member's sign key (a PEM key here, or a key in a PKCS#11 token) with its certificate."""

    member: str
    key: ec.EllipticCurvePrivateKey | None
    certificate_der: bytes
    not_after: dt.datetime
    token: Pkcs11Signer | None = None
    signer: BatchSigner = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.token is not None:
            token = self.token
            signer = BatchSigner(token.sign_blocking, self.certificate_der, sign_elsewhere=token.sign)
        else:
            key = self.key
            assert key is not None
            signer = BatchSigner(lambda data: envelope.sign_bytes(data, key), self.certificate_der)
        object.__setattr__(self, "signer", signer)

    @classmethod
    def load(cls, entry: SigningKey) -> SigningIdentity:
        cert = load_certificate(entry.certificate)
        der, not_after = cert.public_bytes(Encoding.DER), cert.not_valid_after_utc
        if entry.pkcs11 is not None:
            return cls(entry.member, None, der, not_after, Pkcs11Signer(entry.pkcs11))
        assert entry.key is not None
        return cls(entry.member, load_key(entry.key), der, not_after)


async def read_body(request: web.Request, limit: int, origin: Origin) -> bytes:
    """Read the whole request body, refusing more than ``limit`` bytes with a fault."""
    if request.content_length is not None and request.content_length <= limit:
        return await request.read()  # the length is known and within the limit: one read, no chunk list
    data = None if request.content_length is not None else await read_limited(request.content, limit)
    if data is None:
        raise Fault(origin, Code.MESSAGE_TOO_LARGE, f"message is larger than the limit of {limit} bytes")
    return data


class GatewayRuntime:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.server_id = settings.server_id
        self.server_path = self.server_id.path()
        self.signing: dict[str, SigningIdentity] = {}
        own_certificates: dict[str, x509.Certificate] = {}
        for entry in settings.signing:
            self.signing[entry.member] = SigningIdentity.load(entry)
            own_certificates[f"sign {entry.member}"] = load_certificate(entry.certificate)
        auth_certificate = load_certificate(settings.auth.certificate)
        self.auth_not_after = auth_certificate.not_valid_after_utc
        own_certificates["auth"] = auth_certificate
        self.own_status = OwnCertificateStatus(own_certificates, settings.state_dir)  # OCSP for our own certs
        self.services: dict[str, ServiceSettings] = {
            s.service_id.unversioned().path(): s for s in settings.services}
        log_settings = settings.message_log
        immediate = frozenset(s.service_id.unversioned().path() for s in settings.services
                              if (s.timestamp_immediately if s.timestamp_immediately is not None
                                  else log_settings.timestamp_immediately)) | frozenset(
            ids.parse_service(s).unversioned().path() for s in log_settings.timestamp_immediately_services)
        not_immediate = frozenset(s.service_id.unversioned().path() for s in settings.services
                                  if s.timestamp_immediately is False)
        self.message_log = GatewayMessageLog(log_settings, settings.state_dir, self.server_path,
                                             immediate_services=immediate, not_immediate_services=not_immediate,
                                             tsa_source=self._timestamping_authorities,
                                             tsa_client=_request_timestamp)
        self.opmon = opwriter.from_settings(settings)  # operational monitoring, off the request path
        self.conf = GlobalConfClient(settings.anchor, settings.state_dir, settings.globalconf_refresh_seconds)
        self.signer_trust = SignerTrust()
        self.health: dict[str, PeerHealth] = {}
        self._peers: dict[str, tuple[frozenset[str], PeerLinkClient]] = {}
        self.backend: BackendPool | None = None
        self._registry: aiohttp.ClientSession | None = None
        self._conf_task: asyncio.Task[None] | None = None
        self._ocsp_task: asyncio.Task[None] | None = None
        self.server_ssl: ssl.SSLContext | None = None
        self.conf.on_change(self._conf_changed)

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self, wait_for_conf_seconds: float = 60.0) -> None:
        self.backend = BackendPool()
        self._registry = aiohttp.ClientSession()
        await self.message_log.open()
        if self.opmon is not None:
            await self.opmon.open()
        self.conf.load_cached()
        self._conf_task = asyncio.create_task(self.conf.run(self._registry))
        deadline = time.monotonic() + wait_for_conf_seconds
        while self.conf.current is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.conf.current is None:
            raise RuntimeError(f"no global configuration from {self.settings.anchor.registry_url} "
                               f"within {wait_for_conf_seconds:.0f} s: {self.conf.last_error}")
        # Certificate status before the first message: a cached response covers a responder outage at start-up.
        self.own_status.load_cached(self.conf.current, self.now())
        await self.own_status.refresh(self._registry, self.conf.current, self.now())
        self._ocsp_task = asyncio.create_task(self.own_status.run(self._registry, lambda: self.conf.current))

    async def close(self) -> None:
        if self._ocsp_task is not None:
            self._ocsp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ocsp_task
        if self._conf_task is not None:
            await self.conf.stop(self._conf_task)
        for _, link in self._peers.values():
            link.close()
        if self.backend is not None:
            await self.backend.close()
        if self._registry is not None:
            await self._registry.close()
        if self.opmon is not None:
            await self.opmon.close()
        await self.message_log.close()
        for identity in self.signing.values():
            if identity.token is not None:
                identity.token.close()

    # -- the global configuration and what depends on it -------------------------------------------------------

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def require_conf(self, origin: Origin) -> GlobalConf:
        return self.conf.require(self.now(), origin)

    def _conf_changed(self, conf: GlobalConf) -> None:
        auth = self.settings.auth
        new_ctx = tls.server_context(auth.certificate, auth.key, conf.approved_ca_certificates)
        if self.server_ssl is None:
            self.server_ssl = new_ctx
            # Later configurations swap the CA list in without a restart: every handshake picks the newest.
            self.server_ssl.sni_callback = self._pick_server_context
        else:
            self._current_server_ctx = new_ctx
        # Peers whose pinned fingerprints changed get a new pool; old pools close once idle.
        live = {gw.address: frozenset(gw.auth_cert_sha256) for gw in conf.document.gateways}
        for address, (fps, link) in list(self._peers.items()):
            if live.get(address) != fps:
                del self._peers[address]
                link.retire()

    _current_server_ctx: ssl.SSLContext | None = None

    def _pick_server_context(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        if self._current_server_ctx is not None:
            sslobj.context = self._current_server_ctx

    def peer_link(self, gw: Gateway, conf: GlobalConf) -> PeerLinkClient:
        """The pooled, pinned connection set to one peer gateway; replaced when its pins change."""
        fps = frozenset(gw.auth_cert_sha256)
        entry = self._peers.get(gw.address)
        if entry is not None and entry[0] == fps:
            return entry[1]
        auth = self.settings.auth
        ctx = tls.pinned_client_context(auth.certificate, auth.key, conf.approved_ca_certificates, fps)
        target = urlsplit(gw.address)
        link = PeerLinkClient(target.hostname or "127.0.0.1", target.port or 443, ctx,
                              connect_timeout=self.settings.connect_timeout_seconds,
                              max_frame_bytes=MAX_PEER_FRAME_BYTES)
        self._peers[gw.address] = (fps, link)
        return link

    # -- services and signing --------------------------------------------------------------------------------

    def service(self, service: ids.ServiceId) -> ServiceSettings | None:
        return self.services.get(service.unversioned().path())

    def signing_identity(self, member_path: str, origin: Origin) -> SigningIdentity:
        identity = self.signing.get(member_path)
        if identity is None:
            raise Fault(origin, Code.INTERNAL_ERROR, f"this gateway holds no sign key for member {member_path}")
        return identity

    async def reload_keys(self, settings: GatewaySettings) -> list[str]:
        """Install rotated sign keys and auth certificate from ``settings`` without a restart; return what changed.

        New certificates get their OCSP status before they are used. Messages already being signed finish with the
        key they started with (both keys are valid during the overlap). A new auth certificate serves every new
        TLS handshake at once; connections to peers are retired, so new ones present it while exchanges in flight
        on the old ones complete.
        """
        changed: list[str] = []
        conf = self.conf.current
        identities = {entry.member: SigningIdentity.load(entry) for entry in settings.signing}
        for member, identity in identities.items():
            old = self.signing.get(member)
            if old is not None and old.certificate_der == identity.certificate_der:
                continue
            cert = x509.load_der_x509_certificate(identity.certificate_der)
            await self.own_status.install(f"sign {member}", cert, self._registry_session(), conf, self.now())
            self.signing[member] = identity
            changed.append(f"sign {member}")
        auth_changed = (settings.auth.certificate, settings.auth.key) != (self.settings.auth.certificate,
                                                                           self.settings.auth.key)
        auth_cert = load_certificate(settings.auth.certificate)
        if auth_changed or auth_cert.not_valid_after_utc != self.auth_not_after:
            await self.own_status.install("auth", auth_cert, self._registry_session(), conf, self.now())
            self.settings = self.settings.model_copy(update={"auth": settings.auth, "signing": settings.signing})
            self.auth_not_after = auth_cert.not_valid_after_utc
            if conf is not None:
                self._current_server_ctx = tls.server_context(settings.auth.certificate, settings.auth.key,
                                                              conf.approved_ca_certificates)
            for _, link in self._peers.values():
                link.retire()
            self._peers.clear()
            changed.append("auth")
        else:
            self.settings = self.settings.model_copy(update={"signing": settings.signing})
        return changed

    def _registry_session(self) -> aiohttp.ClientSession:
        assert self._registry is not None
        return self._registry

    def staple(self, identity: SigningIdentity, conf: GlobalConf, origin: Origin) -> bytes:
        """The OCSP response to staple to messages signed by ``identity`` (b"" where its CA runs no OCSP)."""
        return self.own_status.staple(f"sign {identity.member}", conf, self.now(), origin,
                                      identity.certificate_der)

    def log_fields(self, *, direction: str, side: str, request: envelope.RequestManifest,
                   parts: envelope.SignedParts, body: bytes, body_sha512: str, log_body: bool) -> LogFields:
        """One message-log record; the body digest comes from the signed manifest, not a second hash."""
        return LogFields.for_message(
            created_ms=int(time.time() * 1000), direction=direction, side=side, xroad_id=request.xroad_id,
            request_id=request.request_id, client=request.client, service=request.service,
            manifest=parts.manifest, signature=parts.signature, signer_cert=parts.signer_cert,
            body=body, log_body=log_body, body_sha512=envelope.unb64(body_sha512))

    def _timestamping_authorities(self) -> list[TsaEndpoint] | None:
        """The TSAs of the held global configuration, for the message log's timestamper (None: none held yet)."""
        conf = self.conf.current
        if conf is None:
            return None
        if self._tsa_cache is None or self._tsa_cache[0] != conf.serial:
            endpoints = [TsaEndpoint(t.name, t.url, x509.load_der_x509_certificate(envelope.unb64(t.certificate)))
                         for t in conf.document.timestamping_authorities]
            self._tsa_cache = (conf.serial, endpoints)
        return self._tsa_cache[1]

    _tsa_cache: tuple[int, list[TsaEndpoint]] | None = None

    def certificate_problems(self, warn_days: float = 14.0) -> tuple[str | None, str | None]:
        """(why this gateway must not be ready, a warning) about its own auth and sign certificates."""
        now = self.now()
        certs = [("auth certificate", self.auth_not_after)]
        certs += [(f"sign certificate of {member}", identity.not_after) for member, identity in self.signing.items()]
        for name, not_after in certs:
            if now >= not_after:
                return f"{name} expired at {not_after.isoformat()}", None
        soonest = min(certs, key=lambda c: c[1])
        if soonest[1] - now < dt.timedelta(days=warn_days):
            return None, f"{soonest[0]} expires at {soonest[1].isoformat()}"
        return None, None

    def update_gauges(self) -> None:
        """Refresh the gauges that describe state rather than traffic (called before each scrape)."""
        conf = self.conf.current
        if conf is not None:
            metrics.GLOBALCONF_AGE.set(max(0.0, (self.now() - conf.document.generated_at).total_seconds()))
            metrics.GLOBALCONF_EXPIRY.set(conf.document.expires_at.timestamp())
        for member, identity in self.signing.items():
            metrics.CERT_EXPIRY.labels("sign", member).set(identity.not_after.timestamp())
        metrics.CERT_EXPIRY.labels("auth", self.server_id.owner.path()).set(self.auth_not_after.timestamp())
        metrics.BUILD_INFO.labels(BUILD_VERSION).set(1)
        self.own_status.update_gauges(self.now())
        writer = self.message_log.writer
        metrics.MESSAGELOG_PENDING.set(writer.pending if writer is not None else 0)
        stamper = self.message_log.timestamper
        if stamper is not None:
            now_ms = stamper.now_ms()
            health = stamper.health
            metrics.MESSAGELOG_TIMESTAMPING_STATE.set(int(stamper.state()))
            metrics.MESSAGELOG_TIMESTAMPING_BACKLOG.set(health.backlog)
            metrics.MESSAGELOG_TIMESTAMPING_FAILING.set(health.failing_for_ms(now_ms) / 1000)
            if health.last_success_ms is not None:
                metrics.MESSAGELOG_TIMESTAMPING_LAST_SUCCESS.set(health.last_success_ms / 1000)

    def is_our_client(self, conf: GlobalConf, client: ids.ClientId) -> bool:
        """Subsystems registered at this gateway, or the owner member itself, may send through it."""
        if isinstance(client, ids.MemberId):
            return client == self.server_id.owner
        return any(gw.server == self.server_path for gw in conf.gateways_for(client.path()))

