"""REST protocol r1: the request line and X-Road headers to a request model, and the headers that may cross."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.core import identifiers as ids
from gateway.core import rest
from gateway.core.faults import Fault

TAX = ids.ServiceId("DEMO", "GOV", "1002", "tax-records", "taxpayers")
CLIENT = ("X-Road-Client", "DEMO/GOV/1001/population")


def fault_of(call: Callable[..., object], *args: object) -> Fault:
    with pytest.raises(Fault) as info:
        call(*args)
    return info.value


# -- the target ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "service_path"), [
    ("/r1/DEMO/GOV/1002/tax-records/taxpayers", ""),
    ("/r1/DEMO/GOV/1002/tax-records/taxpayers/", "/"),
    ("/r1/DEMO/GOV/1002/tax-records/taxpayers/1", "/1"),
    ("/r1/DEMO/GOV/1002/tax-records/taxpayers/a/b/c.json", "/a/b/c.json"),
    ("/r1/DEMO/GOV/1002/tax-records/taxpayers/a%20b/%C3%A4", "/a%20b/%C3%A4"),  # kept encoded, as received
    ("/r1/DEMO/GOV/1002/tax-records/taxpayers/a//b", "/a//b"),
    ("/r1/DEMO/GOV/1002/tax-records/taxpayers/...", "/..."),
    ("/r1/DEMO/GOV/1002/tax-records/taxpayers/..x/.hidden", "/..x/.hidden"),
])
def test_good_targets(raw: str, service_path: str) -> None:
    service, path = rest.parse_target(raw)
    assert service == TAX
    assert service.service_version is None
    assert path == service_path


def test_percent_encoded_identifier_segments_are_decoded() -> None:
    service, path = rest.parse_target("/r1/DEMO/GOV/10%30%32/tax%2Drecords/tax%70ayers/x")
    assert service == TAX
    assert path == "/x"


@pytest.mark.parametrize("raw", [
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/..",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/../../admin",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/a/./b",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/%2e%2e/secret",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/%2E%2E",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/.%2e/x",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/%2e",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/a%2Fb",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/a%2fb",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/%2F%2Fevil.example",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/a%5Cb",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/a\\b",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/a%00b",
    "/r1/DEMO/GOV/1002/tax-records/taxpayers/%ff",  # not UTF-8
])
def test_traversal_and_encoded_separators_are_refused(raw: str) -> None:
    assert fault_of(rest.parse_target, raw).full_code == "Client.InvalidRest"


@pytest.mark.parametrize(("raw", "part"), [
    ("/r1/DEMO/GOV/1002/tax%2Frecords/taxpayers", "subsystemCode"),
    ("/r1/DEMO/GOV/1002/tax%20records/taxpayers", "subsystemCode"),
    ("/r1/DEMO/G%25V/1002/tax-records/taxpayers", "memberClass"),
    ("/r1/DE%3AMO/GOV/1002/tax-records/taxpayers", "xRoadInstance"),
    ("/r1/DEMO/GOV/1002/tax-records/tax*payers", "serviceCode"),
    ("/r1/DEMO/GOV/" + "1" * 256 + "/tax-records/taxpayers", "memberCode"),
])
def test_bad_identifier_segments_name_the_part(raw: str, part: str) -> None:
    fault = fault_of(rest.parse_target, raw)
    assert fault.full_code == "Client.InvalidServiceIdentifier"
    assert part in fault.message


def test_identifier_segment_that_is_not_utf8() -> None:
    fault = fault_of(rest.parse_target, "/r1/DEMO/GOV/1002/tax%ff/taxpayers")
    assert fault.full_code == "Client.InvalidRest"
    assert "subsystemCode" in fault.message


def test_encoded_newline_in_an_identifier_segment_is_refused() -> None:
    assert fault_of(rest.parse_target, "/r1/DEMO/GOV/1002/tax-records%0A/taxpayers").full_code == \
        "Client.InvalidServiceIdentifier"


@pytest.mark.parametrize("raw", [
    "/r1/DEMO/GOV/1002/tax-records",
    "/r1/DEMO/GOV/1002",
    "/r1/",
    "/r1/DEMO/GOV//tax-records/taxpayers",
    "/r1/DEMO/GOV/1002/tax-records/",
])
def test_fewer_than_five_parts(raw: str) -> None:
    fault = fault_of(rest.parse_target, raw)
    assert fault.full_code == "Client.InvalidServiceIdentifier"
    assert "{subsystemCode}/{serviceCode}" in fault.message


@pytest.mark.parametrize("raw", ["/r2/DEMO/GOV/1002/tax-records/taxpayers", "/DEMO/GOV/1002/tax-records/taxpayers",
                                 "r1/DEMO/GOV/1002/tax-records/taxpayers", "/R1/DEMO/GOV/1002/tax-records/taxpayers"])
def test_only_r1(raw: str) -> None:
    assert fault_of(rest.parse_target, raw).full_code == "Client.InvalidRest"


def test_uri_length_limit() -> None:
    base = "/r1/DEMO/GOV/1002/tax-records/taxpayers/"
    at_limit = base + "x" * (rest.MAX_URI_LENGTH - len(base))
    assert rest.parse_target(at_limit)[1] == "/" + "x" * (rest.MAX_URI_LENGTH - len(base))
    fault = fault_of(rest.parse_target, at_limit + "x")
    assert fault.full_code == "Client.InvalidRest"
    assert "2000" in fault.message
    # parse_request counts the query too
    query = "q=" + "y" * 10
    fault = fault_of(rest.parse_request, "GET", at_limit[: -len(query)] + "x", query, [CLIENT])
    assert fault.full_code == "Client.InvalidRest"
    assert rest.parse_request("GET", at_limit[: -len(query)], query, [CLIENT]).query == query


# -- the request -------------------------------------------------------------------------------------------------


def test_full_request() -> None:
    headers = [
        ("X-Road-Client", "DEMO/GOV/1001/population"), ("X-Road-Id", "req-1"), ("X-Road-UserId", "EE123"),
        ("X-Road-Issue", "case-9"), ("X-Road-Security-Server", "DEMO/GOV/1002/gw-tax"),
        ("Content-Type", "application/json"), ("Accept", "application/json"), ("Host", "gw"),
    ]
    req = rest.parse_request("post", "/r1/DEMO/GOV/1002/tax-records/taxpayers/1", "a=1&b=2", headers)
    assert req.service == TAX
    assert req.client == ids.SubsystemId("DEMO", "GOV", "1001", "population")
    assert req.method == "POST"
    assert req.service_path == "/1"
    assert req.query == "a=1&b=2"
    assert req.xroad_id == "req-1"
    assert req.user_id == "EE123"
    assert req.issue == "case-9"
    assert req.security_server == ids.ServerId("DEMO", "GOV", "1002", "gw-tax")
    assert req.headers == (("content-type", "application/json"), ("accept", "application/json"))


def test_minimal_request_with_a_member_client() -> None:
    req = rest.parse_request("GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers", "", [("x-road-client", "DEMO/GOV/1001")])
    assert req.client == ids.MemberId("DEMO", "GOV", "1001")
    assert (req.xroad_id, req.user_id, req.issue, req.security_server) == (None, None, None, None)
    assert req.headers == ()


def test_header_names_are_case_insensitive() -> None:
    req = rest.parse_request("GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers", "",
                             [("X-ROAD-CLIENT", "DEMO/GOV/1001/population"), ("x-road-id", "a")])
    assert req.client == ids.SubsystemId("DEMO", "GOV", "1001", "population")
    assert req.xroad_id == "a"


def test_missing_client_header() -> None:
    fault = fault_of(rest.parse_request, "GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers", "",
                     [("X-Road-Id", "1")])
    assert fault.full_code == "Client.MissingHeader"
    assert "X-Road-Client" in fault.message


@pytest.mark.parametrize(("value", "part"), [
    ("DEMO/GOV/1001/popu lation", "subsystemCode"),
    ("DEMO/GOV", "client id"),
    ("DEMO/GOV/1001/population/extra", "client id"),
    ("DEMO//1001", "memberClass"),
])
def test_bad_client_header(value: str, part: str) -> None:
    fault = fault_of(rest.parse_request, "GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers", "",
                     [("X-Road-Client", value)])
    assert fault.full_code == "Client.InvalidClientIdentifier"
    assert part in fault.message


def test_repeated_client_header_with_different_values() -> None:
    headers = [("X-Road-Client", "DEMO/GOV/1001/population"), ("x-road-client", "DEMO/GOV/1003/patients")]
    fault = fault_of(rest.parse_request, "GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers", "", headers)
    assert fault.full_code == "Client.InconsistentHeaders"
    assert "x-road-client" in fault.message


def test_repeated_identical_client_header_is_accepted() -> None:
    headers = [("X-Road-Client", "DEMO/GOV/1001/population"), ("x-road-client", " DEMO/GOV/1001/population ")]
    req = rest.parse_request("GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers", "", headers)
    assert req.client == ids.SubsystemId("DEMO", "GOV", "1001", "population")


@pytest.mark.parametrize("name", ["X-Road-Id", "X-Road-UserId", "X-Road-Issue", "X-Road-Security-Server"])
def test_other_repeated_headers_must_agree(name: str) -> None:
    headers = [CLIENT, (name, "DEMO/GOV/1002/gw-a"), (name, "DEMO/GOV/1002/gw-b")]
    fault = fault_of(rest.parse_request, "GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers", "", headers)
    assert fault.full_code == "Client.InconsistentHeaders"


def test_x_road_id_length() -> None:
    ok = rest.parse_request("GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers", "", [CLIENT, ("X-Road-Id", "i" * 255)])
    assert ok.xroad_id == "i" * 255
    for bad in ("i" * 256, "", "   "):
        fault = fault_of(rest.parse_request, "GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers", "",
                         [CLIENT, ("X-Road-Id", bad)])
        assert fault.full_code == "Client.InvalidRest"
        assert "X-Road-Id" in fault.message


def test_bad_security_server_header() -> None:
    fault = fault_of(rest.parse_request, "GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers", "",
                     [CLIENT, ("X-Road-Security-Server", "DEMO/GOV/1002/gw tax")])
    assert fault.full_code == "Client.InvalidClientIdentifier"
    assert "serverCode" in fault.message


def test_path_faults_come_before_header_faults() -> None:
    fault = fault_of(rest.parse_request, "GET", "/r1/DEMO/GOV/1002/tax-records/taxpayers/..", "", [])
    assert fault.full_code == "Client.InvalidRest"


# -- crossing headers ---------------------------------------------------------------------------------------------


def test_crossing_headers_drops_hop_by_hop_and_x_road() -> None:
    dropped = ["Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "TE",
               "Trailer", "Transfer-Encoding", "Upgrade", "Host", "User-Agent", "Server", "Content-Length", "Date",
               "Expect", "X-Road-Client", "X-Road-Id", "x-road-userid", "X-ROAD-ISSUE", "X-Road-Security-Server",
               "X-Road-Anything-New"]
    kept = [("Content-Type", "application/json"), ("Accept", "*/*"), ("X-Custom", "1"),
            ("Authorization", "Bearer t"), ("traceparent", "00-abc-def-01"), ("X-Roadster", "kept"),
            ("Accept-Encoding", "gzip")]
    headers = [(name, "v") for name in dropped] + kept
    assert rest.crossing_headers(headers) == tuple((k.lower(), v) for k, v in kept)


def test_crossing_headers_keeps_order_and_repeats() -> None:
    headers = [("Accept", "a"), ("X-Custom", "1"), ("accept", "b"), ("X-CUSTOM", "2")]
    assert rest.crossing_headers(headers) == (("accept", "a"), ("x-custom", "1"), ("accept", "b"), ("x-custom", "2"))


def test_crossing_headers_drops_headers_named_by_connection() -> None:
    headers = [("Connection", "close, X-Internal-Token"), ("X-Internal-Token", "secret"), ("X-Custom", "1")]
    assert rest.crossing_headers(headers) == (("x-custom", "1"),)
