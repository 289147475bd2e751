"""Demo backend services behind the gateway: an X-Road SOAP population registry, a REST tax service, and
deliberately misbehaving endpoints for tests."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import socket
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from aiohttp import web
from lxml import etree

log = logging.getLogger(__name__)

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XROAD = "http://x-road.eu/xsd/xroad.xsd"
IDEN = "http://x-road.eu/xsd/identifiers"
POPULATION_NS = "http://population.demo.wasl.example/"
POPULATION_WSDL_PATH = Path(__file__).with_name("population.wsdl")

MAX_REQUEST_BYTES = 1024 * 1024
HANG_SECONDS = 30.0
SLOW_MAX_MS = 5000

_ENVELOPE = f"{{{SOAP_ENV}}}Envelope"
_HEADER = f"{{{SOAP_ENV}}}Header"
_BODY = f"{{{SOAP_ENV}}}Body"
_FAULT = f"{{{SOAP_ENV}}}Fault"
_XML_TYPES = frozenset({"text/xml", "application/xml"})
_SOAP_CONTENT_TYPE = "text/xml; charset=utf-8"


# -- SOAP plumbing -------------------------------------------------------------------------------------------------

class SoapFault(Exception):
    """A fault the service answers with; ``headers`` are the request's SOAP headers to echo, if it had any."""

    def __init__(self, code: str, message: str, headers: Sequence[etree._Element] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers


def _parser() -> etree.XMLParser:
    # A backend must not be the weak link: no entity expansion, no DTD loading, no network, no huge trees.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def parse_soap(data: bytes) -> tuple[list[etree._Element], etree._Element]:
    """Parse an untrusted SOAP 1.1 request into (header elements in order, the single Body child)."""
    if not data.strip():
        raise SoapFault("Client.BadRequest", "request body is empty")
    try:
        # A fresh parser per call: lxml parsers are not safe to share across threads, and this costs little.
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise SoapFault("Client.BadRequest", f"request is not well-formed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        # Unexpanded entities would silently drop content, so any DTD is refused outright (SOAP 1.1 forbids it too).
        raise SoapFault("Client.BadRequest", "request must not contain a DTD or entity declarations")
    if root.tag == f"{{{SOAP12_ENV}}}Envelope":
        raise SoapFault("Client.BadRequest", "SOAP 1.2 is not supported; X-Road uses SOAP 1.1")
    if root.tag != _ENVELOPE:
        raise SoapFault("Client.BadRequest", "root element must be a SOAP 1.1 Envelope")
    header_el = root.find(_HEADER)
    headers = [el for el in header_el if isinstance(el.tag, str)] if header_el is not None else []
    body = root.find(_BODY)
    if body is None:
        raise SoapFault("Client.BadRequest", "SOAP Envelope has no Body", headers)
    children = [el for el in body if isinstance(el.tag, str)]
    if len(children) != 1:
        raise SoapFault("Client.BadRequest", "SOAP Body must hold exactly one element", headers)
    return headers, children[0]


def soap_envelope(headers: Iterable[etree._Element], payload: etree._Element) -> bytes:
    """Wrap ``payload`` in an Envelope whose Header repeats ``headers`` verbatim and in order (PR-MESS 2.2)."""
    root = etree.Element(_ENVELOPE, nsmap={"SOAP-ENV": SOAP_ENV})
    headers = list(headers)
    if headers:
        header = etree.SubElement(root, _HEADER)
        for el in headers:
            header.append(copy.deepcopy(el))
    etree.SubElement(root, _BODY).append(payload)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def soap_fault_response(fault: SoapFault) -> web.Response:
    """A SOAP 1.1 Fault in X-Road's shape, sent with HTTP 500 as SOAP 1.1 requires."""
    el = etree.Element(_FAULT)
    # X-Road writes fault codes unprefixed (Server.X), so callers match them as plain strings.
    etree.SubElement(el, "faultcode").text = fault.code
    etree.SubElement(el, "faultstring").text = fault.message
    detail_id = str(uuid.uuid4())
    etree.SubElement(etree.SubElement(el, "detail"), "faultDetail").text = detail_id
    log.info("SOAP fault %s (%s): %s", fault.code, detail_id, fault.message)
    return web.Response(status=500, body=soap_envelope(fault.headers, el), content_type="text/xml",
                        charset="utf-8")


def _child_text(wrapper: etree._Element, name: str) -> str | None:
    # The schema is qualified, but hand-written clients often leave children unqualified; accept both.
    for el in wrapper:
        if isinstance(el.tag, str):
            q = etree.QName(el)
            if q.localname == name and q.namespace in (POPULATION_NS, None):
                return el.text or ""
    return None


# -- population registry (SOAP) ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Person:
    """One record of the (fictional) population registry."""

    person_code: str
    given_name: str
    family_name: str
    date_of_birth: date


# Codes start with 9, which no real national scheme we mimic issues, so they cannot name a real person.
PEOPLE: dict[str, Person] = {p.person_code: p for p in (
    Person("90000000001", "Layla", "Haddad", date(1984, 3, 12)),
    Person("90000000002", "Omar", "Saleh", date(1979, 11, 2)),
    Person("90000000003", "Mari", "Kask", date(1992, 7, 30)),
    Person("90000000004", "Jonas", "Lind", date(2001, 1, 5)),
    Person("90000000005", "Noor", "Farah", date(1966, 9, 21)),
)}


def _pop(name: str) -> str:
    return f"{{{POPULATION_NS}}}{name}"


def _get_person(request_el: etree._Element, headers: Sequence[etree._Element]) -> etree._Element:
    code = _child_text(request_el, "personCode")
    if code is None or not code.strip():
        raise SoapFault("Client.BadRequest", "getPerson needs a non-empty personCode", headers)
    person = PEOPLE.get(code.strip())
    if person is None:
        raise SoapFault("Server.NotFound", f"no person with code {code.strip()!r}", headers)
    response = etree.Element(_pop("getPersonResponse"), nsmap={"pop": POPULATION_NS})
    person_el = etree.SubElement(response, _pop("person"))
    for name, value in (("personCode", person.person_code), ("givenName", person.given_name),
                        ("familyName", person.family_name), ("dateOfBirth", person.date_of_birth.isoformat())):
        etree.SubElement(person_el, _pop(name)).text = value
    return response


def _echo(request_el: etree._Element, headers: Sequence[etree._Element]) -> etree._Element:
    text = _child_text(request_el, "text")
    if text is None:
        raise SoapFault("Client.BadRequest", "echo needs a text element", headers)
    response = etree.Element(_pop("echoResponse"), nsmap={"pop": POPULATION_NS})
    etree.SubElement(response, _pop("text")).text = text
    return response


_OPERATIONS = {"getPerson": _get_person, "echo": _echo}
_WSDL_KEY = web.AppKey("population_wsdl", bytes)


def _check_content_type(request: web.Request) -> None:
    raw = request.headers.get("Content-Type")
    if raw is None:
        return  # lenient: some hand-rolled clients send none, and the body still has to parse as SOAP
    if request.content_type.startswith("multipart/"):
        raise SoapFault("Client.BadRequest", "attachments are not supported by this service")
    if request.content_type not in _XML_TYPES:
        raise SoapFault("Client.BadRequest", f"Content-Type must be text/xml, not {request.content_type!r}")


async def _population_post(request: web.Request) -> web.Response:
    try:
        _check_content_type(request)
        headers, request_el = parse_soap(await request.read())
        q = etree.QName(request_el)
        operation = _OPERATIONS.get(q.localname) if q.namespace == POPULATION_NS else None
        if operation is None:
            raise SoapFault("Client.BadRequest", f"unknown operation {{{q.namespace or ''}}}{q.localname}", headers)
        payload = operation(request_el, headers)
    except SoapFault as fault:
        return soap_fault_response(fault)
    return web.Response(body=soap_envelope(headers, payload), content_type="text/xml", charset="utf-8")


async def _population_get(request: web.Request) -> web.Response:
    if any(key.lower() == "wsdl" for key in request.query):
        return web.Response(body=request.app[_WSDL_KEY], content_type="text/xml", charset="utf-8")
    raise web.HTTPBadRequest(text="POST a SOAP request here, or GET ?wsdl for the service description\n")



def make_population_app() -> web.Application:
    """The population registry: POST /population (X-Road SOAP) and GET /population?wsdl."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    # Read once at build time so a missing file fails the demo at start-up, not on the first ?wsdl.
    app[_WSDL_KEY] = POPULATION_WSDL_PATH.read_bytes()
    app.router.add_post("/population", _population_post)
    app.router.add_get("/population", _population_get)
    return app


# -- legacy civil registry (plain SOAP, no X-Road) -----------------------------------------------------------------

LEGACY_NS = "urn:civil:legacy"
LEGACY_WSDL_PATH = Path(__file__).with_name("legacy_civil.wsdl")
LEGACY_SOAP_ACTION = "urn:civil:legacy/FindCitizen"
_LEGACY_WSDL_KEY = web.AppKey("legacy_wsdl", bytes)


def _legacy(name: str) -> str:
    return f"{{{LEGACY_NS}}}{name}"


async def _legacy_post(request: web.Request) -> web.Response:
    """FindCitizen by nationalId. Like many systems of its age it refuses SOAP headers it does not know (X-Road's
    included) and dispatches on SOAPAction, so it only works behind an adapter that takes care of both."""
    try:
        _check_content_type(request)
        headers, request_el = parse_soap(await request.read())
        if headers:
            raise SoapFault("Client", f"unexpected SOAP header {etree.QName(headers[0]).localname}")
        if request.headers.get("SOAPAction", "").strip('"') != LEGACY_SOAP_ACTION:
            raise SoapFault("Client", f"unknown SOAPAction {request.headers.get('SOAPAction', '')!r}")
        if request_el.tag != _legacy("FindCitizen"):
            raise SoapFault("Client", f"unknown request element {request_el.tag}")
        code = (request_el.findtext(_legacy("nationalId")) or "").strip()
        person = PEOPLE.get(code)
        if person is None:
            raise SoapFault("Server", f"no citizen with national id {code!r}")
    except SoapFault as fault:
        return soap_fault_response(fault)
    result = etree.Element(_legacy("FindCitizenResult"), nsmap={"civ": LEGACY_NS})
    etree.SubElement(result, _legacy("fullName")).text = f"{person.given_name} {person.family_name}"
    etree.SubElement(result, _legacy("born")).text = person.date_of_birth.isoformat()
    return web.Response(body=soap_envelope((), result), content_type="text/xml", charset="utf-8")


async def _legacy_get(request: web.Request) -> web.Response:
    if any(key.lower() == "wsdl" for key in request.query):
        return web.Response(body=request.app[_LEGACY_WSDL_KEY], content_type="text/xml", charset="utf-8")
    raise web.HTTPBadRequest(text="POST a SOAP request here, or GET ?wsdl\n")


def make_legacy_civil_app() -> web.Application:
    """A legacy civil registry: POST /civil (plain SOAP 1.1, no X-Road headers) and GET /civil?wsdl."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[_LEGACY_WSDL_KEY] = LEGACY_WSDL_PATH.read_bytes()
    app.router.add_post("/civil", _legacy_post)
    app.router.add_get("/civil", _legacy_get)
    return app


# -- tax records (REST/JSON) ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TaxRecord:
    """One taxpayer's latest declaration in the (fictional) tax register."""

    code: str
    name: str
    year: int
    declared_income: int  # whole currency units: integers keep JSON round-trips exact

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "year": self.year, "declaredIncome": self.declared_income}


# Same codes as the population registry, so the demo can join the two services on one person.
TAXPAYERS: dict[str, TaxRecord] = {r.code: r for r in (
    TaxRecord("90000000001", "Layla Haddad", 2024, 54_300),
    TaxRecord("90000000002", "Omar Saleh", 2024, 61_950),
    TaxRecord("90000000003", "Mari Kask", 2023, 38_400),
    TaxRecord("90000000004", "Jonas Lind", 2024, 12_000),
    TaxRecord("90000000005", "Noor Farah", 2023, 72_125),
)}

_ERROR_SCHEMA = {"type": "object", "required": ["error", "message"],
                 "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}
_TAXPAYER_SCHEMA = {
    "type": "object", "required": ["code", "name", "year", "declaredIncome"],
    "properties": {"code": {"type": "string"}, "name": {"type": "string"}, "year": {"type": "integer"},
                   "declaredIncome": {"type": "integer", "description": "whole currency units"}},
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


TAX_OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Tax records (demo)", "version": "1.0.0",
             "description": "Fictional tax register served behind the Wasl gateway demo."},
    "paths": {
        "/taxpayers": {"get": {
            "operationId": "listTaxpayers", "summary": "List taxpayers, optionally for one tax year",
            "parameters": [{"name": "year", "in": "query", "required": False, "schema": {"type": "integer"}}],
            "responses": {
                "200": {"description": "Taxpayers", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["taxpayers"], "properties": {
                        "taxpayers": {"type": "array", "items": {"$ref": "#/components/schemas/Taxpayer"}}}}}}},
                "400": _error_response("The year is not an integer"),
            },
        }},
        "/taxpayers/{code}": {"get": {
            "operationId": "getTaxpayer", "summary": "One taxpayer's latest declaration",
            "parameters": [{"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "The taxpayer", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Taxpayer"}}}},
                "404": _error_response("No taxpayer with that code"),
            },
        }},
        "/declarations": {"post": {
            "operationId": "submitDeclaration", "summary": "Submit a declaration (echoed back with an id)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "201": {"description": "Accepted", "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/DeclarationReceipt"}}}},
                "400": _error_response("The body is not a JSON object"),
            },
        }},
    },
    "components": {"schemas": {
        "Taxpayer": _TAXPAYER_SCHEMA,
        "DeclarationReceipt": {"type": "object", "required": ["id", "declaration"], "properties": {
            "id": {"type": "string", "format": "uuid"}, "declaration": {"type": "object"}}},
        "Error": _ERROR_SCHEMA,
    }},
}


def _json_error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status, headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    # A REST backend answers errors in JSON everywhere, including aiohttp's own 404/405/413.
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        extra = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _json_error(exc.status, exc.reason.replace(" ", ""), exc.text or exc.reason, extra)


async def _get_taxpayer(request: web.Request) -> web.Response:
    record = TAXPAYERS.get(request.match_info["code"])
    if record is None:
        return _json_error(404, "NotFound", f"no taxpayer with code {request.match_info['code']!r}")
    return web.json_response(record.to_json())


async def _list_taxpayers(request: web.Request) -> web.Response:
    year_text = request.query.get("year")
    records: Iterable[TaxRecord] = TAXPAYERS.values()
    if year_text is not None:
        try:
            year = int(year_text)
        except ValueError:
            return _json_error(400, "BadRequest", f"year must be an integer, not {year_text!r}")
        records = (r for r in records if r.year == year)
    return web.json_response({"taxpayers": [r.to_json() for r in records]})


async def _post_declaration(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _json_error(400, "BadRequest", f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return _json_error(400, "BadRequest", "body must be a JSON object")
    declaration_id = str(uuid.uuid4())
    return web.json_response({"id": declaration_id, "declaration": body}, status=201,
                             headers={"Location": f"/declarations/{declaration_id}"})


async def _openapi(_request: web.Request) -> web.Response:
    return web.json_response(TAX_OPENAPI)


def make_tax_app() -> web.Application:
    """The tax register: GET /taxpayers[?year=], GET /taxpayers/{code}, POST /declarations, GET /openapi.json."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_json_errors])
    app.router.add_get("/taxpayers", _list_taxpayers)
    app.router.add_get("/taxpayers/{code}", _get_taxpayer)
    app.router.add_post("/declarations", _post_declaration)
    app.router.add_get("/openapi.json", _openapi)
    return app


# -- misbehaving endpoints (tests only) ----------------------------------------------------------------------------

async def _hang(request: web.Request) -> web.Response:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_SECONDS
    # aiohttp no longer cancels a handler when its client goes away, so watch the connection ourselves; otherwise
    # every timed-out test would leave a 30 s sleeper that holds up the runner's shutdown.
    while loop.time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(0.05)
    return web.json_response({"hung": True})


async def _reset(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 turns close into a TCP RST, so the client sees "connection reset", not a clean EOF.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp treats the failed write of this response as a client disconnect and drops it quietly.
    return web.Response(status=204)


async def _not_json(_request: web.Request) -> web.Response:
    return web.Response(body=b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
                        headers={"Content-Type": "application/json"})


async def _soap_fault(request: web.Request) -> web.Response:
    headers: Sequence[etree._Element] = ()
    if request.can_read_body:
        # A request that is not SOAP still gets a bare fault, which is valid; the gateway adds the headers back.
        with contextlib.suppress(SoapFault):
            headers, _ = parse_soap(await request.read())
    return soap_fault_response(SoapFault("Server.DemoFault", "this endpoint always fails", headers))


async def _slow(request: web.Request) -> web.Response:
    try:
        ms = int(request.query.get("ms", "0"))
    except ValueError:
        return _json_error(400, "BadRequest", "ms must be an integer")
    if ms < 0:
        return _json_error(400, "BadRequest", "ms must not be negative")
    ms = min(ms, SLOW_MAX_MS)
    await asyncio.sleep(ms / 1000)
    return web.json_response({"sleptMs": ms})


def make_faulty_app() -> web.Application:
    """Endpoints that misbehave on purpose (any method): /hang, /reset, /not-json, /soap-fault, /slow?ms=N."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    for path, handler in (("/hang", _hang), ("/reset", _reset), ("/not-json", _not_json),
                          ("/soap-fault", _soap_fault), ("/slow", _slow)):
        app.router.add_route("*", path, handler)
    return app


# -- running -------------------------------------------------------------------------------------------------------

async def start_app(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port (0 picks a free port); returns the runner (call ``cleanup()``) and the port."""
    # A short shutdown timeout: demo handlers hold no state worth waiting for, and tests stop many runners.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound_port
