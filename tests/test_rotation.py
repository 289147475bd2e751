"""Key rotation under steady traffic: a sign key and an auth certificate change with zero failed requests."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.audit.trail import AuditTrail
from gateway.cli import main
from gateway.configfile import load_model
from gateway.core import identifiers as ids
from gateway.core.certificates import fingerprint
from gateway.core.envelope import unb64
from gateway.core.settings import GatewaySettings
from gateway.proxy.app import RunningGateway
from gateway.trust.pki import new_key, save_certificate, save_key
from tests.conftest import Federation, soap_request, start_federation, stop_federation

ECHO = ids.ServiceId("DEMO", "GOV", "1001", "population", "echo")


class SteadyTraffic:
    """A few concurrent callers, health -> civil, until stopped; bounded in count and in time."""

    def __init__(self, f: Federation, callers: int = 4, max_requests: int = 5000, max_seconds: float = 60) -> None:
        self.f, self.callers, self.max_requests, self.max_seconds = f, callers, max_requests, max_seconds
        self.ok = 0
        self.failed: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _caller(self, n: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline and self.ok + len(self.failed) < \
                self.max_requests:
            payload = soap_request(self.f.subsystem("health"), ECHO, xroad_id=f"rot-{n}-{self.ok}")
            try:
                async with self.f.session.post(self.f.client_url("health"), data=payload,
                                               headers={"Content-Type": "text/xml"}) as resp:
                    body = await resp.read()
                if resp.status == 200:
                    self.ok += 1
                else:
                    self.failed.append(body.decode(errors="replace")[:300])
            except Exception as exc:  # every failure counts
                self.failed.append(repr(exc))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._caller(n)) for n in range(self.callers)]

    async def wait_for(self, more: int) -> None:
        """Let at least ``more`` further requests through."""
        target = self.ok + more
        started = time.monotonic()
        while self.ok < target and time.monotonic() - started < 20 and not self.failed:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def _until(predicate, seconds: float = 15) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < seconds, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_sign_key_rotation_drops_no_request(tmp_path: Path) -> None:
    f = await start_federation(tmp_path)
    traffic = SteadyTraffic(f)
    try:
        civil = f.gateways["civil"]
        config = f.layout.gateway_files["civil"]
        key = new_key()
        cert = f.layout.ca.issue_sign_certificate(ids.parse_member("DEMO/GOV/1001"), "Civil", key.public_key())
        save_key(tmp_path / "new-sign.key", key)
        save_certificate(tmp_path / "new-sign.pem", cert)
        traffic.start()
        await traffic.wait_for(50)
        assert main(["gateway", "rotate", "sign", "--config", str(config), "--key", str(tmp_path / "new-sign.key"),
                     "--cert", str(tmp_path / "new-sign.pem"), "--no-reload"]) == 0
        assert await civil.reload(config) == ["sign DEMO/GOV/1001"]  # what SIGHUP runs in a served gateway
        await traffic.wait_for(200)
        await traffic.stop()
        assert traffic.failed == [] and traffic.ok >= 250
        # Responses are now signed with the new key: the client's message log holds the new signer certificate.
        store = f.gateways["health"].runtime.message_log.store
        assert store is not None
        last = await store.last()
        assert last is not None and last.direction == "response"
        assert last.signer_cert == cert.public_bytes(Encoding.DER)
        state = load_model(config, GatewaySettings).state_dir
        assert [(e.action, e.result) for e in AuditTrail(state / "audit.jsonl").entries()] == [
            ("key.rotate.sign", "ok"), ("gateway.config.reload", "ok")]
    finally:
        await traffic.stop()
        await stop_federation(f)


async def test_auth_certificate_rotation_drops_no_request(tmp_path: Path) -> None:
    f = await start_federation(tmp_path)
    traffic = SteadyTraffic(f)
    try:
        civil, health = f.gateways["civil"], f.gateways["health"]
        config = f.layout.gateway_files["civil"]
        key = new_key()
        cert = f.layout.ca.issue_auth_certificate(ids.parse_server("DEMO/GOV/1001/gw-civil"), key.public_key())
        save_key(tmp_path / "new-auth.key", key)
        save_certificate(tmp_path / "new-auth.pem", cert)
        new_fp = fingerprint(cert)
        traffic.start()
        await traffic.wait_for(50)

        def list_fingerprints(fps: list[str] | None) -> None:
            federation = yaml.safe_load(f.layout.federation_file.read_text())
            gw = next(g for g in federation["gateways"] if g["server"] == "DEMO/GOV/1001/gw-civil")
            if fps is None:
                gw["auth_cert_sha256"] = [*gw.get("auth_cert_sha256", []), new_fp]
            else:
                gw["auth_cert_sha256"] = fps
                gw.pop("auth_certificate", None)
            f.layout.federation_file.write_text(yaml.safe_dump(federation))
            f.registry.regenerate()

        def health_pins() -> frozenset[str]:
            conf = health.runtime.conf.current
            gw = next(g for g in conf.document.gateways if g.server == "DEMO/GOV/1001/gw-civil")
            return frozenset(gw.auth_cert_sha256)

        # 1. The federation lists the new certificate beside the old one; peers learn it.
        list_fingerprints(None)
        await _until(lambda: new_fp in health_pins() and len(health_pins()) == 2)
        await traffic.wait_for(50)
        # 2. The gateway switches to it.
        assert main(["gateway", "rotate", "auth", "--config", str(config), "--key", str(tmp_path / "new-auth.key"),
                     "--cert", str(tmp_path / "new-auth.pem"), "--no-reload"]) == 0
        assert await civil.reload(config) == ["auth"]
        await traffic.wait_for(100)
        # 3. The old certificate is withdrawn from the federation.
        list_fingerprints([new_fp])
        await _until(lambda: health_pins() == {new_fp})
        await traffic.wait_for(100)
        await traffic.stop()
        assert traffic.failed == [] and traffic.ok >= 300
        # The peer now presents the new certificate: health's connections to civil see it.
        link = next(link for _, link in health.runtime._peers.values())
        conns = [c for c in link._slots if c is not None and c.transport is not None]
        assert conns
        assert {c.transport.get_extra_info("ssl_object").getpeercert(binary_form=True) for c in conns} == {
            cert.public_bytes(Encoding.DER)}
    finally:
        await traffic.stop()
        await stop_federation(f)


async def test_registry_signing_key_rotation_drops_no_request(tmp_path: Path) -> None:
    f = await start_federation(tmp_path)
    traffic = SteadyTraffic(f)
    try:
        key = new_key()
        cert = f.layout.ca.issue_signing_certificate("Wasl Central Registry 2027", key.public_key())
        save_key(tmp_path / "registry-2027.key", key)
        save_certificate(tmp_path / "registry-2027.pem", cert)
        new_fp = fingerprint(cert)
        fed_file = str(f.layout.federation_file)
        traffic.start()
        await traffic.wait_for(50)
        # Switching before announcing is refused: gateways would not trust the new key yet.
        rotate = ["registry", "rotate-signing-key", "--config", fed_file, "--key", str(tmp_path / "registry-2027.key"),
                  "--cert", str(tmp_path / "registry-2027.pem")]
        assert main([*rotate, "--switch"]) == 1
        # 1. Announce: the configuration, still signed by the old key, names the new one; gateways learn it.
        assert main(rotate) == 0
        f.registry.regenerate()
        gateways = list(f.gateways.values())
        await _until(lambda: all(new_fp in g.runtime.conf.anchor.signing_cert_sha256 for g in gateways))
        await traffic.wait_for(50)
        # 2. Switch: the registry signs with the new key; every gateway accepts the next copy.
        assert main([*rotate, "--switch"]) == 0
        f.registry.regenerate()
        assert fingerprint(f.registry.publisher.signing_certificate) == new_fp

        def signed_by_new(g: RunningGateway) -> bool:
            container = json.loads(g.runtime.conf.current.raw)
            return fingerprint(x509.load_der_x509_certificate(unb64(container["signing_certificate"]))) == new_fp

        await _until(lambda: all(signed_by_new(g) for g in gateways))
        await traffic.wait_for(100)
        await traffic.stop()
        assert traffic.failed == [] and traffic.ok >= 200
        # The learned key is on disk, so a restart verifies the stored copy signed by the new key.
        learned = tmp_path / "state" / "civil" / "anchor-learned.json"
        assert new_fp in learned.read_text()
        audit = [(e.action, e.result) for e in AuditTrail(tmp_path / "registry-state" / "audit.jsonl").entries()]
        assert audit[:2] == [("registry.signing_key.switch", "refused"), ("registry.signing_key.announce", "ok")]
        assert ("registry.signing_key.switch", "ok") in audit and ("registry.config.change", "ok") in audit
    finally:
        await traffic.stop()
        await stop_federation(f)


async def test_readiness_warns_before_a_certificate_expires(tmp_path: Path) -> None:
    # The development certificates are valid for a year: a 400-day warning window covers them.
    f = await start_federation(tmp_path, settings={"civil": {"certificate_warning_days": 400}})
    try:
        async with f.session.get(f.client_url("civil", "/readyz")) as resp:
            text = await resp.text()
        assert resp.status == 200 and "warning:" in text and "certificate" in text and "expires at" in text
        async with f.session.get(f.client_url("tax", "/readyz")) as resp:
            assert await resp.text() == "ready\n"
        async with f.session.get(f.client_url("civil", "/metrics")) as resp:
            scrape = await resp.text()
        assert 'wasl_certificate_expiry_timestamp_seconds{kind="sign",member="DEMO/GOV/1001"}' in scrape
    finally:
        await stop_federation(f)
