"""SOAP callers to a REST/JSON backend through a declared mapping: zeep loads the generated WSDL via /wsdl and
calls through two gateways; the backend's JSON comes back as SOAP, its errors as faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
import zeep
from aiohttp import web
from lxml import etree

from gateway.configfile import ConfigError, load_model
from gateway.core import identifiers as ids
from gateway.core import soap
from gateway.core.settings import GatewaySettings
from gateway.demo import federation as fed
from gateway.demo.backends import make_tax_app, start_app
from tests.conftest import Federation, start_federation, stop_federation, zeep_xroad_headers
from tests.test_exchange import fault_code, post_soap

NS = "http://tax.demo.wasl.example/"
PATIENTS = "SUBSYSTEM:DEMO/GOV/1003/patients"
OPERATIONS = [
    {"name": "getTaxpayer", "method": "GET", "path": "/taxpayers/{code}", "fields": ["code"]},
    {"name": "declare", "method": "POST", "path": "/declarations", "fields": ["code", "year", "income"],
     "json_body": True},
    {"name": "brokenText", "method": "GET", "path": "/text", "fields": []},
]


ADAPTER = {"kind": "soap-to-rest", "target_namespace": NS, "operations": OPERATIONS}


@pytest.fixture
async def bridged(tmp_path: Path) -> AsyncIterator[Federation]:
    tax = make_tax_app()

    async def text(_: web.Request) -> web.Response:
        return web.Response(text="not json", content_type="text/plain")

    tax.router.add_get("/text", text)
    runner, port = await start_app(tax)
    url = f"http://127.0.0.1:{port}"

    def services(backend: str) -> list[fed.Service]:
        return [fed.Service("tax", code, "soap", url, (PATIENTS,), adapter=ADAPTER)
                for code in ("getTaxpayer", "declare", "brokenText")]

    f = await start_federation(tmp_path, services=services)
    try:
        yield f
    finally:
        await stop_federation(f)
        await runner.cleanup()


def zeep_call(wsdl_url: str, client: ids.SubsystemId, code: str) -> tuple[object, bytes]:
    history = zeep.plugins.HistoryPlugin()
    soap_client = zeep.Client(wsdl_url, plugins=[history])
    headers = zeep_xroad_headers(client, ids.ServiceId("DEMO", "GOV", "1002", "tax-records", "getTaxpayer"),
                                 "zeep-rest-1")
    result = soap_client.service.getTaxpayer(code=code, _soapheaders=headers)
    return result, etree.tostring(history.last_received["envelope"])


async def test_zeep_calls_a_rest_backend_through_the_generated_wsdl(bridged: Federation) -> None:
    url = bridged.client_url("health", "/wsdl?xRoadInstance=DEMO&memberClass=GOV&memberCode=1002"
                                       "&subsystemCode=tax-records&serviceCode=getTaxpayer")
    _, received = await asyncio.to_thread(zeep_call, url, bridged.subsystem("health"), "90000000002")
    root = etree.fromstring(received)
    answer = root.find(f".//{{{NS}}}getTaxpayerResponse")
    assert answer is not None
    assert answer.findtext(f"{{{NS}}}name") == "Omar Saleh" and answer.findtext(f"{{{NS}}}code") == "90000000002"
    assert root.find(".//{http://x-road.eu/xsd/xroad.xsd}requestHash") is not None
    records = await bridged.gateways["tax"].runtime.message_log.store.by_xroad_id("zeep-rest-1")
    assert [r.direction for r in records] == ["request", "response"]


def request(client: ids.SubsystemId, code: str, fields: dict[str, str], xroad_id: str = "s2r-1") -> bytes:
    body = etree.Element(f"{{{NS}}}{code}", nsmap={"t": NS})
    for name, value in fields.items():
        etree.SubElement(body, f"{{{NS}}}{name}").text = value
    return soap.build_request(client, ids.ServiceId("DEMO", "GOV", "1002", "tax-records", code), xroad_id, body)


async def test_a_post_carries_the_other_fields_as_a_json_body(bridged: Federation) -> None:
    status, body, _ = await post_soap(bridged, "health", request(bridged.subsystem("health"), "declare",
                                                                 {"code": "90000000001", "year": "2025",
                                                                  "income": "1000"}))
    assert status == 200, body
    answer = etree.fromstring(body).find(f".//{{{NS}}}declareResponse")
    assert answer.findtext(f"{{{NS}}}declaration/{{{NS}}}income") == "1000"
    assert answer.findtext(f"{{{NS}}}id")


async def test_backend_errors_unknown_fields_and_non_json_are_soap_faults(bridged: Federation) -> None:
    client = bridged.subsystem("health")
    status, body, _ = await post_soap(bridged, "health", request(client, "getTaxpayer", {"code": "nobody"}))
    assert status == 500 and fault_code(body) == "Server.ServerProxy.ServiceFailed"
    assert b"HTTP 404" in body
    status, body, _ = await post_soap(bridged, "health", request(client, "getTaxpayer", {"code": "1", "x": "2"}))
    assert status == 500 and fault_code(body) == "Client.InvalidRequest"
    assert b"has no field" in body
    status, body, _ = await post_soap(bridged, "health", request(client, "brokenText", {}))
    assert status == 500 and fault_code(body) == "Server.ServerProxy.ServiceFailed"
    assert b"not usable JSON" in body


def test_a_mapping_to_an_undefined_field_fails_at_load(tmp_path: Path) -> None:
    bad = {"kind": "soap-to-rest", "target_namespace": NS,
           "operations": [{"name": "getTaxpayer", "path": "/taxpayers/{id}", "fields": ["code"]}]}
    layout = fed.build(tmp_path, fed.ports_from(27200, fed.DEMO_AGENCIES), [
        fed.Service("tax", "getTaxpayer", "soap", "http://127.0.0.1:9", (PATIENTS,), adapter=bad)])
    with pytest.raises(ConfigError) as exc:
        load_model(layout.gateway_files["tax"], GatewaySettings)
    assert "services.0.adapter.operations.0" in str(exc.value) and "{id} is not one of the operation's fields" in \
        str(exc.value)
    config = yaml.safe_load(layout.gateway_files["tax"].read_text())
    config["services"][0]["adapter"]["operations"][0].update({"name": "other", "path": "/taxpayers/{code}"})
    layout.gateway_files["tax"].write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="must be one of the operations"):
        load_model(layout.gateway_files["tax"], GatewaySettings)
