"""Per-endpoint REST access rights: enforced by the provider's gateway and reflected by allowedMethods."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.access import AccessRule, EndpointRule, endpoint_allowed
from gateway.demo import federation as fed
from gateway.demo.backends import TAX_OPENAPI, make_tax_app, start_app
from tests.conftest import Federation, start_federation, stop_federation

PATIENTS = "SUBSYSTEM:DEMO/GOV/1003/patients"


@pytest.fixture
async def rights(tmp_path: Path) -> AsyncIterator[Federation]:
    tax_runner, tax_port = await start_app(make_tax_app())
    openapi = tmp_path / "tax-openapi.json"
    openapi.write_text(json.dumps(TAX_OPENAPI))

    def services(backend: str) -> list[fed.Service]:
        # The civil registry may use the whole service; the Ministry of Health one endpoint of it.
        return [fed.Service("tax", "taxrecords", "rest", f"http://127.0.0.1:{tax_port}",
                            ("SUBSYSTEM:DEMO/GOV/1001/population",), description={"openapi": str(openapi)},
                            endpoints=({"method": "GET", "path": "/taxpayers/{code}", "allow": [PATIENTS]},))]

    f = await start_federation(tmp_path / "federation", services=services)
    try:
        yield f
    finally:
        await stop_federation(f)
        await tax_runner.cleanup()


async def get(f: Federation, agency: str, path: str, method: str = "GET") -> tuple[int, dict]:
    headers = {"X-Road-Client": f.subsystem(agency).path(), "Content-Type": "application/json"}
    async with f.session.request(method, f.client_url(agency, f"/r1/DEMO/GOV/1002/tax-records{path}"),
                                 headers=headers, data=b"{}" if method == "POST" else None) as resp:
        return resp.status, json.loads(await resp.read())


async def test_an_endpoint_right_grants_that_endpoint_only(rights: Federation) -> None:
    status, _ = await get(rights, "health", "/taxrecords/taxpayers/90000000001")
    assert status == 200
    for method, path in (("GET", "/taxrecords/taxpayers"), ("POST", "/taxrecords/declarations")):
        status, fault = await get(rights, "health", path, method)
        assert (status, fault["type"]) == (403, "Server.ServerProxy.AccessDenied"), fault
        assert f"{method} {path.removeprefix('/taxrecords')}" in fault["message"]
    # The service-level right still covers every endpoint.
    status, _ = await get(rights, "civil", "/taxrecords/taxpayers")
    assert status == 200


async def test_allowed_methods_lists_exactly_the_permitted_endpoints(rights: Federation) -> None:
    status, body = await get(rights, "health", "/allowedMethods")
    assert status == 200
    (entry,) = body["service"]
    assert entry["endpoint_list"] == [{"method": "GET", "path": "/taxpayers/*"}]
    status, body = await get(rights, "civil", "/allowedMethods")
    assert len(body["service"][0]["endpoint_list"]) == 3
    status, body = await get(rights, "health", "/listMethods")
    assert len(body["service"][0]["endpoint_list"]) == 3  # listMethods lists everything


def test_endpoint_patterns() -> None:
    rule = EndpointRule("GET", "/a/{id}/**", (AccessRule("SUBSYSTEM", "I/C/1/s"),))
    allowed = [("GET", "/a/1/b"), ("GET", "/a/1/b/c/d")]
    denied = [("POST", "/a/1/b"), ("GET", "/a/1"), ("GET", "/b/1/c")]
    for method, path in allowed:
        assert endpoint_allowed((), [rule], method, path, "I/C/1/s", frozenset(), "I")
    for method, path in denied:
        assert not endpoint_allowed((), [rule], method, path, "I/C/1/s", frozenset(), "I")
    assert not endpoint_allowed((), [rule], "GET", "/a/1/b", "I/C/1/other", frozenset(), "I")
