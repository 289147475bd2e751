"""X-Road message protocol 4.0 over SOAP: parsing valid requests, each fault's exact code, and response binding."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from gateway.core import identifiers as ids
from gateway.core import soap
from gateway.core.faults import Fault, Origin

ENV = soap.SOAP_ENV
XRD = soap.XROAD
IDEN = soap.IDEN
TEST_NS = "http://test.example/"

SUBSYSTEM = ids.SubsystemId("DEMO", "GOV", "1003", "patients")
MEMBER = ids.MemberId("DEMO", "GOV", "1003")
SERVICE_V1 = ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1")
SERVICE = ids.ServiceId("DEMO", "GOV", "1001", "population", "echo")


def body(name: str = "getPerson", text: str = "hello") -> etree._Element:
    el = etree.Element(f"{{{TEST_NS}}}{name}", nsmap={"t": TEST_NS})
    etree.SubElement(el, "text").text = text
    return el


def request(client: ids.ClientId = SUBSYSTEM, service: ids.ServiceId = SERVICE_V1, xroad_id: str = "id-1",
            user_id: str | None = "EE12345", issue: str | None = None) -> bytes:
    return soap.build_request(client, service, xroad_id, body(service.service_code), user_id=user_id, issue=issue)


def edit(data: bytes, change: Callable[[etree._Element, etree._Element], None]) -> bytes:
    """Apply ``change(root, header)`` to a parsed copy of ``data`` and serialise it again."""
    root = etree.fromstring(data)
    change(root, root.find(f"{{{ENV}}}Header"))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def xrd(header: etree._Element, name: str) -> etree._Element:
    el = header.find(f"{{{XRD}}}{name}")
    assert el is not None, name
    return el


def iden(parent: etree._Element, name: str) -> etree._Element:
    el = parent.find(f"{{{IDEN}}}{name}")
    assert el is not None, name
    return el


def add_security_server(header: etree._Element, parts: dict[str, str], object_type: str | None = "SERVER") -> None:
    el = etree.SubElement(header, f"{{{XRD}}}securityServer")
    if object_type is not None:
        el.set(f"{{{IDEN}}}objectType", object_type)
    for name, value in parts.items():
        etree.SubElement(el, f"{{{IDEN}}}{name}").text = value


GW = {"xRoadInstance": "DEMO", "memberClass": "GOV", "memberCode": "1001", "serverCode": "gw-civil"}


def fault_code(data: bytes, origin: Origin = Origin.CLIENT, *, expect_request: bool = True) -> str:
    with pytest.raises(Fault) as info:
        soap.parse_message(data, origin, expect_request=expect_request)
    return info.value.full_code


# -- valid requests -----------------------------------------------------------------------------------------------


def test_subsystem_client_versioned_service_with_user_and_issue() -> None:
    message = soap.parse_message(request(SUBSYSTEM, SERVICE_V1, "id-42", user_id="EE12345", issue="case-7"))
    assert message.client == SUBSYSTEM
    assert isinstance(message.client, ids.SubsystemId)
    assert message.service == SERVICE_V1
    assert message.service is not None and message.service.service_version == "v1"
    assert message.xroad_id == "id-42"
    assert message.protocol_version == "4.0"
    assert message.user_id == "EE12345"
    assert message.issue == "case-7"
    assert message.security_server is None
    assert message.is_fault is False
    assert message.body_element.tag == f"{{{TEST_NS}}}getPerson"
    assert message.body_element.findtext("text") == "hello"
    assert soap.fault_of(message) is None


def test_member_client_unversioned_service_without_optional_headers() -> None:
    message = soap.parse_message(request(MEMBER, SERVICE, user_id=None))
    assert message.client == MEMBER
    assert isinstance(message.client, ids.MemberId)
    assert message.service == SERVICE
    assert message.service is not None and message.service.service_version is None
    assert message.user_id is None
    assert message.issue is None


def test_member_level_service() -> None:
    service = ids.ServiceId("DEMO", "GOV", "1001", None, "getPerson", "v1")
    message = soap.parse_message(request(SUBSYSTEM, service))
    assert message.service == service
    assert message.service is not None and message.service.provider == ids.MemberId("DEMO", "GOV", "1001")


def test_security_server_header() -> None:
    data = edit(request(), lambda root, header: add_security_server(header, GW))
    message = soap.parse_message(data)
    assert message.security_server == ids.ServerId("DEMO", "GOV", "1001", "gw-civil")


def test_whitespace_around_header_values_is_ignored() -> None:
    def pad(root: etree._Element, header: etree._Element) -> None:
        xrd(header, "id").text = "  id-1\n"
        xrd(header, "protocolVersion").text = " 4.0 "
        iden(xrd(header, "client"), "memberCode").text = "\n 1003 "

    message = soap.parse_message(edit(request(), pad))
    assert message.xroad_id == "id-1"
    assert message.client == SUBSYSTEM


def test_foreign_header_elements_are_ignored() -> None:
    def add(root: etree._Element, header: etree._Element) -> None:
        etree.SubElement(header, "{http://x-road.eu/xsd/representation.xsd}representedParty")
        etree.SubElement(header, f"{{{XRD}}}somethingNew").text = "x"
        etree.SubElement(header, "{http://other.example/}id").text = "other"

    message = soap.parse_message(edit(request(), add))
    assert message.xroad_id == "id-1"


def test_origin_sets_the_fault_prefix() -> None:
    assert fault_code(b"<a/>", Origin.SERVER_PROXY) == "Server.ServerProxy.InvalidSoap"


@settings(max_examples=40, deadline=None)
@given(st.builds(ids.SubsystemId, st.sampled_from(["DEMO", "EE"]), st.sampled_from(["GOV", "COM"]),
                 st.from_regex(r"[0-9]{1,8}", fullmatch=True), st.from_regex(r"[a-z][a-z.-]{0,15}", fullmatch=True))
       | st.builds(ids.MemberId, st.just("DEMO"), st.just("GOV"), st.from_regex(r"[0-9]{1,8}", fullmatch=True)),
       st.none() | st.from_regex(r"v[0-9]{1,3}", fullmatch=True),
       st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")), min_size=1, max_size=40)
       .filter(lambda s: s.strip() == s and s.strip() != ""))
def test_build_then_parse_round_trips(client: ids.ClientId, version: str | None, xroad_id: str) -> None:
    service = ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", version)
    message = soap.parse_message(soap.build_request(client, service, xroad_id, body()))
    assert (message.client, message.service, message.xroad_id) == (client, service, xroad_id)


# -- not XML, DTDs and entities -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "code"), [
    (b"", "Client.MissingBody"),
    (b"  \n\t ", "Client.MissingBody"),
    (b"not xml at all", "Client.InvalidSoap"),
    (b"<SOAP-ENV:Envelope><unclosed>", "Client.InvalidSoap"),
    (b"<a/>", "Client.InvalidSoap"),
    (b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><x/></e:Body></e:Envelope>',
     "Client.InvalidSoap"),  # SOAP 1.2
    (b"\xff\xfe<\x00a\x00", "Client.InvalidSoap"),
])
def test_not_a_soap_message(data: bytes, code: str) -> None:
    assert fault_code(data) == code


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">
<SOAP-ENV:Header/><SOAP-ENV:Body><x>&lol9;</x></SOAP-ENV:Body></SOAP-ENV:Envelope>"""


def test_billion_laughs_is_refused_without_expanding() -> None:
    started = time.perf_counter()
    with pytest.raises(Fault) as info:
        soap.parse_message(BILLION_LAUGHS)
    assert time.perf_counter() - started < 1.0
    assert info.value.full_code == "Client.InvalidSoap"
    assert "lollol" not in info.value.message
    # With fewer levels (under libxml2's amplification limit) the parser still leaves the reference unexpanded.
    small = BILLION_LAUGHS.replace(b"&lol9;", b"&lol3;")
    assert fault_code(small) == "Client.InvalidSoap"
    text = etree.tostring(etree.fromstring(small, soap._parser()))
    assert b"&lol3;" in text
    assert b"lollol" not in text


def test_xxe_file_entity_is_refused_and_not_expanded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    data = (f'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
            f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV}"><SOAP-ENV:Header/><SOAP-ENV:Body><x>&xxe;</x>'
            '</SOAP-ENV:Body></SOAP-ENV:Envelope>').encode()
    with pytest.raises(Fault) as info:
        soap.parse_message(data)
    assert info.value.full_code == "Client.InvalidSoap"
    assert "TOP-SECRET" not in str(info.value)
    root = etree.fromstring(data, soap._parser())
    assert b"TOP-SECRET" not in etree.tostring(root)


def test_internal_dtd_without_entities_is_refused() -> None:
    data = (f'<!DOCTYPE SOAP-ENV:Envelope [<!ELEMENT x ANY>]><SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV}">'
            '<SOAP-ENV:Header/><SOAP-ENV:Body><x/></SOAP-ENV:Body></SOAP-ENV:Envelope>').encode()
    assert fault_code(data) == "Client.InvalidSoap"


def _doctype(kind: str, uri: str) -> bytes:
    if kind == "external subset":
        dtd = f'<!DOCTYPE e SYSTEM "{uri}">'
    else:  # an external parameter entity referenced in the internal subset
        dtd = f'<!DOCTYPE e [<!ENTITY % ext SYSTEM "{uri}"> %ext;]>'
    return (f'<?xml version="1.0"?>{dtd}<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV}"><SOAP-ENV:Header/>'
            '<SOAP-ENV:Body><x/></SOAP-ENV:Body></SOAP-ENV:Envelope>').encode()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a FIFO")
@pytest.mark.parametrize("kind", ["external subset", "external parameter entity"])
def test_external_dtd_files_are_never_opened(tmp_path: Path, kind: str) -> None:
    fifo = tmp_path / "probe.fifo"
    os.mkfifo(fifo)
    opened = threading.Event()
    done = threading.Event()

    def watch() -> None:
        # Opening a FIFO for writing without blocking succeeds only while someone opens it for reading.
        while not done.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.005)
                continue
            opened.set()
            os.write(fd, b"not a DTD")
            os.close(fd)  # the parser sees end of file and returns
            return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(Fault) as info:
            soap.parse_message(_doctype(kind, fifo.as_uri()))
        assert info.value.full_code == "Client.InvalidSoap"
    finally:
        time.sleep(0.05)  # give a parser that did open the FIFO time to be seen
        done.set()
        watcher.join(5)
    assert not opened.is_set(), "the XML parser opened a file named in the DTD"


def test_external_dtd_refusal_does_not_reveal_local_files(tmp_path: Path) -> None:
    existing = tmp_path / "exists.txt"
    existing.write_text("root:x:0:0:root:/root:/bin/bash\n")
    messages = set()
    for path in (existing, tmp_path / "missing.txt"):
        with pytest.raises(Fault) as info:
            soap.parse_message(_doctype("external subset", path.as_uri()))
        assert info.value.full_code == "Client.InvalidSoap"
        messages.add(info.value.message)
    assert messages == {"SOAP message must not contain a DTD or entity declarations"}


# -- envelope and header structure --------------------------------------------------------------------------------


def _drop_header(root: etree._Element, header: etree._Element) -> None:
    root.remove(header)


def _drop_body(root: etree._Element, header: etree._Element) -> None:
    root.remove(root.find(f"{{{ENV}}}Body"))


def _two_body_children(root: etree._Element, header: etree._Element) -> None:
    root.find(f"{{{ENV}}}Body").append(body("second"))


def _empty_body(root: etree._Element, header: etree._Element) -> None:
    soap_body = root.find(f"{{{ENV}}}Body")
    for child in list(soap_body):
        soap_body.remove(child)


def _two_bodies(root: etree._Element, header: etree._Element) -> None:
    etree.SubElement(root, f"{{{ENV}}}Body").append(body("second"))


def _header_after_body(root: etree._Element, header: etree._Element) -> None:
    root.remove(header)
    root.append(header)


def _extra_envelope_child(root: etree._Element, header: etree._Element) -> None:
    etree.SubElement(root, "{http://other.example/}Trailer")


def _dup_field(name: str) -> Callable[[etree._Element, etree._Element], None]:
    def change(root: etree._Element, header: etree._Element) -> None:
        header.append(etree.fromstring(etree.tostring(xrd(header, name))))
    return change


def _drop_field(name: str) -> Callable[[etree._Element, etree._Element], None]:
    def change(root: etree._Element, header: etree._Element) -> None:
        header.remove(xrd(header, name))
    return change


def _set_field(name: str, value: str) -> Callable[[etree._Element, etree._Element], None]:
    def change(root: etree._Element, header: etree._Element) -> None:
        xrd(header, name).text = value
    return change


def _set_part(header_name: str, part: str, value: str) -> Callable[[etree._Element, etree._Element], None]:
    def change(root: etree._Element, header: etree._Element) -> None:
        iden(xrd(header, header_name), part).text = value
    return change


def _object_type(header_name: str, value: str | None) -> Callable[[etree._Element, etree._Element], None]:
    def change(root: etree._Element, header: etree._Element) -> None:
        el = xrd(header, header_name)
        if value is None:
            del el.attrib[f"{{{IDEN}}}objectType"]
        else:
            el.set(f"{{{IDEN}}}objectType", value)
    return change


def _add_part(header_name: str, tag: str, value: str = "x") -> Callable[[etree._Element, etree._Element], None]:
    def change(root: etree._Element, header: etree._Element) -> None:
        etree.SubElement(xrd(header, header_name), tag).text = value
    return change


CASES: dict[str, tuple[Callable[[etree._Element, etree._Element], None], str, str]] = {
    # name: (change, expected full code, a word the message must contain)
    "no Header": (_drop_header, "Client.MissingHeader", "no Header"),
    "no Body": (_drop_body, "Client.MissingBody", "no Body"),
    "two Body children": (_two_body_children, "Client.InvalidSoap", "exactly one element"),
    "empty Body": (_empty_body, "Client.InvalidSoap", "exactly one element"),
    "two Bodies": (_two_bodies, "Client.InvalidSoap", "unexpected element Body"),
    "Header after Body": (_header_after_body, "Client.InvalidSoap", "unexpected element Header"),
    "extra Envelope child": (_extra_envelope_child, "Client.InvalidSoap", "unexpected element Trailer"),
    "duplicate id": (_dup_field("id"), "Client.DuplicateHeaderField", "id appears twice"),
    "duplicate client": (_dup_field("client"), "Client.DuplicateHeaderField", "client appears twice"),
    "duplicate userId": (_dup_field("userId"), "Client.DuplicateHeaderField", "userId appears twice"),
    "duplicate protocolVersion": (_dup_field("protocolVersion"), "Client.DuplicateHeaderField", "protocolVersion"),
    "duplicate part in client": (_add_part("client", f"{{{IDEN}}}memberCode", "1004"),
                                 "Client.DuplicateHeaderField", "client header repeats memberCode"),
    "duplicate part in service": (_add_part("service", f"{{{IDEN}}}serviceCode", "other"),
                                  "Client.DuplicateHeaderField", "service header repeats serviceCode"),
    "missing client": (_drop_field("client"), "Client.MissingHeader", "client is missing"),
    "missing service": (_drop_field("service"), "Client.MissingHeader", "service is missing"),
    "missing id": (_drop_field("id"), "Client.MissingHeader", "id is missing"),
    "missing protocolVersion": (_drop_field("protocolVersion"), "Client.MissingHeader", "protocolVersion is missing"),
    "empty id": (_set_field("id", "  "), "Client.MissingHeader", "id is empty"),
    "id too long": (_set_field("id", "i" * 256), "Client.InvalidSoap", "longer than 255"),
    "protocolVersion 3.1": (_set_field("protocolVersion", "3.1"), "Client.InvalidProtocolVersion", "'3.1'"),
    "protocolVersion empty": (_set_field("protocolVersion", ""), "Client.InvalidProtocolVersion", "None"),
    "client objectType SERVICE": (_object_type("client", "SERVICE"), "Client.InvalidClientIdentifier", "objectType"),
    "client objectType missing": (_object_type("client", None), "Client.InvalidClientIdentifier", "objectType"),
    "client objectType lower case": (_object_type("client", "subsystem"), "Client.InvalidClientIdentifier",
                                     "objectType"),
    "service objectType SUBSYSTEM": (_object_type("service", "SUBSYSTEM"), "Client.InvalidServiceIdentifier",
                                     "objectType must be SERVICE"),
    "service objectType missing": (_object_type("service", None), "Client.InvalidServiceIdentifier", "objectType"),
    "unexpected element in client": (_add_part("client", f"{{{IDEN}}}serviceCode"),
                                     "Client.InvalidClientIdentifier", "unexpected element serviceCode"),
    "foreign element in client": (_add_part("client", "{http://other.example/}memberCode"),
                                  "Client.InvalidClientIdentifier", "unexpected element memberCode"),
    "unexpected element in service": (_add_part("service", f"{{{IDEN}}}serverCode"),
                                      "Client.InvalidServiceIdentifier", "unexpected element serverCode"),
    "client subsystemCode with space": (_set_part("client", "subsystemCode", "pat ients"),
                                        "Client.InvalidClientIdentifier", "subsystemCode"),
    "client memberCode with slash": (_set_part("client", "memberCode", "10/03"),
                                     "Client.InvalidClientIdentifier", "memberCode"),
    "client memberClass empty": (_set_part("client", "memberClass", ""), "Client.InvalidClientIdentifier",
                                 "memberClass is missing"),
    "client xRoadInstance too long": (_set_part("client", "xRoadInstance", "X" * 256),
                                      "Client.InvalidClientIdentifier", "xRoadInstance is longer"),
    "service serviceCode with percent": (_set_part("service", "serviceCode", "get%20Person"),
                                         "Client.InvalidServiceIdentifier", "serviceCode"),
    "service serviceVersion with space": (_set_part("service", "serviceVersion", "v 1"),
                                          "Client.InvalidServiceIdentifier", "serviceVersion"),
    "service subsystemCode empty": (_set_part("service", "subsystemCode", ""), "Client.InvalidServiceIdentifier",
                                    "subsystemCode is missing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_header_faults(case: str) -> None:
    change, expected, words = CASES[case]
    with pytest.raises(Fault) as info:
        soap.parse_message(edit(request(), change))
    assert info.value.full_code == expected
    assert words in info.value.message


def test_member_client_must_not_have_a_subsystem_code() -> None:
    def to_member(root: etree._Element, header: etree._Element) -> None:
        xrd(header, "client").set(f"{{{IDEN}}}objectType", "MEMBER")

    with pytest.raises(Fault) as info:
        soap.parse_message(edit(request(SUBSYSTEM), to_member))
    assert info.value.full_code == "Client.InvalidClientIdentifier"
    assert "subsystemCode" in info.value.message


def test_subsystem_client_without_subsystem_code() -> None:
    def to_subsystem(root: etree._Element, header: etree._Element) -> None:
        xrd(header, "client").set(f"{{{IDEN}}}objectType", "SUBSYSTEM")

    with pytest.raises(Fault) as info:
        soap.parse_message(edit(request(MEMBER), to_subsystem))
    assert info.value.full_code == "Client.InvalidClientIdentifier"
    assert "subsystemCode is missing" in info.value.message


@pytest.mark.parametrize(("parts", "expected", "words"), [
    ({**GW, "serverCode": "gw civil"}, "Client.InvalidClientIdentifier", "serverCode"),
    ({k: v for k, v in GW.items() if k != "serverCode"}, "Client.InvalidClientIdentifier", "serverCode is missing"),
    ({**GW, "subsystemCode": "x"}, "Client.InvalidClientIdentifier", "unexpected element subsystemCode"),
])
def test_security_server_faults(parts: dict[str, str], expected: str, words: str) -> None:
    with pytest.raises(Fault) as info:
        soap.parse_message(edit(request(), lambda root, header: add_security_server(header, parts)))
    assert info.value.full_code == expected
    assert words in info.value.message


def test_security_server_repeated_part() -> None:
    def add(root: etree._Element, header: etree._Element) -> None:
        add_security_server(header, GW)
        etree.SubElement(xrd(header, "securityServer"), f"{{{IDEN}}}serverCode").text = "gw-other"

    assert fault_code(edit(request(), add)) == "Client.DuplicateHeaderField"


@pytest.mark.parametrize("object_type", ["MEMBER", None])
def test_security_server_object_type_must_be_server(object_type: str | None) -> None:
    data = edit(request(), lambda root, header: add_security_server(header, GW, object_type))
    assert fault_code(data) == "Client.InvalidClientIdentifier"


# -- responses ----------------------------------------------------------------------------------------------------


def service_response(req: bytes, *, keep: tuple[str, ...] = ("client", "service", "id", "protocolVersion"),
                     extra: Callable[[etree._Element], None] | None = None) -> bytes:
    """What a service answers: the request's Header with only ``keep`` left, and a response body."""
    root = etree.fromstring(req)
    header = root.find(f"{{{ENV}}}Header")
    for el in list(header):
        if etree.QName(el).localname not in keep:
            header.remove(el)
    if extra is not None:
        extra(header)
    soap_body = root.find(f"{{{ENV}}}Body")
    soap_body.remove(soap_body[0])
    etree.SubElement(soap_body, f"{{{TEST_NS}}}getPersonResponse").text = "ok"
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def xroad_fields(header: etree._Element) -> list[str]:
    return [etree.QName(el).localname for el in header if etree.QName(el).namespace == XRD]


def test_bind_response_adds_request_hash_and_missing_headers() -> None:
    req_bytes = request(user_id="EE12345", issue="case-7")
    req = soap.parse_message(req_bytes)
    resp = soap.parse_message(service_response(req_bytes), Origin.SERVER_PROXY, expect_request=False)
    bound = soap.bind_response(resp, req, "HASH==")
    root = etree.fromstring(bound)
    header = root.find(f"{{{ENV}}}Header")
    hashes = header.findall(f"{{{XRD}}}requestHash")
    assert len(hashes) == 1
    assert hashes[0].text == "HASH=="
    assert hashes[0].get("algorithmId") == soap.SHA512_URI == "http://www.w3.org/2001/04/xmlenc#sha512"
    assert header.findtext(f"{{{XRD}}}userId") == "EE12345"
    assert header.findtext(f"{{{XRD}}}issue") == "case-7"
    fields = xroad_fields(header)
    assert sorted(fields) == sorted(set(fields))  # nothing duplicated
    again = soap.parse_message(bound, Origin.SERVER_PROXY, expect_request=False)
    assert (again.client, again.service, again.xroad_id, again.user_id) == (req.client, req.service, "id-1",
                                                                             "EE12345")
    assert root.find(f"{{{ENV}}}Body")[0].text == "ok"
    soap.check_consistent(again, req, Origin.SERVER_PROXY)


def test_bind_response_replaces_a_service_supplied_request_hash() -> None:
    req_bytes = request()
    req = soap.parse_message(req_bytes)

    def forged(header: etree._Element) -> None:
        el = etree.SubElement(header, f"{{{XRD}}}requestHash")
        el.set("algorithmId", "http://www.w3.org/2001/04/xmlenc#md5")
        el.text = "FORGED"

    resp = soap.parse_message(service_response(req_bytes, extra=forged), Origin.SERVER_PROXY, expect_request=False)
    header = etree.fromstring(soap.bind_response(resp, req, "REAL==")).find(f"{{{ENV}}}Header")
    hashes = header.findall(f"{{{XRD}}}requestHash")
    assert [(h.text, h.get("algorithmId")) for h in hashes] == [("REAL==", soap.SHA512_URI)]


def test_bind_response_does_not_copy_a_request_hash_from_the_request() -> None:
    def with_hash(root: etree._Element, header: etree._Element) -> None:
        etree.SubElement(header, f"{{{XRD}}}requestHash").text = "FROM-REQUEST"

    req_bytes = edit(request(), with_hash)
    req = soap.parse_message(req_bytes)
    resp = soap.parse_message(service_response(req_bytes), Origin.SERVER_PROXY, expect_request=False)
    header = etree.fromstring(soap.bind_response(resp, req, "REAL==")).find(f"{{{ENV}}}Header")
    assert [h.text for h in header.findall(f"{{{XRD}}}requestHash")] == ["REAL=="]


def test_bind_response_keeps_headers_the_service_gave() -> None:
    req_bytes = request(user_id="EE12345")

    def own_user(header: etree._Element) -> None:
        etree.SubElement(header, f"{{{XRD}}}userId").text = "service-user"

    req = soap.parse_message(req_bytes)
    resp = soap.parse_message(service_response(req_bytes, extra=own_user), Origin.SERVER_PROXY,
                              expect_request=False)
    header = etree.fromstring(soap.bind_response(resp, req, "H")).find(f"{{{ENV}}}Header")
    assert [el.text for el in header.findall(f"{{{XRD}}}userId")] == ["service-user"]


def test_bind_response_copies_security_server() -> None:
    req_bytes = edit(request(), lambda root, header: add_security_server(header, GW))
    req = soap.parse_message(req_bytes)
    resp = soap.parse_message(service_response(req_bytes), Origin.SERVER_PROXY, expect_request=False)
    again = soap.parse_message(soap.bind_response(resp, req, "H"), Origin.SERVER_PROXY, expect_request=False)
    assert again.security_server == ids.ServerId("DEMO", "GOV", "1001", "gw-civil")


BARE_FAULT = (f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV}"><SOAP-ENV:Body><SOAP-ENV:Fault>'
              '<faultcode>SOAP-ENV:Server</faultcode><faultstring>database is down</faultstring>'
              '</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>').encode()


def test_bare_soap_fault_from_a_service() -> None:
    message = soap.parse_message(BARE_FAULT, Origin.SERVER_PROXY, expect_request=False)
    assert message.is_fault
    assert message.client is None and message.service is None
    assert message.xroad_id == ""
    assert soap.fault_of(message) == ("SOAP-ENV:Server", "database is down")
    # as a request, or when a non-fault response lacks headers, it is refused
    assert fault_code(BARE_FAULT) == "Client.MissingHeader"
    no_headers = (f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV}"><SOAP-ENV:Body><x/></SOAP-ENV:Body>'
                  '</SOAP-ENV:Envelope>').encode()
    assert fault_code(no_headers, Origin.SERVER_PROXY, expect_request=False) == "Server.ServerProxy.MissingHeader"


def test_bare_soap_fault_gets_the_request_headers() -> None:
    req = soap.parse_message(request(user_id="EE12345"))
    fault = soap.parse_message(BARE_FAULT, Origin.SERVER_PROXY, expect_request=False)
    soap.check_consistent(fault, req, Origin.SERVER_PROXY)  # nothing to compare yet
    bound = soap.parse_message(soap.bind_response(fault, req, "H"), Origin.SERVER_PROXY, expect_request=False)
    assert bound.is_fault
    assert (bound.client, bound.service, bound.xroad_id, bound.user_id) == (req.client, req.service, "id-1",
                                                                             "EE12345")
    assert bound.header.findtext(f"{{{XRD}}}requestHash") == "H"
    root = bound.root
    assert [etree.QName(c).localname for c in root] == ["Header", "Body"]


def test_fault_with_headers_parses_as_a_request_would() -> None:
    req_bytes = request()
    root = etree.fromstring(req_bytes)
    soap_body = root.find(f"{{{ENV}}}Body")
    soap_body.remove(soap_body[0])
    fault_el = etree.SubElement(soap_body, f"{{{ENV}}}Fault")
    etree.SubElement(fault_el, "faultcode").text = "Server"
    etree.SubElement(fault_el, "faultstring").text = "boom"
    message = soap.parse_message(etree.tostring(root), Origin.SERVER_PROXY, expect_request=False)
    assert message.is_fault and message.client == SUBSYSTEM
    assert soap.fault_of(message) == ("Server", "boom")


@pytest.mark.parametrize(("client", "service", "xroad_id"), [
    (SUBSYSTEM, SERVICE_V1, "id-2"),
    (ids.SubsystemId("DEMO", "GOV", "1002", "tax-records"), SERVICE_V1, "id-1"),
    (MEMBER, SERVICE_V1, "id-1"),
    (SUBSYSTEM, ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v2"), "id-1"),
    (SUBSYSTEM, ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson"), "id-1"),
])
def test_check_consistent_refuses_a_mismatch(client: ids.ClientId, service: ids.ServiceId, xroad_id: str) -> None:
    req = soap.parse_message(request(SUBSYSTEM, SERVICE_V1, "id-1"))
    resp = soap.parse_message(request(client, service, xroad_id), Origin.SERVER_PROXY, expect_request=False)
    with pytest.raises(Fault) as info:
        soap.check_consistent(resp, req, Origin.SERVER_PROXY)
    assert info.value.full_code == "Server.ServerProxy.InconsistentHeaders"
    with pytest.raises(Fault) as info:
        soap.check_consistent(resp, req, Origin.CLIENT_PROXY)
    assert info.value.full_code == "Server.ClientProxy.InconsistentHeaders"


def test_check_consistent_accepts_an_echo() -> None:
    req_bytes = request()
    req = soap.parse_message(req_bytes)
    resp = soap.parse_message(service_response(req_bytes), Origin.SERVER_PROXY, expect_request=False)
    soap.check_consistent(resp, req, Origin.SERVER_PROXY)
