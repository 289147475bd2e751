"""Service descriptions in the gateway YAML: loaded and checked at configuration load, with errors that name the
YAML file, the field and the description file; served WSDLs are self-contained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lxml import etree

from gateway.configfile import ConfigError, load_model
from gateway.core import descriptions
from gateway.core.settings import GatewaySettings
from gateway.demo.backends import POPULATION_WSDL_PATH, TAX_OPENAPI

LEGACY_WSDL = """<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions name="legacy" targetNamespace="urn:legacy" xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
        xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:xs="http://www.w3.org/2001/XMLSchema"
        xmlns:xrd="http://x-road.eu/xsd/xroad.xsd" xmlns:tns="urn:legacy" xmlns:t="urn:legacy:types">
    <wsdl:types>
        <xs:schema targetNamespace="urn:legacy" elementFormDefault="qualified">
            <xs:import namespace="http://x-road.eu/xsd/xroad.xsd" schemaLocation="http://x-road.eu/xsd/xroad.xsd"/>
            <xs:import namespace="urn:legacy:types" schemaLocation="types/legacy-types.xsd"/>
            <xs:element name="lookup"><xs:complexType><xs:sequence>
                <xs:element name="code" type="xs:string"/></xs:sequence></xs:complexType></xs:element>
            <xs:element name="lookupResponse"><xs:complexType><xs:sequence>
                <xs:element name="record" type="t:Record"/></xs:sequence></xs:complexType></xs:element>
        </xs:schema>
    </wsdl:types>
    <wsdl:message name="header"><wsdl:part name="client" element="xrd:client"/></wsdl:message>
    <wsdl:message name="lookup"><wsdl:part name="body" element="tns:lookup"/></wsdl:message>
    <wsdl:message name="lookupResponse"><wsdl:part name="body" element="tns:lookupResponse"/></wsdl:message>
    <wsdl:portType name="port"><wsdl:operation name="lookup">
        <wsdl:input message="tns:lookup"/><wsdl:output message="tns:lookupResponse"/></wsdl:operation></wsdl:portType>
    <wsdl:binding name="binding" type="tns:port">
        <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
        <wsdl:operation name="lookup"><soap:operation soapAction="lookup"/>
            <wsdl:input><soap:body use="literal"/><soap:header message="tns:header" part="client" use="literal"/>
            </wsdl:input><wsdl:output><soap:body use="literal"/></wsdl:output></wsdl:operation>
    </wsdl:binding>
    <wsdl:service name="svc"><wsdl:port name="p" binding="tns:binding">
        <soap:address location="http://legacy.internal:7001/lookup"/></wsdl:port></wsdl:service>
</wsdl:definitions>
"""

LEGACY_TYPES = """<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:legacy:types"
        xmlns:t="urn:legacy:types" elementFormDefault="qualified">
    <xs:complexType name="Record"><xs:sequence>
        <xs:element name="code" type="xs:string"/><xs:element name="kind" type="t:Kind"/></xs:sequence></xs:complexType>
    <xs:simpleType name="Kind"><xs:restriction base="xs:string"/></xs:simpleType>
</xs:schema>
"""


def gateway_yaml(tmp_path: Path, services: list[dict[str, object]]) -> Path:
    config = {
        "server": "DEMO/GOV/1001/gw", "state_dir": "state",
        "anchor": {"instance": "DEMO", "registry_url": "http://127.0.0.1:1", "signing_cert_sha256": ["ab" * 32]},
        "client_side": {"port": 0}, "server_side": {"port": 0},
        "auth": {"key": "auth.key", "certificate": "auth.pem"},
        "signing": [{"member": "DEMO/GOV/1001", "key": "sign.key", "certificate": "sign.pem"}],
        "services": services,
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def soap_service(code: str = "getPerson/v1", **description: str) -> dict[str, object]:
    return {"id": f"DEMO/GOV/1001/population/{code}", "type": "soap", "url": "http://127.0.0.1:1/p",
            "description": description}


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_model(path, GatewaySettings)
    return str(info.value)


def test_wsdl_and_openapi_descriptions_load(tmp_path: Path) -> None:
    (tmp_path / "wsdl").mkdir()
    (tmp_path / "wsdl" / "population.wsdl").write_bytes(POPULATION_WSDL_PATH.read_bytes())
    (tmp_path / "tax.yaml").write_text(yaml.safe_dump(TAX_OPENAPI))
    settings = load_model(gateway_yaml(tmp_path, [
        soap_service(wsdl="wsdl/population.wsdl"),  # relative to the YAML file
        soap_service("greet", wsdl="wsdl/population.wsdl", operation="echo"),
        {"id": "DEMO/GOV/1001/population/tax", "type": "rest", "url": "http://127.0.0.1:1",
         "description": {"openapi": "tax.yaml"}},
    ]), GatewaySettings)
    wsdl = settings.services[0].description.loaded_wsdl
    assert wsdl.operations == ("getPerson", "echo")
    openapi = settings.services[2].description.loaded_openapi
    assert ("GET", "/taxpayers/*") in openapi.endpoints
    assert openapi.content_type.startswith("text/yaml")
    assert yaml.safe_load(openapi.served)["info"]["title"] == TAX_OPENAPI["info"]["title"]


def test_operation_that_does_not_exist(tmp_path: Path) -> None:
    message = load_error(gateway_yaml(tmp_path, [soap_service(wsdl=str(POPULATION_WSDL_PATH), operation="getPersn")]))
    assert "gateway.yaml" in message
    assert "services.0" in message and "description.operation" in message
    assert "'getPersn' is not defined in" in message and "population.wsdl" in message
    assert "getPerson, echo" in message
    # the default operation is the service code
    message = load_error(gateway_yaml(tmp_path, [soap_service("lookup", wsdl=str(POPULATION_WSDL_PATH))]))
    assert "id (service code, the default operation): operation 'lookup' is not defined" in message


def test_wsdl_that_fails_to_parse(tmp_path: Path) -> None:
    (tmp_path / "broken.wsdl").write_text("<wsdl:definitions xmlns:wsdl='http://schemas.xmlsoap.org/wsdl/'>")
    message = load_error(gateway_yaml(tmp_path, [soap_service(wsdl="broken.wsdl")]))
    assert "services.0.description" in message
    assert "wsdl:" in message and "broken.wsdl: WSDL is not well-formed XML" in message
    (tmp_path / "notwsdl.wsdl").write_text("<definitions/>")
    assert "not a WSDL 1.1 document" in load_error(gateway_yaml(tmp_path, [soap_service(wsdl="notwsdl.wsdl")]))
    # well-formed, but a part names an element no schema defines: a SOAP client could not use it
    (tmp_path / "undefined.wsdl").write_bytes(POPULATION_WSDL_PATH.read_bytes().replace(
        b'element="tns:getPerson"', b'element="tns:getPersonX"'))
    message = load_error(gateway_yaml(tmp_path, [soap_service(wsdl="undefined.wsdl")]))
    assert "undefined.wsdl: a SOAP client cannot load it" in message
    assert "cannot read" in load_error(gateway_yaml(tmp_path, [soap_service(wsdl="missing.wsdl")]))


def test_openapi_that_fails_to_parse(tmp_path: Path) -> None:
    def rest(name: str) -> dict[str, object]:
        return {"id": "DEMO/GOV/1001/population/tax", "type": "rest", "url": "http://127.0.0.1:1",
                "description": {"openapi": name}}

    (tmp_path / "broken.json").write_text('{"openapi": "3.0.3", ')
    message = load_error(gateway_yaml(tmp_path, [rest("broken.json")]))
    assert "services.0.description" in message and "broken.json: not valid JSON" in message
    (tmp_path / "broken.yaml").write_text("openapi: 3.0.3\npaths: [\n")
    assert "broken.yaml: not valid YAML at line" in load_error(gateway_yaml(tmp_path, [rest("broken.yaml")]))
    (tmp_path / "swagger.json").write_text(json.dumps({"swagger": "2.0", "info": {}, "paths": {}}))
    assert "field openapi must be a 3.x version" in load_error(gateway_yaml(tmp_path, [rest("swagger.json")]))
    dangling = {**TAX_OPENAPI, "components": {"schemas": {}}}
    (tmp_path / "dangling.json").write_text(json.dumps(dangling))
    message = load_error(gateway_yaml(tmp_path, [rest("dangling.json")]))
    assert "$ref '#/components/schemas/Taxpayer' does not resolve" in message
    remote = {**TAX_OPENAPI, "paths": {"/x": {"get": {"responses": {"200": {"$ref": "https://example.com/r.json"}}}}}}
    (tmp_path / "remote.json").write_text(json.dumps(remote))
    assert "points outside the document" in load_error(gateway_yaml(tmp_path, [rest("remote.json")]))


def test_description_must_fit_the_service_type(tmp_path: Path) -> None:
    (tmp_path / "tax.json").write_text(json.dumps(TAX_OPENAPI))
    message = load_error(gateway_yaml(tmp_path, [soap_service(openapi="tax.json")]))
    assert "a SOAP service is described by a wsdl file" in message
    message = load_error(gateway_yaml(tmp_path, [soap_service(wsdl=str(POPULATION_WSDL_PATH), openapi="tax.json")]))
    assert "give exactly one of wsdl (SOAP) or openapi (REST)" in message


def test_metaservice_codes_are_reserved(tmp_path: Path) -> None:
    message = load_error(gateway_yaml(tmp_path, [{"id": "DEMO/GOV/1001/population/listMethods", "type": "soap",
                                                  "url": "http://127.0.0.1:1/p"}]))
    assert "services.0.id: service code listMethods is reserved for X-Road's metaservices" in message


def test_legacy_wsdl_is_made_self_contained(tmp_path: Path) -> None:
    """X-Road's header schema comes from the bundled copy, a local schema file is inlined, the address hidden."""
    (tmp_path / "types").mkdir()
    (tmp_path / "types" / "legacy-types.xsd").write_text(LEGACY_TYPES)
    (tmp_path / "legacy.wsdl").write_text(LEGACY_WSDL)
    settings = load_model(gateway_yaml(tmp_path, [soap_service("lookup", wsdl="legacy.wsdl")]), GatewaySettings)
    document = settings.services[0].description.loaded_wsdl.document
    root = etree.fromstring(document)
    assert not [el for el in root.iter() if el.get("schemaLocation")]
    namespaces = {s.get("targetNamespace") for s in root.iter("{http://www.w3.org/2001/XMLSchema}schema")}
    assert namespaces == {"urn:legacy", "urn:legacy:types", "http://x-road.eu/xsd/xroad.xsd",
                          "http://x-road.eu/xsd/identifiers"}
    assert b"legacy.internal" not in document and descriptions.HIDDEN_ENDPOINT.encode() in document
    descriptions.check_loads_offline(document, "served")  # what a client gets loads with the network refused


def test_schema_location_that_needs_the_network(tmp_path: Path) -> None:
    (tmp_path / "remote.wsdl").write_text(LEGACY_WSDL.replace("types/legacy-types.xsd",
                                                              "https://schemas.example.com/legacy-types.xsd"))
    message = load_error(gateway_yaml(tmp_path, [soap_service("lookup", wsdl="remote.wsdl")]))
    assert "schemaLocation 'https://schemas.example.com/legacy-types.xsd' needs the network" in message


def test_validation_needs_a_schema_that_compiles(tmp_path: Path) -> None:
    bad = {**TAX_OPENAPI, "components": {**TAX_OPENAPI["components"], "schemas": {
        **TAX_OPENAPI["components"]["schemas"], "Error": {"type": "strin"}}}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    message = load_error(gateway_yaml(tmp_path, [{
        "id": "DEMO/GOV/1001/population/tax", "type": "rest", "url": "http://127.0.0.1:1",
        "description": {"openapi": "bad.json", "validation": True}}]))
    assert "description.validation" in message and "a schema is not valid" in message
