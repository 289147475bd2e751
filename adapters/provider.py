"""Provider-side adapters on a running gateway: a legacy SOAP backend behind X-Road, REST/JSON callers to SOAP."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from lxml import etree

from gateway.core import adapters, envelope, restmap, soap
from gateway.core import identifiers as ids
from gateway.core.faults import Code, Fault, Origin
from gateway.core.settings import ServiceSettings

_ORIGIN = Origin.SERVER_PROXY
_SOAP_TYPE = "text/xml; charset=utf-8"

# ServerProxy._call: (settings, method, url, headers, body) -> (status, headers, body), with its limits and faults.
BackendCall = Callable[[ServiceSettings, str, str, list[tuple[str, str]], bytes],
                       Awaitable[tuple[int, list[tuple[str, str]], bytes]]]


def _trace(manifest: envelope.RequestManifest) -> list[tuple[str, str]]:
    return [(k, v) for k, v in (("traceparent", manifest.traceparent), ("tracestate", manifest.tracestate)) if v]


def _require_xml(status: int, headers: list[tuple[str, str]]) -> None:
    content_type = next((v for k, v in headers if k == "content-type"), "")
    if "xml" not in content_type:
        raise Fault(_ORIGIN, Code.SERVICE_FAILED,
                    f"service answered HTTP {status} with {content_type or 'no content type'}, not SOAP")


class ProviderAdapters:
    """Called by ServerProxy.process for a service with an ``adapter``, after every X-Road check has passed and the
    request is in the message log; what it returns is signed and logged like any backend's answer."""

    def __init__(self, services: list[ServiceSettings], call: BackendCall) -> None:
        self._call = call
        # zeep compiles a WSDL in tens of milliseconds: once at start, never per request.
        self._bridges = {s.id: adapters.SoapBridge(s.adapter.backend_wsdl) for s in services
                         if s.adapter is not None and s.adapter.backend_wsdl is not None}
        self._routes = {s.id: [r.route() for r in s.adapter.routes] for s in services
                        if s.adapter is not None and s.adapter.kind == "legacy-rest"}

    async def call(self, settings: ServiceSettings, manifest: envelope.RequestManifest,
                   body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        assert settings.adapter is not None
        if settings.adapter.kind == "legacy-soap":
            return await self._legacy_soap(settings, manifest, body)
        if settings.adapter.kind == "legacy-rest":
            return await self._legacy_rest(settings, manifest, body)
        if settings.adapter.kind == "soap-to-rest":
            return await self._soap_to_rest(settings, manifest, body)
        return await self._rest_to_soap(settings, manifest, body)

    async def _soap_to_rest(self, settings: ServiceSettings, manifest: envelope.RequestManifest,
                            body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        from gateway.core import metaservices, restbridge

        adapter = settings.adapter
        assert adapter is not None and adapter.target_namespace is not None
        request = soap.parse_message(body, _ORIGIN)
        if (request.client is None or request.client.path() != manifest.client
                or request.service is None or request.service.path() != manifest.service
                or request.xroad_id != manifest.xroad_id):
            raise Fault(_ORIGIN, Code.INCONSISTENT_HEADERS, "SOAP headers do not match the signed manifest")
        name = etree.QName(request.body_element).localname
        operation = next((o.operation() for o in adapter.operations if o.name == name), None)
        if operation is None or name != settings.operation:
            raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"service {manifest.service} is operation "
                        f"{settings.operation}, not {name}")
        try:
            call = restbridge.rest_call(operation, request.body_element)
        except restbridge.BridgeError as exc:
            raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, str(exc)) from None
        headers = [("accept", "application/json"), ("X-Road-Client", manifest.client),
                   ("X-Road-Service", manifest.service), ("X-Road-Id", manifest.xroad_id), *_trace(manifest)]
        if manifest.user_id:
            headers.append(("X-Road-UserId", manifest.user_id))
        if call.body:
            headers.append(("content-type", "application/json"))
        status, resp_headers, resp_body = await self._call(settings, call.method,
                                                           settings.url.rstrip("/") + call.path_and_query,
                                                           headers, call.body)
        content_type = next((v for k, v in resp_headers if k == "content-type"), "")
        if status >= 300:
            raise Fault(_ORIGIN, Code.SERVICE_FAILED, f"the REST backend answered HTTP {status}: "
                        f"{resp_body[:200].decode(errors='replace')}")
        try:
            if "json" not in content_type:
                raise ValueError(content_type or "no content type")
            data = json.loads(resp_body)
            element = restbridge.response_element(adapter.target_namespace, name, data)
        except (ValueError, restbridge.BridgeError) as exc:
            raise Fault(_ORIGIN, Code.SERVICE_FAILED, f"the REST backend's answer is not usable JSON: "
                        f"{str(exc)[:120]}") from None
        return 200, [("content-type", _SOAP_TYPE)], metaservices.soap_response(request, element,
                                                                               manifest.body_sha512)

    async def _legacy_rest(self, settings: ServiceSettings, manifest: envelope.RequestManifest,
                           body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        routes = self._routes[settings.id]
        found = restmap.match(routes, manifest.method, manifest.path)
        if found is None:
            raise Fault(_ORIGIN, Code.UNKNOWN_SERVICE, f"service {manifest.service} has no endpoint "
                        f"{manifest.method} {manifest.path or '/'}")
        route, params = found
        headers = [*manifest.headers, ("X-Road-Client", manifest.client), ("X-Road-Service", manifest.service),
                   ("X-Road-Id", manifest.xroad_id), *_trace(manifest)]
        if manifest.user_id:
            headers.append(("X-Road-UserId", manifest.user_id))
        mapped = restmap.backend_request(route, params, manifest.method, manifest.query, headers)
        status, resp_headers, resp_body = await self._call(settings, mapped.method,
                                                           settings.url.rstrip("/") + mapped.path_and_query,
                                                           mapped.headers, body)
        if route.json_response and status < 300:
            content_type = next((v for k, v in resp_headers if k == "content-type"), "")
            try:
                if "json" not in content_type:
                    raise ValueError(content_type or "no content type")
                json.loads(resp_body)
            except ValueError as exc:
                raise Fault(_ORIGIN, Code.SERVICE_FAILED, "the backend declares JSON but answered "
                            f"HTTP {status} with {str(exc)[:80]}") from None
        return status, resp_headers, resp_body

    async def _legacy_soap(self, settings: ServiceSettings, manifest: envelope.RequestManifest,
                           body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        request = soap.parse_message(body, _ORIGIN)
        if (request.client is None or request.client.path() != manifest.client
                or request.service is None or request.service.path() != manifest.service
                or request.xroad_id != manifest.xroad_id):
            raise Fault(_ORIGIN, Code.INCONSISTENT_HEADERS, "SOAP headers do not match the signed manifest")
        published, backend = settings.published_wsdl, settings.description.loaded_wsdl  # type: ignore[union-attr]
        assert published is not None and backend is not None
        adapters.check_operation(request, published, settings.operation)
        rename = settings.adapter.namespace  # type: ignore[union-attr]
        namespace = (rename.backend, rename.federation) if rename is not None else None
        # Legacy backends often dispatch on SOAPAction, so it is the one their WSDL declares, not the caller's.
        headers = [("content-type", _SOAP_TYPE),
                   ("soapaction", f'"{backend.soap_actions.get(settings.operation, "")}"'), *_trace(manifest)]
        status, resp_headers, resp_body = await self._call(settings, "POST", settings.url, headers,
                                                           adapters.legacy_request(request, namespace))
        _require_xml(status, resp_headers)
        is_fault, bound = adapters.legacy_response(request, resp_body, namespace, manifest.body_sha512)
        return (500 if is_fault else 200), [("content-type", _SOAP_TYPE)], bound

    async def _rest_to_soap(self, settings: ServiceSettings, manifest: envelope.RequestManifest,
                            body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        bridge = self._bridges[settings.id]
        if manifest.method not in ("GET", "POST"):
            raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, "a bridged SOAP operation is called with POST (a JSON "
                        "object body) or GET (query parameters)")
        operation = unquote(manifest.path.strip("/"))
        if not operation or "/" in operation:
            raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, "the path names one operation: "
                        f"/{{{'|'.join(bridge.wsdl.operations)}}}")
        arguments = adapters.json_arguments(manifest.method, body, manifest.query)
        client, service = ids.parse_client(manifest.client), ids.parse_service(manifest.service)
        # A backend whose WSDL asks for X-Road headers gets them, naming the operation as its service code.
        target = ids.ServiceId(service.instance, service.member_class, service.member_code, service.subsystem_code,
                               operation)
        xroad = adapters.xroad_header_values(client, target, manifest.xroad_id, manifest.user_id, manifest.issue)
        data = bridge.request(operation, arguments, xroad)
        headers = [("content-type", _SOAP_TYPE),
                   ("soapaction", f'"{bridge.wsdl.soap_actions.get(operation, "")}"'), *_trace(manifest)]
        status, resp_headers, resp_body = await self._call(settings, "POST", settings.url, headers, data)
        _require_xml(status, resp_headers)
        reply = bridge.reply(operation, status, resp_body)
        return reply.status, [("content-type", "application/json")], reply.body
