"""The server side of a gateway: accepts signed requests from peer gateways over mutual TLS, checks them in
X-Road's order, calls the backend service and returns a signed response bound to the request."""

from __future__ import annotations

import logging
import time
import uuid

from adapters.provider import ProviderAdapters
from gateway.core import envelope, metaservices, soap
from gateway.core import identifiers as ids
from gateway.core.access import check_access, check_endpoint_access
from gateway.core.faults import Code, Fault, Origin, render_json
from gateway.core.frames import Frame, Kind
from gateway.core.settings import ServiceSettings
from gateway.monitoring import metrics, opservice
from gateway.proxy.backendclient import BackendError, ResponseTooLarge
from gateway.proxy.metaservices import ProviderMetaservices
from gateway.proxy.runtime import GatewayRuntime

log = logging.getLogger("wasl.serverproxy")
_ORIGIN = Origin.SERVER_PROXY
_BACKEND_RESPONSE_DROPPED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server",
                                       "date", "upgrade", "trailer", "te", "proxy-authenticate"})


def _fault_frame(fault: Fault) -> Frame:
    return Frame(0, Kind.FAULT, render_json(fault), b"", b"", b"")


class ServerProxy:
    def __init__(self, runtime: GatewayRuntime) -> None:
        self.rt = runtime
        self.limit = runtime.settings.server_side.max_body_bytes
        self.meta = ProviderMetaservices(runtime)
        self.adapters = ProviderAdapters(runtime.settings.services, self._call)

    async def handle_frame(self, fingerprint: str | None, frame: Frame) -> Frame:
        """One signed request from a peer gateway in, one signed response (or a fault) out."""
        exchange = metrics.Exchange("provider", "peer", self.rt.opmon)
        labels = metrics.ExchangeLabels()
        try:
            parts, body, status = await self.process(fingerprint, envelope.SignedParts(
                frame.manifest, frame.signature, frame.signer_cert, frame.ocsp), frame.body, exchange, labels)
            reply = Frame(frame.stream, Kind.RESPONSE, parts.manifest, parts.signature, parts.signer_cert, body,
                          parts.ocsp)
            fault_code = ""
        except Fault as fault:
            detail = str(uuid.uuid4())
            log.info("fault %s %s: %s", detail, fault.full_code, fault.message)
            exchange.failed(fault)
            reply, status, fault_code = _fault_frame(fault.with_detail(detail)), fault.http_status, fault.full_code
        except Exception:
            detail = str(uuid.uuid4())
            log.exception("internal error %s", detail)
            internal = Fault(_ORIGIN, Code.INTERNAL_ERROR, "internal error in the provider's gateway", detail)
            reply, status, fault_code = _fault_frame(internal), 500, internal.full_code
            exchange.failed(internal)
        exchange.finish(client_member=labels.client_member, service=labels.service, status=status,
                        fault_code=fault_code, request_bytes=len(frame.body), response_bytes=len(reply.body))
        return reply

    async def process(self, fingerprint: str | None, parts: envelope.SignedParts, body: bytes,
                      exchange: metrics.Exchange,
                      labels: metrics.ExchangeLabels) -> tuple[envelope.SignedParts, bytes, int]:
        conf = self.rt.require_conf(_ORIGIN)
        peer = conf.gateway_by_fingerprint.get(fingerprint) if fingerprint else None
        if peer is None:
            raise Fault(_ORIGIN, Code.SSL_AUTHENTICATION_FAILED,
                        "the calling gateway's auth certificate is not registered in the global configuration")
        if len(body) > self.limit:
            raise Fault(_ORIGIN, Code.MESSAGE_TOO_LARGE, f"message is larger than the limit of {self.limit} bytes")
        if len(parts.manifest) > envelope.MAX_MANIFEST_BYTES:
            raise Fault(_ORIGIN, Code.MALFORMED_SIGNATURE, "manifest is too large")
        manifest = envelope.parse_request(parts, body, _ORIGIN)
        exchange.describe(manifest, peer.server)
        try:
            client = ids.parse_client(manifest.client)
            service = ids.parse_service(manifest.service)
        except ids.IdentifierError as exc:
            raise Fault(_ORIGIN, Code.MALFORMED_SIGNATURE, f"manifest identifiers: {exc}") from None
        exchange.protocol = manifest.protocol
        labels.set(client, service)
        # 1-2: the client exists, and the calling gateway is one where it is registered.
        if not conf.is_known_client(client.path()):
            raise Fault(_ORIGIN, Code.UNKNOWN_MEMBER, f"client {client} is not in the global configuration")
        owner = ids.parse_server(peer.server).owner
        if client.path() not in peer.clients and client != owner:
            raise Fault(_ORIGIN, Code.SSL_AUTHENTICATION_FAILED,
                        f"client {client} is not registered at the calling gateway {peer.server}")
        # The signature comes before any decision that reads the manifest's claims.
        now = self.rt.now()
        key = self.rt.signer_trust.public_key_for(parts, client.member.path(), conf.approved_ca_certificates,
                                                  conf.serial, now, _ORIGIN)
        self.rt.signer_trust.verify(parts, key, _ORIGIN)
        self.rt.signer_trust.check_status(parts, conf, now, _ORIGIN)
        skew_ms = self.rt.settings.clock_skew_seconds * 1000
        if abs(now.timestamp() * 1000 - manifest.created_ms) > skew_ms:
            raise Fault(_ORIGIN, Code.MALFORMED_SIGNATURE, "message time is outside the allowed clock skew")
        meta = (metaservices.metaservice_of(manifest.protocol, manifest.method, service.service_code)
                or opservice.service_of(manifest.protocol, service.service_code))  # docs/monitoring.md
        settings: ServiceSettings | None = None
        if meta is not None:
            # Metaservices are answered here from this gateway's own configuration, for any known client.
            self.meta.check_provider(conf, service)
            log_body = self.rt.settings.message_log.log_bodies and meta != opservice.SERVICE_CODE
        else:
            # 3-5: the service exists here, the client may call it, and it is enabled.
            settings = self.rt.service(service)
            if (settings is None or service.member.path() not in self.rt.signing
                    or settings.service_id.service_version != service.service_version):
                raise Fault(_ORIGIN, Code.UNKNOWN_SERVICE, f"service {service} is not provided at this gateway")
            if settings.endpoints and manifest.protocol == "rest":
                check_endpoint_access(settings.access_rules, settings.endpoint_rules, manifest.method,
                                      manifest.path, client.path(), service.path(), conf.groups_of(client.path()),
                                      conf.instance)
            else:
                check_access(settings.access_rules, client.path(), service.path(), conf.groups_of(client.path()),
                             conf.instance)
            if settings.disabled:
                raise Fault(_ORIGIN, Code.SERVICE_DISABLED, f"service {service} is disabled")
            if manifest.protocol != settings.type:
                raise Fault(_ORIGIN, Code.SERVICE_TYPE, f"service {service} is a {settings.type.upper()} service, "
                            f"not {manifest.protocol.upper()}")
            if settings.validator is not None:
                settings.validator.request(manifest.method, manifest.path, manifest.headers, body)
            log_body = settings.log_body if settings.log_body is not None else self.rt.settings.message_log.log_bodies
        # The request is durable in the message log before the backend can act on it.
        await self.rt.message_log.record(self.rt.log_fields(
            direction="request", side="provider", request=manifest, parts=parts, body=body,
            body_sha512=manifest.body_sha512, log_body=log_body), origin=_ORIGIN)
        started = time.perf_counter()
        if settings is None:
            assert meta is not None
            if meta == opservice.SERVICE_CODE:
                status, headers, resp_body = await opservice.answer(self.rt, conf, client.path(), manifest, body)
            else:
                status, headers, resp_body = await self.meta.answer(meta, conf, client, service, manifest, body)
        elif settings.adapter is not None:
            status, headers, resp_body = await self.adapters.call(settings, manifest, body)
            headers = [(k, v) for k, v in headers if k not in _BACKEND_RESPONSE_DROPPED]
        elif manifest.protocol == "soap":
            status, headers, resp_body = await self._soap(settings, manifest, body)
        else:
            status, headers, resp_body = await self._rest(settings, manifest, body)
        waited = time.perf_counter() - started
        exchange.waited(waited)
        if settings is not None:  # a metaservice has no backend to time, nor a description to check against
            metrics.BACKEND_DURATION.labels(labels.service).observe(waited)
            if settings.validator is not None:
                settings.validator.response(manifest.method, manifest.path, status, headers, resp_body)
        signed, response_manifest = await self._sign_response(service, manifest, parts.manifest, status, headers,
                                                              resp_body)
        await self.rt.message_log.record(self.rt.log_fields(
            direction="response", side="provider", request=manifest, parts=signed, body=resp_body,
            body_sha512=response_manifest.body_sha512, log_body=log_body), origin=_ORIGIN)
        return signed, resp_body, status

    # -- backend calls -----------------------------------------------------------------------------------------

    async def _call(self, settings: ServiceSettings, method: str, url: str, headers: list[tuple[str, str]],
                    body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self.rt.backend is not None
        try:
            resp = await self.rt.backend.request(method, url, headers, body, timeout=settings.timeout_seconds,
                                                 limit=self.limit)
        except TimeoutError:
            raise Fault(_ORIGIN, Code.SERVICE_TIMEOUT,
                        f"service {settings.id} did not answer within {settings.timeout_seconds:g} s") from None
        except ResponseTooLarge:
            raise Fault(_ORIGIN, Code.SERVICE_FAILED, "service response is larger than the limit") from None
        except BackendError as exc:
            raise Fault(_ORIGIN, Code.SERVICE_FAILED, f"service {settings.id} failed: {exc.kind}") from None
        return resp.status, resp.headers, resp.body

    async def _soap(self, settings: ServiceSettings, manifest: envelope.RequestManifest,
                    body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        request = soap.parse_message(body, _ORIGIN)
        if (request.client is None or request.client.path() != manifest.client
                or request.service is None or request.service.path() != manifest.service
                or request.xroad_id != manifest.xroad_id):
            raise Fault(_ORIGIN, Code.INCONSISTENT_HEADERS, "SOAP headers do not match the signed manifest")
        headers = [(k, v) for k, v in manifest.headers if k in ("content-type", "soapaction")]
        headers += self._trace_headers(manifest)
        status, resp_headers, resp_body = await self._call(settings, "POST", settings.url, headers, body)
        content_type = next((v for k, v in resp_headers if k == "content-type"), "")
        if "xml" not in content_type:
            raise Fault(_ORIGIN, Code.SERVICE_FAILED,
                        f"service answered HTTP {status} with {content_type or 'no content type'}, not SOAP")
        try:
            response = soap.parse_message(resp_body, _ORIGIN, expect_request=False)
        except Fault as fault:
            raise Fault(_ORIGIN, Code.SERVICE_FAILED,
                        f"service returned an invalid SOAP message: {fault.message}") from None
        soap.check_consistent(response, request, _ORIGIN)
        bound = soap.bind_response(response, request, manifest.body_sha512)
        return (500 if response.is_fault else 200), [("content-type", "text/xml; charset=utf-8")], bound

    async def _rest(self, settings: ServiceSettings, manifest: envelope.RequestManifest,
                    body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        url = settings.url + manifest.path + (f"?{manifest.query}" if manifest.query else "")
        headers = list(manifest.headers)
        headers += [("X-Road-Client", manifest.client), ("X-Road-Service", manifest.service),
                    ("X-Road-Id", manifest.xroad_id)]
        if manifest.user_id:
            headers.append(("X-Road-UserId", manifest.user_id))
        if manifest.issue:
            headers.append(("X-Road-Issue", manifest.issue))
        headers += self._trace_headers(manifest)
        status, resp_headers, resp_body = await self._call(settings, manifest.method, url, headers, body)
        return status, [(k, v) for k, v in resp_headers if k not in _BACKEND_RESPONSE_DROPPED], resp_body

    @staticmethod
    def _trace_headers(manifest: envelope.RequestManifest) -> list[tuple[str, str]]:
        out = []
        if manifest.traceparent:
            out.append(("traceparent", manifest.traceparent))
        if manifest.tracestate:
            out.append(("tracestate", manifest.tracestate))
        return out

    # -- the signed response -----------------------------------------------------------------------------------

    async def _sign_response(self, service: ids.ServiceId, request: envelope.RequestManifest,
                             request_manifest: bytes, status: int, headers: list[tuple[str, str]],
                             body: bytes) -> tuple[envelope.SignedParts, envelope.ResponseManifest]:
        identity = self.rt.signing_identity(service.member.path(), _ORIGIN)
        staple = self.rt.staple(identity, self.rt.require_conf(_ORIGIN), _ORIGIN)
        response = envelope.ResponseManifest(
            xroad_id=request.xroad_id, request_id=request.request_id,
            request_hash=envelope.request_hash(request_manifest), status=status, headers=tuple(headers),
            body_sha512=envelope.body_digest(body), body_length=len(body), created_ms=int(time.time() * 1000))
        parts = await identity.signer.sign(envelope.encode_manifest(response))
        return envelope.SignedParts(parts.manifest, parts.signature, parts.signer_cert, staple), response
