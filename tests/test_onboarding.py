"""Onboarding end to end: a fourth agency joins a running federation by signed registration requests."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from gateway.audit.trail import AuditTrail
from gateway.cli import main
from gateway.configfile import load_model
from gateway.core import identifiers as ids
from gateway.core import registration as reg
from gateway.core.settings import FederationConfig, GatewaySettings
from gateway.demo import federation as fed
from gateway.onboarding.client import RegistrationFailed, build, download_conf, submit
from gateway.proxy.app import RunningGateway
from gateway.trust.pki import CertificateAuthority, load_certificate, load_key, new_key
from tests.conftest import Federation, free_ports, soap_request, start_federation, stop_federation

NEW_MEMBER = "DEMO/GOV/1004"
NEW_SERVER = "DEMO/GOV/1004/gw-social"
NEW_CLIENT = ids.SubsystemId("DEMO", "GOV", "1004", "benefits")
CHECK = ids.ServiceId("DEMO", "GOV", "1001", "population", "benefitsCheck")


def services(backend: str) -> list[fed.Service]:
    from tests.conftest import demo_services

    # A service that the new member may call once it exists.
    return [*demo_services(backend), fed.Service("civil", "benefitsCheck", "soap", f"{backend}/soap",
                                                 (f"MEMBER:{NEW_MEMBER}",))]


@pytest.fixture
async def federation_with_management(tmp_path: Path):
    f = await start_federation(tmp_path, services=services, management=("add_client",), registry_refresh_seconds=1)
    try:
        yield f
    finally:
        await stop_federation(f)


def cli(*args: str) -> int:
    return main([str(a) for a in args])


async def new_agency(f: Federation, tmp_path: Path) -> Path:
    """wasl registry anchor, wasl gateway init, wasl pki sign-csr: the new agency's gateway set up and certified."""
    anchor, new = tmp_path / "anchor.yaml", tmp_path / "social"
    assert cli("registry", "anchor", "--config", f.layout.federation_file, "--out", anchor) == 0
    client_port, server_port = free_ports(2)
    # The registry runs in this event loop and init fetches from it: run the CLI in a thread.
    assert await asyncio.to_thread(cli, "gateway", "init", "--dir", new, "--member", NEW_MEMBER, "--name",
                                   "Social Insurance", "--server-code", "gw-social", "--anchor", anchor,
                                   "--client-port", client_port, "--server-port", server_port) == 0
    assert (new / "keys" / "sign.key").stat().st_mode & 0o777 == 0o600
    ca = f.layout.directory / "pki" / "ca"
    assert cli("pki", "sign-csr", "--ca", ca, "--kind", "sign", "--csr", new / "csr" / "sign.csr", "--member",
               NEW_MEMBER, "--name", "Social Insurance", "--out", new / "certs" / "sign.pem") == 0
    assert cli("pki", "sign-csr", "--ca", ca, "--kind", "auth", "--csr", new / "csr" / "auth.csr", "--server",
               NEW_SERVER, "--out", new / "certs" / "auth.pem") == 0
    assert cli("config", "check", "gateway", new / "gateway.yaml") == 0
    return new


def pending_id(f: Federation, capsys) -> str:
    capsys.readouterr()
    assert cli("registry", "requests", "--config", f.layout.federation_file, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1, rows
    return rows[0]["id"]


def register(new: Path, kind: str, *extra: str) -> int:
    return cli("gateway", "register", kind, "--config", new / "gateway.yaml", *extra)


async def call(f: Federation, url: str) -> tuple[int, str]:
    async with f.session.post(url, data=soap_request(NEW_CLIENT, CHECK),
                              headers={"Content-Type": "text/xml; charset=utf-8"}) as resp:
        body = await resp.read()
    return resp.status, (etree.fromstring(body).findtext(".//faultcode") or "") if resp.status != 200 else ""


async def test_a_fourth_agency_joins_and_exchanges_without_any_restart(federation_with_management, tmp_path,
                                                                       capsys) -> None:
    f = federation_with_management
    new = await new_agency(f, tmp_path)
    # Every CLI call below blocks briefly on the network, so run them in a thread off this loop.
    run = asyncio.to_thread
    assert await run(register, new, "member", "--member-name", "Social Insurance") == 0
    assert await run(register, new, "member", "--member-name", "Social Insurance") == 1  # duplicate while pending
    assert cli("registry", "approve", pending_id(f, capsys), "--config", f.layout.federation_file) == 0
    assert await run(register, new, "subsystem", "--subsystem", "benefits") == 0
    assert cli("registry", "approve", pending_id(f, capsys), "--config", f.layout.federation_file) == 0
    settings = load_model(new / "gateway.yaml", GatewaySettings)
    address = f"https://127.0.0.1:{settings.server_side.port}"
    assert await run(register, new, "gateway", "--address", address) == 0
    assert cli("registry", "approve", pending_id(f, capsys), "--config", f.layout.federation_file) == 0

    gateway = RunningGateway(settings)
    await gateway.start()
    try:
        url = f"http://127.0.0.1:{settings.client_side.port}/"
        # Before the client is registered at the gateway, the gateway refuses to send for it.
        status, code = await call(f, url)
        # (UnknownMember until the registry has published the approvals, then InvalidClientIdentifier.)
        assert status == 500 and code in ("Server.ClientProxy.UnknownMember",
                                          "Client.InvalidClientIdentifier"), code
        assert await run(register, new, "client", "--client", NEW_CLIENT.path()) == 0  # auto-approved by policy
        # Within the gateways' refresh interval, with no restart anywhere, the first exchange succeeds.
        started = time.monotonic()
        while True:
            status, code = await call(f, url)
            if status == 200 or time.monotonic() - started > 15:
                break
            await asyncio.sleep(0.2)
        assert status == 200, code
        print(f"first exchange {time.monotonic() - started:.1f} s after the last approval")
    finally:
        await gateway.stop()
    trail = [(e.action, e.result, e.actor) for e in AuditTrail(f.layout.directory / "registry-state"
                                                                / "audit.jsonl").entries()]
    assert ("registration.approve", "ok", "policy:auto-approve") in trail
    assert ("registration.submit", "ok", f"gateway:{NEW_SERVER}") in trail  # who: the gateway, by its TLS certificate
    assert sum(1 for a, r, _ in trail if a == "registration.approve" and r == "ok") == 4
    assert ("registration.submit", "refused") in [(a, r) for a, r, _ in trail]


# -- bad input: each is refused and nothing in the federation changes ----------------------------------------------

def federation_state(f: Federation) -> tuple[list[str], list[str]]:
    fed_now, _ = f.registry.federation_now()
    return ([f"{m.member_class}/{m.code}:{','.join(m.subsystems)}" for m in fed_now.members],
            [f"{g.server}:{','.join(g.clients)}" for g in fed_now.gateways])


async def post_raw(f: Federation, settings: GatewaySettings, raw: bytes) -> RegistrationFailed | None:
    conf = await asyncio.to_thread(download_conf, settings.anchor)
    try:
        await submit(settings, conf, raw)
    except RegistrationFailed as exc:
        return exc
    return None


async def test_bad_registration_requests_are_refused_and_change_nothing(federation_with_management, tmp_path,
                                                                        capsys) -> None:
    f = federation_with_management
    new = await new_agency(f, tmp_path)
    settings = load_model(new / "gateway.yaml", GatewaySettings)
    before = federation_state(f)
    good = build(settings, reg.Kind.REGISTER_MEMBER, member_name="Social Insurance")

    # A bad signature: one byte of the signed request changed.
    container = json.loads(good)
    document = bytearray(reg.unb64(container["request"]))
    document[document.index(b"Social")] = ord("X")
    container["request"] = reg.b64(bytes(document))
    error = await post_raw(f, settings, json.dumps(container).encode())
    assert error is not None and "signature does not verify" in str(error)

    # Signed for another member: the request names DEMO/GOV/1002 but the key and certificate are 1004's.
    request = reg.new_request(reg.Kind.REGISTER_SUBSYSTEM, "DEMO/GOV/1002", subsystem="sneaky")
    raw = reg.sign(request, load_key(new / "keys" / "sign.key"), load_certificate(new / "certs" / "sign.pem"))
    error = await post_raw(f, settings, raw)
    assert error is not None and "signed by a certificate of DEMO/GOV/1004" in str(error)

    # A duplicate registration: an existing member again (its own valid certificate, from the CA).
    ca = CertificateAuthority.load(f.layout.directory / "pki" / "ca")
    key = new_key()
    civil_cert = ca.issue_sign_certificate(ids.parse_member("DEMO/GOV/1001"), "Civil", key.public_key())
    duplicate = reg.sign(reg.new_request(reg.Kind.REGISTER_MEMBER, "DEMO/GOV/1001", member_name="Civil"), key,
                         civil_cert)
    error = await post_raw(f, settings, duplicate)
    # The submitting gateway (1004's) may not speak for 1001 either; both are refusals.
    assert error is not None and ("already registered" in str(error) or "may not send requests" in str(error))

    # Malformed and oversized bodies.
    error = await post_raw(f, settings, b"{not json")
    assert error is not None and "malformed" in str(error)
    error = await post_raw(f, settings, b"x" * (reg.MAX_REQUEST_BYTES + 10))
    assert error is not None and "larger than" in str(error)

    # A replay of a request already submitted.
    assert (await post_raw(f, settings, good)) is None
    error = await post_raw(f, settings, good)
    assert error is not None and "already submitted" in str(error)

    # Approving a request that is not in the queue.
    assert cli("registry", "approve", "no-such-id", "--config", f.layout.federation_file) == 1
    assert "no request no-such-id" in capsys.readouterr().err
    # ... and one already decided.
    request_id = pending_id(f, capsys)
    assert cli("registry", "reject", request_id, "--config", f.layout.federation_file, "--reason", "test") == 0
    assert cli("registry", "approve", request_id, "--config", f.layout.federation_file) == 1
    assert "already rejected" in capsys.readouterr().err
    assert federation_state(f) == before


def test_a_csr_whose_subject_does_not_match_the_member_is_refused(tmp_path, capsys) -> None:
    ca_dir = tmp_path / "ca"
    assert cli("pki", "init", "--dir", ca_dir) == 0
    from gateway.trust.csr import sign_csr_for

    csr = sign_csr_for(ids.parse_member("DEMO/GOV/1004"), "Social Insurance", new_key())
    (tmp_path / "sign.csr").write_bytes(csr.public_bytes(Encoding.PEM))
    assert cli("pki", "sign-csr", "--ca", ca_dir, "--kind", "sign", "--csr", tmp_path / "sign.csr",
               "--member", "DEMO/GOV/1001", "--out", tmp_path / "sign.pem") == 1
    assert "names 'DEMO/GOV/1004', not the member 'DEMO/GOV/1001'" in capsys.readouterr().err
    assert not (tmp_path / "sign.pem").exists()
    entries = list(AuditTrail(ca_dir / "audit.jsonl").entries())
    assert [(e.action, e.result) for e in entries] == [("pki.sign_csr.sign", "refused")]


def test_verify_refuses_a_stale_request(tmp_path) -> None:
    ca = CertificateAuthority.create()
    key = new_key()
    cert = ca.issue_sign_certificate(ids.parse_member("DEMO/GOV/1004"), "S", key.public_key())
    old = reg.new_request(reg.Kind.REGISTER_MEMBER, "DEMO/GOV/1004", dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
                          member_name="S")
    with pytest.raises(reg.RegistrationError, match="too old"):
        reg.verify(reg.sign(old, key, cert), [ca.certificate], dt.datetime.now(dt.UTC))


def test_removals_check_and_apply(tmp_path) -> None:
    """The matching removals: each refused when its target is absent, and applied when it is there."""
    layout = fed.build(tmp_path, fed.ports_from(27000, fed.DEMO_AGENCIES), [])
    federation = load_model(layout.federation_file, FederationConfig)
    cas = [layout.ca.certificate]
    now = dt.datetime.now(dt.UTC)

    def request(kind: reg.Kind, **fields: str) -> reg.Request:
        return reg.new_request(kind, "DEMO/GOV/1001", now, **fields)

    remove_client = request(reg.Kind.REMOVE_CLIENT, server="DEMO/GOV/1001/gw-civil", client="DEMO/GOV/1001/population")
    reg.check(federation, remove_client, cas, now)
    after = reg.apply(federation, remove_client)
    civil = next(g for g in after.gateways if g.server == "DEMO/GOV/1001/gw-civil")
    assert civil.clients == []
    with pytest.raises(reg.RegistrationError, match="is not a client"):
        reg.check(after, remove_client, cas, now)
    remove_subsystem = request(reg.Kind.REMOVE_SUBSYSTEM, subsystem="population")
    after = reg.apply(after, remove_subsystem)
    with pytest.raises(reg.RegistrationError, match="is not registered"):
        reg.check(after, remove_subsystem, cas, now)
    remove_gateway = request(reg.Kind.REMOVE_GATEWAY, server="DEMO/GOV/1001/gw-civil")
    after = reg.apply(after, remove_gateway)
    assert "DEMO/GOV/1001/gw-civil" not in [g.server for g in after.gateways]
    with pytest.raises(reg.RegistrationError, match="not registered"):
        reg.check(after, remove_gateway, cas, now)
    # Removing another member's gateway is refused.
    foreign = request(reg.Kind.REMOVE_GATEWAY, server="DEMO/GOV/1002/gw-tax")
    with pytest.raises(reg.RegistrationError, match="not owned"):
        reg.check(federation, foreign, cas, now)
