"""SOAP callers to a REST/JSON backend, no I/O: the generated WSDL, the REST call for a SOAP request, and the
SOAP response for the backend's JSON.

A ``soap-to-rest`` adapter declares, per operation, the REST call it stands for: a method, a path template whose
``{field}`` placeholders come from the request's fields, the fields sent as query parameters, and whether the
others go as a JSON object body. From that the gateway publishes a document/literal WSDL (so a stock SOAP client
such as zeep can call the service through ``/wsdl``), and translates each call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from lxml import etree

_NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")
_XS = "http://www.w3.org/2001/XMLSchema"
MAX_JSON_DEPTH = 32


class BridgeError(ValueError):
    """A declaration that cannot work (at load), or a request that does not fit it (at call time)."""


@dataclass(frozen=True)
class RestOperation:
    name: str  # the SOAP operation, and the request's body element
    method: str
    path: str  # e.g. /taxpayers/{code}
    fields: tuple[str, ...]  # the request element's children, in order
    query: tuple[str, ...] = ()  # fields sent as query parameters
    json_body: bool = False  # the remaining fields as a JSON object body


def check(operation: RestOperation) -> None:
    """Raise BridgeError naming the field if ``operation`` cannot be translated."""
    if not _NCNAME.fullmatch(operation.name):
        raise BridgeError(f"name: {operation.name!r} is not a valid XML element name")
    for field in operation.fields:
        if not _NCNAME.fullmatch(field):
            raise BridgeError(f"fields: {field!r} is not a valid XML element name")
    if len(set(operation.fields)) != len(operation.fields):
        raise BridgeError("fields: a field is listed twice")
    if not operation.path.startswith("/"):
        raise BridgeError(f"path: {operation.path!r} must start with /")
    for name in _PARAM.findall(operation.path):
        if name not in operation.fields:
            raise BridgeError(f"path: {{{name}}} is not one of the operation's fields")
    for name in operation.query:
        if name not in operation.fields:
            raise BridgeError(f"query: {name!r} is not one of the operation's fields")
    if operation.json_body and operation.method in ("GET", "HEAD", "DELETE"):
        raise BridgeError(f"json_body: a {operation.method} request has no body")


def wsdl(service_code: str, namespace: str, operations: Sequence[RestOperation]) -> bytes:
    """A self-contained document/literal SOAP 1.1 WSDL for the operations (the gateway adds X-Road's headers).
    A response's content is open (``xs:any``): it is the backend's JSON, as elements."""
    w, soap = "http://schemas.xmlsoap.org/wsdl/", "http://schemas.xmlsoap.org/wsdl/soap/"
    nsmap = {"wsdl": w, "soap": soap, "xs": _XS, "tns": namespace}
    root = etree.Element(f"{{{w}}}definitions", nsmap=nsmap, name=service_code, targetNamespace=namespace)
    types = etree.SubElement(root, f"{{{w}}}types")
    schema = etree.SubElement(types, f"{{{_XS}}}schema", targetNamespace=namespace, elementFormDefault="qualified")
    for op in operations:
        request = etree.SubElement(schema, f"{{{_XS}}}element", name=op.name)
        sequence = etree.SubElement(etree.SubElement(request, f"{{{_XS}}}complexType"), f"{{{_XS}}}sequence")
        for field in op.fields:
            etree.SubElement(sequence, f"{{{_XS}}}element", name=field, type="xs:string", minOccurs="0")
        response = etree.SubElement(schema, f"{{{_XS}}}element", name=f"{op.name}Response")
        sequence = etree.SubElement(etree.SubElement(response, f"{{{_XS}}}complexType"), f"{{{_XS}}}sequence")
        etree.SubElement(sequence, f"{{{_XS}}}any", minOccurs="0", maxOccurs="unbounded", processContents="skip")
    for op in operations:
        for suffix, element in (("Request", op.name), ("Response", f"{op.name}Response")):
            message = etree.SubElement(root, f"{{{w}}}message", name=f"{op.name}{suffix}")
            etree.SubElement(message, f"{{{w}}}part", name="body", element=f"tns:{element}")
    port_type = etree.SubElement(root, f"{{{w}}}portType", name=f"{service_code}PortType")
    for op in operations:
        operation = etree.SubElement(port_type, f"{{{w}}}operation", name=op.name)
        etree.SubElement(operation, f"{{{w}}}input", message=f"tns:{op.name}Request")
        etree.SubElement(operation, f"{{{w}}}output", message=f"tns:{op.name}Response")
    binding = etree.SubElement(root, f"{{{w}}}binding", name=f"{service_code}Binding",
                               type=f"tns:{service_code}PortType")
    etree.SubElement(binding, f"{{{soap}}}binding", style="document", transport="http://schemas.xmlsoap.org/soap/http")
    for op in operations:
        operation = etree.SubElement(binding, f"{{{w}}}operation", name=op.name)
        etree.SubElement(operation, f"{{{soap}}}operation", soapAction=op.name)
        for direction in ("input", "output"):
            etree.SubElement(etree.SubElement(operation, f"{{{w}}}{direction}"), f"{{{soap}}}body", use="literal")
    service = etree.SubElement(root, f"{{{w}}}service", name=service_code)
    port = etree.SubElement(service, f"{{{w}}}port", name=f"{service_code}Port", binding=f"tns:{service_code}Binding")
    etree.SubElement(port, f"{{{soap}}}address", location="http://localhost/")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@dataclass(frozen=True)
class RestCall:
    method: str
    path_and_query: str
    body: bytes  # empty for no body


def rest_call(operation: RestOperation, body_element: etree._Element) -> RestCall:
    """The REST call for a SOAP request's body element; a field the operation does not have is refused."""
    values: dict[str, str] = {}
    for child in body_element:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        if name not in operation.fields:
            raise BridgeError(f"operation {operation.name} has no field {name!r}; it has "
                              f"{', '.join(operation.fields) or 'none'}")
        if len(child):
            raise BridgeError(f"field {name!r} of operation {operation.name} is a plain value, not a structure")
        values[name] = child.text or ""
    missing = [p for p in _PARAM.findall(operation.path) if not values.get(p)]
    if missing:
        raise BridgeError(f"operation {operation.name} needs field {missing[0]!r} (it is part of the path)")
    in_path = set(_PARAM.findall(operation.path))
    path = _PARAM.sub(lambda m: quote(values[m.group(1)], safe=""), operation.path)
    query = [(k, values[k]) for k in operation.query if k in values]
    if query:
        path += "?" + urlencode(query)
    body = b""
    if operation.json_body:
        rest = {k: v for k, v in values.items() if k not in in_path and k not in operation.query}
        body = json.dumps(rest, ensure_ascii=False).encode()
    return RestCall(operation.method, path, body)


def response_element(namespace: str, operation: str, data: Any) -> etree._Element:
    """``{namespace}{operation}Response`` holding the backend's JSON as elements: an object's members become
    child elements, an array's items repeat the element, scalars are text (booleans as true/false)."""
    root = etree.Element(f"{{{namespace}}}{operation}Response", nsmap={None: namespace})
    _fill(root, data, namespace, 0)
    return root


def _fill(parent: etree._Element, value: Any, namespace: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise BridgeError("the backend's JSON is nested too deeply")
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key) if _NCNAME.fullmatch(str(key)) else "item"
            for element_value in (item if isinstance(item, list) else [item]):
                child = etree.SubElement(parent, f"{{{namespace}}}{name}")
                _fill(child, element_value, namespace, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _fill(etree.SubElement(parent, f"{{{namespace}}}item"), item, namespace, depth + 1)
    elif isinstance(value, bool):
        parent.text = "true" if value else "false"
    elif value is not None:
        parent.text = str(value)
