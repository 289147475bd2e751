"""`wasl demo`: a whole local federation (registry, three agency gateways, two backends) and sample exchanges."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from lxml import etree

from gateway.core import identifiers as ids
from gateway.core import soap
from gateway.demo import federation as fed
from gateway.demo import onboarding
from gateway.demo.backends import (
    LEGACY_NS,
    LEGACY_WSDL_PATH,
    POPULATION_NS,
    POPULATION_WSDL_PATH,
    TAX_OPENAPI,
    make_legacy_civil_app,
    make_population_app,
    make_tax_app,
    start_app,
)
from gateway.demo.ports import port_is_free
from gateway.inquiry import setup as inquiry_setup

GET_PERSON = ids.ServiceId(fed.INSTANCE, "GOV", "1001", "population", "getPerson", "v1")


def tax_openapi(tax_url: str) -> dict[str, object]:
    """The tax register's OpenAPI document relative to the published service's base URL (``.../taxpayers``)."""
    paths = TAX_OPENAPI["paths"]
    return {**TAX_OPENAPI, "servers": [{"url": tax_url}],
            "paths": {"/": paths["/taxpayers"], "/{code}": paths["/taxpayers/{code}"]}}


def demo_services(population_url: str, tax_url: str, legacy_url: str | None = None,
                  openapi_file: Path | None = None) -> list[fed.Service]:
    wsdl = {"wsdl": str(POPULATION_WSDL_PATH)}
    services = [
        # The civil registry publishes its SOAP service to a global group of trusted agencies.
        fed.Service("civil", "getPerson", "soap", population_url,
                    ("GLOBALGROUP:DEMO/trusted-agencies", "MEMBER:DEMO/GOV/1004"),  # 1004 joins live (onboarding.py)
                    version="v1", description=wsdl),
        fed.Service("civil", "echo", "soap", population_url, ("MEMBER:DEMO/GOV/1003",), description=wsdl),
        # The tax authority's REST service is open to the civil registry only.
        fed.Service("tax", "taxpayers", "rest", tax_url, ("SUBSYSTEM:DEMO/GOV/1001/population",),
                    description={"openapi": str(openapi_file)} if openapi_file else None),
        # The same SOAP population service for JSON callers, bridged through its WSDL.
        fed.Service("civil", "persons", "rest", population_url, ("GLOBALGROUP:DEMO/trusted-agencies",),
                    adapter={"kind": "rest-to-soap", "wsdl": str(POPULATION_WSDL_PATH)}),
    ]
    if legacy_url is not None:
        # A legacy SOAP system that knows nothing of X-Road, published through an adapter.
        services.append(fed.Service(
            "civil", "findCitizen", "soap", legacy_url, ("MEMBER:DEMO/GOV/1003", "SUBSYSTEM:DEMO/GOV/1002/tax-records"),
            description={"wsdl": str(LEGACY_WSDL_PATH), "operation": "FindCitizen"},
            adapter={"kind": "legacy-soap", "namespace": {"backend": LEGACY_NS, "federation": CIVIL_NS}}))
    return services


CIVIL_NS = "http://civil.demo.wasl.example/"
# The Ministry of Health's old clinic application cannot set X-Road headers; it calls this route instead.
HEALTH_ADAPTERS = {"adapters": [{"name": "population", "client": "DEMO/GOV/1003/patients",
                                 "service": "DEMO/GOV/1001/population/persons", "protocol": "rest",
                                 "user_id": "legacy-clinic-app"}]}


GROUPS = [{"code": "trusted-agencies", "description": "Agencies allowed to read the population register",
           "members": ["DEMO/GOV/1002/tax-records", "DEMO/GOV/1003/patients"]}]


@dataclass
class Outcome:
    title: str
    expected: str  # "ok" or a fault code
    got: str
    xroad_id: str
    request_id: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.got == self.expected


def _spawn(args: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    out = log_file.open("ab")
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


async def _wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes], what: str,
                      log_file: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log_file}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} was not ready within {seconds:.0f} s; see {log_file}")


def _person_request(client: ids.SubsystemId, xroad_id: str, code: str) -> bytes:
    body = etree.Element(f"{{{POPULATION_NS}}}getPerson", nsmap={"pop": POPULATION_NS})
    etree.SubElement(body, "personCode").text = code
    return soap.build_request(client, GET_PERSON, xroad_id, body, user_id="demo-operator")


async def _soap_call(session: aiohttp.ClientSession, url: str, payload: bytes) -> tuple[str, str, str, str]:
    async with session.post(url, data=payload, headers={"Content-Type": "text/xml; charset=utf-8"}) as resp:
        body = await resp.read()
        root = etree.fromstring(body)
        code = root.findtext(".//faultcode")
        if code:
            return code, "", "", root.findtext(".//faultstring") or ""
        name = root.findtext(".//{*}givenName") or ""
        family = root.findtext(".//{*}familyName") or ""
        full = root.findtext(".//{*}fullName") or ""
        return "ok", resp.headers.get("X-Road-Id", ""), resp.headers.get("X-Road-Request-Id", ""), \
            (f"{name} {family}".strip() or full)


def _find_citizen_request(client: ids.SubsystemId, xroad_id: str, code: str) -> bytes:
    """An ordinary X-Road request; the legacy system behind the adapter never sees its headers."""
    body = etree.Element(f"{{{CIVIL_NS}}}FindCitizen", nsmap={"civ": CIVIL_NS})
    etree.SubElement(body, f"{{{CIVIL_NS}}}nationalId").text = code
    service = ids.ServiceId(fed.INSTANCE, "GOV", "1001", "population", "findCitizen")
    return soap.build_request(client, service, xroad_id, body, user_id="demo-operator")


async def _json_call(session: aiohttp.ClientSession, url: str, client: str | None,
                     payload: dict[str, str] | None = None) -> tuple[str, str, str, str]:
    """A JSON call; without ``client`` it is a legacy caller that sends no X-Road headers at all."""
    headers = {"Accept": "application/json", **({"X-Road-Client": client} if client else {})}
    async with session.request("POST" if payload is not None else "GET", url, json=payload, headers=headers) as resp:
        data = await resp.json(content_type=None)
        if "X-Road-Error" in resp.headers:
            return data["type"], "", "", data["message"]
        return "ok", resp.headers.get("X-Road-Id", ""), resp.headers.get("X-Road-Request-Id", ""), \
            json.dumps(data)[:80]


async def _rest_call(session: aiohttp.ClientSession, url: str, client: str) -> tuple[str, str, str, str]:
    async with session.get(url, headers={"X-Road-Client": client, "Accept": "application/json"}) as resp:
        data = await resp.json(content_type=None)
        if "X-Road-Error" in resp.headers:
            return data["type"], "", "", data["message"]
        return "ok", resp.headers.get("X-Road-Id", ""), resp.headers.get("X-Road-Request-Id", ""), \
            json.dumps(data)[:80]


async def run_exchanges(layout: fed.Layout) -> list[Outcome]:
    ports = layout.ports.client_side
    health, tax, civil = (next(a for a in layout.agencies if a.key == k) for k in ("health", "tax", "civil"))
    outcomes = []
    async with aiohttp.ClientSession() as session:
        calls = [
            ("Ministry of Health -> Civil Registry: getPerson (SOAP)", "ok",
             _soap_call(session, f"http://127.0.0.1:{ports['health']}/",
                        _person_request(health.subsystem_id, "demo-soap-1", "90000000001"))),
            ("Tax Authority -> Civil Registry: getPerson (SOAP)", "ok",
             _soap_call(session, f"http://127.0.0.1:{ports['tax']}/",
                        _person_request(tax.subsystem_id, "demo-soap-2", "90000000002"))),
            ("Civil Registry -> Tax Authority: GET /taxpayers/{code} (REST)", "ok",
             _rest_call(session, f"http://127.0.0.1:{ports['civil']}/r1/DEMO/GOV/1002/tax-records/taxpayers"
                                 "/90000000001", civil.subsystem_id.path())),
            ("Ministry of Health -> Tax Authority (REST, not allowed)", "Server.ServerProxy.AccessDenied",
             _rest_call(session, f"http://127.0.0.1:{ports['health']}/r1/DEMO/GOV/1002/tax-records/taxpayers"
                                 "/90000000001", health.subsystem_id.path())),
            ("Ministry of Health -> Civil Registry: legacy SOAP system behind an adapter", "ok",
             _soap_call(session, f"http://127.0.0.1:{ports['health']}/",
                        _find_citizen_request(health.subsystem_id, "demo-legacy-1", "90000000003"))),
            ("Tax Authority -> Civil Registry: JSON call answered by the SOAP backend", "ok",
             _json_call(session, f"http://127.0.0.1:{ports['tax']}/r1/DEMO/GOV/1001/population/persons/getPerson",
                        tax.subsystem_id.path(), {"personCode": "90000000002"})),
            ("Legacy clinic app (no X-Road headers) -> adapter route -> Civil Registry", "ok",
             _json_call(session, f"http://127.0.0.1:{ports['health']}/adapters/population/getPerson"
                                 "?personCode=90000000005", None)),
        ]
        for title, expected, call in calls:
            try:
                got, xroad_id, request_id, detail = await call
            except (aiohttp.ClientError, ValueError, etree.XMLSyntaxError) as exc:
                got, xroad_id, request_id, detail = "error", "", "", f"{exc.__class__.__name__}: {exc}"
            outcomes.append(Outcome(title, expected, got, xroad_id, request_id, detail))
    return outcomes


async def _first_exchange_after_joining(url: str) -> Outcome:
    """The new agency's first call, retried until the approvals have reached every gateway (bounded)."""
    title = "Social Insurance Board (joined live) -> Civil Registry: getPerson (SOAP)"
    started = time.monotonic()
    got, xroad_id, request_id, detail = "error", "", "", "not tried"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < 40:
            try:
                got, xroad_id, request_id, detail = await _soap_call(
                    session, url, _person_request(onboarding.SUBSYSTEM, "demo-joined-1", "90000000004"))
            except (aiohttp.ClientError, ValueError, etree.XMLSyntaxError) as exc:
                got, detail = "error", f"{exc.__class__.__name__}: {exc}"
            if got == "ok":
                detail += f" (first success {time.monotonic() - started:.1f} s after the last approval)"
                break
            await asyncio.sleep(0.5)
    return Outcome(title, "ok", got, xroad_id, request_id, detail)


def curl_examples(layout: fed.Layout) -> str:
    ports = layout.ports.client_side
    soap_file = layout.directory / "getPerson.xml"
    soap_file.write_bytes(_person_request(next(a for a in layout.agencies if a.key == "health").subsystem_id,
                                          "curl-1", "90000000001"))
    return "\n".join([
        "# SOAP: the Ministry of Health asks the Civil Registry for a person",
        f"curl -s -H 'Content-Type: text/xml' --data-binary @{soap_file} http://127.0.0.1:{ports['health']}/",
        "# REST: the Civil Registry reads a taxpayer from the Tax Authority",
        f"curl -s -H 'X-Road-Client: DEMO/GOV/1001/population' "
        f"http://127.0.0.1:{ports['civil']}/r1/DEMO/GOV/1002/tax-records/taxpayers/90000000001",
        "# REST: the same call from the Ministry of Health is denied",
        f"curl -s -H 'X-Road-Client: DEMO/GOV/1003/patients' "
        f"http://127.0.0.1:{ports['health']}/r1/DEMO/GOV/1002/tax-records/taxpayers/90000000001",
        f"# The signed global configuration: curl -s http://127.0.0.1:{layout.ports.registry}/globalconf",
        "# Metaservices: who is in the federation, what the Tax Authority offers, a WSDL for any SOAP client",
        f"curl -s -H 'Accept: application/json' http://127.0.0.1:{ports['health']}/listClients",
        f"curl -s -H 'X-Road-Client: DEMO/GOV/1001/population' "
        f"http://127.0.0.1:{ports['civil']}/r1/DEMO/GOV/1002/tax-records/allowedMethods",
        f"curl -s -H 'X-Road-Client: DEMO/GOV/1001/population' "
        f"'http://127.0.0.1:{ports['civil']}/r1/DEMO/GOV/1002/tax-records/getOpenAPI?serviceCode=taxpayers'",
        f"curl -s 'http://127.0.0.1:{ports['health']}/wsdl?xRoadInstance=DEMO&memberClass=GOV&memberCode=1001"
        "&subsystemCode=population&serviceCode=getPerson&version=v1'",
        "# JSON answered by the SOAP population service, and the same through a legacy caller's adapter route",
        f"curl -s -H 'X-Road-Client: DEMO/GOV/1002/tax-records' -H 'Content-Type: application/json' "
        f"-d '{{\"personCode\": \"90000000002\"}}' "
        f"http://127.0.0.1:{ports['tax']}/r1/DEMO/GOV/1001/population/persons/getPerson",
        f"curl -s 'http://127.0.0.1:{ports['health']}/adapters/population/getPerson?personCode=90000000005'",
    ])


async def demo(directory: Path | None, base_port: int, once: bool) -> int:
    folder = directory or Path(tempfile.mkdtemp(prefix="wasl-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    ports = fed.ports_from(base_port, fed.DEMO_AGENCIES)
    tsa_port = base_port + 24
    inquiry_port = base_port + 25
    ocsp_port = base_port + 26
    management_port, social_client, social_server = base_port + 27, base_port + 28, base_port + 29
    wanted = [ports.registry, *ports.client_side.values(), *ports.server_side.values(), base_port + 21,
              base_port + 22, base_port + 23, tsa_port, inquiry_port, ocsp_port, management_port, social_client,
              social_server]
    busy = [p for p in wanted if not port_is_free(p)]
    if busy:
        print(f"wasl demo: ports {busy} are in use; choose another range with --base-port", file=sys.stderr)
        return 2
    population_runner, population_port = await start_app(make_population_app(), port=base_port + 21)
    tax_runner, tax_port = await start_app(make_tax_app(), port=base_port + 22)
    legacy_runner, legacy_port = await start_app(make_legacy_civil_app(), port=base_port + 23)
    tax_url = f"http://127.0.0.1:{tax_port}/taxpayers"
    openapi_file = folder / "tax-openapi.json"
    openapi_file.write_text(json.dumps(tax_openapi(tax_url), indent=1))
    services = demo_services(f"http://127.0.0.1:{population_port}/population", tax_url,
                             f"http://127.0.0.1:{legacy_port}/civil", openapi_file)
    layout = fed.build(folder, ports, services, global_groups=GROUPS, gateway_overrides={"health": HEALTH_ADAPTERS},
                       tsa_url=f"http://127.0.0.1:{tsa_port}/", ocsp_url=f"http://127.0.0.1:{ocsp_port}/",
                       management_port=management_port, refresh_seconds=5)
    # The unified inquiry asks every gateway as the federation's monitoring client (docs/monitoring.md).
    monitoring = inquiry_setup.enable_monitoring(layout.federation_file, "DEMO/GOV/1001")
    inquiry_file = inquiry_setup.write_settings(folder / "inquiry.yaml", gateway_file=layout.gateway_files["civil"],
                                                gateway_url=f"http://127.0.0.1:{ports.client_side['civil']}",
                                                client=monitoring, port=inquiry_port)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    print(f"Wasl demo federation in {folder}")
    try:
        async with aiohttp.ClientSession() as session:
            # The built-in RFC 3161 TSA that the gateways' message logs get their timestamps from.
            tsa_log, tsa_dir = logs / "tsa.log", folder / "pki" / "tsa"
            procs.append(_spawn(["tsa", "serve", "--key", str(tsa_dir / "tsa.key"), "--cert", str(tsa_dir / "tsa.pem"),
                                 "--chain", str(folder / "pki" / "ca" / "ca.pem"), "--port", str(tsa_port)], tsa_log))
            await _wait_ready(session, f"http://127.0.0.1:{tsa_port}/livez", procs[-1], "TSA", tsa_log)
            print(f"  timestamping (TSA)   http://127.0.0.1:{tsa_port}/")
            # The CA's OCSP responder: every signed message carries a fresh status of its sign certificate.
            ocsp_log = logs / "ocsp.log"
            procs.append(_spawn(["pki", "ocsp", "serve", "--ca", str(folder / "pki" / "ca"), "--port", str(ocsp_port)],
                                ocsp_log))
            await _wait_ready(session, f"http://127.0.0.1:{ocsp_port}/livez", procs[-1], "OCSP responder", ocsp_log)
            print(f"  certificate status   http://127.0.0.1:{ocsp_port}/  (OCSP, RFC 6960)")
            reg_log = logs / "registry.log"
            procs.append(_spawn(["registry", "serve", "--config", str(layout.federation_file)], reg_log))
            await _wait_ready(session, f"http://127.0.0.1:{ports.registry}/livez", procs[-1], "registry", reg_log)
            print(f"  central registry     http://127.0.0.1:{ports.registry}/globalconf")
            for agency in layout.agencies:
                gw_log = logs / f"gateway-{agency.key}.log"
                procs.append(_spawn(["gateway", "serve", "--config", str(layout.gateway_files[agency.key])], gw_log))
            for agency, proc in zip(layout.agencies, procs[-len(layout.agencies):], strict=True):
                gw_log = logs / f"gateway-{agency.key}.log"
                await _wait_ready(session, f"http://127.0.0.1:{ports.client_side[agency.key]}/readyz", proc,
                                  f"gateway {agency.server_code}", gw_log)
                print(f"  {agency.name:<22} gateway {agency.server.path():<28} client side "
                      f"http://127.0.0.1:{ports.client_side[agency.key]}  server side (mTLS) "
                      f"https://127.0.0.1:{ports.server_side[agency.key]}")
            inquiry_log = logs / "inquiry.log"
            procs.append(_spawn(["inquiry", "serve", "--config", str(inquiry_file)], inquiry_log))
            await _wait_ready(session, f"http://127.0.0.1:{inquiry_port}/readyz", procs[-1], "inquiry", inquiry_log)
            print(f"  unified inquiry      http://127.0.0.1:{inquiry_port}/openapi.json")
        print("\nSample exchanges:")
        outcomes = await run_exchanges(layout)
        for o in outcomes:
            mark = "PASS" if o.passed else "FAIL"
            ids_text = f"X-Road-Id={o.xroad_id} X-Road-Request-Id={o.request_id}" if o.xroad_id else ""
            print(f"  [{mark}] {o.title}\n         -> {o.got} {ids_text}\n            {o.detail}")
        print("\nA fourth agency joins the running federation (docs/onboarding.md):")
        try:
            social_url = await onboarding.join(layout, social_client, social_server, logs, procs)
            outcomes.append(await _first_exchange_after_joining(social_url))
        except RuntimeError as exc:
            outcomes.append(Outcome("Social Insurance Board joins live", "ok", "error", "", "", str(exc)))
        o = outcomes[-1]
        print(f"  [{'PASS' if o.passed else 'FAIL'}] {o.title}\n         -> {o.got} "
              + (f"X-Road-Id={o.xroad_id} X-Road-Request-Id={o.request_id}" if o.xroad_id else "")
              + f"\n            {o.detail}")
        print("\nTry it yourself:\n" + curl_examples(layout))
        async with aiohttp.ClientSession() as session:
            print("\nUnified inquiry (both gateways' operational records, joined):\n"
                  + await inquiry_setup.demo_lookup(session, f"http://127.0.0.1:{inquiry_port}", "demo-soap-1"))
        print(f"\nDashboard (live; English and Arabic): http://127.0.0.1:{inquiry_port}/")
        failed = [o for o in outcomes if not o.passed]
        if once:
            return 1 if failed else 0
        print("\nThe federation keeps running; press Ctrl-C to stop.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    except RuntimeError as exc:
        print(f"wasl demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        await population_runner.cleanup()
        await tax_runner.cleanup()
        await legacy_runner.cleanup()
