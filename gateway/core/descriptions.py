"""Service descriptions: WSDL and OpenAPI 3 documents parsed, checked and made self-contained, without I/O."""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml
from lxml import etree

from gateway.core import xroad_schemas

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
SOAP11_BINDING_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
SOAP12_BINDING_NS = "http://schemas.xmlsoap.org/wsdl/soap12/"
XS_NS = xroad_schemas.XS_NS
# PR-META §4: a provider's gateway hides where its services really live before it hands a WSDL out.
HIDDEN_ENDPOINT = "http://example.org/xroad-endpoint"
MAX_SCHEMA_DEPTH = 16
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

_W = f"{{{WSDL_NS}}}"
_XS = f"{{{XS_NS}}}"
_IMPORT, _INCLUDE, _SCHEMA = f"{_XS}import", f"{_XS}include", f"{_XS}schema"
_ADDRESSES = (f"{{{SOAP11_BINDING_NS}}}address", f"{{{SOAP12_BINDING_NS}}}address")

# (schemaLocation, the source that refers to it) -> (the bytes, a name for messages and cycle detection)
Resolver = Callable[[str, str], tuple[bytes, str]]


class DescriptionError(ValueError):
    """A service description that cannot be served; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class WsdlDescription:
    source: str
    document: bytes  # self-contained, endpoint addresses hidden: what getWsdl hands out
    target_namespace: str
    operations: tuple[str, ...]  # operations of the SOAP 1.1 binding(s), in document order
    input_elements: dict[str, str]  # operation -> {ns}local of its request body element ("" if unknown)
    soap_actions: dict[str, str]  # operation -> the soapAction its binding declares
    xroad_headers: frozenset[str]  # operations whose binding declares X-Road headers on the input


@dataclass(frozen=True, slots=True)
class OpenApiDescription:
    source: str
    document: dict[str, Any]
    served: bytes  # what getOpenAPI hands out: the document with server addresses reduced to their paths
    content_type: str
    endpoints: tuple[tuple[str, str], ...]  # (METHOD, path with each {param} as *), as X-Road lists them


# -- XML ---------------------------------------------------------------------------------------------------------

def _parser() -> etree.XMLParser:
    # Descriptions come from operators, but they are often downloaded from vendors: parse them as untrusted.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           remove_blank_text=False)


def parse_xml(data: bytes, source: str, what: str) -> etree._Element:
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise DescriptionError(f"{source}: {what} is not well-formed XML: {exc}") from None
    except ValueError as exc:
        raise DescriptionError(f"{source}: {what} could not be read: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        raise DescriptionError(f"{source}: {what} must not contain a DTD")
    return root


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _qname_namespace(el: etree._Element, value: str) -> str | None:
    prefix, sep, _ = value.partition(":")
    return el.nsmap.get(prefix if sep else None)


# -- WSDL --------------------------------------------------------------------------------------------------------

def parse_wsdl(data: bytes, source: str, resolve: Resolver | None = None, *, check: bool = True) -> WsdlDescription:
    """Check a WSDL 1.1 document and make it self-contained: X-Road's schemas inlined from the bundled copies,
    local schemaLocation files inlined through ``resolve``, any other schemaLocation refused."""
    root = parse_xml(data, source, "WSDL")
    if root.tag != f"{_W}definitions":
        raise DescriptionError(f"{source}: not a WSDL 1.1 document (the root element is {_local(root)}, "
                               "not wsdl:definitions)")
    if root.find(f"{_W}import") is not None:
        raise DescriptionError(f"{source}: wsdl:import is not supported; merge the imported WSDL into this file")
    make_self_contained(root, source, resolve)
    return _described(root, source, check)


def _described(root: etree._Element, source: str, check: bool) -> WsdlDescription:
    operations = _soap_operations(root, source)
    hide_endpoints(root)
    document = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    if check:
        check_loads_offline(document, source)
    return WsdlDescription(source, document, root.get("targetNamespace", ""), tuple(o.name for o in operations),
                           {o.name: o.input_element for o in operations},
                           {o.name: o.soap_action for o in operations},
                           frozenset(o.name for o in operations if o.xroad_headers))


_HEADER_PARTS = ("client", "service", "id", "userId", "issue", "protocolVersion")
_HEADER_MESSAGE = "waslXRoadHeader"


def published_for_xroad(wsdl: WsdlDescription, namespace: tuple[str, str] | None = None) -> WsdlDescription:
    """What a legacy adapter publishes for a backend that knows nothing of X-Road: the backend's WSDL with X-Road's
    headers declared on every operation (so stock clients send them) and, optionally, its namespace ``(backend,
    federation)`` renamed to the one the federation sees."""
    document = wsdl.document
    if namespace is not None:
        document = rename_namespace_in_document(document, namespace[0], namespace[1])
    root = parse_xml(document, wsdl.source, "WSDL")
    tns = root.get("targetNamespace", "")
    if root.find(f"{_W}message[@name='{_HEADER_MESSAGE}']") is None:
        message = etree.Element(f"{_W}message", nsmap={"xrd": xroad_schemas.XROAD_NS})
        message.set("name", _HEADER_MESSAGE)
        for part in _HEADER_PARTS:
            etree.SubElement(message, f"{_W}part", name=part, element=f"xrd:{part}")
        first_message = root.find(f"{_W}message")
        if first_message is not None:
            first_message.addprevious(message)
        else:
            root.append(message)
    for binding in root.iterchildren(f"{_W}binding"):
        if binding.find(f"{{{SOAP11_BINDING_NS}}}binding") is None:
            continue
        for op in binding.iterchildren(f"{_W}operation"):
            if op.get("name") in wsdl.xroad_headers:
                continue
            for direction in (f"{_W}input", f"{_W}output"):
                io_el = op.find(direction)
                if io_el is None:
                    continue
                body = io_el.find(f"{{{SOAP11_BINDING_NS}}}body")
                if body is not None and not body.get("parts"):
                    # With headers beside it, the body must say which part it carries.
                    abstract = _message_of(root, binding, op.get("name", ""), direction)
                    parts = [p.get("name") for p in abstract.iterchildren(f"{_W}part")] if abstract is not None else []
                    if len(parts) == 1:
                        body.set("parts", parts[0] or "")
                for part in _HEADER_PARTS:
                    header = etree.SubElement(io_el, f"{{{SOAP11_BINDING_NS}}}header", nsmap={"wasltns": tns})
                    header.set("message", f"wasltns:{_HEADER_MESSAGE}")
                    header.set("part", part)
                    header.set("use", "literal")
    make_self_contained(root, wsdl.source, None)
    return _described(root, wsdl.source, check=True)


def _message_of(root: etree._Element, binding: etree._Element, operation: str,
                direction: str) -> etree._Element | None:
    type_ref = (binding.get("type") or "").rpartition(":")[2]
    port_type = root.find(f"{_W}portType[@name='{type_ref}']")
    op = port_type.find(f"{_W}operation[@name='{operation}']") if port_type is not None else None
    io_el = op.find(direction) if op is not None else None
    name = (io_el.get("message") or "").rpartition(":")[2] if io_el is not None else ""
    return root.find(f"{_W}message[@name='{name}']")


def rename_namespace_in_document(document: bytes, old: str, new: str) -> bytes:
    """Every use of namespace URI ``old`` becomes ``new``: declarations, targetNamespace, namespace attributes.
    Only whole quoted attribute values are replaced, so a URI that merely starts with ``old`` is left alone."""
    for quote in (b'"', b"'"):
        document = document.replace(quote + old.encode() + quote, quote + new.encode() + quote)
    return document


def make_self_contained(root: etree._Element, source: str, resolve: Resolver | None) -> None:
    """Rewrite ``root`` (wsdl:definitions) in place so that no schema needs to be fetched from anywhere."""
    types = root.find(f"{_W}types")
    needed: set[str] = set()  # bundled namespaces that must have a schema in wsdl:types
    forced: set[str] = set()  # bundled namespaces that were xs:include-d, so need their own copy regardless
    seen: set[str] = set()
    if types is not None:
        for schema in list(types.iterchildren(_SCHEMA)):
            _inline_references(schema, types, source, resolve, needed, forced, seen, 0)
    # Header parts name X-Road's elements (xrd:client, ...) even when no schema imports them.
    for part in root.iter(f"{_W}part"):
        element = part.get("element")
        namespace = _qname_namespace(part, element) if element else None
        if namespace in xroad_schemas.BUNDLED:
            needed.add(namespace)
    needed |= forced
    if not needed:
        return
    if types is None:
        types = etree.Element(f"{_W}types")
        first = next((i for i, c in enumerate(root) if isinstance(c.tag, str) and c.tag != f"{_W}documentation"),
                     len(root))
        root.insert(first, types)
    present = {s.get("targetNamespace") for s in types.iterchildren(_SCHEMA)}
    for namespace in _with_dependencies(needed):
        if namespace in forced or namespace not in present:
            types.append(xroad_schemas.bundled_schema(namespace))
            present.add(namespace)
            forced.discard(namespace)


def _with_dependencies(namespaces: Iterable[str]) -> list[str]:
    out: list[str] = []
    for namespace in namespaces:
        for dep in (*xroad_schemas.DEPENDS.get(namespace, ()), namespace):
            if dep not in out:
                out.append(dep)
    return sorted(out)  # a stable order: identifiers before representation before xroad


def _inline_references(schema: etree._Element, types: etree._Element, where: str, resolve: Resolver | None,
                       needed: set[str], forced: set[str], seen: set[str], depth: int) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise DescriptionError(f"{where}: schemas nest more than {MAX_SCHEMA_DEPTH} levels deep")
    for ref in [c for c in schema if c.tag in (_IMPORT, _INCLUDE)]:
        is_import = ref.tag == _IMPORT
        namespace = ref.get("namespace") if is_import else schema.get("targetNamespace")
        location = ref.get("schemaLocation")
        if namespace in xroad_schemas.BUNDLED:
            needed.add(namespace)
            if is_import:
                ref.attrib.pop("schemaLocation", None)
            elif location is not None:
                # Including X-Road's schema into one of the same namespace: the bundled copy stands beside it.
                schema.remove(ref)
                forced.add(namespace)
            continue
        if location is None:
            continue
        if urlsplit(location).scheme or location.startswith("//"):
            raise DescriptionError(
                f"{where}: schemaLocation {location!r} needs the network, and agencies' networks are closed; "
                "save that schema next to the WSDL and refer to it by a relative path")
        if resolve is None:
            raise DescriptionError(f"{where}: schemaLocation {location!r} cannot be resolved")
        data, name = resolve(location, where)
        loaded = parse_xml(data, name, "XML schema")
        if loaded.tag != _SCHEMA:
            raise DescriptionError(f"{name}: not an XML schema (the root element is {_local(loaded)})")
        if is_import:
            ref.attrib.pop("schemaLocation", None)
            if loaded.get("targetNamespace") != namespace:
                raise DescriptionError(f"{where}: imports namespace {namespace!r} from {location!r}, whose "
                                       f"targetNamespace is {loaded.get('targetNamespace')!r}")
        else:
            schema.remove(ref)
            if loaded.get("targetNamespace") != namespace:
                raise DescriptionError(f"{where}: includes {location!r}, whose targetNamespace is "
                                       f"{loaded.get('targetNamespace')!r}, not {namespace!r}")
        if name in seen:
            continue
        seen.add(name)
        _inline_references(loaded, types, name, resolve, needed, forced, seen, depth + 1)
        # A separate xs:schema keeps the prefixes its QName-valued attributes rely on; several schemas of one
        # namespace in wsdl:types are legal, and clients merge them.
        types.append(loaded)


@dataclass(frozen=True, slots=True)
class _Operation:
    name: str
    input_element: str  # Clark notation {ns}local of the request body element; "" when the WSDL does not say
    soap_action: str
    xroad_headers: bool  # the binding declares X-Road headers on the input


def _soap_operations(root: etree._Element, source: str) -> list[_Operation]:
    port_types = {pt.get("name"): pt for pt in root.iterchildren(f"{_W}portType")}
    messages = {m.get("name"): m for m in root.iterchildren(f"{_W}message")}
    operations: dict[str, _Operation] = {}
    soap11 = False
    for binding in root.iterchildren(f"{_W}binding"):
        if binding.find(f"{{{SOAP11_BINDING_NS}}}binding") is None:
            continue
        soap11 = True
        type_ref = (binding.get("type") or "").rpartition(":")[2]
        port_type = port_types.get(type_ref)
        if port_type is None:
            raise DescriptionError(f"{source}: binding {binding.get('name')!r} refers to portType {type_ref!r}, "
                                   "which is not defined")
        declared = {op.get("name"): op for op in port_type.iterchildren(f"{_W}operation")}
        for op in binding.iterchildren(f"{_W}operation"):
            name = op.get("name") or ""
            if name not in declared:
                raise DescriptionError(f"{source}: binding operation {name!r} is not in portType {type_ref!r}")
            for io_el in declared[name]:
                message = (io_el.get("message") or "").rpartition(":")[2]
                if io_el.tag in (f"{_W}input", f"{_W}output") and message not in messages:
                    raise DescriptionError(f"{source}: operation {name!r} uses message {message!r}, which is not "
                                           "defined")
            if name not in operations:
                operations[name] = _describe_operation(name, op, declared[name], messages)
    if not soap11:
        raise DescriptionError(f"{source}: has no SOAP 1.1 binding (X-Road's message protocol is SOAP 1.1)")
    if not operations:
        raise DescriptionError(f"{source}: its SOAP 1.1 binding has no operations")
    return list(operations.values())


def _describe_operation(name: str, bound: etree._Element, abstract: etree._Element,
                        messages: dict[str | None, etree._Element]) -> _Operation:
    soap_op = bound.find(f"{{{SOAP11_BINDING_NS}}}operation")
    action = soap_op.get("soapAction", "") if soap_op is not None else ""
    bound_input = bound.find(f"{_W}input")
    headers = bound_input.findall(f"{{{SOAP11_BINDING_NS}}}header") if bound_input is not None else []
    abstract_input = abstract.find(f"{_W}input")
    message = messages.get((abstract_input.get("message") or "").rpartition(":")[2]) \
        if abstract_input is not None else None
    header_parts = {h.get("part") for h in headers
                    if (h.get("message") or "").rpartition(":")[2] == (message.get("name") if message is not None
                                                                       else None)}
    body = bound_input.find(f"{{{SOAP11_BINDING_NS}}}body") if bound_input is not None else None
    body_parts = set((body.get("parts") or "").split()) if body is not None else set()
    element = ""
    if message is not None:
        for part in message.iterchildren(f"{_W}part"):
            wanted = part.get("name") in body_parts if body_parts else part.get("name") not in header_parts
            if wanted and part.get("element"):
                prefix, _, local = part.get("element", "").rpartition(":")
                element = f"{{{part.nsmap.get(prefix or None, '')}}}{local}"
                break
    xroad_headers = False
    for header in headers:
        header_message = messages.get((header.get("message") or "").rpartition(":")[2])
        for part in header_message.iterchildren(f"{_W}part") if header_message is not None else ():
            if part.get("name") == header.get("part") and _qname_namespace(part, part.get("element", "")) \
                    == xroad_schemas.XROAD_NS:
                xroad_headers = True
    return _Operation(name, element, action, xroad_headers)


def hide_endpoints(root: etree._Element) -> None:
    set_endpoints(root, HIDDEN_ENDPOINT)


def set_endpoints(root: etree._Element, url: str) -> None:
    for address in root.iter(*_ADDRESSES):
        address.set("location", url)


def with_endpoint(document: bytes, url: str) -> bytes:
    """The WSDL with every SOAP address pointing at ``url`` (a client gateway hands out its own address)."""
    root = parse_xml(document, "WSDL", "WSDL")
    set_endpoints(root, url)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def check_loads_offline(document: bytes, source: str) -> None:
    """Load the WSDL the way a stock SOAP client does, with every network fetch refused: proof it is
    self-contained and consistent (undefined types and elements are caught here)."""
    from zeep import Settings
    from zeep.transports import Transport
    from zeep.wsdl import Document

    class _Offline(Transport):  # type: ignore[misc]
        def load(self, url: str) -> bytes:
            raise DescriptionError(f"{source}: refers to {url!r}, which would need the network")

    with warnings.catch_warnings(record=True) as caught:
        # zeep only warns about a part whose element is undefined, then fails on the first call; fail at load.
        warnings.simplefilter("always")
        try:
            Document(io.BytesIO(document), _Offline(),  # type: ignore[arg-type]  # zeep's hint is wrong
                     settings=Settings(forbid_dtd=True, forbid_entities=True))
        except DescriptionError:
            raise
        except Exception as exc:  # zeep raises many types; every one means a client could not use this WSDL
            raise DescriptionError(f"{source}: a SOAP client cannot load it: {exc}") from None
    problems = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if problems:
        raise DescriptionError(f"{source}: a SOAP client cannot load it: {problems[0]}")


# -- OpenAPI -----------------------------------------------------------------------------------------------------

_PARAM = re.compile(r"\{[^/{}]*\}")


def parse_openapi(data: bytes, source: str) -> OpenApiDescription:
    """Check an OpenAPI 3 document (JSON or YAML): its shape, and that every $ref points inside it."""
    is_json = source.lower().endswith(".json")
    try:
        document = json.loads(data) if is_json else yaml.safe_load(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DescriptionError(f"{source}: not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DescriptionError(f"{source}: not valid YAML{where}") from None
    if not isinstance(document, dict):
        raise DescriptionError(f"{source}: an OpenAPI document must be a mapping at the top level")
    version = document.get("openapi")
    if not isinstance(version, str) or not version.startswith("3."):
        raise DescriptionError(f"{source}: field openapi must be a 3.x version string, not {version!r}")
    info = document.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("title"), str) or "version" not in info:
        raise DescriptionError(f"{source}: field info must be a mapping with title and version")
    paths = document.get("paths")
    if not isinstance(paths, dict):
        raise DescriptionError(f"{source}: field paths must be a mapping")
    endpoints: list[tuple[str, str]] = []
    for path, item in paths.items():
        if not isinstance(path, str) or not path.startswith("/"):
            raise DescriptionError(f"{source}: paths.{path}: a path must start with /")
        if not isinstance(item, dict):
            raise DescriptionError(f"{source}: paths.{path}: must be a mapping")
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            if not isinstance(operation, dict):
                raise DescriptionError(f"{source}: paths.{path}.{method}: must be a mapping")
            endpoints.append((method.upper(), _PARAM.sub("*", path)))
    _check_refs(document, document, source, [])
    served = anonymise_servers(document)
    if is_json:
        body = json.dumps(served, indent=2, ensure_ascii=False).encode()
        content_type = "application/json"
    else:
        body = yaml.safe_dump(served, sort_keys=False, allow_unicode=True).encode()
        content_type = "text/yaml; charset=utf-8"
    return OpenApiDescription(source, document, body, content_type, tuple(endpoints))


def _check_refs(node: Any, document: dict[str, Any], source: str, where: list[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#"):
                raise DescriptionError(f"{source}: {'.'.join(where) or '(top level)'}: $ref {ref!r} points outside "
                                       "the document; a served description must be self-contained")
            if resolve_pointer(document, ref) is None:
                raise DescriptionError(f"{source}: {'.'.join(where) or '(top level)'}: $ref {ref!r} does not "
                                       "resolve")
        for key, value in node.items():
            _check_refs(value, document, source, [*where, str(key)])
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_refs(value, document, source, [*where, str(i)])


def resolve_pointer(document: Any, ref: str) -> Any:
    """Follow a local JSON pointer (``#/components/schemas/X``); None when it leads nowhere."""
    node = document
    for raw in ref.lstrip("#").split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


def anonymise_servers(document: dict[str, Any]) -> dict[str, Any]:
    """X-Road hands out OpenAPI documents with each server URL reduced to its path, so internal hosts stay
    hidden; URLs with {variables} are left alone, as X-Road does."""
    servers = document.get("servers")
    if not isinstance(servers, list):
        return document
    out = []
    for server in servers:
        if isinstance(server, dict) and isinstance(server.get("url"), str) and "{" not in server["url"]:
            parts = urlsplit(server["url"])
            if parts.scheme or parts.netloc:
                server = {**server, "url": parts.path or "/"}
        out.append(server)
    return {**document, "servers": out}


def generated_openapi(title: str, operations: list[tuple[str, str, str]]) -> OpenApiDescription:
    """An OpenAPI 3 description for a REST face that has no document of its own (a bridged SOAP backend, a
    mapped legacy REST backend): one operation per (method, path, summary), JSON in and out."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary in operations:
        operation: dict[str, Any] = {
            "summary": summary,
            "responses": {"200": {"description": "the backend's answer",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}},
        }
        params = _PARAM.findall(path)
        if params:
            operation["parameters"] = [{"name": p.strip("{}"), "in": "path", "required": True,
                                        "schema": {"type": "string"}} for p in params]
        if method in ("post", "put", "patch"):
            operation["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
        paths.setdefault(path, {})[method] = operation
    document = {"openapi": "3.0.3", "info": {"title": title, "version": "generated"}, "paths": paths}
    return parse_openapi(json.dumps(document).encode(), f"{title}.json")


def bridge_openapi(service_code: str, wsdl: WsdlDescription) -> OpenApiDescription:
    """What REST callers of a SOAP backend see: ``POST /{operation}`` with a JSON object of the request's
    fields (or ``GET /{operation}?field=...``), answered with the response's fields as JSON."""
    operations = []
    for op in wsdl.operations:
        summary = f"SOAP operation {op} of the backend, bridged to JSON"
        operations += [("post", f"/{op}", summary), ("get", f"/{op}", summary)]
    return generated_openapi(f"{service_code} (bridged SOAP)", operations)
