"""X-Road message protocol 4.0 over SOAP 1.1: safe parsing, header extraction, and response binding."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache

from lxml import etree

from gateway.core import identifiers as ids
from gateway.core.faults import Code, Fault, Origin

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XROAD = "http://x-road.eu/xsd/xroad.xsd"
IDEN = "http://x-road.eu/xsd/identifiers"
REPR = "http://x-road.eu/xsd/representation.xsd"
PROTOCOL_VERSION = "4.0"
SHA512_URI = "http://www.w3.org/2001/04/xmlenc#sha512"

_ENVELOPE = f"{{{SOAP_ENV}}}Envelope"
_HEADER = f"{{{SOAP_ENV}}}Header"
_BODY = f"{{{SOAP_ENV}}}Body"
_FAULT = f"{{{SOAP_ENV}}}Fault"
_OBJECT_TYPE = f"{{{IDEN}}}objectType"
_KNOWN_HEADERS = frozenset({"client", "service", "id", "userId", "issue", "protocolVersion", "securityServer",
                            "requestHash", "centralService"})


class _RefuseExternal(etree.Resolver):
    """libxml2 still asks for an external DTD subset or parameter entity before a DTD can be refused;
    answering with an error means no local file is ever opened (a FIFO could block the loop, and the fault
    message could reveal whether a file exists)."""

    def resolve(self, system_url, public_id, context):  # type: ignore[no-untyped-def]
        raise etree.XMLSyntaxError("external resources are not allowed", 0, 0, 0)


def _parser() -> etree.XMLParser:
    # No entities, no DTD, no network, no huge trees: XML bombs and XXE cannot get through.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                             remove_comments=False, collect_ids=False)
    parser.resolvers.add(_RefuseExternal())
    return parser


_PARSER = _parser()


def parse_xml(data: bytes, origin: Origin = Origin.CLIENT, what: str = "SOAP message") -> etree._Element:
    """Parse untrusted XML safely; a DTD of any kind is refused rather than ignored."""
    # Refused before the parser runs, so no DTD (internal or external) is ever processed.
    if b"<!DOCTYPE" in data or b"<\x00!\x00D\x00O\x00C" in data or b"\x00<\x00!\x00D\x00O\x00C" in data:
        raise Fault(origin, Code.INVALID_SOAP, f"{what} must not contain a DTD or entity declarations")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise Fault(origin, Code.INVALID_SOAP, f"{what} is not well-formed XML: {exc.msg}") from None
    except ValueError as exc:  # e.g. a unicode string with an encoding declaration
        raise Fault(origin, Code.INVALID_SOAP, f"{what} could not be read: {exc}") from None
    if root.getroottree().docinfo.internalDTD is not None or root.getroottree().docinfo.doctype:
        raise Fault(origin, Code.INVALID_SOAP, f"{what} must not contain a DTD or entity declarations")
    return root


@dataclass(slots=True)
class SoapMessage:
    """An X-Road SOAP message: its identifiers and the parsed tree (kept so nothing is parsed twice)."""

    client: ids.ClientId | None  # None only in a bare SOAP Fault from a service
    service: ids.ServiceId | None
    xroad_id: str
    protocol_version: str
    user_id: str | None
    issue: str | None
    security_server: ids.ServerId | None
    root: etree._Element
    header: etree._Element
    body_element: etree._Element
    is_fault: bool


def _text(el: etree._Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    return el.text.strip()


_IDEN_PREFIX = f"{{{IDEN}}}"
_XROAD_PREFIX = f"{{{XROAD}}}"


def _id_parts(el: etree._Element, origin: Origin, what: str, allowed: tuple[str, ...], code: Code) -> dict[str, str]:
    parts: dict[str, str] = {}
    for child in el:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        # Plain string work: this runs for every message, and etree.QName objects cost more than the parse.
        local = tag[len(_IDEN_PREFIX):] if tag.startswith(_IDEN_PREFIX) else None
        if local is None or local not in allowed:
            raise Fault(origin, code, f"{what} header has unexpected element {etree.QName(child).localname}")
        if local in parts:
            raise Fault(origin, Code.DUPLICATE_HEADER_FIELD, f"{what} header repeats {local}")
        text = child.text
        parts[local] = text.strip() if text else ""
    return parts


@lru_cache(maxsize=4096)
def _client(object_type: str | None, instance: str, member_class: str, member_code: str,
            subsystem_code: str | None) -> ids.ClientId | None:
    """The client id for these header values; None for an unknown objectType. Cached, as the same few clients send
    every message and validating the parts costs more than parsing them (an IdentifierError is not cached)."""
    if object_type == "SUBSYSTEM":
        return ids.SubsystemId(instance, member_class, member_code, subsystem_code or "")
    if object_type == "MEMBER":
        if subsystem_code is not None:
            raise ids.IdentifierError("a MEMBER client must not have a subsystemCode")
        return ids.MemberId(instance, member_class, member_code)
    return None


def parse_client_header(el: etree._Element, origin: Origin = Origin.CLIENT) -> ids.ClientId:
    object_type = el.get(_OBJECT_TYPE)
    parts = _id_parts(el, origin, "client", ("xRoadInstance", "memberClass", "memberCode", "subsystemCode"),
                      Code.INVALID_CLIENT_IDENTIFIER)
    try:
        client = _client(object_type, parts.get("xRoadInstance", ""), parts.get("memberClass", ""),
                         parts.get("memberCode", ""), parts.get("subsystemCode"))
    except ids.IdentifierError as exc:
        raise Fault(origin, Code.INVALID_CLIENT_IDENTIFIER, f"client header: {exc}") from None
    if client is None:
        raise Fault(origin, Code.INVALID_CLIENT_IDENTIFIER,
                    f"client header objectType must be SUBSYSTEM or MEMBER, not {object_type!r}")
    return client


_service = lru_cache(maxsize=4096)(ids.ServiceId)  # as _client: the same few services, validated once


def parse_service_header(el: etree._Element, origin: Origin = Origin.CLIENT) -> ids.ServiceId:
    if el.get(_OBJECT_TYPE) != "SERVICE":
        raise Fault(origin, Code.INVALID_SERVICE_IDENTIFIER, "service header objectType must be SERVICE")
    parts = _id_parts(el, origin, "service", ("xRoadInstance", "memberClass", "memberCode", "subsystemCode",
                                              "serviceCode", "serviceVersion"), Code.INVALID_SERVICE_IDENTIFIER)
    try:
        return _service(parts.get("xRoadInstance", ""), parts.get("memberClass", ""), parts.get("memberCode", ""),
                        parts.get("subsystemCode"), parts.get("serviceCode", ""), parts.get("serviceVersion"))
    except ids.IdentifierError as exc:
        raise Fault(origin, Code.INVALID_SERVICE_IDENTIFIER, f"service header: {exc}") from None


def parse_server_header(el: etree._Element, origin: Origin = Origin.CLIENT) -> ids.ServerId:
    if el.get(_OBJECT_TYPE) != "SERVER":
        raise Fault(origin, Code.INVALID_CLIENT_IDENTIFIER, "securityServer header objectType must be SERVER")
    parts = _id_parts(el, origin, "securityServer", ("xRoadInstance", "memberClass", "memberCode", "serverCode"),
                      Code.INVALID_CLIENT_IDENTIFIER)
    try:
        return ids.ServerId(parts.get("xRoadInstance", ""), parts.get("memberClass", ""),
                            parts.get("memberCode", ""), parts.get("serverCode", ""))
    except ids.IdentifierError as exc:
        raise Fault(origin, Code.INVALID_CLIENT_IDENTIFIER, f"securityServer header: {exc}") from None


def parse_message(data: bytes, origin: Origin = Origin.CLIENT, *, expect_request: bool = True) -> SoapMessage:
    """Parse an X-Road SOAP message and validate its headers, raising a precise fault on the first problem."""
    if not data.strip():
        raise Fault(origin, Code.MISSING_BODY, "SOAP message is empty")
    root = parse_xml(data, origin)
    if root.tag != _ENVELOPE:
        raise Fault(origin, Code.INVALID_SOAP, "root element must be a SOAP 1.1 Envelope")
    header: etree._Element | None = None
    body: etree._Element | None = None
    for child in root:
        if child.tag == _HEADER and header is None and body is None:
            header = child
        elif child.tag == _BODY and body is None:
            body = child
        elif isinstance(child.tag, str):
            raise Fault(origin, Code.INVALID_SOAP, f"unexpected element {etree.QName(child).localname} in Envelope")
    if body is None:
        raise Fault(origin, Code.MISSING_BODY, "SOAP Envelope has no Body")
    body_children = [c for c in body if isinstance(c.tag, str)]
    if len(body_children) != 1:
        raise Fault(origin, Code.INVALID_SOAP, "SOAP Body must hold exactly one element")
    body_element = body_children[0]
    is_fault = body_element.tag == _FAULT
    if header is None:
        if is_fault and not expect_request:
            header = etree.SubElement(root, _HEADER)
            root.remove(header)
            root.insert(0, header)
        else:
            raise Fault(origin, Code.MISSING_HEADER, "SOAP Envelope has no Header with X-Road headers")
    found: dict[str, etree._Element] = {}
    for el in header:
        tag = el.tag
        if not isinstance(tag, str) or not tag.startswith(_XROAD_PREFIX):
            continue
        local = tag[len(_XROAD_PREFIX):]
        if local in _KNOWN_HEADERS:
            if local in found:
                raise Fault(origin, Code.DUPLICATE_HEADER_FIELD, f"header field {local} appears twice")
            found[local] = el
    if is_fault and not expect_request and "client" not in found:
        # A service may answer a bare SOAP Fault; the gateway adds the request's headers back.
        return SoapMessage(None, None, "", PROTOCOL_VERSION, None, None, None, root, header, body_element, True)
    for required in ("client", "service", "id", "protocolVersion"):
        if required not in found:
            raise Fault(origin, Code.MISSING_HEADER, f"required header field {required} is missing")
    version = _text(found["protocolVersion"])
    if version != PROTOCOL_VERSION:
        raise Fault(origin, Code.INVALID_PROTOCOL_VERSION,
                    f"protocolVersion must be {PROTOCOL_VERSION}, not {version!r}")
    xroad_id = _text(found["id"])
    if not xroad_id:
        raise Fault(origin, Code.MISSING_HEADER, "header field id is empty")
    if len(xroad_id) > 255:
        raise Fault(origin, Code.INVALID_SOAP, "header field id is longer than 255 characters")
    server = parse_server_header(found["securityServer"], origin) if "securityServer" in found else None
    return SoapMessage(
        client=parse_client_header(found["client"], origin),
        service=parse_service_header(found["service"], origin),
        xroad_id=xroad_id, protocol_version=version, user_id=_text(found.get("userId")),
        issue=_text(found.get("issue")), security_server=server, root=root, header=header,
        body_element=body_element, is_fault=is_fault,
    )


def bind_response(response: SoapMessage, request: SoapMessage, request_hash: str) -> bytes:
    """The provider's gateway makes the response answer the request: X-Road headers echoed from the request
    when the service left them out, and ``requestHash`` set (overwriting any value the service gave)."""
    header = response.header
    present = {el.tag: el for el in header if isinstance(el.tag, str) and el.tag.startswith(_XROAD_PREFIX)}
    hash_tag = f"{_XROAD_PREFIX}requestHash"
    for el in request.header:
        tag = el.tag
        if isinstance(tag, str) and tag.startswith(_XROAD_PREFIX) and tag not in present and tag != hash_tag:
            header.append(copy.deepcopy(el))
    old = present.get(hash_tag)
    if old is not None:
        header.remove(old)
    hash_el = etree.SubElement(header, hash_tag, nsmap={"xrd": XROAD})  # keep X-Road's usual prefix
    hash_el.set("algorithmId", SHA512_URI)
    hash_el.text = request_hash
    return etree.tostring(response.root, xml_declaration=True, encoding="UTF-8")


def check_consistent(response: SoapMessage, request: SoapMessage, origin: Origin) -> None:
    """A response must echo the request's client, service and id (X-Road's InconsistentHeaders check)."""
    if response.client is None:
        return
    if (response.client != request.client or response.service != request.service
            or response.xroad_id != request.xroad_id):
        raise Fault(origin, Code.INCONSISTENT_HEADERS, "response headers do not match the request's client, "
                    "service and id")


def fault_of(message: SoapMessage) -> tuple[str, str] | None:
    """(faultcode, faultstring) when the message is a SOAP Fault."""
    if not message.is_fault:
        return None
    return (_text(message.body_element.find("faultcode")) or "", _text(message.body_element.find("faultstring")) or "")


# -- building X-Road headers (metaservices, bridging, tests) -----------------------------------------------------

def _id_element(parent: etree._Element, tag: str, object_type: str, parts: list[tuple[str, str | None]]) -> None:
    el = etree.SubElement(parent, f"{{{XROAD}}}{tag}")
    el.set(_OBJECT_TYPE, object_type)
    for name, value in parts:
        if value is not None:
            etree.SubElement(el, f"{{{IDEN}}}{name}").text = value


def build_request(client: ids.ClientId, service: ids.ServiceId, xroad_id: str, body_element: etree._Element,
                  user_id: str | None = None, issue: str | None = None) -> bytes:
    """Build an X-Road 4.0 SOAP request around ``body_element``."""
    nsmap = {"SOAP-ENV": SOAP_ENV, "xrd": XROAD, "id": IDEN}
    root = etree.Element(_ENVELOPE, nsmap=nsmap)
    header = etree.SubElement(root, _HEADER)
    client_parts: list[tuple[str, str | None]] = [("xRoadInstance", client.instance),
                                                   ("memberClass", client.member_class),
                                                   ("memberCode", client.member_code)]
    if isinstance(client, ids.SubsystemId):
        client_parts.append(("subsystemCode", client.subsystem_code))
    _id_element(header, "client", client.object_type.value, client_parts)
    _id_element(header, "service", "SERVICE", [
        ("xRoadInstance", service.instance), ("memberClass", service.member_class),
        ("memberCode", service.member_code), ("subsystemCode", service.subsystem_code),
        ("serviceCode", service.service_code), ("serviceVersion", service.service_version)])
    etree.SubElement(header, f"{{{XROAD}}}id").text = xroad_id
    if user_id is not None:
        etree.SubElement(header, f"{{{XROAD}}}userId").text = user_id
    if issue is not None:
        etree.SubElement(header, f"{{{XROAD}}}issue").text = issue
    etree.SubElement(header, f"{{{XROAD}}}protocolVersion").text = PROTOCOL_VERSION
    body = etree.SubElement(root, _BODY)
    body.append(body_element)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
