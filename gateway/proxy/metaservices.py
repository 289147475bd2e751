"""Metaservices on a running gateway: listClients and GET /wsdl on the client side, the rest on the provider's."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.core import descriptions, envelope, metaservices, soap
from gateway.core import identifiers as ids
from gateway.core.faults import Code, Fault, Origin
from gateway.core.globalconf import GlobalConf
from gateway.core.settings import ServiceSettings
from gateway.monitoring import metrics
from gateway.proxy.message_ids import new_id
from gateway.proxy.runtime import GatewayRuntime

if TYPE_CHECKING:
    from gateway.proxy.client_side import ClientProxy

_ORIGIN = Origin.SERVER_PROXY
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


class DescriptionCache:
    """Service descriptions fetched from providers, kept for ``ttl`` seconds (bounded, least recently used out)."""

    def __init__(self, ttl: float, max_entries: int = 512, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, value: bytes) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (self._clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


# -- client side --------------------------------------------------------------------------------------------------

class ClientMetaservices:
    """``GET /listClients`` from the global configuration, and ``GET /wsdl?...`` relayed as a signed getWsdl."""

    def __init__(self, proxy: ClientProxy) -> None:
        self.proxy = proxy
        self.rt = proxy.rt
        self.cache = DescriptionCache(self.rt.settings.description_cache_seconds)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.rel_url.path == "/listClients":
            return await self.proxy._guard(self._list_clients, is_soap=False, request=request)
        return await self.proxy._guard(self._wsdl, is_soap=True, request=request)

    async def _list_clients(self, request: web.Request, exchange: metrics.Exchange,
                            labels: metrics.ExchangeLabels) -> web.Response:
        conf = self.rt.require_conf(Origin.CLIENT_PROXY)
        clients = metaservices.client_list(conf, request.query.get("xRoadInstance") or None)
        # PR-META §2: JSON only when asked for; otherwise text/xml.
        if "application/json" in request.headers.get("Accept", ""):
            return web.Response(body=metaservices.client_list_json(clients), content_type="application/json",
                                charset="utf-8")
        return web.Response(body=metaservices.client_list_xml(clients), content_type="text/xml", charset="utf-8")

    async def _wsdl(self, request: web.Request, exchange: metrics.Exchange,
                    labels: metrics.ExchangeLabels) -> web.Response:
        target = metaservices.wsdl_query(request.query)
        # X-Road sends the getWsdl as the gateway's owner member, so no client subsystem has to be named.
        client = self.rt.server_id.owner
        meta = ids.ServiceId(target.instance, target.member_class, target.member_code, target.subsystem_code,
                             metaservices.GET_WSDL, target.service_version)
        labels.set(client, meta)
        key = target.path()
        wsdl = self.cache.get(key)
        if wsdl is None:
            wsdl = await self._fetch_wsdl(client, meta, target, exchange)
            self.cache.put(key, wsdl)
        try:
            body = descriptions.with_endpoint(wsdl, self._own_address(request))
        except descriptions.DescriptionError:
            raise Fault(Origin.CLIENT_PROXY, Code.INVALID_SOAP, f"the WSDL of {target} from its provider is not "
                        "well-formed XML") from None
        return web.Response(body=body, content_type="text/xml", charset="utf-8")

    async def _fetch_wsdl(self, client: ids.MemberId, meta: ids.ServiceId, target: ids.ServiceId,
                          exchange: metrics.Exchange) -> bytes:
        conf = self.rt.require_conf(Origin.CLIENT_PROXY)
        self.proxy._check_parties(conf, client, meta)
        xroad_id = new_id()
        body = metaservices.get_wsdl_request(client, target, xroad_id)
        manifest = envelope.RequestManifest(
            protocol="soap", xroad_id=xroad_id, request_id=new_id(), client=client.path(), service=meta.path(),
            method="POST", path="", query="", headers=(("content-type", "text/xml; charset=utf-8"),),
            body_sha512=envelope.body_digest(body), body_length=len(body), created_ms=int(time.time() * 1000),
            user_id=metaservices.WSDL_USER_ID, protocol_version=soap.PROTOCOL_VERSION)
        relayed = await self.proxy.relay(conf, client, meta, manifest, body, exchange)
        return metaservices.wsdl_from_response(relayed.manifest.status, relayed.header("content-type") or "",
                                               relayed.body)

    def _own_address(self, request: web.Request) -> str:
        """Where this client side is reached, so a stock client sends its calls through this gateway. The Host
        header is the caller's own; a malformed one falls back to the configured address."""
        host = request.headers.get("Host", "")
        if not _HOST.match(host):
            side = self.rt.settings.client_side
            host = f"{side.host}:{side.port}"
        return f"{request.scheme}://{host}/"


# -- provider side -------------------------------------------------------------------------------------------------

class ProviderMetaservices:
    """listMethods, allowedMethods, getWsdl (SOAP) and listMethods, allowedMethods, getOpenAPI (REST), answered
    from this gateway's own service configuration. The caller is ServerProxy.process, which has verified the
    signature and logs and signs the answer like any other response."""

    def __init__(self, runtime: GatewayRuntime) -> None:
        self.rt = runtime
        self._catalogue: dict[str, list[metaservices.CatalogueEntry]] = {}
        for s in runtime.settings.services:
            wsdl = s.published_wsdl
            openapi = s.openapi
            entry = metaservices.CatalogueEntry(
                s.service_id, s.type, s.access_rules, endpoints=openapi.endpoints if openapi else (),
                has_description=wsdl is not None or openapi is not None, endpoint_rights=s.endpoint_rules)
            self._catalogue.setdefault(s.service_id.provider.path(), []).append(entry)

    def check_provider(self, conf: GlobalConf, service: ids.ServiceId) -> None:
        """Metaservices are open to every known client (X-Road), but only for providers this gateway serves."""
        served = any(gw.server == self.rt.server_path for gw in conf.gateways_for(service.provider.path()))
        if not served or service.member.path() not in self.rt.signing:
            raise Fault(_ORIGIN, Code.UNKNOWN_SERVICE, f"service provider {service.provider} is not served by this "
                        "gateway")

    async def answer(self, name: str, conf: GlobalConf, client: ids.ClientId, service: ids.ServiceId,
                     manifest: envelope.RequestManifest, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        entries = self._catalogue.get(service.provider.path(), [])
        if name == metaservices.ALLOWED_METHODS:
            entries = metaservices.allowed_entries(entries, client.path(), conf.groups_of(client.path()),
                                                   conf.instance)
        if manifest.protocol == "rest":
            if name == metaservices.GET_OPENAPI:
                return self._get_openapi(service, manifest)
            return 200, [("content-type", "application/json")], metaservices.rest_method_list(entries)
        request = soap.parse_message(body, _ORIGIN)
        if (request.client is None or request.client.path() != manifest.client
                or request.service is None or request.service.path() != manifest.service
                or request.xroad_id != manifest.xroad_id):
            raise Fault(_ORIGIN, Code.INCONSISTENT_HEADERS, "SOAP headers do not match the signed manifest")
        if name == metaservices.GET_WSDL:
            return self._get_wsdl(service, request, manifest)
        response = metaservices.soap_response(request, metaservices.method_list_element(name, entries),
                                              manifest.body_sha512)
        return 200, [("content-type", "text/xml; charset=utf-8")], response

    def _described(self, service: ids.ServiceId, code: str) -> ServiceSettings:
        target = ids.ServiceId(service.instance, service.member_class, service.member_code, service.subsystem_code,
                               code)
        settings = self.rt.service(target)
        if settings is None:
            raise Fault(_ORIGIN, Code.UNKNOWN_SERVICE, f"service {target} is not provided at this gateway")
        return settings

    def _get_wsdl(self, service: ids.ServiceId, request: soap.SoapMessage,
                  manifest: envelope.RequestManifest) -> tuple[int, list[tuple[str, str]], bytes]:
        code, _version = metaservices.parse_get_wsdl(request.body_element)
        settings = self._described(service, code)  # access rights ignore versions, and so does the look-up
        wsdl = settings.published_wsdl
        if settings.type != "soap":
            raise Fault(_ORIGIN, Code.SERVICE_TYPE, f"service {settings.id} is a REST service and has no WSDL")
        if wsdl is None:
            raise Fault(_ORIGIN, Code.UNKNOWN_SERVICE, f"service {settings.id} has no WSDL description")
        soap_part = metaservices.soap_response(request, metaservices.get_wsdl_response_element(request.body_element),
                                               manifest.body_sha512)
        content_type, body = metaservices.multipart_related(soap_part, wsdl.document)
        return 200, [("content-type", content_type)], body

    def _get_openapi(self, service: ids.ServiceId,
                     manifest: envelope.RequestManifest) -> tuple[int, list[tuple[str, str]], bytes]:
        settings = self._described(service, metaservices.openapi_service_code(manifest.query))
        openapi = settings.openapi
        if settings.type != "rest":
            raise Fault(_ORIGIN, Code.SERVICE_TYPE, f"service {settings.id} is a SOAP service; ask getWsdl")
        if openapi is None:
            raise Fault(_ORIGIN, Code.SERVICE_TYPE, f"service {settings.id} is a REST service without an OpenAPI "
                        "description")
        return 200, [("content-type", openapi.content_type)], openapi.served
