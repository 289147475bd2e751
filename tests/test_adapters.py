"""Adapters end to end over real sockets: a legacy SOAP backend published through X-Road, REST/JSON callers
answered by a SOAP backend, and legacy callers using client-side adapter routes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import zeep
from lxml import etree

from gateway.core import identifiers as ids
from gateway.core import soap
from gateway.demo import federation as fed
from gateway.demo.backends import (
    LEGACY_NS,
    LEGACY_WSDL_PATH,
    POPULATION_WSDL_PATH,
    make_faulty_app,
    make_legacy_civil_app,
    make_population_app,
    start_app,
)
from tests.conftest import Federation, start_federation, stop_federation
from tests.test_exchange import fault_code, post_soap

FEDERATION_NS = "http://civil.demo.wasl.example/"
FIND_CITIZEN = ids.ServiceId("DEMO", "GOV", "1001", "population", "findCitizen")
XRD = {"xrd": soap.XROAD, "id": soap.IDEN}


def services(legacy_url: str, population_url: str, faulty_url: str) -> Callable[[str], list[fed.Service]]:
    legacy = {"kind": "legacy-soap", "namespace": {"backend": LEGACY_NS, "federation": FEDERATION_NS}}
    described = {"wsdl": str(LEGACY_WSDL_PATH), "operation": "FindCitizen"}
    bridge = {"kind": "rest-to-soap", "wsdl": str(POPULATION_WSDL_PATH)}
    health = ("SUBSYSTEM:DEMO/GOV/1003/patients",)

    def build(backend: str) -> list[fed.Service]:
        return [
            fed.Service("civil", "findCitizen", "soap", legacy_url, health, description=described, adapter=legacy),
            fed.Service("civil", "brokenCitizen", "soap", f"{faulty_url}/soap-fault", health, description=described,
                        adapter=legacy),
            fed.Service("civil", "persons", "rest", population_url, health, adapter=bridge),
            fed.Service("civil", "brokenPersons", "rest", f"{faulty_url}/soap-fault", health, adapter=bridge),
        ]
    return build


ROUTES = {"health": {"adapters": [
    {"name": "population", "client": "DEMO/GOV/1003/patients", "service": "DEMO/GOV/1001/population/persons",
     "protocol": "rest", "user_id": "legacy-portal"},
    {"name": "civil", "client": "DEMO/GOV/1003/patients", "service": "DEMO/GOV/1001/population/findCitizen",
     "protocol": "soap"},
]}}


@pytest.fixture
async def adapted(tmp_path: Path) -> AsyncIterator[Federation]:
    runners = []
    urls = []
    for app, path in ((make_legacy_civil_app(), "/civil"), (make_population_app(), "/population"),
                      (make_faulty_app(), "")):
        runner, port = await start_app(app)
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{port}{path}")
    f = await start_federation(tmp_path, services=services(*urls), settings=ROUTES)
    try:
        yield f
    finally:
        await stop_federation(f)
        for runner in runners:
            await runner.cleanup()


def find_citizen(client: ids.ClientId, national_id: str, namespace: str = FEDERATION_NS,
                 xroad_id: str = "legacy-1") -> bytes:
    body = etree.Element(f"{{{namespace}}}FindCitizen", nsmap={"c": namespace})
    etree.SubElement(body, f"{{{namespace}}}nationalId").text = national_id
    return soap.build_request(client, FIND_CITIZEN, xroad_id, body, user_id="EE-1")


# -- legacy SOAP backend ---------------------------------------------------------------------------------------

async def test_legacy_soap_backend_behind_xroad(adapted: Federation) -> None:
    """The backend refuses X-Road headers and knows only its own namespace and SOAPAction; X-Road clients see
    an ordinary X-Road service: their headers echoed, requestHash set, the federation's namespace."""
    status, body, _ = await post_soap(adapted, "health", find_citizen(adapted.subsystem("health"), "90000000003"))
    assert status == 200, body[:600]
    root = etree.fromstring(body)
    result = root.find(f".//{{{FEDERATION_NS}}}FindCitizenResult")
    assert result.findtext(f"{{{FEDERATION_NS}}}fullName") == "Mari Kask"
    assert result.findtext(f"{{{FEDERATION_NS}}}born") == "1992-07-30"
    header = [etree.QName(el).localname for el in root.find(f"{{{soap.SOAP_ENV}}}Header")]
    assert header == ["client", "service", "id", "userId", "protocolVersion", "requestHash"]
    for agency in ("health", "civil"):
        records = await adapted.gateways[agency].runtime.message_log.store.by_xroad_id("legacy-1")
        assert [r.direction for r in records] == ["request", "response"]


async def test_legacy_soap_fault_is_passed_on_with_xroad_headers(adapted: Federation) -> None:
    status, body, _ = await post_soap(adapted, "health", find_citizen(adapted.subsystem("health"), "123"))
    assert status == 500
    root = etree.fromstring(body)
    assert root.findtext(".//faultcode") == "Server"
    assert "no citizen with national id '123'" in root.findtext(".//faultstring")
    assert root.find(".//xrd:requestHash", XRD) is not None  # still an X-Road response, bound to the request
    service = ids.ServiceId("DEMO", "GOV", "1001", "population", "brokenCitizen")
    request = etree.fromstring(find_citizen(adapted.subsystem("health"), "1"))
    request.find(".//xrd:service/id:serviceCode", XRD).text = "brokenCitizen"
    status, body, _ = await post_soap(adapted, "health", etree.tostring(request))
    assert status == 500 and service.service_code in body.decode()
    assert fault_code(body) == "Server.DemoFault"


async def test_legacy_soap_request_must_be_the_mapped_operation(adapted: Federation) -> None:
    wrong = find_citizen(adapted.subsystem("health"), "90000000003", namespace="urn:other")
    status, body, _ = await post_soap(adapted, "health", wrong)
    assert status == 500
    assert fault_code(body) == "Client.InvalidRequest"
    assert "FindCitizen" in etree.fromstring(body).findtext(".//faultstring")


def zeep_find_citizen(wsdl_url: str, client: ids.SubsystemId) -> object:
    soap_client = zeep.Client(wsdl_url)
    headers = {"client": {"objectType": "SUBSYSTEM", "xRoadInstance": "DEMO", "memberClass": "GOV",
                          "memberCode": client.member_code, "subsystemCode": client.subsystem_code},
               "service": {"objectType": "SERVICE", "xRoadInstance": "DEMO", "memberClass": "GOV",
                           "memberCode": "1001", "subsystemCode": "population", "serviceCode": "findCitizen"},
               "id": "zeep-legacy", "protocolVersion": "4.0"}
    return soap_client.service.FindCitizen(nationalId="90000000002", _soapheaders=headers)


async def test_published_legacy_wsdl_declares_xroad_headers_for_zeep(adapted: Federation) -> None:
    url = adapted.client_url("health", "/wsdl?xRoadInstance=DEMO&memberClass=GOV&memberCode=1001"
                                       "&subsystemCode=population&serviceCode=findCitizen")
    async with adapted.session.get(url) as resp:
        assert resp.status == 200
        wsdl = await resp.read()
    assert LEGACY_NS.encode() not in wsdl.replace(b"urn:civil:legacy/FindCitizen", b"")  # only the SOAPAction
    assert b"mainframe.civil.internal" not in wsdl
    result = await asyncio.to_thread(zeep_find_citizen, url, adapted.subsystem("health"))
    assert result.body.fullName == "Omar Saleh"


# -- REST/JSON to a SOAP backend -------------------------------------------------------------------------------

async def rest(f: Federation, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes, dict]:
    headers = {"X-Road-Client": "DEMO/GOV/1003/patients", "Content-Type": "application/json"}
    async with f.session.request(method, f.client_url("health", path), data=data, headers=headers) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_json_call_answered_by_soap_backend(adapted: Federation) -> None:
    status, body, headers = await rest(adapted, "POST", "/r1/DEMO/GOV/1001/population/persons/getPerson",
                                       b'{"personCode": "90000000001"}')
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"person": {"personCode": "90000000001", "givenName": "Layla",
                                           "familyName": "Haddad", "dateOfBirth": "1984-03-12"}}
    status, body, _ = await rest(adapted, "GET", "/r1/DEMO/GOV/1001/population/persons/echo?text=marhaba")
    assert (status, json.loads(body)) == (200, {"text": "marhaba"})


async def test_json_bridge_bad_input(adapted: Federation) -> None:
    base = "/r1/DEMO/GOV/1001/population/persons"
    status, body, headers = await rest(adapted, "POST", f"{base}/getPerson", b'{"personKode": "1"}')
    assert (status, headers.get("X-Road-Error")) == (400, "Client.InvalidRequest")
    assert "personKode" in json.loads(body)["message"]  # the message names the field
    status, body, headers = await rest(adapted, "POST", f"{base}/deletePerson", b"{}")
    assert (status, headers.get("X-Road-Error")) == (400, "Client.InvalidRequest")
    assert "getPerson, echo" in json.loads(body)["message"]
    status, body, headers = await rest(adapted, "POST", f"{base}/getPerson", b"[1, 2]")
    assert (status, headers.get("X-Road-Error")) == (400, "Client.InvalidRequest")


async def test_soap_fault_from_bridged_backend_becomes_json(adapted: Federation) -> None:
    status, body, headers = await rest(adapted, "POST", "/r1/DEMO/GOV/1001/population/persons/getPerson",
                                       b'{"personCode": "12345"}')
    assert status == 500
    assert "X-Road-Error" not in headers  # the service's own error, passed on as it is
    assert json.loads(body)["fault"] == {"faultcode": "Server.NotFound", "faultstring": "no person with code '12345'",
                                         "detail": json.loads(body)["fault"]["detail"]}
    status, body, _ = await rest(adapted, "POST", "/r1/DEMO/GOV/1001/population/brokenPersons/getPerson",
                                 b'{"personCode": "1"}')
    assert status == 500
    assert json.loads(body)["fault"]["faultcode"] == "Server.DemoFault"


# -- client-side adapter routes for legacy callers -------------------------------------------------------------

async def test_legacy_rest_client_through_an_adapter_route(adapted: Federation) -> None:
    """The caller sends no X-Road headers at all: the route names the client subsystem and the service."""
    url = adapted.client_url("health", "/adapters/population/getPerson?personCode=90000000004")
    async with adapted.session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["person"]["givenName"] == "Jonas"
        xroad_id = resp.headers["X-Road-Id"]
        assert resp.headers["X-Road-Client"] == "DEMO/GOV/1003/patients"
    for agency in ("health", "civil"):
        records = await adapted.gateways[agency].runtime.message_log.store.by_xroad_id(xroad_id)
        assert [r.direction for r in records] == ["request", "response"]
    async with adapted.session.get(adapted.client_url("health", "/adapters/population/..%2Fx")) as resp:
        assert resp.status == 400  # the r1 path checks apply to adapter routes too
    async with adapted.session.get(adapted.client_url("health", "/adapters/nope/x")) as resp:
        assert (resp.status, resp.headers["X-Road-Error"]) == (400, "Client.InvalidRest")


async def test_legacy_soap_client_through_an_adapter_route(adapted: Federation) -> None:
    """A plain SOAP request, as the legacy client always sent it; the answer comes back without X-Road headers."""
    body = etree.Element(f"{{{FEDERATION_NS}}}FindCitizen")
    etree.SubElement(body, f"{{{FEDERATION_NS}}}nationalId").text = "90000000005"
    envelope = etree.Element(f"{{{soap.SOAP_ENV}}}Envelope")
    etree.SubElement(envelope, f"{{{soap.SOAP_ENV}}}Body").append(body)
    async with adapted.session.post(adapted.client_url("health", "/adapters/civil"), data=etree.tostring(envelope),
                                    headers={"Content-Type": "text/xml; charset=utf-8"}) as resp:
        assert resp.status == 200, await resp.text()
        root = etree.fromstring(await resp.read())
    assert root.find(f"{{{soap.SOAP_ENV}}}Header") is None
    assert root.findtext(f".//{{{FEDERATION_NS}}}fullName") == "Noor Farah"


async def test_a_bridged_service_is_described_by_a_generated_openapi(adapted: Federation) -> None:
    headers = {"X-Road-Client": "DEMO/GOV/1003/patients"}
    base = adapted.client_url("health", "/r1/DEMO/GOV/1001/population")
    async with adapted.session.get(f"{base}/listMethods", headers=headers) as resp:
        listed = {s["service_code"]: s for s in json.loads(await resp.read())["service"]}
    persons = listed["persons"]
    assert persons["service_type"] == "OPENAPI"
    assert {"method": "POST", "path": "/getPerson"} in persons["endpoint_list"]
    async with adapted.session.get(f"{base}/getOpenAPI?serviceCode=persons", headers=headers) as resp:
        document = json.loads(await resp.read())
    assert resp.status == 200
    assert document["openapi"].startswith("3.") and "/getPerson" in document["paths"]
    assert "requestBody" in document["paths"]["/getPerson"]["post"]
