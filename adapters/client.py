"""Client-side adapter routes: ``/adapters/{name}/...`` lets a caller that cannot speak X-Road call a service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.core import adapters, rest
from gateway.core import identifiers as ids
from gateway.core.faults import Code, Fault, Origin
from gateway.core.settings import ClientAdapterSettings
from gateway.monitoring import metrics
from gateway.proxy.runtime import read_body
from gateway.proxy.tls import peer_fingerprint

if TYPE_CHECKING:
    from gateway.proxy.client_side import ClientProxy

PREFIX = "/adapters/"


class ClientAdapters:
    """Each route is mapped in the gateway YAML to a client subsystem and a target service. The gateway adds what
    the legacy caller cannot: the X-Road identity and ids (REST headers, or SOAP headers it takes off the answer
    again). Everything after that is the ordinary signed exchange, logged on both sides."""

    def __init__(self, proxy: ClientProxy) -> None:
        self.proxy = proxy
        self.routes: dict[str, ClientAdapterSettings] = {a.name: a for a in proxy.rt.settings.adapters}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name, _, tail = request.rel_url.raw_path[len(PREFIX):].partition("/")
        route = self.routes.get(name)
        if route is None:
            from gateway.proxy.client_side import new_id

            fault = Fault(Origin.CLIENT, Code.INVALID_REST, f"no adapter route {name[:64]!r} at this gateway")
            return self.proxy.fault_response(fault.with_detail(new_id()), is_soap=False, request=request)
        raw_tail = f"/{tail}" if tail else ""

        async def work(request: web.Request, exchange: metrics.Exchange,
                       labels: metrics.ExchangeLabels) -> web.Response:
            client = self._caller(route, request)
            if route.protocol == "rest":
                return await self._rest(route, client, raw_tail, request, exchange, labels)
            return await self._soap(route, client, request, exchange, labels)

        return await self.proxy._guard(work, is_soap=route.protocol == "soap", request=request)

    @staticmethod
    def _caller(route: ClientAdapterSettings, request: web.Request) -> ids.SubsystemId:
        """The subsystem the legacy caller acts as: fixed by the route, or chosen by its TLS client certificate."""
        if route.client is not None:
            return ids.parse_subsystem(route.client)
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        fingerprint = peer_fingerprint(ssl_object)
        subsystem = route.client_certificates.get(fingerprint or "")
        if subsystem is None:
            raise Fault(Origin.CLIENT, Code.INVALID_CLIENT_IDENTIFIER,
                        f"adapter route {route.name} identifies callers by TLS client certificate, and "
                        + ("none was presented" if fingerprint is None else "this one is not mapped to a subsystem"))
        return ids.parse_subsystem(subsystem)

    async def _rest(self, route: ClientAdapterSettings, client: ids.SubsystemId, raw_tail: str,
                    request: web.Request, exchange: metrics.Exchange, labels: metrics.ExchangeLabels) -> web.Response:
        # The r1 path checks (traversal, encoded separators, length) apply to what the legacy caller sent.
        target = ids.parse_service(route.service).unversioned()
        service, service_path = rest.parse_target(f"{rest.PREFIX}{target.path()}{raw_tail}")
        labels.set(client, service)
        parsed = rest.RestRequest(
            service=service, client=client, method=request.method.upper(), service_path=service_path,
            query=request.rel_url.raw_query_string, xroad_id=None, user_id=route.user_id, issue=None,
            security_server=None, headers=rest.crossing_headers(request.headers.items()))
        body = await read_body(request, self.proxy.limit, Origin.CLIENT)
        return await self.proxy.rest_exchange(request, parsed, body, exchange)

    async def _soap(self, route: ClientAdapterSettings, client: ids.SubsystemId, request: web.Request,
                    exchange: metrics.Exchange,
                    labels: metrics.ExchangeLabels) -> web.Response:
        from gateway.proxy.client_side import new_id

        if request.method != "POST":
            raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, "a SOAP adapter route takes POST")
        if request.content_type != "text/xml":
            raise Fault(Origin.CLIENT, Code.INVALID_CONTENT_TYPE,
                        f"Content-Type must be text/xml for SOAP 1.1, not {request.content_type!r}")
        service = ids.parse_service(route.service)
        body = await read_body(request, self.proxy.limit, Origin.CLIENT)
        framed = adapters.with_xroad_headers(body, client, service, new_id(), route.user_id)
        response = await self.proxy.soap_exchange(request, framed, exchange, labels)
        if response.content_type == "text/xml" and isinstance(response.body, bytes):
            response.body = adapters.without_xroad_headers(response.body)
        return response
