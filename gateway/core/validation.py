"""Optional validation against a service's description: XSD from the WSDL, JSON Schema from the OpenAPI document."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from lxml import etree

from gateway.core import descriptions, soap
from gateway.core.faults import Code, Fault, Origin

_XS = descriptions.XS_NS
_W = descriptions.WSDL_NS
_SOAP_FAULT = f"{{{soap.SOAP_ENV}}}Fault"


class ValidationSetupError(ValueError):
    """The description cannot be turned into a validator (a schema that does not compile, a missing library)."""


class Validator(Protocol):
    def request(self, method: str, path: str, headers: tuple[tuple[str, str], ...], body: bytes) -> None: ...

    def response(self, method: str, path: str, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...


def _request_fault(message: str) -> Fault:
    return Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"request does not match the service description: {message}")


def _response_fault(message: str) -> Fault:
    return Fault(Origin.SERVER_PROXY, Code.SERVICE_FAILED, f"service response does not match its description: "
                 f"{message}")


# -- SOAP: the WSDL's schemas, compiled by libxml2 -----------------------------------------------------------------

class _InMemory(etree.Resolver):
    """Serves the WSDL's own schemas to the XSD compiler under made-up names, so nothing is read from anywhere."""

    def __init__(self, documents: dict[str, bytes]) -> None:
        super().__init__()
        self.documents = documents

    def resolve(self, url: str, pubid: str | None, context: Any) -> Any:
        document = self.documents.get(url.rsplit("/", 1)[-1])
        return self.resolve_string(document, context) if document is not None else None


def compile_wsdl_schema(wsdl: descriptions.WsdlDescription) -> etree.XMLSchema:
    """One XMLSchema over every xs:schema in wsdl:types. libxml2 takes one import per namespace, so a namespace
    spread over several schemas gets an aggregating schema that includes each of them."""
    root = descriptions.parse_xml(wsdl.document, wsdl.source, "WSDL")
    by_namespace: dict[str, list[etree._Element]] = {}
    for schema in root.iterfind(f"{{{_W}}}types/{{{_XS}}}schema"):
        by_namespace.setdefault(schema.get("targetNamespace") or "", []).append(schema)
    index = {ns: i for i, ns in enumerate(by_namespace)}
    documents: dict[str, bytes] = {}
    for namespace, schemas in by_namespace.items():
        parts = []
        for k, schema in enumerate(schemas):
            own = etree.fromstring(etree.tostring(schema))  # its own document, with the prefixes it inherited
            for ref in own.iterchildren(f"{{{_XS}}}import"):
                if (ref.get("namespace") or "") in index:
                    ref.set("schemaLocation", f"wasl-ns-{index[ref.get('namespace') or '']}.xsd")
            name = f"wasl-part-{index[namespace]}-{k}.xsd"
            documents[name] = etree.tostring(own)
            parts.append(name)
        if len(parts) == 1:
            documents[f"wasl-ns-{index[namespace]}.xsd"] = documents[parts[0]]
        else:
            aggregate = etree.Element(f"{{{_XS}}}schema", targetNamespace=namespace, nsmap={"xs": _XS})
            for part in parts:
                etree.SubElement(aggregate, f"{{{_XS}}}include", schemaLocation=part)
            documents[f"wasl-ns-{index[namespace]}.xsd"] = etree.tostring(aggregate)
    main = etree.Element(f"{{{_XS}}}schema", nsmap={"xs": _XS})
    for namespace, i in index.items():
        etree.SubElement(main, f"{{{_XS}}}import", namespace=namespace, schemaLocation=f"wasl-ns-{i}.xsd")
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(_InMemory(documents))
    try:
        return etree.XMLSchema(etree.fromstring(etree.tostring(main), parser, base_url="wasl-main.xsd"))
    except etree.XMLSchemaParseError as exc:
        raise ValidationSetupError(f"{wsdl.source}: its schemas do not compile: {exc}") from None


class WsdlValidator:
    """The SOAP Body's element, request and response, against the WSDL's schemas (faults are not checked)."""

    def __init__(self, wsdl: descriptions.WsdlDescription) -> None:
        self.schema = compile_wsdl_schema(wsdl)

    def _check(self, body: bytes, origin: Origin) -> str | None:
        try:
            root = soap.parse_xml(body, origin)
        except Fault as fault:
            return fault.message
        payload = root.find(f"{{{soap.SOAP_ENV}}}Body")
        children = [c for c in payload if isinstance(c.tag, str)] if payload is not None else []
        if len(children) != 1 or children[0].tag == _SOAP_FAULT:
            return None  # shape errors are reported by the protocol checks; faults are the service's business
        if self.schema.validate(children[0]):
            return None
        error = self.schema.error_log.last_error
        return f"{error.message} (at {error.path})" if error is not None else "invalid"

    def request(self, method: str, path: str, headers: tuple[tuple[str, str], ...], body: bytes) -> None:
        problem = self._check(body, Origin.CLIENT)
        if problem:
            raise _request_fault(problem)

    def response(self, method: str, path: str, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        problem = self._check(body, Origin.SERVER_PROXY)
        if problem:
            raise _response_fault(problem)


# -- REST: JSON Schema from the OpenAPI document ------------------------------------------------------------------

def _template(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^/{}]*\})", path)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "/?$")


def _media(headers: Any) -> str:
    for key, value in headers:
        if key.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return ""


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


class OpenApiValidator:
    """Request bodies against the operation's requestBody schema; responses must be JSON when they say they are,
    and match the schema declared for their status."""

    def __init__(self, openapi: descriptions.OpenApiDescription) -> None:
        try:
            import jsonschema
        except ImportError:  # not a dependency of the gateway itself; validation is opt-in
            raise ValidationSetupError("validate needs the jsonschema package") from None
        self._jsonschema = jsonschema
        document = openapi.document
        draft = jsonschema.Draft202012Validator if str(document.get("openapi", "")).startswith("3.1") \
            else jsonschema.Draft7Validator
        self._draft = draft
        self._components = document.get("components", {})
        self._operations: list[tuple[re.Pattern[str], str, dict[str, Any]]] = []
        for path, item in document.get("paths", {}).items():
            for method, operation in item.items():
                if method in descriptions.HTTP_METHODS and isinstance(operation, dict):
                    self._operations.append((_template(path), method.upper(), operation))
        # Schemas that are not valid fail at load, not per request; check_schema does not follow $ref, so the
        # components are checked one by one as well as the operations' own schemas.
        schemas = [s for _, _, operation in self._operations for s in self._schemas(operation)]
        named = self._components.get("schemas", {}) if isinstance(self._components, dict) else {}
        schemas += [{"allOf": [s]} for s in named.values() if isinstance(s, dict)]
        for schema in schemas:
            try:
                draft.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValidationSetupError(f"{openapi.source}: a schema is not valid: {exc.message}") from None

    def _schemas(self, operation: dict[str, Any]) -> list[dict[str, Any]]:
        contents = [operation.get("requestBody", {}).get("content", {})]
        contents += [r.get("content", {}) for r in operation.get("responses", {}).values() if isinstance(r, dict)]
        return [self._rooted(media["schema"]) for content in contents if isinstance(content, dict)
                for media in content.values() if isinstance(media, dict) and isinstance(media.get("schema"), dict)]

    def _rooted(self, schema: dict[str, Any]) -> dict[str, Any]:
        # '#/components/...' references resolve against the root, so the components travel with each schema.
        return {"allOf": [schema], "components": self._components}

    def _find(self, method: str, path: str) -> dict[str, Any] | None:
        for pattern, op_method, operation in self._operations:
            if op_method == method and pattern.match(path or "/"):
                return operation
        return None

    def _errors(self, schema: dict[str, Any], value: Any) -> str | None:
        error = self._jsonschema.exceptions.best_match(self._draft(self._rooted(schema)).iter_errors(value))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"field {where!r}: {error.message}" if where else error.message

    def request(self, method: str, path: str, headers: tuple[tuple[str, str], ...], body: bytes) -> None:
        operation = self._find(method, path)
        if operation is None:
            raise _request_fault(f"no endpoint {method} {path or '/'}")
        content = operation.get("requestBody", {}).get("content", {})
        media = _media(headers)
        schema = (content.get(media) or {}).get("schema") if content else None
        if not body.strip():
            if operation.get("requestBody", {}).get("required"):
                raise _request_fault("the request body is required")
            return
        if _is_json(media):
            try:
                value = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise _request_fault(f"the body is not valid JSON: {exc}") from None
            if isinstance(schema, dict):
                problem = self._errors(schema, value)
                if problem:
                    raise _request_fault(problem)

    def response(self, method: str, path: str, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        media = _media(headers)
        if not _is_json(media) or not body:
            return
        try:
            value = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _response_fault(f"the service said {media} but its body is not JSON") from None
        operation = self._find(method, path)
        responses = operation.get("responses", {}) if operation else {}
        declared = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
        schema = ((declared or {}).get("content", {}).get(media) or {}).get("schema") if declared else None
        if isinstance(schema, dict):
            problem = self._errors(schema, value)
            if problem:
                raise _response_fault(problem)
