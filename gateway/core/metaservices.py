"""X-Road metaservices (PR-META, PR-MREST) as pure functions: requests parsed, responses built, lists filtered."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from email.message import Message
from typing import Literal
from urllib.parse import parse_qs

from lxml import etree

from gateway.core import identifiers as ids
from gateway.core import soap
from gateway.core.access import AccessRule, EndpointRule, is_allowed
from gateway.core.faults import Code, Fault, Origin
from gateway.core.globalconf import GlobalConf

LIST_CLIENTS = "listClients"
LIST_METHODS = "listMethods"
ALLOWED_METHODS = "allowedMethods"
GET_WSDL = "getWsdl"
GET_OPENAPI = "getOpenAPI"
SOAP_METASERVICES = frozenset({LIST_METHODS, ALLOWED_METHODS, GET_WSDL})
REST_METASERVICES = frozenset({LIST_METHODS, ALLOWED_METHODS, GET_OPENAPI})
WSDL_USER_ID = "wsdl-request"  # the userId X-Road's client side puts on the getWsdl it sends for GET /wsdl

_X = f"{{{soap.XROAD}}}"
_I = f"{{{soap.IDEN}}}"
_OBJECT_TYPE = f"{_I}objectType"
_NSMAP = {"xrd": soap.XROAD, "id": soap.IDEN}


def metaservice_of(protocol: str, method: str, service_code: str) -> str | None:
    """The metaservice a request to the provider's gateway asks for, if any. REST metaservices are GETs
    (PR-MREST); any other method falls through to the ordinary checks and fails as an unknown service."""
    if protocol == "soap" and service_code in SOAP_METASERVICES:
        return service_code
    if protocol == "rest" and method == "GET" and service_code in REST_METASERVICES:
        return service_code
    return None


# -- the provider's catalogue -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One service as the metaservices describe it."""

    service: ids.ServiceId
    protocol: Literal["soap", "rest"]
    rules: tuple[AccessRule, ...]
    endpoints: tuple[tuple[str, str], ...] = ()  # REST: (method, path) from the OpenAPI document
    has_description: bool = False
    endpoint_rights: tuple[EndpointRule, ...] = ()  # REST: rights to single endpoints

    @property
    def service_type(self) -> str:
        """X-Road's description type: WSDL for SOAP; OPENAPI or REST (a bare base URL) for REST."""
        if self.protocol == "soap":
            return "WSDL"
        return "OPENAPI" if self.has_description else "REST"


_STAR = re.compile(r"\{[^/{}]*\}")


def allowed_entries(entries: Iterable[CatalogueEntry], client_path: str, groups: frozenset[str],
                    instance: str) -> list[CatalogueEntry]:
    """allowedMethods: only what the caller may call, by the same rules the provider's gateway enforces. A REST
    service the caller may use only in part is listed with just those endpoints."""
    out = []
    for e in entries:
        if is_allowed(e.rules, client_path, groups, instance):
            out.append(e)
            continue
        granted = [r for r in e.endpoint_rights if is_allowed(r.rules, client_path, groups, instance)]
        if granted:
            # The described endpoints the grants cover (a listed "*" segment stands for any value), else the
            # granted patterns themselves, in X-Road's notation.
            covered = [(m, p) for m, p in e.endpoints if any(r.covers(m, p.replace("*", "_")) for r in granted)]
            endpoints = covered or [(r.method, _STAR.sub("*", r.path)) for r in granted]
            out.append(replace(e, endpoints=tuple(endpoints)))
    return out


# -- listClients (client side, from the global configuration) --------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClientInfo:
    id: ids.ClientId
    name: str


def client_list(conf: GlobalConf, instance: str | None) -> list[ClientInfo]:
    """Every member and subsystem of ``instance`` (default: ours). Other instances are not federated with
    ours, so they have no clients to list."""
    if instance is not None and instance != conf.instance:
        return []
    out: list[ClientInfo] = []
    for member in conf.document.members:
        member_id = ids.MemberId(conf.instance, member.member_class, member.member_code)
        out.append(ClientInfo(member_id, member.name))
        for sub in member.subsystems:
            out.append(ClientInfo(ids.SubsystemId(conf.instance, member.member_class, member.member_code, sub.code),
                                  member.name))
    return out


def _id_children(el: etree._Element, parts: Iterable[tuple[str, str | None]]) -> None:
    for name, value in parts:
        if value is not None:
            etree.SubElement(el, f"{_I}{name}").text = value


def _client_parts(client: ids.ClientId) -> list[tuple[str, str | None]]:
    return [("xRoadInstance", client.instance), ("memberClass", client.member_class),
            ("memberCode", client.member_code),
            ("subsystemCode", client.subsystem_code if isinstance(client, ids.SubsystemId) else None)]


def client_list_xml(clients: Iterable[ClientInfo]) -> bytes:
    """PR-META Annex A ``clientList``."""
    root = etree.Element(f"{_X}clientList", nsmap=_NSMAP)
    for info in clients:
        member = etree.SubElement(root, f"{_X}member")
        id_el = etree.SubElement(member, f"{_X}id")
        id_el.set(_OBJECT_TYPE, info.id.object_type.value)
        _id_children(id_el, _client_parts(info.id))
        etree.SubElement(member, f"{_X}name").text = info.name
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def client_list_json(clients: Iterable[ClientInfo]) -> bytes:
    """PR-META Annex B: ``{"member": [{"id": {...}, "name": ...}]}`` with snake_case identifier fields."""
    members = []
    for info in clients:
        id_json = {"member_class": info.id.member_class, "member_code": info.id.member_code,
                   "object_type": info.id.object_type.value, "xroad_instance": info.id.instance}
        if isinstance(info.id, ids.SubsystemId):
            id_json["subsystem_code"] = info.id.subsystem_code
        members.append({"id": id_json, "name": info.name})
    return json.dumps({"member": members}, ensure_ascii=False).encode()


# -- SOAP listMethods / allowedMethods / getWsdl (provider side) -----------------------------------------------

def service_element(tag: str, service: ids.ServiceId) -> etree._Element:
    el = etree.Element(tag)
    el.set(_OBJECT_TYPE, "SERVICE")
    _id_children(el, [("xRoadInstance", service.instance), ("memberClass", service.member_class),
                      ("memberCode", service.member_code), ("subsystemCode", service.subsystem_code),
                      ("serviceCode", service.service_code), ("serviceVersion", service.service_version)])
    return el


def method_list_element(metaservice: str, entries: Iterable[CatalogueEntry]) -> etree._Element:
    """``listMethodsResponse`` / ``allowedMethodsResponse``: one ``xrd:service`` per SOAP service."""
    root = etree.Element(f"{_X}{metaservice}Response", nsmap=_NSMAP)
    for entry in entries:
        if entry.protocol == "soap":
            root.append(service_element(f"{_X}service", entry.service))
    return root


def parse_get_wsdl(body_element: etree._Element) -> tuple[str, str | None]:
    """``getWsdl{serviceCode, serviceVersion?}``; children are read namespace-blind, as X-Road's JAXB does."""
    values: dict[str, str] = {}
    for child in body_element:
        if isinstance(child.tag, str):
            values[etree.QName(child).localname] = (child.text or "").strip()
    code = values.get("serviceCode", "")
    if not code:
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, "Missing serviceCode in message body")
    version = values.get("serviceVersion") or None
    try:
        ids.check_part("serviceCode", code)
        if version is not None:
            ids.check_part("serviceVersion", version)
    except ids.IdentifierError as exc:
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"getWsdl: {exc}") from None
    return code, version


def get_wsdl_response_element(body_element: etree._Element) -> etree._Element:
    """X-Road answers getWsdl with the request body renamed ``getWsdlResponse`` (SoapUtils.toResponse)."""
    out = copy.deepcopy(body_element)
    qname = etree.QName(body_element)
    out.tag = f"{{{qname.namespace}}}{qname.localname}Response" if qname.namespace else f"{qname.localname}Response"
    return out


def soap_response(request: soap.SoapMessage, body_element: etree._Element, request_hash: str) -> bytes:
    """A metaservice response: the request's X-Road headers echoed in order, ``requestHash`` set."""
    root = etree.Element(f"{{{soap.SOAP_ENV}}}Envelope", nsmap={"SOAP-ENV": soap.SOAP_ENV, **_NSMAP})
    header = etree.SubElement(root, f"{{{soap.SOAP_ENV}}}Header")
    for el in request.header:
        if isinstance(el.tag, str) and el.tag.startswith(_X):
            header.append(copy.deepcopy(el))
    etree.SubElement(root, f"{{{soap.SOAP_ENV}}}Body").append(body_element)
    response = soap.SoapMessage(request.client, request.service, request.xroad_id, request.protocol_version,
                                request.user_id, request.issue, request.security_server, root, header,
                                body_element, False)
    return soap.bind_response(response, request, request_hash)


# -- SOAP with attachments (multipart/related), for getWsdl -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class Part:
    headers: dict[str, str]  # lower-case names
    body: bytes


def multipart_related(soap_part: bytes, attachment: bytes, attachment_type: str = "text/xml") -> tuple[str, bytes]:
    """SwA: the SOAP part first, then the attachment, as X-Road's getWsdl response carries the WSDL."""
    boundary = f"xroad{uuid.uuid4().hex}"
    while boundary.encode() in soap_part or boundary.encode() in attachment:  # practically never
        boundary = f"xroad{uuid.uuid4().hex}"
    content_id = f"<wsdl={uuid.uuid4()}@x-road.eu>"
    body = b"".join([
        f"--{boundary}\r\nContent-Type: text/xml; charset=UTF-8\r\n\r\n".encode(), soap_part,
        f"\r\n--{boundary}\r\nContent-Type: {attachment_type}\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: {content_id}\r\n\r\n".encode(), attachment,
        f"\r\n--{boundary}--\r\n".encode(),
    ])
    return f'multipart/related; type="text/xml"; charset=UTF-8; boundary={boundary}', body


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a multipart body into parts; raises ValueError when it is not well-formed."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ValueError("multipart message has no boundary")
    delimiter = b"\r\n--" + boundary.encode()
    segments = (b"\r\n" + body).split(delimiter)
    parts: list[Part] = []
    closed = False
    for segment in segments[1:]:  # segment 0 is the preamble
        if segment.startswith(b"--"):
            closed = True
            break
        _, _, segment = segment.partition(b"\r\n")  # transport padding after the delimiter
        head, sep, content = segment.partition(b"\r\n\r\n")
        if not sep:
            if head.strip():
                raise ValueError("multipart part has no blank line after its headers")
            content = b""
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append(Part(headers, content))
    if not closed or not parts:
        raise ValueError("multipart message is not closed by its final boundary")
    return parts


def wsdl_from_response(status: int, content_type: str, body: bytes) -> bytes:
    """The WSDL attachment of a getWsdl response; a SOAP fault from the provider becomes a ``Fault``."""
    if content_type.lower().startswith("multipart/related"):
        try:
            parts = parse_multipart(content_type, body)
        except ValueError as exc:
            raise Fault(Origin.CLIENT_PROXY, Code.INVALID_SOAP, f"getWsdl response: {exc}") from None
        if len(parts) >= 2:
            return parts[1].body
        body = parts[0].body
    try:
        message = soap.parse_message(body, Origin.SERVER_PROXY, expect_request=False)
    except Fault as fault:
        raise Fault(Origin.CLIENT_PROXY, Code.INVALID_SOAP, f"getWsdl response: {fault.message}") from None
    soap_fault = soap.fault_of(message)
    if soap_fault is not None:
        raise fault_from_soap(*soap_fault)
    raise Fault(Origin.CLIENT_PROXY, Code.INVALID_SOAP, f"getWsdl response (HTTP {status}) has no WSDL attachment")


def fault_from_soap(code: str, message: str) -> Fault:
    """Rebuild a federation fault from a SOAP faultcode, keeping its origin prefix."""
    for origin in (Origin.CLIENT_PROXY, Origin.SERVER_PROXY, Origin.CLIENT):
        if code.startswith(origin.value + "."):
            return Fault(origin, code[len(origin.value) + 1:], message)
    return Fault(Origin.SERVER_PROXY, Code.SERVICE_FAILED, f"{code}: {message}")


def get_wsdl_request(client: ids.ClientId, target: ids.ServiceId, xroad_id: str) -> bytes:
    """The getWsdl request X-Road's client side sends for GET /wsdl: from the gateway's owner, to the
    provider, carrying the target's version in the service header as X-Road does."""
    meta = ids.ServiceId(target.instance, target.member_class, target.member_code, target.subsystem_code, GET_WSDL,
                         target.service_version)
    body = etree.Element(f"{_X}{GET_WSDL}", nsmap=_NSMAP)
    etree.SubElement(body, f"{_X}serviceCode").text = target.service_code
    if target.service_version is not None:
        etree.SubElement(body, f"{_X}serviceVersion").text = target.service_version
    return soap.build_request(client, meta, xroad_id, body, user_id=WSDL_USER_ID)


# As X-Road's WSDL request processor: subsystemCode and version may be left out (a member-level service).
_WSDL_QUERY = (("xRoadInstance", True), ("memberClass", True), ("memberCode", True), ("subsystemCode", False),
               ("serviceCode", True), ("version", False))


def wsdl_query(query: Mapping[str, str]) -> ids.ServiceId:
    """The service named by ``/wsdl?xRoadInstance=&memberClass=&memberCode=&subsystemCode=&serviceCode=&version=``."""
    values: dict[str, str | None] = {}
    for name, required in _WSDL_QUERY:
        value = query.get(name) or None
        if value is None and required:
            raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"Must specify {name}")
        values[name] = value
    try:
        return ids.ServiceId(values["xRoadInstance"] or "", values["memberClass"] or "", values["memberCode"] or "",
                             values["subsystemCode"], values["serviceCode"] or "", values["version"])
    except ids.IdentifierError as exc:
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, str(exc)) from None


# -- REST listMethods / allowedMethods / getOpenAPI (provider side) --------------------------------------------

def rest_method_list(entries: Iterable[CatalogueEntry]) -> bytes:
    """PR-MREST: ``{"service": [...]}`` of REST services with their endpoints, X-Road's snake_case names."""
    services = []
    for entry in entries:
        if entry.protocol != "rest":
            continue
        s = entry.service
        item: dict[str, object] = {"member_class": s.member_class, "member_code": s.member_code,
                                   "object_type": "SERVICE", "service_code": s.service_code,
                                   "service_type": entry.service_type, "subsystem_code": s.subsystem_code,
                                   "xroad_instance": s.instance}
        if s.service_version is not None:
            item["service_version"] = s.service_version
        item["endpoint_list"] = [{"method": m, "path": p} for m, p in entry.endpoints]
        services.append(item)
    return json.dumps({"service": services}, ensure_ascii=False).encode()


def openapi_service_code(query: str) -> str:
    """``getOpenAPI?serviceCode=X``; X-Road matches the parameter name case-insensitively, last one wins."""
    code = ""
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name.lower() == "servicecode" and values:
            code = values[-1]
    if not code:
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, "Missing serviceCode in the query")
    try:
        return ids.check_part("serviceCode", code)
    except ids.IdentifierError as exc:
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"getOpenAPI: {exc}") from None
