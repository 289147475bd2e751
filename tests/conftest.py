"""Shared fixtures: a whole federation (registry, three gateways, backends) on loopback, in this event loop."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from lxml import etree

from gateway.configfile import load_model
from gateway.core import identifiers as ids
from gateway.core import soap
from gateway.core.settings import GatewaySettings
from gateway.demo import federation as fed
from gateway.proxy.app import RunningGateway
from gateway.registry.server import Registry

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# -- test backends: an X-Road-aware SOAP echo service and a REST echo service ------------------------------------

async def soap_echo(request: web.Request) -> web.Response:
    body = await request.read()
    root = soap.parse_xml(body)
    header = root.find(f"{{{soap.SOAP_ENV}}}Header")
    body_el = root.find(f"{{{soap.SOAP_ENV}}}Body")[0]
    nsmap = {"SOAP-ENV": soap.SOAP_ENV}
    out = etree.Element(f"{{{soap.SOAP_ENV}}}Envelope", nsmap=nsmap)
    out.append(header)
    out_body = etree.SubElement(out, f"{{{soap.SOAP_ENV}}}Body")
    resp = etree.SubElement(out_body, f"{{{etree.QName(body_el).namespace}}}{etree.QName(body_el).localname}Response")
    etree.SubElement(resp, "echo").text = (body_el.findtext("text") or "")
    etree.SubElement(resp, "soapAction").text = request.headers.get("SOAPAction", "")
    etree.SubElement(resp, "traceparent").text = request.headers.get("traceparent", "")
    return web.Response(body=etree.tostring(out, xml_declaration=True, encoding="UTF-8"),
                        content_type="text/xml", charset="utf-8")


async def rest_echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({
        "method": request.method, "path": request.rel_url.raw_path, "query": request.rel_url.raw_query_string,
        "body": body.decode("utf-8", "replace"),
        "headers": {k: v for k, v in request.headers.items() if k.lower().startswith(("x-road", "content-type",
                                                                                      "traceparent", "x-custom"))},
    }, headers={"X-Backend": "rest-echo"})


async def hang(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response(text="late")


async def reset(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.abort()
    await asyncio.sleep(1)
    return web.Response(text="never")


def backend_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/soap", soap_echo)
    app.router.add_route("*", "/rest{tail:.*}", rest_echo)
    app.router.add_route("*", "/hang", hang)
    app.router.add_route("*", "/reset", reset)
    return app


async def start_app(app: web.Application, port: int = 0, ssl_context=None) -> tuple[web.AppRunner, int]:  # type: ignore[no-untyped-def]
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


# -- the federation ---------------------------------------------------------------------------------------------

@dataclass
class Federation:
    layout: fed.Layout
    gateways: dict[str, RunningGateway]
    registry: Registry
    session: aiohttp.ClientSession
    backend_port: int

    def client_url(self, agency: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.layout.ports.client_side[agency]}{path}"

    def subsystem(self, agency: str) -> ids.SubsystemId:
        return next(a.subsystem_id for a in self.layout.agencies if a.key == agency)


def demo_services(backend: str) -> list[fed.Service]:
    population = "SUBSYSTEM:DEMO/GOV/1003/patients"
    return [
        fed.Service("civil", "echo", "soap", f"{backend}/soap", ("GLOBALGROUP:DEMO/trusted", population)),
        fed.Service("civil", "getPerson", "soap", f"{backend}/soap", ("MEMBER:DEMO/GOV/1003",), version="v1"),
        fed.Service("civil", "disabledService", "soap", f"{backend}/soap", (population,), disabled=True),
        fed.Service("civil", "slow", "soap", f"{backend}/hang", (population,), timeout_seconds=0.5),
        fed.Service("civil", "broken", "soap", f"{backend}/reset", (population,)),
        fed.Service("tax", "taxpayers", "rest", f"{backend}/rest", ("SUBSYSTEM:DEMO/GOV/1001/population",)),
        fed.Service("tax", "open", "rest", f"{backend}/rest", ("SUBSYSTEM:DEMO/GOV/1001/population",
                                                               population)),
        fed.Service("tax", "slowrest", "rest", f"{backend}/hang", (population,), timeout_seconds=0.5),
    ]


async def start_federation(directory: Path, *, max_body_bytes: int = 1024 * 1024, validity_seconds: int = 600,
                           services: Callable[[str], list[fed.Service]] | None = None,
                           settings: dict[str, dict[str, object]] | None = None,
                           ocsp_freshness_seconds: int | None = None, management: tuple[str, ...] | None = None,
                           registry_refresh_seconds: int = 60) -> Federation:
    """``services`` maps the test backend's base URL to the services to publish (default: ``demo_services``);
    ``settings`` adds gateway settings per agency (e.g. ``{"health": {"adapters": [...]}}``); with
    ``ocsp_freshness_seconds`` the CA runs an OCSP responder (``federation.ocsp_runner``) and gateways staple;
    with ``management`` (the kinds to auto-approve) the registry runs its management API for onboarding."""
    backend_runner, backend_port = await start_app(backend_app())
    ocsp_port = free_ports(1)[0] if ocsp_freshness_seconds else None
    management_port = free_ports(1)[0] if management is not None else None
    ports_list = free_ports(7)
    ports = fed.Ports(registry=ports_list[0],
                      client_side={"civil": ports_list[1], "tax": ports_list[2], "health": ports_list[3]},
                      server_side={"civil": ports_list[4], "tax": ports_list[5], "health": ports_list[6]})
    limits = {"client_side": {"host": "127.0.0.1", "max_body_bytes": max_body_bytes}}
    overrides = {k: {"client_side": {**limits["client_side"], "port": ports.client_side[k]},
                     "globalconf_refresh_seconds": 0.3, **(settings or {}).get(k, {})}
                 for k in ("civil", "tax", "health")}
    layout = fed.build(directory, ports, (services or demo_services)(f"http://127.0.0.1:{backend_port}"),
                       global_groups=[{"code": "trusted", "members": ["DEMO/GOV/1002/tax-records"]}],
                       validity_seconds=validity_seconds, gateway_overrides=overrides,
                       ocsp_url=f"http://127.0.0.1:{ocsp_port}/" if ocsp_port else None,
                       ocsp_freshness_seconds=ocsp_freshness_seconds or 3600, management_port=management_port,
                       auto_approve=management or (), refresh_seconds=registry_refresh_seconds)
    ocsp_runner = None
    if ocsp_port:
        from gateway.trust.ocsp_responder import Responder, make_responder_app

        ocsp_runner, _ = await start_app(make_responder_app(Responder.for_ca_dir(directory / "pki" / "ca")),
                                         ocsp_port)
    registry = Registry(layout.federation_file)
    registry_runner, _ = await start_app(registry.app(), ports.registry)
    management_app = registry.management_app()
    if management_app is not None:
        management_runner, _ = await start_app(management_app, management_port or 0, registry.management_ssl())
    gateways = {}
    for key, path in layout.gateway_files.items():
        gw = RunningGateway(load_model(path, GatewaySettings))
        await gw.start()
        gateways[key] = gw
    session = aiohttp.ClientSession()
    federation = Federation(layout, gateways, registry, session, backend_port)
    federation._runners = [backend_runner, registry_runner]  # type: ignore[attr-defined]
    if management_app is not None:
        federation._runners.append(management_runner)  # type: ignore[attr-defined]
    federation.ocsp_runner = ocsp_runner  # type: ignore[attr-defined]
    return federation


async def stop_federation(federation: Federation) -> None:
    await federation.session.close()
    for gw in federation.gateways.values():
        await gw.stop()
    for runner in federation._runners:  # type: ignore[attr-defined]
        await runner.cleanup()
    if getattr(federation, "ocsp_runner", None) is not None:
        await federation.ocsp_runner.cleanup()  # type: ignore[attr-defined]


@pytest.fixture
async def federation(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await start_federation(tmp_path)
    try:
        yield f
    finally:
        await stop_federation(f)


def soap_request(client: ids.ClientId, service: ids.ServiceId, xroad_id: str = "id-1", text: str = "hello",
                 user_id: str | None = "EE12345") -> bytes:
    body = etree.Element(f"{{http://test.example/}}{service.service_code}", nsmap={"t": "http://test.example/"})
    etree.SubElement(body, "text").text = text
    return soap.build_request(client, service, xroad_id, body, user_id=user_id)


def zeep_xroad_headers(client: ids.SubsystemId, service: ids.ServiceId, xroad_id: str) -> dict[str, object]:
    """The X-Road SOAP headers as a stock zeep client passes them (``_soapheaders``)."""
    target: dict[str, object] = {"objectType": "SERVICE", "xRoadInstance": service.instance,
                                 "memberClass": service.member_class, "memberCode": service.member_code,
                                 "subsystemCode": service.subsystem_code, "serviceCode": service.service_code}
    if service.service_version:
        target["serviceVersion"] = service.service_version
    return {"client": {"objectType": "SUBSYSTEM", "xRoadInstance": client.instance,
                       "memberClass": client.member_class, "memberCode": client.member_code,
                       "subsystemCode": client.subsystem_code},
            "service": target, "id": xroad_id, "userId": "EE-zeep", "protocolVersion": "4.0"}
