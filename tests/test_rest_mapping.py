"""A legacy REST backend behind a path, method and header mapping, end to end through two gateways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from gateway.configfile import ConfigError, load_model
from gateway.core import restmap
from gateway.core.settings import GatewaySettings
from gateway.demo import federation as fed
from tests.conftest import demo_services, start_app, start_federation, stop_federation

ROUTES = [
    {"method": "GET", "path": "/persons/{id}", "backend_path": "/legacy/api/person", "query": {"pid": "{id}"},
     "rename_headers": {"X-Request-Lang": "Accept-Language"}, "remove_headers": ["X-Internal"],
     "set_headers": {"X-Legacy-Caller": "wasl-{id}"}, "json_response": True},
    {"method": "POST", "path": "/persons", "backend_method": "PUT", "backend_path": "/legacy/api/person/new"},
    {"method": "GET", "path": "/broken", "backend_path": "/legacy/api/text", "json_response": True},
]


def legacy_backend() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "path": request.path, "query": dict(request.query),
                                  "headers": {k.lower(): v for k, v in request.headers.items()},
                                  "body": (await request.read()).decode()})

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="<html>an error page</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/legacy/api/text", text)
    app.router.add_route("*", "/legacy/api/{tail:.*}", echo)
    return app


@pytest.fixture
async def mapped(tmp_path: Path):
    runner, port = await start_app(legacy_backend())

    def services(backend: str) -> list[fed.Service]:
        return [*demo_services(backend), fed.Service(
            "tax", "registry", "rest", f"http://127.0.0.1:{port}", ("SUBSYSTEM:DEMO/GOV/1001/population",),
            adapter={"kind": "legacy-rest", "routes": ROUTES})]

    f = await start_federation(tmp_path, services=services)
    try:
        yield f
    finally:
        await stop_federation(f)
        await runner.cleanup()


async def call(f, method: str, path: str, **kwargs):  # type: ignore[no-untyped-def]
    url = f.client_url("civil", "/r1/DEMO/GOV/1002/tax-records/registry" + path)
    headers = {"X-Road-Client": "DEMO/GOV/1001/population", **kwargs.pop("headers", {})}
    async with f.session.request(method, url, headers=headers, **kwargs) as resp:
        return resp.status, await resp.read()


async def test_path_method_query_and_headers_are_mapped(mapped) -> None:
    status, body = await call(mapped, "GET", "/persons/EE1234?lang=et",
                              headers={"X-Request-Lang": "et", "X-Internal": "secret"})
    assert status == 200, body
    seen = json.loads(body)
    assert seen["method"] == "GET" and seen["path"] == "/legacy/api/person"
    assert seen["query"] == {"lang": "et", "pid": "EE1234"}
    assert seen["headers"]["accept-language"] == "et"
    assert "x-internal" not in seen["headers"] and "x-request-lang" not in seen["headers"]
    assert seen["headers"]["x-legacy-caller"] == "wasl-EE1234"
    assert seen["headers"]["x-road-client"] == "DEMO/GOV/1001/population"
    status, body = await call(mapped, "POST", "/persons", data=b'{"name": "Noor"}',
                              headers={"Content-Type": "application/json"})
    assert status == 200, body
    seen = json.loads(body)
    assert (seen["method"], seen["path"], seen["body"]) == ("PUT", "/legacy/api/person/new", '{"name": "Noor"}')


async def test_an_unmapped_endpoint_and_non_json_get_clear_faults(mapped) -> None:
    status, body = await call(mapped, "DELETE", "/persons/1")
    fault = json.loads(body)
    assert (status, fault["type"]) == (404, "Server.ServerProxy.UnknownService"), fault
    assert "has no endpoint DELETE /persons/1" in fault["message"]
    status, body = await call(mapped, "GET", "/broken")
    fault = json.loads(body)
    assert status == 502 and fault["type"].endswith("ServiceFailed")
    assert "declares JSON" in fault["message"]


def test_a_route_using_an_undefined_parameter_fails_at_load(tmp_path: Path) -> None:
    layout = fed.build(tmp_path, fed.ports_from(27100, fed.DEMO_AGENCIES), [fed.Service(
        "tax", "registry", "rest", "http://127.0.0.1:9/", ("SUBSYSTEM:DEMO/GOV/1001/population",),
        adapter={"kind": "legacy-rest", "routes": [{"path": "/persons/{id}", "backend_path": "/p/{pid}"}]})])
    with pytest.raises(ConfigError) as exc:
        load_model(layout.gateway_files["tax"], GatewaySettings)
    message = str(exc.value)
    assert str(layout.gateway_files["tax"]) in message
    assert "services.0.adapter.routes.0" in message and "backend_path: {pid} is not a parameter" in message
    config = yaml.safe_load(layout.gateway_files["tax"].read_text())
    config["services"][0]["adapter"]["routes"] = [{"method": "FETCH", "path": "/x", "backend_path": "/y"}]
    layout.gateway_files["tax"].write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="method: 'FETCH' is not an HTTP method"):
        load_model(layout.gateway_files["tax"], GatewaySettings)


def test_route_matching_is_exact_and_ordered() -> None:
    routes = [restmap.Route("GET", "/a/{x}", None, "/b/{x}", {}, {}, {}, (), False),
              restmap.Route("*", "/a/{x}/c", "POST", "/d", {"q": "{x}"}, {}, {}, (), False)]
    assert restmap.match(routes, "GET", "/a/1/c")[0] is routes[1]  # {x} never spans a /
    assert restmap.match(routes, "GET", "/a/1")[1] == {"x": "1"}
    assert restmap.match(routes, "GET", "/a") is None
    request = restmap.backend_request(routes[0], {"x": "a b/c"}, "GET", "", [])
    assert request.path_and_query == "/b/a%20b%2Fc"  # parameters are escaped into the backend path


async def test_a_mapped_service_lists_its_routes_as_endpoints(mapped) -> None:
    base = mapped.client_url("civil", "/r1/DEMO/GOV/1002/tax-records")
    headers = {"X-Road-Client": "DEMO/GOV/1001/population"}
    async with mapped.session.get(f"{base}/getOpenAPI?serviceCode=registry", headers=headers) as resp:
        document = json.loads(await resp.read())
    assert set(document["paths"]) == {"/persons/{id}", "/persons", "/broken"}
    assert document["paths"]["/persons/{id}"]["get"]["parameters"][0]["name"] == "id"
    async with mapped.session.get(f"{base}/listMethods", headers=headers) as resp:
        listed = {s["service_code"]: s for s in json.loads(await resp.read())["service"]}
    assert {"method": "GET", "path": "/persons/*"} in listed["registry"]["endpoint_list"]
