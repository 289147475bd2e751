"""End-to-end exchanges through real gateways: SOAP and REST, signed, over pinned mutual TLS."""

from __future__ import annotations

import base64
import hashlib
import json

from lxml import etree

from gateway.core import identifiers as ids
from gateway.core import soap
from tests.conftest import Federation, soap_request

ECHO = ids.ServiceId("DEMO", "GOV", "1001", "population", "echo")


def fault_code(body: bytes) -> str:
    root = etree.fromstring(body)
    return root.findtext(".//faultcode")


async def post_soap(f: Federation, agency: str, payload: bytes, **headers: str):
    async with f.session.post(f.client_url(agency), data=payload,
                              headers={"Content-Type": "text/xml; charset=utf-8", **headers}) as resp:
        return resp.status, await resp.read(), resp.headers


async def test_soap_exchange_round_trip(federation: Federation) -> None:
    payload = soap_request(federation.subsystem("health"), ECHO, xroad_id="soap-1", text="salaam")
    status, body, headers = await post_soap(federation, "health", payload, SOAPAction='"echo"')
    assert status == 200, body
    root = etree.fromstring(body)
    assert root.findtext(".//echo") == "salaam"
    assert root.findtext(".//soapAction") == '"echo"'
    # requestHash is X-Road's: SHA-512 over the exact bytes the client posted.
    request_hash = root.find(f".//{{{soap.XROAD}}}requestHash")
    assert request_hash.text == base64.b64encode(hashlib.sha512(payload).digest()).decode()
    assert request_hash.get("algorithmId") == soap.SHA512_URI
    assert headers["X-Road-Id"] == "soap-1"
    assert headers["X-Road-Request-Id"]
    assert headers["X-Road-Request-Hash"]
    # every request header is echoed, in order
    names = [etree.QName(el).localname for el in root.find(f"{{{soap.SOAP_ENV}}}Header")]
    assert names[:5] == ["client", "service", "id", "userId", "protocolVersion"]


async def test_member_grant_and_versioned_service(federation: Federation) -> None:
    service = ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1")
    status, body, _ = await post_soap(federation, "health", soap_request(federation.subsystem("health"), service))
    assert status == 200, body


async def test_global_group_grant(federation: Federation) -> None:
    status, body, _ = await post_soap(federation, "tax", soap_request(federation.subsystem("tax"), ECHO))
    assert status == 200, body


async def test_soap_access_denied(federation: Federation) -> None:
    service = ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1")
    status, body, _ = await post_soap(federation, "tax", soap_request(federation.subsystem("tax"), service))
    assert status == 500
    assert fault_code(body) == "Server.ServerProxy.AccessDenied"
    detail = etree.fromstring(body).findtext(".//faultDetail")
    assert len(detail) == 36  # a correlation UUID, nothing else


async def test_rest_exchange_round_trip(federation: Federation) -> None:
    url = federation.client_url("civil", "/r1/DEMO/GOV/1002/tax-records/taxpayers/items/42%2Fx?year=2025&a=b")
    headers = {"X-Road-Client": "DEMO/GOV/1001/population", "X-Road-UserId": "EE1", "X-Road-Issue": "case-7",
               "X-Custom": "kept", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    async with federation.session.get(url, headers=headers) as resp:
        # an encoded slash inside a segment is refused as a traversal attempt
        assert resp.status == 400
        assert resp.headers["X-Road-Error"] == "Client.InvalidRest"
    url = federation.client_url("civil", "/r1/DEMO/GOV/1002/tax-records/taxpayers/items/42?year=2025&a=b")
    async with federation.session.post(url, headers=headers, data=b'{"x": 1}') as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        assert resp.headers["X-Backend"] == "rest-echo"
        assert resp.headers["X-Road-Client"] == "DEMO/GOV/1001/population"
        assert resp.headers["X-Road-Service"] == "DEMO/GOV/1002/tax-records/taxpayers"
        assert resp.headers["X-Road-Id"] and resp.headers["X-Road-Request-Hash"]
    assert data["method"] == "POST"
    assert data["path"] == "/rest/items/42"
    assert data["query"] == "year=2025&a=b"
    assert data["body"] == '{"x": 1}'
    assert data["headers"]["X-Road-Client"] == "DEMO/GOV/1001/population"
    assert data["headers"]["X-Road-UserId"] == "EE1"
    assert data["headers"]["X-Road-Issue"] == "case-7"
    assert data["headers"]["x-custom"] == "kept"  # names cross lower-cased, as HTTP allows
    assert data["headers"]["traceparent"].startswith("00-0af7651916cd43dd")


async def test_rest_access_denied_is_json(federation: Federation) -> None:
    url = federation.client_url("health", "/r1/DEMO/GOV/1002/tax-records/taxpayers/1")
    async with federation.session.get(url, headers={"X-Road-Client": "DEMO/GOV/1003/patients"}) as resp:
        assert resp.status == 403
        body = json.loads(await resp.read())
    assert body["type"] == "Server.ServerProxy.AccessDenied"
    assert "patients" in body["message"]
    assert len(body["detail"]) == 36


async def test_every_signed_message_is_in_both_message_logs(federation: Federation) -> None:
    payload = soap_request(federation.subsystem("health"), ECHO, xroad_id="logged-1")
    status, _, headers = await post_soap(federation, "health", payload)
    assert status == 200
    for agency, side in (("health", "client"), ("civil", "provider")):
        store = federation.gateways[agency].runtime.message_log.store
        records = await store.by_xroad_id("logged-1")
        assert [(r.direction, r.side) for r in records] == [("request", side), ("response", side)]
        assert records[0].body == payload  # the exact bytes the client sent
        assert records[0].request_id == headers["X-Road-Request-Id"]
        assert records[1].prev_hash == records[0].record_hash
        assert await store.verify() == []


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_move_with_traffic(federation: Federation) -> None:
    async def scrape(agency: str) -> str:
        async with federation.session.get(federation.client_url(agency, "/metrics")) as resp:
            assert resp.status == 200
            return await resp.text()

    before_client = metric_value(await scrape("health"), "wasl_requests_total", side="client", status_class="2xx")
    before_provider = metric_value(await scrape("civil"), "wasl_requests_total", side="provider",
                                   service="DEMO/GOV/1001/population/echo")
    for i in range(3):
        status, _, _ = await post_soap(federation, "health", soap_request(federation.subsystem("health"), ECHO,
                                                                          xroad_id=f"m-{i}"))
        assert status == 200
    denied = ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1")
    await post_soap(federation, "tax", soap_request(federation.subsystem("tax"), denied))
    client_text = await scrape("health")
    assert metric_value(client_text, "wasl_requests_total", side="client", status_class="2xx") == before_client + 3
    assert metric_value(client_text, "wasl_request_duration_seconds_count", side="client", protocol="soap") >= 3
    assert metric_value(client_text, "wasl_globalconf_age_seconds") >= 0
    assert metric_value(client_text, "wasl_globalconf_expiry_timestamp_seconds") > 1.7e9
    assert metric_value(client_text, "wasl_certificate_expiry_timestamp_seconds", kind="sign") > 1.7e9
    provider_text = await scrape("civil")
    assert metric_value(provider_text, "wasl_requests_total", side="provider",
                        service="DEMO/GOV/1001/population/echo") == before_provider + 3
    assert metric_value(provider_text, "wasl_requests_total", side="provider",
                        fault_code="Server.ServerProxy.AccessDenied") >= 1
    assert metric_value(provider_text, "wasl_backend_duration_seconds_count") >= 3
    assert "X-Road-Id" not in provider_text and "m-1" not in provider_text  # no unbounded labels


async def test_registry_metrics(federation: Federation) -> None:
    url = f"http://127.0.0.1:{federation.layout.ports.registry}/metrics"
    async with federation.session.get(url) as resp:
        text = await resp.text()
    assert metric_value(text, "wasl_registry_entities", kind="gateway") == 3
    assert metric_value(text, "wasl_registry_globalconf_downloads_total") >= 3  # one per gateway at least


async def test_readiness_fails_on_an_expired_certificate_and_warns_before(federation: Federation) -> None:
    import datetime as dt

    runtime = federation.gateways["health"].runtime
    url = federation.client_url("health", "/readyz")
    async with federation.session.get(url) as resp:
        assert resp.status == 200
    original = runtime.auth_not_after
    try:
        runtime.auth_not_after = runtime.now() + dt.timedelta(days=3)
        async with federation.session.get(url) as resp:
            assert resp.status == 200
            assert "warning: auth certificate expires" in await resp.text()
        runtime.auth_not_after = runtime.now() - dt.timedelta(seconds=1)
        async with federation.session.get(url) as resp:
            assert resp.status == 503
            assert "auth certificate expired" in await resp.text()
    finally:
        runtime.auth_not_after = original
    async with federation.session.get(federation.client_url("health", "/metrics")) as resp:
        assert 'wasl_build_info{version="' in await resp.text()
