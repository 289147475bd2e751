"""Tests of the demo backends over real sockets on 127.0.0.1: SOAP population registry, REST tax records, faulty."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import aiohttp
import pytest
import zeep
import zeep.exceptions
from lxml import etree

from gateway.demo import backends
from gateway.demo.backends import (
    IDEN,
    POPULATION_NS,
    POPULATION_WSDL_PATH,
    SOAP_ENV,
    XROAD,
    SoapFault,
    make_faulty_app,
    make_population_app,
    make_tax_app,
    parse_soap,
    start_app,
)

# The demo federation's identifiers: the health ministry's subsystem asks the civil registry's population subsystem.
CLIENT = {"objectType": "SUBSYSTEM", "xRoadInstance": "DEMO", "memberClass": "GOV", "memberCode": "1003",
          "subsystemCode": "patients"}
SERVICE = {"objectType": "SERVICE", "xRoadInstance": "DEMO", "memberClass": "GOV", "memberCode": "1001",
           "subsystemCode": "population", "serviceCode": "getPerson", "serviceVersion": "v1"}
XML_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


# -- fixtures ------------------------------------------------------------------------------------------------------

async def _serve(app: Any) -> AsyncIterator[str]:
    runner, port = await start_app(app)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def population_url() -> AsyncIterator[str]:
    async for url in _serve(make_population_app()):
        yield url


@pytest.fixture
async def tax_url() -> AsyncIterator[str]:
    async for url in _serve(make_tax_app()):
        yield url


@pytest.fixture
async def faulty_url() -> AsyncIterator[str]:
    async for url in _serve(make_faulty_app()):
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module")
def soap_client() -> zeep.Client:
    # Loaded from the file: the WSDL must be self-contained, with nothing to fetch.
    return zeep.Client(str(POPULATION_WSDL_PATH))


def _xroad_headers(service_code: str = "getPerson", xroad_id: str = "5c1d5ae2-8d0b-4c0e-9d36-0d6f3f6a3d01",
                   **extra: str) -> dict[str, Any]:
    return {"client": CLIENT, "service": {**SERVICE, "serviceCode": service_code}, "id": xroad_id,
            "userId": "DEMO-officer-7", "protocolVersion": "4.0", **extra}


@dataclass
class _Reply:
    """The bits of a requests.Response that zeep's SoapBinding.process_reply reads."""

    status_code: int
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)
    encoding: str = "utf-8"


async def _post(http: aiohttp.ClientSession, url: str, body: bytes,
                headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with http.post(url, data=body, headers=headers or XML_HEADERS) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def _zeep_reply(client: zeep.Client, operation: str, status: int, content_type: str, body: bytes) -> Any:
    binding = client.service._binding
    return binding.process_reply(client, binding.get(operation), _Reply(status, body, {"Content-Type": content_type}))


def _header_elements(envelope: bytes) -> list[etree._Element]:
    header = etree.fromstring(envelope).find(f"{{{SOAP_ENV}}}Header")
    return [] if header is None else [el for el in header if isinstance(el.tag, str)]


def _fault(envelope: bytes) -> tuple[str, str]:
    fault = etree.fromstring(envelope).find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert fault is not None, envelope
    return fault.findtext("faultcode") or "", fault.findtext("faultstring") or ""


def _c14n(el: etree._Element) -> bytes:
    return etree.tostring(el, method="c14n", exclusive=True)


# -- population registry: WSDL -------------------------------------------------------------------------------------

def test_wsdl_is_self_contained_and_binds_xroad_headers(soap_client: zeep.Client) -> None:
    wsdl = etree.parse(str(POPULATION_WSDL_PATH))
    assert not wsdl.xpath("//@schemaLocation"), "the WSDL must not point at external schemas"
    binding = soap_client.service._binding
    for name in ("getPerson", "echo"):
        operation = binding.get(name)
        for message in (operation.input, operation.output):
            parts = [qname for qname, _ in message.header.type.elements]
            assert parts == ["client", "service", "id", "userId", "issue", "protocolVersion"]
            assert all(el.qname.namespace == XROAD for _, el in message.header.type.elements)
    assert binding.get("getPerson").input.body.qname == etree.QName(POPULATION_NS, "getPerson")
    assert binding.get("getPerson").output.body.qname == etree.QName(POPULATION_NS, "getPersonResponse")


async def test_wsdl_is_served_on_get(population_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{population_url}/population?wsdl") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/xml"
        assert await resp.read() == POPULATION_WSDL_PATH.read_bytes()
    async with http.get(f"{population_url}/population") as resp:
        assert resp.status == 400


# -- population registry: happy paths ------------------------------------------------------------------------------

async def test_get_person_via_zeep_envelope_echoes_every_header_in_order(
        population_url: str, http: aiohttp.ClientSession, soap_client: zeep.Client) -> None:
    envelope = soap_client.create_message(soap_client.service, "getPerson", personCode="90000000003",
                                          _soapheaders=_xroad_headers(issue="case-42"))
    # A header that is not X-Road's, in the middle: the echo rule covers every header, not only xrd:*.
    header = envelope.find(f"{{{SOAP_ENV}}}Header")
    extra = etree.Element("{urn:demo:trace}traceparent", nsmap={"tr": "urn:demo:trace"})
    extra.text = "00-abc-def-01"
    header.insert(2, extra)
    request = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")

    status, content_type, body = await _post(http, f"{population_url}/population", request)

    assert status == 200, body
    assert content_type.startswith("text/xml")
    sent, echoed = _header_elements(request), _header_elements(body)
    assert [etree.QName(el) for el in echoed] == [etree.QName(el) for el in sent]
    assert [etree.QName(el).localname for el in echoed] == [
        "client", "service", "traceparent", "id", "userId", "issue", "protocolVersion"]
    assert [_c14n(el) for el in echoed] == [_c14n(el) for el in sent]
    assert echoed[0].get(f"{{{IDEN}}}objectType") == "SUBSYSTEM"

    result = _zeep_reply(soap_client, "getPerson", status, content_type, body)
    assert result.header.id == "5c1d5ae2-8d0b-4c0e-9d36-0d6f3f6a3d01"
    assert result.header.client.subsystemCode == "patients"
    assert result.header.protocolVersion == "4.0"
    person = result.body.person
    assert (person.personCode, person.givenName, person.familyName) == ("90000000003", "Mari", "Kask")
    assert person.dateOfBirth == date(1992, 7, 30)


async def test_echo_operation(population_url: str, http: aiohttp.ClientSession, soap_client: zeep.Client) -> None:
    envelope = soap_client.create_message(soap_client.service, "echo", text="marhaba <&> 你好",
                                          _soapheaders=_xroad_headers("echo"))
    status, content_type, body = await _post(http, f"{population_url}/population", etree.tostring(envelope))
    assert status == 200, body
    result = _zeep_reply(soap_client, "echo", status, content_type, body)
    assert result.body.text == "marhaba <&> 你好"
    assert result.header.service.serviceCode == "echo"


async def test_hand_written_request_with_unqualified_children(population_url: str,
                                                             http: aiohttp.ClientSession) -> None:
    request = f"""<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:pop="{POPULATION_NS}">
      <SOAP-ENV:Body><pop:getPerson><personCode> 90000000001 </personCode></pop:getPerson></SOAP-ENV:Body>
    </SOAP-ENV:Envelope>""".encode()
    status, _, body = await _post(http, f"{population_url}/population", request)
    assert status == 200, body
    root = etree.fromstring(body)
    assert root.find(f"{{{SOAP_ENV}}}Header") is None  # nothing to echo
    assert root.findtext(f".//{{{POPULATION_NS}}}givenName") == "Layla"


# -- population registry: faults -----------------------------------------------------------------------------------

async def test_unknown_person_is_a_not_found_fault_with_headers(
        population_url: str, http: aiohttp.ClientSession, soap_client: zeep.Client) -> None:
    envelope = soap_client.create_message(soap_client.service, "getPerson", personCode="12345678901",
                                          _soapheaders=_xroad_headers())
    request = etree.tostring(envelope)
    status, content_type, body = await _post(http, f"{population_url}/population", request)
    assert status == 500
    assert content_type.startswith("text/xml")
    assert _fault(body)[0] == "Server.NotFound"
    # The fault may carry X-Road headers (PR-MESS 2.5); echoing them keeps the gateway's consistency check happy.
    assert [_c14n(el) for el in _header_elements(body)] == [_c14n(el) for el in _header_elements(request)]
    detail = etree.fromstring(body).findtext(".//detail/faultDetail")
    assert detail and len(detail) == 36
    with pytest.raises(zeep.exceptions.Fault) as info:
        _zeep_reply(soap_client, "getPerson", status, content_type, body)
    assert info.value.code == "Server.NotFound"


def _envelope(body: str) -> bytes:
    return (f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:pop="{POPULATION_NS}">'
            f"<SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>").encode()


@pytest.mark.parametrize(("request_body", "content_type", "reason"), [
    (b"", "text/xml", "empty"),
    (b"this is not xml", "text/xml", "well-formed"),
    (b"<a><b></a>", "text/xml", "well-formed"),
    (b'<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Body/></Envelope>', "text/xml", "SOAP 1.2"),
    (b"<foo/>", "text/xml", "Envelope"),
    (f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}"/>'.encode(), "text/xml", "no Body"),
    (_envelope(""), "text/xml", "exactly one"),
    (_envelope("<pop:echo><pop:text/></pop:echo><pop:echo/>"), "text/xml", "exactly one"),
    (_envelope("<pop:getPerson/>"), "text/xml", "personCode"),
    (_envelope("<pop:getPerson><pop:personCode>  </pop:personCode></pop:getPerson>"), "text/xml", "personCode"),
    (_envelope("<pop:echo/>"), "text/xml", "text"),
    (_envelope("<pop:deletePerson/>"), "text/xml", "unknown operation"),
    (_envelope("<getPerson><personCode>90000000001</personCode></getPerson>"), "text/xml", "unknown operation"),
    (_envelope("<pop:echo><pop:text>x</pop:text></pop:echo>"), "application/json", "Content-Type"),
    (_envelope("<pop:echo><pop:text>x</pop:text></pop:echo>"), "multipart/related; boundary=x", "attachments"),
])
async def test_malformed_requests_are_client_faults(population_url: str, http: aiohttp.ClientSession,
                                                    request_body: bytes, content_type: str, reason: str) -> None:
    status, _, body = await _post(http, f"{population_url}/population", request_body, {"Content-Type": content_type})
    assert status == 500
    code, message = _fault(body)
    assert code == "Client.BadRequest"
    assert reason in message


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">
 <SOAP-ENV:Body><pop:echo xmlns:pop="http://population.demo.wasl.example/"><pop:text>&lol9;</pop:text></pop:echo>
 </SOAP-ENV:Body>
</SOAP-ENV:Envelope>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE e [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> <!ENTITY net SYSTEM "http://127.0.0.1:9/x"> ]>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">
 <SOAP-ENV:Body><pop:echo xmlns:pop="http://population.demo.wasl.example/"><pop:text>&xxe;&net;</pop:text></pop:echo>
 </SOAP-ENV:Body>
</SOAP-ENV:Envelope>"""


@pytest.mark.parametrize("bomb", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
async def test_xml_bombs_are_refused_without_expansion(population_url: str, http: aiohttp.ClientSession,
                                                       bomb: bytes) -> None:
    started = time.monotonic()
    status, _, body = await _post(http, f"{population_url}/population", bomb)
    assert time.monotonic() - started < 2.0
    assert status == 500
    code, message = _fault(body)
    assert code == "Client.BadRequest"
    # libxml2 may already stop the bomb at parse time (amplification limit); otherwise the DTD check refuses it.
    assert "DTD" in message or "amplification" in message
    assert len(body) < 2000  # nothing expanded made it into the answer
    assert b"lollol" not in body and b"root:" not in body


def test_parser_never_expands_entities() -> None:
    # Below the HTTP layer too: even if the DTD check were removed, entities would stay unexpanded.
    for bomb in (BILLION_LAUGHS, EXTERNAL_ENTITY):
        with pytest.raises(SoapFault, match=r"DTD|amplification"):
            parse_soap(bomb)
        try:
            parsed = etree.tostring(etree.fromstring(bomb, backends._parser()))
        except etree.XMLSyntaxError:
            continue  # refused outright, which is just as safe
        assert len(parsed) < 2000
        assert b"root:" not in parsed and b"lollol" not in parsed


# -- tax records (REST) --------------------------------------------------------------------------------------------

async def test_get_taxpayer(tax_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{tax_url}/taxpayers/90000000002") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == {"code": "90000000002", "name": "Omar Saleh", "year": 2024,
                                     "declaredIncome": 61950}


async def test_unknown_taxpayer_and_route_are_json_404(tax_url: str, http: aiohttp.ClientSession) -> None:
    for path in ("/taxpayers/nobody", "/no/such/route"):
        async with http.get(f"{tax_url}{path}") as resp:
            assert resp.status == 404
            assert resp.content_type == "application/json"
            assert (await resp.json())["error"] == "NotFound"
    async with http.delete(f"{tax_url}/taxpayers") as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert (await resp.json())["error"] == "MethodNotAllowed"


async def test_list_taxpayers_with_year_filter(tax_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{tax_url}/taxpayers") as resp:
        everyone = (await resp.json())["taxpayers"]
    assert len(everyone) == 5
    async with http.get(f"{tax_url}/taxpayers", params={"year": "2023"}) as resp:
        assert resp.status == 200
        in_2023 = (await resp.json())["taxpayers"]
    assert {t["code"] for t in in_2023} == {"90000000003", "90000000005"}
    assert all(t["year"] == 2023 for t in in_2023)
    async with http.get(f"{tax_url}/taxpayers", params={"year": "1900"}) as resp:
        assert (await resp.json())["taxpayers"] == []
    async with http.get(f"{tax_url}/taxpayers", params={"year": "last"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "BadRequest"


async def test_post_declaration_echoes_with_id(tax_url: str, http: aiohttp.ClientSession) -> None:
    declaration = {"code": "90000000004", "year": 2025, "declaredIncome": 13_500, "note": "ضريبة"}
    async with http.post(f"{tax_url}/declarations", json=declaration) as resp:
        assert resp.status == 201
        receipt = await resp.json()
        assert resp.headers["Location"] == f"/declarations/{receipt['id']}"
    assert receipt["declaration"] == declaration
    assert len(receipt["id"]) == 36
    async with http.post(f"{tax_url}/declarations", json=declaration) as resp:
        assert (await resp.json())["id"] != receipt["id"]


@pytest.mark.parametrize("payload", [b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'"text"'])
async def test_post_declaration_rejects_bad_bodies(tax_url: str, http: aiohttp.ClientSession, payload: bytes) -> None:
    async with http.post(f"{tax_url}/declarations", data=payload,
                         headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"] == "BadRequest"


async def test_openapi_document_matches_the_routes(tax_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{tax_url}/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    described = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    served = {(route.method, route.resource.canonical) for route in make_tax_app().router.routes()
              if route.method != "HEAD" and route.resource is not None
              and route.resource.canonical != "/openapi.json"}
    assert described == served
    refs = {ref.rsplit("/", 1)[1] for ref in _refs(doc)}
    assert refs <= set(doc["components"]["schemas"])


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


# -- misbehaving endpoints -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_hang_times_out_and_the_handler_stops(http: aiohttp.ClientSession, method: str) -> None:
    runner, port = await start_app(make_faulty_app())
    try:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            async with http.request(method, f"http://127.0.0.1:{port}/hang", data=b"{}",
                                    timeout=aiohttp.ClientTimeout(total=0.5)):
                pass
        assert time.monotonic() - started < 1.5
    finally:
        started = time.monotonic()
        await runner.cleanup()
        # The hanging handler noticed its client left, so shutdown did not wait the full 30 s (or its 2 s cap).
        assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_reset_drops_the_connection(faulty_url: str, http: aiohttp.ClientSession, method: str) -> None:
    with pytest.raises(aiohttp.ClientError) as info:
        async with http.request(method, f"{faulty_url}/reset", data=b"x") as resp:
            await resp.read()
    assert isinstance(info.value, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)


async def test_not_json_lies_about_its_content_type(faulty_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{faulty_url}/not-json") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert (await resp.text()).startswith("<!DOCTYPE html>")
        with pytest.raises(json.JSONDecodeError):
            await resp.json()


async def test_soap_fault_endpoint(faulty_url: str, http: aiohttp.ClientSession, soap_client: zeep.Client) -> None:
    async with http.get(f"{faulty_url}/soap-fault") as resp:
        assert resp.status == 500
        assert resp.content_type == "text/xml"
        body = await resp.read()
    assert _fault(body)[0] == "Server.DemoFault"
    assert _header_elements(body) == []
    request = etree.tostring(soap_client.create_message(soap_client.service, "echo", text="hi",
                                                        _soapheaders=_xroad_headers("echo")))
    status, _, body = await _post(http, f"{faulty_url}/soap-fault", request)
    assert status == 500
    assert _fault(body)[0] == "Server.DemoFault"
    assert [_c14n(el) for el in _header_elements(body)] == [_c14n(el) for el in _header_elements(request)]


async def test_slow(faulty_url: str, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    async with http.post(f"{faulty_url}/slow", params={"ms": "150"}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"sleptMs": 150}
    assert time.monotonic() - started >= 0.14
    monkeypatch.setattr(backends, "SLOW_MAX_MS", 20)
    async with http.get(f"{faulty_url}/slow", params={"ms": "999999"}) as resp:
        assert await resp.json() == {"sleptMs": 20}
    for bad in ("soon", "-5"):
        async with http.get(f"{faulty_url}/slow", params={"ms": bad}) as resp:
            assert resp.status == 400


async def test_start_app_binds_loopback_on_a_free_port() -> None:
    first, port1 = await start_app(make_tax_app())
    second, port2 = await start_app(make_tax_app())
    try:
        assert port1 > 0 and port2 > 0 and port1 != port2
        assert first.addresses[0][0] == "127.0.0.1"
    finally:
        await first.cleanup()
        await second.cleanup()
