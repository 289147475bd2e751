"""Sign keys in a PKCS#11 token (SoftHSM2): a real token signs messages that a peer gateway verifies."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.configfile import ConfigError, load_model
from gateway.core import identifiers as ids
from gateway.core.settings import GatewaySettings, Pkcs11Key
from gateway.proxy.app import RunningGateway
from gateway.trust.pkcs11_signer import Pkcs11Error, Pkcs11Signer, generate_key
from gateway.trust.pki import save_certificate
from tests.conftest import soap_request, start_federation, stop_federation

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "4321-test-pin"


def _softhsm_missing() -> str | None:
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed"
    if shutil.which("softhsm2-util") is None or not MODULE.exists():
        return "SoftHSM2 is not installed (apt-get install softhsm2)"
    return None


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One SoftHSM2 token in a temporary folder for this module: the library reads its configuration once per
    process, so every test uses this token, each with its own key label."""
    missing = _softhsm_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"PKCS#11 tests need SoftHSM2 under CI: {missing}")
        pytest.skip(missing)
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "wasl-test", "--pin", PIN,
                        "--so-pin", "1234-so"], check=True, capture_output=True)
        yield


@pytest.fixture
def token(softhsm, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Pkcs11Key:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WASL_TEST_PIN", PIN)
    return Pkcs11Key(module=MODULE, token_label="wasl-test", key_label=f"sign-{request.node.name[:40]}",
                     pin_env="WASL_TEST_PIN")


def test_a_token_key_signs_and_the_signature_verifies(token: Pkcs11Key) -> None:
    public_key = generate_key(token)
    signer = Pkcs11Signer(token)
    try:
        signature = signer.sign_blocking(b"manifest bytes")
        public_key.verify(signature, b"manifest bytes", ec.ECDSA(hashes.SHA256()))
    finally:
        signer.close()


def test_a_wrong_pin_or_key_label_fails_clearly_without_the_pin(token: Pkcs11Key,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    generate_key(token)
    monkeypatch.setenv("WASL_TEST_PIN", "wrong-pin-9999")
    with pytest.raises(Pkcs11Error) as exc:
        Pkcs11Signer(token)
    assert "wrong-pin-9999" not in str(exc.value) and "wasl-test" in str(exc.value)
    monkeypatch.setenv("WASL_TEST_PIN", PIN)
    with pytest.raises(Pkcs11Error):
        Pkcs11Signer(token.model_copy(update={"key_label": "no-such-key"}))
    monkeypatch.delenv("WASL_TEST_PIN")
    with pytest.raises(ConfigError, match="WASL_TEST_PIN is not set"):
        Pkcs11Signer(token)


async def test_a_gateway_signs_with_a_token_key_end_to_end(token: Pkcs11Key, tmp_path: Path) -> None:
    public_key = generate_key(token)
    f = await start_federation(tmp_path / "fed")
    try:
        civil = f.layout.gateway_files["civil"]
        cert = f.layout.ca.issue_sign_certificate(ids.parse_member("DEMO/GOV/1001"), "Civil Registry", public_key)
        save_certificate(tmp_path / "fed" / "pki" / "civil" / "sign-token.pem", cert)
        config = yaml.safe_load(civil.read_text())
        config["signing"] = [{"member": "DEMO/GOV/1001", "certificate": "pki/civil/sign-token.pem",
                              "pkcs11": {"module": str(token.module), "token_label": token.token_label,
                                         "key_label": token.key_label, "pin_env": token.pin_env}}]
        civil.write_text(yaml.safe_dump(config))
        await f.gateways["civil"].stop()
        f.gateways["civil"] = RunningGateway(load_model(civil, GatewaySettings))
        await f.gateways["civil"].start()
        service = ids.ServiceId("DEMO", "GOV", "1001", "population", "echo")

        async def one(i: int) -> int:
            async with f.session.post(f.client_url("health"), data=soap_request(f.subsystem("health"), service,
                                                                                 xroad_id=f"hsm-{i}"),
                                      headers={"Content-Type": "text/xml"}) as resp:
                await resp.read()
                return resp.status

        # Concurrent exchanges: responses are signed in batches by the one token thread.
        statuses = await asyncio.gather(*(one(i) for i in range(20)))
        assert statuses == [200] * 20
        # The provider's logged responses carry the token certificate as signer.
        store = f.gateways["civil"].runtime.message_log.store
        assert store is not None
        records = await store.range(1, 10_000)
        signers = {r.signer_cert for r in records if r.direction == "response"}
        assert signers == {cert.public_bytes(Encoding.DER)}
        # Twenty concurrent responses took fewer token signatures than messages (batch signing).
        assert any(r.signature.startswith(b"WBS1") for r in records if r.direction == "response")
    finally:
        await stop_federation(f)


def test_the_cli_creates_a_token_key_and_the_ca_certifies_it(token: Pkcs11Key, tmp_path: Path, capsys) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding as Enc
    from cryptography.hazmat.primitives.serialization import PublicFormat, load_pem_public_key

    from gateway.audit.trail import AuditTrail
    from gateway.cli import main

    audit = tmp_path / "audit.jsonl"
    args = ["pki", "pkcs11-keygen", "--module", str(token.module), "--token-label", token.token_label,
            "--key-label", token.key_label, "--pin-env", "WASL_TEST_PIN", "--out", str(tmp_path / "pub.pem"),
            "--audit", str(audit)]
    assert main(args) == 0
    assert main(["pki", "init", "--dir", str(tmp_path / "ca")]) == 0
    assert main(["pki", "issue", "sign", "--ca", str(tmp_path / "ca"), "--member", "DEMO/GOV/1001",
                 "--public-key", str(tmp_path / "pub.pem"), "--out", str(tmp_path / "cert")]) == 0
    assert not (tmp_path / "cert" / "sign.key").exists()  # the private key stays in the token
    cert = x509.load_pem_x509_certificate((tmp_path / "cert" / "sign.pem").read_bytes())
    public = load_pem_public_key((tmp_path / "pub.pem").read_bytes())
    assert cert.public_key().public_bytes(Enc.DER, PublicFormat.SubjectPublicKeyInfo) == public.public_bytes(
        Enc.DER, PublicFormat.SubjectPublicKeyInfo)
    signer = Pkcs11Signer(token)
    try:
        cert.public_key().verify(signer.sign_blocking(b"x"), b"x", ec.ECDSA(hashes.SHA256()))
    finally:
        signer.close()
    assert [(e.action, e.result) for e in AuditTrail(audit).entries()] == [("key.pkcs11.generate", "ok")]
