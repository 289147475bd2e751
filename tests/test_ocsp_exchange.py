"""Certificate status end to end: stapled OCSP on every message, revocation, and a responder outage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from lxml import etree

from gateway.audit.trail import AuditTrail
from gateway.cli import main
from gateway.core import identifiers as ids
from tests.conftest import Federation, soap_request, start_federation, stop_federation

ECHO = ids.ServiceId("DEMO", "GOV", "1001", "population", "echo")
FRESHNESS = 3  # seconds: the global configuration's OCSP freshness limit in these tests


@pytest.fixture
async def stapling(tmp_path: Path):
    f = await start_federation(tmp_path, ocsp_freshness_seconds=FRESHNESS)
    try:
        yield f
    finally:
        await stop_federation(f)


async def exchange(f: Federation) -> tuple[int, str]:
    """(HTTP status, fault code or "") of one SOAP exchange health -> civil."""
    payload = soap_request(f.subsystem("health"), ECHO)
    async with f.session.post(f.client_url("health"), data=payload,
                              headers={"Content-Type": "text/xml; charset=utf-8"}) as resp:
        body = await resp.read()
    return resp.status, (etree.fromstring(body).findtext(".//faultcode") or "") if resp.status != 200 else ""


async def until_refused(f: Federation, limit_seconds: float) -> tuple[float, str]:
    """Exchange every 0.1 s until one fails; (seconds it took, its fault code). Bounded by ``limit_seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < limit_seconds:
        status, code = await exchange(f)
        if status != 200:
            return time.monotonic() - started, code
        await asyncio.sleep(0.1)
    raise AssertionError(f"still accepted after {limit_seconds} s")


async def test_every_message_carries_a_fresh_good_status(stapling: Federation) -> None:
    assert await exchange(stapling) == (200, "")
    for gw in stapling.gateways.values():
        assert gw.runtime.own_status.problem(gw.runtime.conf.current, gw.runtime.now()) is None
    # The provider checked the client's staple, and the client the provider's.
    assert stapling.gateways["civil"].runtime.signer_trust._statuses
    assert stapling.gateways["health"].runtime.signer_trust._statuses
    # ... and the response is on disk for a restart during a responder outage.
    assert list((stapling.layout.directory / "state" / "civil" / "ocsp").glob("*.der"))


async def test_a_revoked_sign_certificate_is_refused_within_the_freshness_limit(stapling: Federation) -> None:
    ca_dir = stapling.layout.directory / "pki" / "ca"
    assert await exchange(stapling) == (200, "")
    assert main(["pki", "revoke", "--ca", str(ca_dir), "--cert", str(stapling.layout.directory / "pki" / "civil"
                                                                     / "sign.pem"), "--reason", "key_compromise"]) == 0
    took, code = await until_refused(stapling, FRESHNESS * 3)
    print(f"revocation refused after {took:.2f} s (freshness limit {FRESHNESS} s)")
    assert took <= FRESHNESS, f"revocation took {took:.2f} s to take effect"
    assert code == "Server.ServerProxy.CertificateRevoked"
    entries = list(AuditTrail(ca_dir / "audit.jsonl").entries())
    assert [(e.action, e.result) for e in entries] == [("pki.revoke", "ok")]
    # Revoking it again is refused, and audited as refused.
    assert main(["pki", "revoke", "--ca", str(ca_dir), "--cert",
                 str(stapling.layout.directory / "pki" / "civil" / "sign.pem")]) == 1
    assert [e.result for e in AuditTrail(ca_dir / "audit.jsonl").entries()] == ["ok", "refused"]


async def test_a_gateway_that_keeps_stapling_an_old_good_status_is_refused_once_stale(stapling: Federation) -> None:
    """A dishonest (or stuck) provider keeps stapling its last good response after revocation; the client's
    gateway refuses it as soon as it is older than the freshness limit."""
    civil = stapling.gateways["civil"].runtime
    assert await exchange(stapling) == (200, "")
    entry = civil.own_status._entries["sign DEMO/GOV/1001"]
    frozen = entry.response
    civil.staple = lambda identity, conf, origin: frozen  # type: ignore[method-assign]
    main(["pki", "revoke", "--ca", str(stapling.layout.directory / "pki" / "ca"), "--cert",
          str(stapling.layout.directory / "pki" / "civil" / "sign.pem")])
    took, code = await until_refused(stapling, FRESHNESS * 3)
    assert took <= FRESHNESS + 0.5
    assert code == "Server.ClientProxy.CertValidation"  # the client gateway refused the provider's response


async def test_a_responder_outage_is_survived_while_fresh_then_fails_clearly(stapling: Federation) -> None:
    health = stapling.gateways["health"].runtime
    await stapling.ocsp_runner.cleanup()  # type: ignore[attr-defined]
    stapling.ocsp_runner = None  # type: ignore[attr-defined]
    assert await exchange(stapling) == (200, "")  # cached responses are still fresh
    async with stapling.session.get(stapling.client_url("health", "/readyz")) as resp:
        assert resp.status == 200
    took, code = await until_refused(stapling, FRESHNESS * 3)
    assert took <= FRESHNESS + 1.5
    assert code.endswith("CertValidation")
    async with stapling.session.get(stapling.client_url("health", "/readyz")) as resp:
        text = await resp.text()
        assert resp.status == 503
        assert "no fresh OCSP response" in text and "unreachable" in text
    async with stapling.session.get(stapling.client_url("health", "/metrics")) as resp:
        scrape = await resp.text()
    failures = [line for line in scrape.splitlines()
                if line.startswith("wasl_ocsp_fetch_failures_total{") and 'certificate="sign DEMO/GOV/1003"' in line]
    assert failures and float(failures[0].split()[-1]) >= 1
    assert "wasl_ocsp_response_age_seconds" in scrape
    assert health.own_status.problem(health.conf.current, health.now()) is not None


async def test_a_message_without_a_staple_is_refused_where_the_ca_runs_ocsp(stapling: Federation) -> None:
    health = stapling.gateways["health"].runtime
    health.staple = lambda identity, conf, origin: b""  # type: ignore[method-assign]
    status, code = await exchange(stapling)
    assert status == 500 and code == "Server.ServerProxy.CertValidation"
