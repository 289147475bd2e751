"""The unified inquiry end to end: real gateways record both sides, the inquiry service asks them all through signed
messages, joins the sides, scopes what members see, and reports gateways that do not answer."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from gateway.configfile import load_model
from gateway.core import identifiers as ids
from gateway.inquiry import service as inquiry_service
from gateway.inquiry.config import InquirySettings
from gateway.inquiry.setup import enable_monitoring, write_settings
from gateway.monitoring import opservice
from tests.conftest import Federation, soap_request, start_federation, stop_federation
from tests.test_exchange import metric_value, post_soap

ECHO = ids.ServiceId("DEMO", "GOV", "1001", "population", "echo")
GET_PERSON = ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1")
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
MONITORING = "DEMO/GOV/1001/monitoring"
OPDATA = "/r1/DEMO/GOV/1001/population/getSecurityServerOperationalData"


@dataclass
class Monitored:
    f: Federation
    url: str  # the inquiry service
    service: inquiry_service.InquiryService

    async def get(self, path: str, **params: str) -> tuple[int, dict]:
        async with self.f.session.get(self.url + path, params=params) as resp:
            return resp.status, await resp.json()


async def wait_for(predicate, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def start_monitored(tmp_path: Path, timeout: float = 3.0) -> tuple[Federation, web.AppRunner, Monitored]:
    f = await start_federation(tmp_path)
    enable_monitoring(f.layout.federation_file, "DEMO/GOV/1001")
    f.registry.regenerate()
    await wait_for(lambda: all(gw.runtime.conf.current is not None
                               and gw.runtime.conf.current.document.monitoring_client == MONITORING
                               for gw in f.gateways.values()))
    config = write_settings(tmp_path / "inquiry.yaml", gateway_file=f.layout.gateway_files["civil"],
                            gateway_url=f.client_url("civil").rstrip("/"), client=MONITORING, port=0,
                            timeout_seconds=timeout)
    settings = load_model(config, InquirySettings).model_copy(update={"globalconf_refresh_seconds": 0.3})
    runner, port, service = await inquiry_service.start(settings, port=0)
    await wait_for(lambda: service.conf.current is not None
                   and service.conf.current.document.monitoring_client == MONITORING)
    return f, runner, Monitored(f, f"http://127.0.0.1:{port}", service)


@pytest.fixture
async def mon(tmp_path: Path) -> AsyncIterator[Monitored]:
    f, runner, m = await start_monitored(tmp_path)
    try:
        yield m
    finally:
        await runner.cleanup()
        await stop_federation(f)


async def ask_opdata(f: Federation, agency: str, client: str, query: dict) -> tuple[int, dict]:
    """Ask civil's gateway for its operational data directly, as ``client``, through ``agency``'s client side."""
    headers = {"X-Road-Client": client, "Content-Type": "application/json"}
    async with f.session.post(f.client_url(agency, OPDATA), data=json.dumps(query), headers=headers) as resp:
        return resp.status, await resp.json()


async def test_both_sides_of_a_transaction_are_joined(mon: Monitored) -> None:
    f = mon.f
    payload = soap_request(f.subsystem("health"), ECHO, xroad_id="opmon-1", user_id="EE-doctor-7")
    status, body, headers = await post_soap(f, "health", payload, traceparent=TP)
    assert status == 200
    assert b"4bf92f3577b34da6a3ce929d0e0e4736" in body  # the backend got the caller's trace, across the signed hop
    code, answer = await mon.get("/api/v1/transaction", xroad_id="opmon-1")
    assert code == 200, answer
    assert answer["complete"] and answer["unanswered"] == []
    assert {g["server"] for g in answer["gateways"]} == {"DEMO/GOV/1001/gw-civil", "DEMO/GOV/1002/gw-tax",
                                                         "DEMO/GOV/1003/gw-health"}
    [tx] = answer["transactions"]
    assert tx["complete"] and tx["status"] == "ok" and tx["status_code"] == 200
    assert tx["request_id"] == headers["X-Road-Request-Id"]
    assert tx["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and tx["traceparent"] == TP
    assert (tx["client"], tx["service"], tx["user_id"]) == ("DEMO/GOV/1003/patients", ECHO.path(), "EE-doctor-7")
    client, provider = tx["sides"]["client"], tx["sides"]["provider"]
    assert client["gateway"] == "DEMO/GOV/1003/gw-health" and provider["gateway"] == "DEMO/GOV/1001/gw-civil"
    assert client["service_server"] == provider["service_server"] == "DEMO/GOV/1001/gw-civil"
    assert client["client_server"] == provider["client_server"] == "DEMO/GOV/1003/gw-health"
    assert client["request_size"] == provider["request_size"] == len(payload)
    assert client["response_size"] > 0 and provider["response_size"] == client["response_size"]
    for side in (client, provider):
        assert side["request_in_ms"] <= side["request_out_ms"] <= side["response_in_ms"] <= side["response_out_ms"]
        assert side["protocol"] == "soap" and side["protocol_version"] == "4.0" and side["succeeded"]
    assert [e["side"] + "." + e["event"] for e in tx["timeline"]] == [
        "client.request_in", "client.request_out", "provider.request_in", "provider.request_out",
        "provider.response_in", "provider.response_out", "client.response_in", "client.response_out"]
    parts = tx["breakdown"]
    assert parts["total_ms"] == client["duration_ms"] and parts["backend_ms"] == provider["backend_ms"]
    assert parts["network_ms"] is not None and parts["network_ms"] >= 0
    total = sum(parts[k] for k in ("client_gateway_ms", "network_ms", "provider_gateway_ms", "backend_ms"))
    assert abs(total - parts["total_ms"]) < 0.01 * parts["total_ms"] + 0.05
    # The same transaction by its trace id.
    code, by_trace = await mon.get("/api/v1/transaction", trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    assert [t["xroad_id"] for t in by_trace["transactions"]] == ["opmon-1"]


async def test_a_trace_id_is_started_when_the_caller_sends_none(mon: Monitored) -> None:
    f = mon.f
    url = f.client_url("civil", "/r1/DEMO/GOV/1002/tax-records/taxpayers/77")
    async with f.session.get(url, headers={"X-Road-Client": "DEMO/GOV/1001/population", "X-Road-Id": "rest-7"}) as r:
        assert r.status == 200
        seen = (await r.json())["headers"]["traceparent"]
    code, answer = await mon.get("/api/v1/transaction", xroad_id="rest-7")
    assert code == 200
    [tx] = answer["transactions"]
    assert tx["traceparent"] == seen and tx["trace_id"] == seen.split("-")[1]
    assert (tx["rest_method"], tx["rest_path"], tx["protocol"]) == ("GET", "/77", "rest")


async def test_faults_listing_pages_and_aggregates(mon: Monitored) -> None:
    f = mon.f
    for i in range(5):
        status, _, _ = await post_soap(f, "health", soap_request(f.subsystem("health"), ECHO, xroad_id=f"ok-{i}"))
        assert status == 200
    status, _, _ = await post_soap(f, "tax", soap_request(f.subsystem("tax"), GET_PERSON, xroad_id="denied-1"))
    assert status == 500
    code, answer = await mon.get("/api/v1/transaction", xroad_id="denied-1")
    [tx] = answer["transactions"]
    assert tx["status"] == "failed" and tx["fault_code"] == "Server.ServerProxy.AccessDenied"
    assert tx["fault_side"] == "provider" and "DEMO/GOV/1002/tax-records" in tx["fault_message"]
    assert tx["sides"]["client"]["fault_code"] == "Server.ServerProxy.AccessDenied"  # the client side saw it too
    # Pages of two between the Ministry of Health and the Civil Registry, newest first, with no overlap.
    seen: list[str] = []
    params = {"client": "DEMO/GOV/1003", "provider": "DEMO/GOV/1001", "limit": "2", "last": "1h"}
    for _ in range(5):
        code, page = await mon.get("/api/v1/transactions", **params)
        assert code == 200 and page["complete"], page
        seen += [t["xroad_id"] for t in page["transactions"]]
        assert all(t["complete"] for t in page["transactions"])  # provider sides fetched too
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [f"ok-{i}" for i in reversed(range(5))]
    code, failed = await mon.get("/api/v1/transactions", status="failed", last="1h")
    assert [t["xroad_id"] for t in failed["transactions"]] == ["denied-1"]
    code, agg = await mon.get("/api/v1/aggregates", last="1h", buckets="12")
    assert code == 200 and agg["complete"]
    assert agg["totals"]["count"] == 6 and agg["totals"]["failed"] == 1
    pairs = {(p["client_member"], p["provider_member"]): p for p in agg["pairs"]}
    assert pairs[("DEMO/GOV/1003", "DEMO/GOV/1001")]["count"] == 5
    assert pairs[("DEMO/GOV/1002", "DEMO/GOV/1001")]["error_rate"] == 1.0
    echo = next(s for s in agg["services"] if s["service"] == ECHO.path())
    assert echo["p50_ms"] > 0 and echo["backend_p50_ms"] > 0 and echo["provider_name"] == "Civil Registry Agency"
    assert agg["most_failing"][0]["service"] == GET_PERSON.unversioned().path()
    assert agg["faults"] == [{"fault_code": "Server.ServerProxy.AccessDenied", "count": 1}]
    assert sum(p["count"] for p in agg["series"]) == 6 and len(agg["series"]) == 12
    names = [m["member"] for m in agg["matrix"]["members"]]
    assert agg["matrix"]["counts"][names.index("DEMO/GOV/1003")][names.index("DEMO/GOV/1001")] == 5


async def test_access_is_scoped_and_the_denial_is_asserted(mon: Monitored) -> None:
    f = mon.f
    await post_soap(f, "health", soap_request(f.subsystem("health"), ECHO, xroad_id="health-secret"))
    await post_soap(f, "tax", soap_request(f.subsystem("tax"), ECHO, xroad_id="tax-own"))
    tax = "DEMO/GOV/1002/tax-records"
    # The Tax Authority asks the Civil Registry's gateway about transactions between Health and Civil: denied.
    code, err = await ask_opdata(f, "tax", tax, {"client": "DEMO/GOV/1003", "provider": "DEMO/GOV/1001"})
    assert code == 403 and err["type"] == "Server.ServerProxy.AccessDenied", err
    assert "DEMO/GOV/1002 may see only transactions where it is the client or the provider" in err["message"]
    # Unfiltered, it sees its own transaction and nothing of Health's.
    code, own = await ask_opdata(f, "tax", tax, {"kind": "records"})
    assert code == 200, own
    xroad_ids = {row[own["columns"].index("xroad_id")] for row in own["rows"]}
    assert "tax-own" in xroad_ids and "health-secret" not in xroad_ids
    code, none = await ask_opdata(f, "tax", tax, {"xroad_ids": ["health-secret"]})
    assert code == 200 and none["rows"] == []
    code, err = await ask_opdata(f, "tax", tax, {"kind": "health"})
    assert code == 403 and err["type"] == "Server.ServerProxy.AccessDenied"
    # The monitoring client named in the global configuration sees everything.
    code, everything = await ask_opdata(f, "civil", MONITORING, {"xroad_ids": ["health-secret"]})
    assert code == 200 and len(everything["rows"]) == 1 and everything["scope"] == "the federation's monitoring client"
    # Bad queries get X-Road-style errors naming the field.
    code, err = await ask_opdata(f, "tax", tax, {"limit": "ten"})
    assert code == 400 and err["type"] == "Client.InvalidRequest" and "limit" in err["message"]
    async with f.session.get(f.client_url("tax", OPDATA), headers={"X-Road-Client": tax}) as resp:
        err = await resp.json()
        assert resp.status == 400 and "by POST" in err["message"]


async def test_a_gateway_down_or_slow_is_reported_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f, runner, mon = await start_monitored(tmp_path, timeout=1.0)
    try:
        await post_soap(f, "health", soap_request(f.subsystem("health"), ECHO, xroad_id="while-up"))
        real = opservice.answer

        async def slow_at_health(rt, *args):  # type: ignore[no-untyped-def]
            if rt.server_path.endswith("gw-health"):
                await asyncio.sleep(3)
            return await real(rt, *args)

        monkeypatch.setattr(opservice, "answer", slow_at_health)
        code, answer = await mon.get("/api/v1/transaction", xroad_id="while-up")
        status = {g["server"]: g for g in answer["gateways"]}
        assert status["DEMO/GOV/1003/gw-health"]["status"] == "timeout"
        assert status["DEMO/GOV/1003/gw-health"]["ms"] < 2500
        assert not answer["complete"] and answer["unanswered"] == ["DEMO/GOV/1003/gw-health"]
        [tx] = answer["transactions"]  # the provider side still answers
        assert tx["sides"]["provider"] is not None and tx["missing_sides"] == ["client"]
        monkeypatch.setattr(opservice, "answer", real)
        await f.gateways["tax"].stop()
        code, answer = await mon.get("/api/v1/aggregates", last="1h")
        assert code == 200
        status = {g["server"]: g for g in answer["gateways"]}
        assert status["DEMO/GOV/1002/gw-tax"]["status"] == "unreachable", status
        assert "NetworkError" in status["DEMO/GOV/1002/gw-tax"]["error"]
        assert answer["unanswered"] == ["DEMO/GOV/1002/gw-tax"] and answer["totals"]["count"] == 1
        del f.gateways["tax"]
    finally:
        await runner.cleanup()
        await stop_federation(f)


async def test_inquiry_api_errors_openapi_health_and_metrics(mon: Monitored) -> None:
    for path, params, words in (
            ("/api/v1/transactions", {"status": "maybe"}, "status must be"),
            ("/api/v1/transactions", {"since": "1h"}, "unknown parameter 'since'"),
            ("/api/v1/transactions", {"cursor": "!!"}, "cursor"),
            ("/api/v1/transactions", {"client": "DEMO//x"}, "client"),
            ("/api/v1/transactions", {"from": "yesterday"}, "ISO 8601"),
            ("/api/v1/aggregates", {"last": "1h", "from": "0"}, "not both"),
            ("/api/v1/transaction", {}, "exactly one of xroad_id or trace_id"),
            ("/api/v1/transaction", {"trace_id": "abc"}, "trace_id")):
        code, err = await mon.get(path, **params)
        assert code == 400 and err["type"] == "Client.InvalidRequest" and words in err["message"], err
        assert len(err["detail"]) == 36
    code, doc = await mon.get("/openapi.json")
    assert doc["openapi"].startswith("3.") and "/api/v1/transaction" in doc["paths"]
    async with mon.f.session.get(mon.url + "/livez") as resp:
        assert resp.status == 200
    async with mon.f.session.get(mon.url + "/readyz") as resp:
        assert resp.status == 200, await resp.text()
    before = await scrape(mon)
    await mon.get("/api/v1/gateways")
    after = await scrape(mon)
    key = "wasl_inquiry_requests_total"
    assert metric_value(after, key, endpoint="/api/v1/gateways") == metric_value(before, key,
                                                                                  endpoint="/api/v1/gateways") + 1
    assert metric_value(after, "wasl_inquiry_gateway_answers_total", status="ok") >= 3


async def scrape(mon: Monitored) -> str:
    async with mon.f.session.get(mon.url + "/metrics") as resp:
        return await resp.text()


async def test_gateway_health_and_cli_tables(mon: Monitored) -> None:
    f = mon.f
    await post_soap(f, "health", soap_request(f.subsystem("health"), ECHO, xroad_id="cli-1"))
    code, health = await mon.get("/api/v1/gateways")
    assert code == 200 and health["complete"]
    row = next(g for g in health["gateways"] if g["server"] == "DEMO/GOV/1001/gw-civil")
    assert row["globalconf"]["age_s"] >= 0 and not row["globalconf"]["expired"]
    assert {c["kind"] for c in row["certificates"]} == {"auth", "sign"}
    assert row["opmon"]["enabled"] and "timestamping" in row["messagelog"]
    for args, words in ((["tx", "cli-1"], ["DEMO/GOV/1003/patients", "provider", "backend", "cli-1"]),
                        (["list", "--last", "1h"], ["cli-1", "ok"]),
                        (["stats", "--last", "1h"], ["DEMO/GOV/1003", "p95"]),
                        (["gateways"], ["gw-civil", "ok"])):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "inquiry", *args, "--url", mon.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        text = out.decode()
        assert proc.returncode == 0, text + err.decode()
        for word in words:
            assert word in text, (args, text)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "inquiry", "list", "--status", "bad", "--url", mon.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0 and b"status" in err
