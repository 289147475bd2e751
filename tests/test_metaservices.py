"""X-Road metaservices end to end: listClients, listMethods, allowedMethods, getWsdl, getOpenAPI and GET /wsdl, with
zeep as a real SOAP client that takes its WSDL from the client gateway and calls through two gateways."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import zeep
from lxml import etree

from gateway.core import descriptions, metaservices, soap
from gateway.core import identifiers as ids
from gateway.demo import federation as fed
from gateway.demo.backends import POPULATION_WSDL_PATH, TAX_OPENAPI, make_population_app, make_tax_app, start_app
from tests.conftest import Federation, start_federation, stop_federation, zeep_xroad_headers
from tests.test_exchange import fault_code, metric_value, post_soap

CIVIL = ids.SubsystemId("DEMO", "GOV", "1001", "population")
TAX = ids.SubsystemId("DEMO", "GOV", "1002", "tax-records")
WSDL_QUERY = ("/wsdl?xRoadInstance=DEMO&memberClass=GOV&memberCode=1001&subsystemCode=population"
              "&serviceCode=getPerson&version=v1")
XRD = {"xrd": soap.XROAD, "id": soap.IDEN}


def published(population_url: str, tax_url: str, openapi: Path) -> Callable[[str], list[fed.Service]]:
    wsdl = {"wsdl": str(POPULATION_WSDL_PATH)}

    def services(backend: str) -> list[fed.Service]:
        return [
            fed.Service("civil", "getPerson", "soap", population_url, ("SUBSYSTEM:DEMO/GOV/1003/patients",),
                        version="v1", description=wsdl),
            fed.Service("civil", "echo", "soap", population_url,
                        ("GLOBALGROUP:DEMO/trusted", "SUBSYSTEM:DEMO/GOV/1003/patients"), description=wsdl),
            fed.Service("civil", "undescribed", "soap", f"{backend}/soap", ("SUBSYSTEM:DEMO/GOV/1003/patients",)),
            fed.Service("tax", "taxrecords", "rest", tax_url, ("SUBSYSTEM:DEMO/GOV/1001/population",),
                        description={"openapi": str(openapi)}),
            fed.Service("tax", "open", "rest", f"{backend}/rest",
                        ("SUBSYSTEM:DEMO/GOV/1001/population", "SUBSYSTEM:DEMO/GOV/1003/patients")),
        ]
    return services


@pytest.fixture
async def meta(tmp_path: Path) -> AsyncIterator[Federation]:
    population_runner, population_port = await start_app(make_population_app())
    tax_runner, tax_port = await start_app(make_tax_app())
    openapi = tmp_path / "tax-openapi.json"
    # An internal address in servers: getOpenAPI must not hand it out.
    openapi.write_text(json.dumps({**TAX_OPENAPI, "servers": [{"url": "http://10.1.2.3:8080/tax"}]}))
    f = await start_federation(tmp_path / "federation", services=published(
        f"http://127.0.0.1:{population_port}/population", f"http://127.0.0.1:{tax_port}", openapi))
    try:
        yield f
    finally:
        await stop_federation(f)
        await population_runner.cleanup()
        await tax_runner.cleanup()


def metaservice_request(client: ids.ClientId, provider: ids.SubsystemId, name: str, xroad_id: str,
                        children: tuple[tuple[str, str], ...] = ()) -> bytes:
    service = ids.ServiceId(provider.instance, provider.member_class, provider.member_code, provider.subsystem_code,
                            name)
    body = etree.Element(f"{{{soap.XROAD}}}{name}", nsmap={"xrd": soap.XROAD})
    for tag, text in children:
        etree.SubElement(body, f"{{{soap.XROAD}}}{tag}").text = text
    return soap.build_request(client, service, xroad_id, body)


def listed_services(body: bytes, response: str) -> list[str]:
    root = etree.fromstring(body)
    wrapper = root.find(f".//xrd:{response}", XRD)
    assert wrapper is not None, body[:500]
    return [el.findtext("id:serviceCode", namespaces=XRD) + (
        f"/{el.findtext('id:serviceVersion', namespaces=XRD)}" if el.find("id:serviceVersion", XRD) is not None
        else "") for el in wrapper.findall("xrd:service", XRD)]


# -- GET /wsdl and zeep ------------------------------------------------------------------------------------------

def zeep_get_person(wsdl_url: str, client: ids.SubsystemId, code: str) -> tuple[object, bytes]:
    """What an unchanged X-Road client does: load the WSDL from its own gateway, then call with X-Road headers."""
    history = zeep.plugins.HistoryPlugin()
    soap_client = zeep.Client(wsdl_url, plugins=[history])
    headers = zeep_xroad_headers(client, ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1"),
                                 "zeep-1")
    result = soap_client.service.getPerson(personCode=code, _soapheaders=headers)
    # The binding declares X-Road headers on the output too, so zeep returns them beside the body.
    assert result.header.id == "zeep-1"
    return result.body.person, etree.tostring(history.last_received["envelope"])


async def test_zeep_loads_wsdl_from_client_gateway_and_calls_through_two_gateways(meta: Federation) -> None:
    url = meta.client_url("health", WSDL_QUERY)
    async with meta.session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/xml"
        wsdl = await resp.read()
    root = etree.fromstring(wsdl)
    # Self-contained: nothing to fetch, and the address is this client gateway, so calls go through it.
    assert not [el for el in root.iter() if el.get("schemaLocation")]
    address = root.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address").get("location")
    assert address == meta.client_url("health", "/")
    # zeep is synchronous: run it in a thread while the gateways serve in this event loop.
    person, received = await asyncio.to_thread(zeep_get_person, url, meta.subsystem("health"), "90000000001")
    assert (person.personCode, person.givenName, person.familyName) == ("90000000001", "Layla", "Haddad")
    assert str(person.dateOfBirth) == "1984-03-12"
    # The answer came back through the provider's gateway: it carries X-Road's requestHash.
    assert etree.fromstring(received).find(".//xrd:requestHash", XRD) is not None
    for agency in ("health", "civil"):
        records = await meta.gateways[agency].runtime.message_log.store.by_xroad_id("zeep-1")
        assert [r.direction for r in records] == ["request", "response"]


async def test_wsdl_is_cached_on_the_client_side(meta: Federation) -> None:
    async def provider_count() -> float:
        async with meta.session.get(meta.client_url("civil", "/metrics")) as resp:
            return metric_value(await resp.text(), "wasl_requests_total", side="provider",
                                service="DEMO/GOV/1001/population/getWsdl")

    before = await provider_count()
    for _ in range(3):
        async with meta.session.get(meta.client_url("tax", WSDL_QUERY)) as resp:
            assert resp.status == 200
    assert await provider_count() == before + 1  # fetched once, then served from the cache


@pytest.mark.parametrize(("query", "code"), [
    ("/wsdl?xRoadInstance=DEMO&memberClass=GOV&memberCode=1001&subsystemCode=population", "Client.InvalidRequest"),
    ("/wsdl?xRoadInstance=DEMO&memberClass=GOV&memberCode=1001&subsystemCode=population&serviceCode=nope",
     "Server.ServerProxy.UnknownService"),
    ("/wsdl?xRoadInstance=DEMO&memberClass=GOV&memberCode=1001&subsystemCode=population&serviceCode=undescribed",
     "Server.ServerProxy.UnknownService"),
    ("/wsdl?xRoadInstance=DEMO&memberClass=GOV&memberCode=1002&subsystemCode=tax-records&serviceCode=open",
     "Server.ServerProxy.ServiceType"),
    ("/wsdl?xRoadInstance=DEMO&memberClass=GOV&memberCode=9999&subsystemCode=x&serviceCode=y",
     "Server.ClientProxy.UnknownMember"),
    # A member-level service may be asked for (subsystemCode is optional, as in X-Road); this federation's
    # services are all provided by subsystems, so no gateway serves one.
    ("/wsdl?xRoadInstance=DEMO&memberClass=GOV&memberCode=1001&serviceCode=getPerson&version=v1",
     "Server.ClientProxy.UnknownMember"),
    ("/wsdl?memberClass=GOV&memberCode=1001&serviceCode=getPerson", "Client.InvalidRequest"),
])
async def test_wsdl_bad_requests(meta: Federation, query: str, code: str) -> None:
    async with meta.session.get(meta.client_url("health", query)) as resp:
        assert resp.status == 500
        assert fault_code(await resp.read()) == code


# -- SOAP metaservices -------------------------------------------------------------------------------------------

async def test_soap_get_wsdl_returns_the_wsdl_as_an_attachment(meta: Federation) -> None:
    payload = metaservice_request(meta.subsystem("health"), CIVIL, "getWsdl", "getwsdl-1",
                                  (("serviceCode", "getPerson"), ("serviceVersion", "v1")))
    status, body, headers = await post_soap(meta, "health", payload)
    assert status == 200, body[:500]
    assert headers["Content-Type"].startswith("multipart/related")
    soap_part, attachment = metaservices.parse_multipart(headers["Content-Type"], body)
    response = etree.fromstring(soap_part.body)
    assert response.findtext(".//xrd:getWsdlResponse/xrd:serviceCode", namespaces=XRD) == "getPerson"
    assert response.find(".//xrd:requestHash", XRD) is not None
    assert attachment.headers["content-type"] == "text/xml"
    assert attachment.headers["content-id"].startswith("<wsdl=")
    wsdl = etree.fromstring(attachment.body)
    # PR-META §4: the provider hides where its service really lives.
    locations = {el.get("location") for el in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address")}
    assert locations == {descriptions.HIDDEN_ENDPOINT}
    # Signed and logged on both sides like any other message.
    for agency in ("health", "civil"):
        records = await meta.gateways[agency].runtime.message_log.store.by_xroad_id("getwsdl-1")
        assert [r.direction for r in records] == ["request", "response"]


async def test_soap_list_methods_lists_every_soap_service(meta: Federation) -> None:
    for agency in ("health", "tax"):
        payload = metaservice_request(meta.subsystem(agency), CIVIL, "listMethods", f"lm-{agency}")
        status, body, _ = await post_soap(meta, agency, payload)
        assert status == 200, body[:500]
        assert listed_services(body, "listMethodsResponse") == ["getPerson/v1", "echo", "undescribed"]
        echoed = etree.fromstring(body).find(f"{{{soap.SOAP_ENV}}}Header")
        assert [etree.QName(el).localname for el in echoed][:3] == ["client", "service", "id"]


async def test_soap_allowed_methods_reflects_access_rights(meta: Federation) -> None:
    expected = {"health": ["getPerson/v1", "echo", "undescribed"], "tax": ["echo"]}  # tax: via its global group
    for agency, services in expected.items():
        payload = metaservice_request(meta.subsystem(agency), CIVIL, "allowedMethods", f"am-{agency}")
        status, body, _ = await post_soap(meta, agency, payload)
        assert status == 200, body[:500]
        assert listed_services(body, "allowedMethodsResponse") == services
    # what allowedMethods leaves out is what the provider refuses
    denied = soap.build_request(meta.subsystem("tax"), ids.ServiceId("DEMO", "GOV", "1001", "population",
                                                                     "getPerson", "v1"),
                                "am-check", etree.Element("{http://population.demo.wasl.example/}getPerson"))
    status, body, _ = await post_soap(meta, "tax", denied)
    assert fault_code(body) == "Server.ServerProxy.AccessDenied"


async def test_soap_get_wsdl_without_service_code(meta: Federation) -> None:
    payload = metaservice_request(meta.subsystem("health"), CIVIL, "getWsdl", "getwsdl-bad")
    status, body, _ = await post_soap(meta, "health", payload)
    assert status == 500
    assert fault_code(body) == "Client.InvalidRequest"


# -- REST metaservices -------------------------------------------------------------------------------------------

async def rest_get(f: Federation, agency: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    client = f.subsystem(agency).path()
    async with f.session.get(f.client_url(agency, path), headers={"X-Road-Client": client}) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_rest_list_methods(meta: Federation) -> None:
    status, body, headers = await rest_get(meta, "health", "/r1/DEMO/GOV/1002/tax-records/listMethods")
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Road-Request-Hash"]  # a signed exchange, like any other
    services = {s["service_code"]: s for s in json.loads(body)["service"]}
    assert set(services) == {"taxrecords", "open"}
    taxrecords = services["taxrecords"]
    assert taxrecords["service_type"] == "OPENAPI"
    assert (taxrecords["xroad_instance"], taxrecords["member_class"], taxrecords["member_code"],
            taxrecords["subsystem_code"], taxrecords["object_type"]) == ("DEMO", "GOV", "1002", "tax-records",
                                                                         "SERVICE")
    assert taxrecords["endpoint_list"] == [{"method": "GET", "path": "/taxpayers"},
                                           {"method": "GET", "path": "/taxpayers/*"},
                                           {"method": "POST", "path": "/declarations"}]
    assert services["open"]["service_type"] == "REST"
    assert services["open"]["endpoint_list"] == []
    # REST listMethods lists REST services only, as X-Road's does
    status, body, _ = await rest_get(meta, "health", "/r1/DEMO/GOV/1001/population/listMethods")
    assert status == 200
    assert json.loads(body) == {"service": []}


async def test_rest_allowed_methods_reflects_access_rights(meta: Federation) -> None:
    path = "/r1/DEMO/GOV/1002/tax-records/allowedMethods"
    status, body, _ = await rest_get(meta, "health", path)
    assert status == 200
    assert [s["service_code"] for s in json.loads(body)["service"]] == ["open"]
    status, body, _ = await rest_get(meta, "civil", path)
    assert [s["service_code"] for s in json.loads(body)["service"]] == ["taxrecords", "open"]


async def test_rest_get_openapi(meta: Federation) -> None:
    base = "/r1/DEMO/GOV/1002/tax-records/getOpenAPI"
    status, body, headers = await rest_get(meta, "health", f"{base}?serviceCode=taxrecords")
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    document = json.loads(body)
    assert document["paths"].keys() == TAX_OPENAPI["paths"].keys()
    assert document["servers"] == [{"url": "/tax"}]  # the internal host is not handed out
    for query, http_status, error in (("", 400, "Client.InvalidRequest"),
                                      ("?serviceCode=nope", 404, "Server.ServerProxy.UnknownService"),
                                      ("?serviceCode=open", 500, "Server.ServerProxy.ServiceType")):
        status, body, headers = await rest_get(meta, "health", base + query)
        assert (status, headers.get("X-Road-Error")) == (http_status, error), body


async def test_rest_metaservice_needs_get(meta: Federation) -> None:
    url = meta.client_url("health", "/r1/DEMO/GOV/1002/tax-records/listMethods")
    async with meta.session.post(url, headers={"X-Road-Client": "DEMO/GOV/1003/patients"}, data=b"{}") as resp:
        assert resp.status == 404
        assert resp.headers["X-Road-Error"] == "Server.ServerProxy.UnknownService"


# -- listClients -------------------------------------------------------------------------------------------------

async def test_list_clients_xml_and_json(meta: Federation) -> None:
    async with meta.session.get(meta.client_url("health", "/listClients")) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/xml"
        root = etree.fromstring(await resp.read())
    assert root.tag == f"{{{soap.XROAD}}}clientList"
    members = root.findall("xrd:member", XRD)
    listed = [(m.find("xrd:id", XRD).get(f"{{{soap.IDEN}}}objectType"),
               m.findtext("xrd:id/id:memberCode", namespaces=XRD),
               m.findtext("xrd:id/id:subsystemCode", namespaces=XRD), m.findtext("xrd:name", namespaces=XRD))
              for m in members]
    assert ("MEMBER", "1001", None, "Civil Registry Agency") in listed
    assert ("SUBSYSTEM", "1003", "patients", "Ministry of Health") in listed
    assert len(listed) == 6
    async with meta.session.get(meta.client_url("civil", "/listClients?xRoadInstance=DEMO"),
                                headers={"Accept": "application/json"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        data = await resp.json()
    assert {"id": {"member_class": "GOV", "member_code": "1002", "subsystem_code": "tax-records",
                   "object_type": "SUBSYSTEM", "xroad_instance": "DEMO"}, "name": "Tax Authority"} in data["member"]
    async with meta.session.get(meta.client_url("civil", "/listClients?xRoadInstance=OTHER"),
                                headers={"Accept": "application/json"}) as resp:
        assert await resp.json() == {"member": []}


def test_description_cache_expires_and_stays_bounded() -> None:
    from gateway.proxy.metaservices import DescriptionCache

    now = [0.0]
    cache = DescriptionCache(ttl=10, max_entries=2, clock=lambda: now[0])
    cache.put("a", b"A")
    cache.put("b", b"B")
    assert cache.get("a") == b"A"
    cache.put("c", b"C")  # "b" was used least recently
    assert cache.get("b") is None and cache.get("a") == b"A"
    now[0] = 10.0
    assert cache.get("a") is None and cache.get("c") is None
    DescriptionCache(ttl=0).put("x", b"X")  # ttl 0: nothing is kept


def test_multipart_round_trip_and_refusals() -> None:
    content_type, body = metaservices.multipart_related(b"<soap/>", b"<wsdl/>")
    soap_part, wsdl = metaservices.parse_multipart(content_type, body)
    assert (soap_part.body, wsdl.body) == (b"<soap/>", b"<wsdl/>")
    assert soap_part.headers["content-type"].startswith("text/xml")
    with pytest.raises(ValueError, match="final boundary"):
        metaservices.parse_multipart(content_type, body[:-20])
    with pytest.raises(ValueError, match="no boundary"):
        metaservices.parse_multipart("multipart/related", body)
