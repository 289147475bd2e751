"""Optional validation against service descriptions, end to end: XSD from the WSDL for SOAP, JSON Schema from the
OpenAPI document for REST; every failure is a clear fault that names the invalid field."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from gateway.core import identifiers as ids
from gateway.core import soap
from gateway.demo import federation as fed
from gateway.demo.backends import (
    POPULATION_NS,
    POPULATION_WSDL_PATH,
    TAX_OPENAPI,
    make_faulty_app,
    make_population_app,
    make_tax_app,
    start_app,
)
from tests.conftest import Federation, start_federation, stop_federation
from tests.test_exchange import fault_code, post_soap

GET_PERSON = ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1")
ECHO_AS_PERSON = ids.ServiceId("DEMO", "GOV", "1001", "population", "echoPerson")
HEALTH = ("SUBSYSTEM:DEMO/GOV/1003/patients",)

FAULTY_OPENAPI = {"openapi": "3.0.3", "info": {"title": "faulty", "version": "1"}, "paths": {"/not-json": {"get": {
    "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}}}}}}
ECHO_OPENAPI = {"openapi": "3.0.3", "info": {"title": "echo", "version": "1"}, "paths": {"/items": {"post": {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/In"}}}},
    "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
        "type": "object", "required": ["item"]}}}}}}}},
    "components": {"schemas": {"In": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "count": {"type": "integer", "minimum": 1}}}}}}


@pytest.fixture
async def checked(tmp_path: Path) -> AsyncIterator[Federation]:
    runners, ports = [], []
    for app in (make_population_app(), make_tax_app(), make_faulty_app()):
        runner, port = await start_app(app)
        runners.append(runner)
        ports.append(port)
    files = {}
    for name, document in (("tax", TAX_OPENAPI), ("faulty", FAULTY_OPENAPI), ("echo", ECHO_OPENAPI)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(document))
    wsdl = {"wsdl": str(POPULATION_WSDL_PATH), "validation": True}

    def services(backend: str) -> list[fed.Service]:
        return [
            fed.Service("civil", "getPerson", "soap", f"http://127.0.0.1:{ports[0]}/population", HEALTH,
                        version="v1", description=wsdl),
            # the test echo backend answers with elements the WSDL does not have
            fed.Service("civil", "echoPerson", "soap", f"{backend}/soap", HEALTH,
                        description={**wsdl, "operation": "getPerson"}),
            fed.Service("tax", "taxrecords", "rest", f"http://127.0.0.1:{ports[1]}", HEALTH,
                        description={"openapi": str(files["tax"]), "validation": True}),
            fed.Service("tax", "faulty", "rest", f"http://127.0.0.1:{ports[2]}", HEALTH,
                        description={"openapi": str(files["faulty"]), "validation": True}),
            fed.Service("tax", "echo", "rest", f"{backend}/rest", HEALTH,
                        description={"openapi": str(files["echo"]), "validation": True}),
        ]
    f = await start_federation(tmp_path / "federation", services=services)
    try:
        yield f
    finally:
        await stop_federation(f)
        for runner in runners:
            await runner.cleanup()


def person_request(client: ids.ClientId, service: ids.ServiceId, field: str, value: str) -> bytes:
    body = etree.Element(f"{{{POPULATION_NS}}}getPerson", nsmap={"p": POPULATION_NS})
    etree.SubElement(body, f"{{{POPULATION_NS}}}{field}").text = value
    return soap.build_request(client, service, "v-1", body)


async def test_soap_request_and_response_validated_against_the_wsdl(checked: Federation) -> None:
    client = checked.subsystem("health")
    status, body, _ = await post_soap(checked, "health", person_request(client, GET_PERSON, "personCode",
                                                                         "90000000001"))
    assert status == 200, body[:500]
    status, body, _ = await post_soap(checked, "health", person_request(client, GET_PERSON, "personKode", "1"))
    assert fault_code(body) == "Client.InvalidRequest"
    message = etree.fromstring(body).findtext(".//faultstring")
    assert "personKode" in message and "This element is not expected" in message
    status, body, _ = await post_soap(checked, "health", person_request(client, ECHO_AS_PERSON, "personCode", "1"))
    assert fault_code(body) == "Server.ServerProxy.ServiceFailed"
    assert "getPersonResponse" in etree.fromstring(body).findtext(".//faultstring")


async def rest(f: Federation, method: str, path: str, data: bytes | None = None) -> tuple[int, dict, dict]:
    headers = {"X-Road-Client": "DEMO/GOV/1003/patients", "Content-Type": "application/json"}
    async with f.session.request(method, f.client_url("health", path), data=data, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


async def test_rest_validated_against_the_openapi_document(checked: Federation) -> None:
    status, body, _ = await rest(checked, "GET", "/r1/DEMO/GOV/1002/tax-records/taxrecords/taxpayers/90000000001")
    assert (status, body["name"]) == (200, "Layla Haddad")
    status, body, headers = await rest(checked, "GET", "/r1/DEMO/GOV/1002/tax-records/taxrecords/nowhere")
    assert (status, headers.get("X-Road-Error")) == (400, "Client.InvalidRequest")
    assert "no endpoint GET /nowhere" in body["message"]
    base = "/r1/DEMO/GOV/1002/tax-records/echo/items"
    status, body, headers = await rest(checked, "POST", base, b'{"name": "x", "count": 0}')
    assert (status, headers.get("X-Road-Error")) == (400, "Client.InvalidRequest")
    assert "field 'count'" in body["message"] and "minimum" in body["message"]
    status, body, headers = await rest(checked, "POST", base, b'{"count": 2}')
    assert "'name' is a required property" in body["message"]
    status, body, headers = await rest(checked, "POST", base, b"{not json")
    assert "not valid JSON" in body["message"]
    # the echo backend's answer lacks the declared "item"
    status, body, headers = await rest(checked, "POST", base, b'{"name": "x"}')
    assert (status, headers.get("X-Road-Error")) == (502, "Server.ServerProxy.ServiceFailed")
    assert "'item' is a required property" in body["message"]


async def test_non_json_from_a_backend_that_declared_json(checked: Federation) -> None:
    status, body, headers = await rest(checked, "GET", "/r1/DEMO/GOV/1002/tax-records/faulty/not-json")
    assert (status, headers.get("X-Road-Error")) == (502, "Server.ServerProxy.ServiceFailed")
    assert "said application/json but its body is not JSON" in body["message"]
