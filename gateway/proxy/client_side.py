"""The client side of a gateway: accepts X-Road SOAP and REST calls from the agency's own systems and relays
them, signed, to the provider's gateway over pinned mutual TLS."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from aiohttp import web

from adapters.client import ClientAdapters
from gateway.core import envelope, rest, soap
from gateway.core import identifiers as ids
from gateway.core.faults import Code, Fault, Origin, render_json, render_soap_fault, render_xml_error
from gateway.core.frames import Frame, Kind
from gateway.core.globalconf import GlobalConf
from gateway.core.routing import PeerHealth, order_gateways
from gateway.monitoring import metrics, tracecontext
from gateway.proxy.batchsigner import BatchSigner, Outcome
from gateway.proxy.message_ids import new_id
from gateway.proxy.metaservices import ClientMetaservices
from gateway.proxy.peerlink import FrameSink, PeerUnreachable
from gateway.proxy.runtime import GatewayRuntime, read_body

log = logging.getLogger("wasl.clientproxy")
_SOAP_TYPES = ("text/xml",)
_RESPONSE_HEADERS_DROPPED = frozenset({"content-type", "content-length", "transfer-encoding", "connection",
                                       "keep-alive", "server", "date"})


class Relayed:
    """A verified response from the provider's gateway."""

    __slots__ = ("body", "manifest", "request_hash", "request_id")

    def __init__(self, manifest: envelope.ResponseManifest, body: bytes, request_hash: str, request_id: str):
        self.manifest = manifest
        self.body = body
        self.request_hash = request_hash
        self.request_id = request_id

    def header(self, name: str) -> str | None:
        for key, value in self.manifest.headers:
            if key == name:
                return value
        return None


class ClientProxy:
    def __init__(self, runtime: GatewayRuntime) -> None:
        self.rt = runtime
        self.limit = runtime.settings.client_side.max_body_bytes
        self.meta = ClientMetaservices(self)
        self.adapters = ClientAdapters(self)

    # -- entry point -------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if path.startswith(rest.PREFIX):
            return await self._guard(self.handle_rest, is_soap=False, request=request)
        if path.startswith("/adapters/"):
            return await self.adapters.handle(request)  # legacy callers that cannot speak X-Road
        if request.method == "GET" and path in ("/listClients", "/wsdl"):
            return await self.meta.handle(request)  # X-Road's plain-GET metaservices (PR-META)
        if request.method == "POST":
            return await self._guard(self.handle_soap, is_soap=True, request=request)
        fault = Fault(Origin.CLIENT, Code.INVALID_REST, f"no X-Road endpoint at {request.method} {path[:200]}")
        return self.fault_response(fault.with_detail(new_id()), is_soap=False, request=request)

    async def _guard(self, work, *, is_soap: bool, request: web.Request) -> web.StreamResponse:  # type: ignore[no-untyped-def]
        """Run one exchange: every failure becomes a fault for the caller, and every outcome a metric."""
        exchange = metrics.Exchange("client", "soap" if is_soap else "rest", self.rt.opmon)
        labels = metrics.ExchangeLabels()
        fault_code = ""
        try:
            response = await work(request, exchange, labels)
        except Fault as fault:
            # A provider's fault keeps its correlation id, so the caller's id finds the provider's log entry.
            detail = fault.detail or new_id()
            log.info("fault %s %s: %s", detail, fault.full_code, fault.message)
            fault_code = fault.full_code
            exchange.failed(fault)
            response = self.fault_response(fault.with_detail(detail), is_soap=is_soap, request=request)
        except Exception:  # never leak a stack trace to the caller; the id finds it in the log
            detail = new_id()
            log.exception("internal error %s", detail)
            internal = Fault(Origin.CLIENT_PROXY, Code.INTERNAL_ERROR, "internal error in the client's gateway",
                             detail)
            fault_code = internal.full_code
            exchange.failed(internal)
            response = self.fault_response(internal, is_soap=is_soap, request=request)
        exchange.finish(client_member=labels.client_member, service=labels.service, status=response.status,
                        fault_code=fault_code, request_bytes=request.content_length or 0,
                        response_bytes=response.content_length or 0)
        return response

    @staticmethod
    def fault_response(fault: Fault, *, is_soap: bool, request: web.Request) -> web.Response:
        if is_soap:
            return web.Response(status=500, body=render_soap_fault(fault), content_type="text/xml", charset="utf-8")
        headers = {"X-Road-Error": fault.full_code}
        if "xml" in request.headers.get("Accept", "") and "json" not in request.headers.get("Accept", ""):
            return web.Response(status=fault.http_status, body=render_xml_error(fault), headers=headers,
                                content_type="application/xml", charset="utf-8")
        return web.Response(status=fault.http_status, body=render_json(fault), headers=headers,
                            content_type="application/json", charset="utf-8")

    # -- checks shared by both protocols -----------------------------------------------------------------------

    def _check_parties(self, conf: GlobalConf, client: ids.ClientId, service: ids.ServiceId) -> None:
        origin = Origin.CLIENT_PROXY
        if client.instance != conf.instance or not conf.is_known_client(client.path()):
            raise Fault(origin, Code.UNKNOWN_MEMBER, f"client {client} is not in the global configuration")
        if not self.rt.is_our_client(conf, client):
            raise Fault(Origin.CLIENT, Code.INVALID_CLIENT_IDENTIFIER,
                        f"client {client} is not registered at this gateway ({self.rt.server_path})")
        provider = service.provider.path()
        if service.instance != conf.instance or not conf.is_known_client(provider):
            raise Fault(origin, Code.UNKNOWN_MEMBER, f"service provider {service.provider} is not in the "
                        "global configuration")

    # -- SOAP --------------------------------------------------------------------------------------------------

    async def handle_soap(self, request: web.Request, exchange: metrics.Exchange,
                          labels: metrics.ExchangeLabels) -> web.Response:
        if request.content_type not in _SOAP_TYPES:
            raise Fault(Origin.CLIENT, Code.INVALID_CONTENT_TYPE,
                        f"Content-Type must be text/xml for SOAP 1.1, not {request.content_type!r}")
        if request.charset not in (None, "utf-8", "UTF-8"):
            raise Fault(Origin.CLIENT, Code.INVALID_CONTENT_TYPE, "SOAP messages must be UTF-8")
        body = await read_body(request, self.limit, Origin.CLIENT)
        return await self.soap_exchange(request, body, exchange, labels)

    async def soap_exchange(self, request: web.Request, body: bytes, exchange: metrics.Exchange,
                            labels: metrics.ExchangeLabels) -> web.Response:
        """Relay an X-Road SOAP request whose body is read (also the entry for client-side adapters)."""
        message = soap.parse_message(body)
        conf = self.rt.require_conf(Origin.CLIENT_PROXY)
        assert message.client is not None and message.service is not None
        labels.set(message.client, message.service)
        self._check_parties(conf, message.client, message.service)
        headers = [("content-type", request.headers.get("Content-Type", "text/xml"))]
        if "SOAPAction" in request.headers:
            headers.append(("soapaction", request.headers["SOAPAction"]))
        traceparent, tracestate = tracecontext.from_headers(request.headers)  # every transaction gets a trace id
        manifest = envelope.RequestManifest(
            protocol="soap", xroad_id=message.xroad_id, request_id=new_id(), client=message.client.path(),
            service=message.service.path(), method="POST", path="", query="", headers=tuple(headers),
            body_sha512=envelope.body_digest(body), body_length=len(body), created_ms=int(time.time() * 1000),
            user_id=message.user_id, issue=message.issue, protocol_version=message.protocol_version,
            traceparent=traceparent, tracestate=tracestate,
            target_server=message.security_server.path() if message.security_server else None,
        )
        relayed = await self.relay(conf, message.client, message.service, manifest, body, exchange)
        return web.Response(
            status=relayed.manifest.status, body=relayed.body,
            headers={"Content-Type": relayed.header("content-type") or "text/xml; charset=utf-8",
                     "X-Road-Id": message.xroad_id, "X-Road-Request-Id": relayed.request_id,
                     "X-Road-Request-Hash": relayed.request_hash})

    # -- REST --------------------------------------------------------------------------------------------------

    async def handle_rest(self, request: web.Request, exchange: metrics.Exchange,
                          labels: metrics.ExchangeLabels) -> web.Response:
        parsed = rest.parse_request(request.method, request.rel_url.raw_path, request.rel_url.raw_query_string,
                                    list(request.headers.items()))
        labels.set(parsed.client, parsed.service)
        body = await read_body(request, self.limit, Origin.CLIENT)
        return await self.rest_exchange(request, parsed, body, exchange)

    async def rest_exchange(self, request: web.Request, parsed: rest.RestRequest, body: bytes,
                            exchange: metrics.Exchange) -> web.Response:
        """Relay a parsed REST r1 request (also the entry for client-side adapters)."""
        conf = self.rt.require_conf(Origin.CLIENT_PROXY)
        self._check_parties(conf, parsed.client, parsed.service)
        xroad_id = parsed.xroad_id or new_id()
        traceparent, tracestate = tracecontext.from_headers(request.headers)  # every transaction gets a trace id
        manifest = envelope.RequestManifest(
            protocol="rest", xroad_id=xroad_id, request_id=new_id(), client=parsed.client.path(),
            service=parsed.service.path(), method=parsed.method, path=parsed.service_path, query=parsed.query,
            headers=parsed.headers, body_sha512=envelope.body_digest(body), body_length=len(body),
            created_ms=int(time.time() * 1000), user_id=parsed.user_id, issue=parsed.issue,
            traceparent=traceparent, tracestate=tracestate,
            target_server=parsed.security_server.path() if parsed.security_server else None,
        )
        relayed = await self.relay(conf, parsed.client, parsed.service, manifest, body, exchange)
        response = web.Response(status=relayed.manifest.status, body=relayed.body)
        for key, value in relayed.manifest.headers:
            if key not in _RESPONSE_HEADERS_DROPPED:
                response.headers.add(key, value)
        content_type = relayed.header("content-type")
        if content_type:
            response.headers["Content-Type"] = content_type
        response.headers.update({
            "X-Road-Client": parsed.client.path(), "X-Road-Service": parsed.service.path(), "X-Road-Id": xroad_id,
            "X-Road-Request-Id": relayed.request_id, "X-Road-Request-Hash": relayed.request_hash})
        return response

    # -- the signed hop ----------------------------------------------------------------------------------------

    async def relay(self, conf: GlobalConf, client: ids.ClientId, service: ids.ServiceId,
                    manifest: envelope.RequestManifest, body: bytes, exchange: metrics.Exchange) -> Relayed:
        identity = self.rt.signing_identity(client.member.path(), Origin.CLIENT_PROXY)
        staple = self.rt.staple(identity, conf, Origin.CLIENT_PROXY)
        manifest_bytes = envelope.encode_manifest(manifest)
        expected_hash = envelope.request_hash(manifest_bytes)
        provider_path = service.provider.path()
        candidates = order_gateways(conf.gateways_for(provider_path), self.rt.health, time.monotonic(),
                                    target_server=manifest.target_server)
        if not candidates:
            raise Fault(Origin.CLIENT_PROXY, Code.UNKNOWN_MEMBER, f"no gateway serves {service.provider}")
        timeout = self.rt.settings.peer_timeout_seconds
        failures: list[str] = []
        for gw in candidates:
            health = self.rt.health.setdefault(gw.address, PeerHealth())
            link = self.rt.peer_link(gw, conf)
            exchange.describe(manifest, gw.server)
            sent = time.perf_counter()
            signed_request: list[envelope.SignedParts] = []
            try:
                reply = await link.request_later(
                    _signed_frame(identity.signer, manifest_bytes, body, staple, signed_request), timeout)
            except PeerUnreachable as exc:
                metrics.PEER_UP.labels(gw.server).set(0)
                # Nothing reached the peer, so trying the next gateway cannot run the request twice.
                health.record_failure(time.monotonic())
                failures.append(f"{gw.server}: {exc}")
                continue
            except TimeoutError:
                health.record_failure(time.monotonic())
                raise Fault(Origin.CLIENT_PROXY, Code.NETWORK_ERROR,
                            f"provider's gateway {gw.server} did not answer in {timeout:g} s") from None
            except ConnectionError as exc:
                health.record_failure(time.monotonic())
                raise Fault(Origin.CLIENT_PROXY, Code.NETWORK_ERROR,
                            f"connection to provider's gateway {gw.server} failed: {exc}") from None
            exchange.waited(time.perf_counter() - sent)
            health.record_success()
            metrics.PEER_UP.labels(gw.server).set(1)
            if reply.kind is Kind.FAULT:
                try:
                    raise Fault.from_dict(json.loads(reply.manifest))
                except ValueError:
                    raise Fault(Origin.SERVER_PROXY, Code.INTERNAL_ERROR, "unreadable fault from peer") from None
            parts = signed_request[0]
            signed = envelope.SignedParts(reply.manifest, reply.signature, reply.signer_cert, reply.ocsp)
            relayed = self._verify_response(conf, service, signed, reply.body, expected_hash, manifest.request_id)
            log_body = self.rt.settings.message_log.log_bodies
            await self.rt.message_log.record(
                self.rt.log_fields(direction="request", side="client", request=manifest, parts=parts, body=body,
                                   body_sha512=manifest.body_sha512, log_body=log_body),
                self.rt.log_fields(direction="response", side="client", request=manifest, parts=signed,
                                   body=reply.body, body_sha512=relayed.manifest.body_sha512, log_body=log_body),
                origin=Origin.CLIENT_PROXY)
            return relayed
        raise Fault(Origin.CLIENT_PROXY, Code.NETWORK_ERROR,
                    "could not connect to any gateway of the provider: " + "; ".join(failures))

    def _verify_response(self, conf: GlobalConf, service: ids.ServiceId, parts: envelope.SignedParts, body: bytes,
                         expected_hash: str, request_id: str) -> Relayed:
        origin = Origin.CLIENT_PROXY
        key = self.rt.signer_trust.public_key_for(parts, service.member.path(), conf.approved_ca_certificates,
                                                  conf.serial, self.rt.now(), origin)
        self.rt.signer_trust.verify(parts, key, origin)
        self.rt.signer_trust.check_status(parts, conf, self.rt.now(), origin)
        manifest = envelope.parse_response(parts, body, expected_hash, origin)
        return Relayed(manifest, body, expected_hash, request_id)


def _signed_frame(signer: BatchSigner, manifest: bytes, body: bytes, staple: bytes,
                  signed: list[envelope.SignedParts]) -> Callable[[FrameSink], None]:
    """How the peer link gets the request's frame: signed with the batch and sent from inside the signer's flush, so
    it leaves without waiting for this task to run again. The signed parts are appended to ``signed`` for the log."""
    def submit(send: FrameSink) -> None:
        def deliver(outcome: Outcome) -> None:
            if isinstance(outcome, BaseException):
                send(outcome)
                return
            signed.append(outcome)
            send(Frame(0, Kind.REQUEST, outcome.manifest, outcome.signature, outcome.signer_cert, body, staple))

        signer.sign_then(manifest, deliver)

    return submit
