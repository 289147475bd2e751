"""Legacy adapters' message work without I/O: X-Road headers off and back on, namespaces renamed, JSON to SOAP."""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import io
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from lxml import etree

from gateway.core import descriptions, metaservices, soap
from gateway.core import identifiers as ids
from gateway.core.faults import Code, Fault, Origin

_ENVELOPE = f"{{{soap.SOAP_ENV}}}Envelope"
_HEADER = f"{{{soap.SOAP_ENV}}}Header"
_BODY = f"{{{soap.SOAP_ENV}}}Body"
_FAULT = f"{{{soap.SOAP_ENV}}}Fault"
XROAD_HEADER_NAMESPACES = (soap.XROAD, soap.REPR)


# -- SOAP envelopes --------------------------------------------------------------------------------------------------

def strip_xroad_headers(root: etree._Element) -> None:
    """Take X-Road's headers out of an Envelope, and the Header with them if nothing else is left in it."""
    header = root.find(_HEADER)
    if header is None:
        return
    for el in list(header):
        if isinstance(el.tag, str) and etree.QName(el).namespace in XROAD_HEADER_NAMESPACES:
            header.remove(el)
    if not [el for el in header if isinstance(el.tag, str)]:
        root.remove(header)


def rename_namespace(el: etree._Element, old: str, new: str) -> None:
    """Move ``el`` and its descendants (elements and attributes) from namespace ``old`` to ``new``, in place."""
    old_prefix, new_prefix = f"{{{old}}}", f"{{{new}}}"
    for node in el.iter():
        if isinstance(node.tag, str) and node.tag.startswith(old_prefix):
            node.tag = new_prefix + node.tag[len(old_prefix):]
        for name in [a for a in node.attrib if a.startswith(old_prefix)]:
            node.set(new_prefix + name[len(old_prefix):], node.attrib.pop(name))
    etree.cleanup_namespaces(el)


def body_child(root: etree._Element, origin: Origin, what: str) -> etree._Element:
    if root.tag != _ENVELOPE:
        raise Fault(origin, Code.INVALID_SOAP, f"{what}: the root element must be a SOAP 1.1 Envelope")
    body = root.find(_BODY)
    children = [c for c in body if isinstance(c.tag, str)] if body is not None else []
    if len(children) != 1:
        raise Fault(origin, Code.INVALID_SOAP, f"{what}: the SOAP Body must hold exactly one element")
    return children[0]


def check_operation(request: soap.SoapMessage, wsdl: descriptions.WsdlDescription, operation: str) -> None:
    """The request body must be the input of the WSDL operation the service code is mapped to."""
    expected = wsdl.input_elements.get(operation, "")
    got = request.body_element.tag
    if expected and got != expected:
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"service {request.service} is operation {operation}, whose "
                    f"request element is {expected}, not {got}")


def legacy_request(request: soap.SoapMessage, namespace: tuple[str, str] | None) -> bytes:
    """The request as a backend unaware of X-Road expects it: no X-Road headers, the backend's namespace."""
    root = copy.deepcopy(request.root)
    strip_xroad_headers(root)
    if namespace is not None:
        rename_namespace(body_child(root, Origin.CLIENT, "request"), namespace[1], namespace[0])
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def legacy_response(request: soap.SoapMessage, data: bytes, namespace: tuple[str, str] | None,
                    request_hash: str) -> tuple[bool, bytes]:
    """(is a fault, the X-Road response): the backend's body under the request's X-Road headers, requestHash set.
    The backend's own headers (if any) are meant for the gateway that called it, so they stay behind."""
    origin = Origin.SERVER_PROXY
    try:
        root = soap.parse_xml(data, origin, "service response")
        child = copy.deepcopy(body_child(root, origin, "service response"))
    except Fault as fault:
        raise Fault(origin, Code.SERVICE_FAILED, f"service returned an invalid SOAP message: {fault.message}") from None
    if namespace is not None:
        rename_namespace(child, namespace[0], namespace[1])
    return child.tag == _FAULT, metaservices.soap_response(request, child, request_hash)


def with_xroad_headers(data: bytes, client: ids.ClientId, service: ids.ServiceId, xroad_id: str,
                       user_id: str | None) -> bytes:
    """A legacy caller's SOAP request with X-Road's headers put in front (any it sent are replaced)."""
    root = soap.parse_xml(data, Origin.CLIENT, "SOAP request")
    body_child(root, Origin.CLIENT, "SOAP request")
    strip_xroad_headers(root)
    header = root.find(_HEADER)
    if header is None:
        header = etree.Element(_HEADER)
        root.insert(0, header)
    template = etree.fromstring(soap.build_request(client, service, xroad_id, etree.Element("x"), user_id=user_id))
    for i, el in enumerate(template.find(_HEADER)):
        header.insert(i, el)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def without_xroad_headers(data: bytes) -> bytes:
    """A response as a legacy caller expects it; anything that does not parse is passed on untouched."""
    try:
        root = soap.parse_xml(data, Origin.SERVER_PROXY)
    except Fault:
        return data
    strip_xroad_headers(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# -- REST/JSON to SOAP through the backend's WSDL ----------------------------------------------------------------

def json_arguments(method: str, body: bytes, query: str) -> dict[str, Any]:
    """A bridged call's arguments: the JSON object in a POST/PUT body, or the query parameters of a GET."""
    if method in ("GET", "DELETE", "HEAD"):
        return dict(parse_qsl(query, keep_blank_values=True))
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, "request body must be a JSON object of the operation's "
                    "input fields")
    return value


def xroad_header_values(client: ids.ClientId, service: ids.ServiceId, xroad_id: str, user_id: str | None,
                        issue: str | None) -> dict[str, Any]:
    """X-Road's headers as zeep takes them (``_soapheaders``), for backends whose WSDL asks for them."""
    client_value: dict[str, Any] = {"objectType": client.object_type.value, "xRoadInstance": client.instance,
                                    "memberClass": client.member_class, "memberCode": client.member_code}
    if isinstance(client, ids.SubsystemId):
        client_value["subsystemCode"] = client.subsystem_code
    service_value: dict[str, Any] = {"objectType": "SERVICE", "xRoadInstance": service.instance,
                                     "memberClass": service.member_class, "memberCode": service.member_code,
                                     "subsystemCode": service.subsystem_code, "serviceCode": service.service_code}
    if service.service_version is not None:
        service_value["serviceVersion"] = service.service_version
    values: dict[str, Any] = {"client": client_value, "service": service_value, "id": xroad_id,
                              "protocolVersion": soap.PROTOCOL_VERSION}
    if user_id is not None:
        values["userId"] = user_id
    if issue is not None:
        values["issue"] = issue
    return values


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(frozen=True, slots=True)
class BridgedReply:
    status: int
    body: bytes  # JSON


class SoapBridge:
    """One SOAP backend seen through its WSDL: JSON arguments in, a SOAP request out; a SOAP reply in, JSON out.
    zeep does the XML work; it never fetches anything (the WSDL is self-contained and its transport refuses)."""

    def __init__(self, wsdl: descriptions.WsdlDescription) -> None:
        import zeep
        from zeep.transports import Transport
        from zeep.wsdl import Document

        class _Offline(Transport):  # type: ignore[misc]
            def load(self, url: str) -> bytes:
                raise ValueError(f"{wsdl.source}: refers to {url!r}, which would need the network")

        self.wsdl = wsdl
        transport = _Offline()
        document = Document(io.BytesIO(wsdl.document), transport)  # type: ignore[arg-type]  # zeep's hint
        self.client = zeep.Client(document, transport=transport)
        self.service = self.client.service

    def request(self, operation: str, arguments: dict[str, Any], headers: dict[str, Any] | None) -> bytes:
        """The SOAP request for ``operation``; arguments that do not fit its input are a client fault naming them."""
        from zeep.exceptions import Error as ZeepError

        if operation not in self.wsdl.operations:
            raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"no operation {operation!r}; the backend has "
                        f"{', '.join(self.wsdl.operations)}")
        extra = {"_soapheaders": headers} if headers and operation in self.wsdl.xroad_headers else {}
        try:
            envelope = self.client.create_message(self.service, operation, **arguments, **extra)
        except TypeError as exc:  # zeep: an argument the operation's input does not have
            raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"{operation}: {exc}") from None
        except (ZeepError, ValueError) as exc:  # a missing or malformed field
            raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"{operation}: {exc}") from None
        return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")

    def reply(self, operation: str, status: int, data: bytes) -> BridgedReply:
        """The backend's SOAP answer as JSON; a SOAP fault is the service's own error and stays one (HTTP 500)."""
        from zeep.exceptions import Error as ZeepError

        try:
            root = soap.parse_xml(data, Origin.SERVER_PROXY, "service response")
            child = body_child(root, Origin.SERVER_PROXY, "service response")
        except Fault as fault:
            raise Fault(Origin.SERVER_PROXY, Code.SERVICE_FAILED, f"service returned an invalid SOAP message: "
                        f"{fault.message}") from None
        if child.tag == _FAULT:
            fault_json = {"faultcode": child.findtext("faultcode") or "",
                          "faultstring": child.findtext("faultstring") or ""}
            detail = child.find("detail")
            if detail is not None:
                fault_json["detail"] = " ".join(t.strip() for t in detail.itertext() if t.strip())
            return BridgedReply(500, json.dumps({"fault": fault_json}, ensure_ascii=False).encode())
        binding = self.service._binding  # zeep keeps the operation's message definitions on the binding
        try:
            result = binding.get(operation).process_reply(root)
        except (ZeepError, ValueError) as exc:
            raise Fault(Origin.SERVER_PROXY, Code.SERVICE_FAILED, f"service response does not fit {operation}'s "
                        f"output: {exc}") from None
        from zeep.helpers import serialize_object

        value = serialize_object(result, dict)
        if isinstance(value, dict) and set(value) == {"header", "body"}:
            value = value["body"]  # the X-Road headers declared on the output are not the caller's business
        return BridgedReply(200 if status < 400 else status,
                            json.dumps(value, default=_json_default, ensure_ascii=False).encode())
