"""The global configuration: build, sign and verify against an anchor; every refusal; the look-up indexes."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.core import globalconf as gc
from gateway.core.certificates import fingerprint
from gateway.core.faults import Code, Fault, Origin
from gateway.trust.pki import CertificateAuthority, new_key

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
FP_CIVIL = "ab" * 32
FP_TAX_OLD = "cd" * 32
FP_TAX_NEW = "ef" * 32


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("Test Root CA")


@pytest.fixture(scope="module")
def registry(ca: CertificateAuthority) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_key()
    return key, ca.issue_signing_certificate("Test Registry", key.public_key())


@pytest.fixture(scope="module")
def anchor(registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> gc.ConfigurationAnchor:
    return gc.ConfigurationAnchor(instance="DEMO", registry_url="http://127.0.0.1:4400",
                                  signing_cert_sha256=[fingerprint(registry[1])])


def document(ca: CertificateAuthority, *, instance: str = "DEMO", serial: int = 5,
             generated_at: dt.datetime = NOW - dt.timedelta(minutes=1),
             validity: dt.timedelta = dt.timedelta(minutes=10)) -> bytes:
    return gc.build_document(
        instance=instance, serial=serial, generated_at=generated_at, validity=validity, refresh_seconds=60,
        approved_cas=[gc.ApprovedCA(name="Test Root CA",
                                    certificate=base64.b64encode(ca.certificate.public_bytes(Encoding.DER)).decode())],
        members=[
            gc.Member(member_class="GOV", member_code="1001", name="Civil Registry",
                      subsystems=[gc.Subsystem(code="population")]),
            gc.Member(member_class="GOV", member_code="1002", name="Tax Authority",
                      subsystems=[gc.Subsystem(code="tax-records"), gc.Subsystem(code="archive")]),
            gc.Member(member_class="GOV", member_code="1003", name="Ministry of Health",
                      subsystems=[gc.Subsystem(code="patients")]),
            gc.Member(member_class="COM", member_code="9", name="No Subsystems Ltd"),
        ],
        gateways=[
            gc.Gateway(server="DEMO/GOV/1001/gw-civil", address="https://127.0.0.1:5501",
                       auth_cert_sha256=[FP_CIVIL], clients=["DEMO/GOV/1001/population"]),
            gc.Gateway(server="DEMO/GOV/1002/gw-tax-1", address="https://127.0.0.1:5502",
                       auth_cert_sha256=[FP_TAX_OLD.upper(), ":".join([FP_TAX_NEW[i:i + 2] for i in range(0, 64, 2)])],
                       clients=["DEMO/GOV/1002/tax-records", "DEMO/GOV/1002/archive"]),
            gc.Gateway(server="DEMO/GOV/1002/gw-tax-2", address="https://127.0.0.1:5503",
                       auth_cert_sha256=["12" * 32], clients=["DEMO/GOV/1002/tax-records"]),
        ],
        global_groups=[
            gc.GlobalGroup(code="trusted", members=["DEMO/GOV/1002/tax-records"]),  # a subsystem
            gc.GlobalGroup(code="health", members=["DEMO/GOV/1003"]),  # a whole member
            gc.GlobalGroup(code="everyone", members=["DEMO/GOV/1001", "DEMO/GOV/1002", "DEMO/GOV/1003"]),
            gc.GlobalGroup(code="empty", members=[]),
        ],
    )


def sign(doc: bytes, registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> bytes:
    return gc.sign_document(doc, *registry)


def refusal(blob: bytes, anchor: gc.ConfigurationAnchor, **kwargs: object) -> gc.GlobalConfError:
    with pytest.raises(gc.GlobalConfError) as info:
        gc.verify_container(blob, anchor, kwargs.pop("now", NOW), **kwargs)  # type: ignore[arg-type]
    return info.value


@pytest.fixture(scope="module")
def conf(ca: CertificateAuthority, registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
         anchor: gc.ConfigurationAnchor) -> gc.GlobalConf:
    return gc.verify_container(sign(document(ca), registry), anchor, NOW)


# -- round trip ---------------------------------------------------------------------------------------------------


def test_round_trip(ca: CertificateAuthority, registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                    anchor: gc.ConfigurationAnchor) -> None:
    doc = document(ca)
    blob = sign(doc, registry)
    container = json.loads(blob)
    assert container["format"] == gc.CONTAINER_FORMAT
    assert base64.b64decode(container["document"]) == doc
    conf = gc.verify_container(blob, anchor, NOW)
    assert conf.raw == blob
    assert conf.instance == "DEMO"
    assert conf.serial == 5
    assert conf.document.expires_at == NOW + dt.timedelta(minutes=9)
    assert conf.document.refresh_seconds == 60
    assert conf.approved_ca_certificates == [ca.certificate]
    assert not conf.is_expired(NOW)
    conf.require_fresh(NOW, Origin.CLIENT_PROXY)
    # the same or a newer serial than the one held is fine
    assert gc.verify_container(blob, anchor, NOW, held_serial=5).serial == 5
    assert gc.verify_container(blob, anchor, NOW, held_serial=4).serial == 5


def test_anchor_accepts_openssl_style_fingerprints(registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                                                   ca: CertificateAuthority) -> None:
    fp = fingerprint(registry[1])
    openssl = ":".join(fp[i:i + 2] for i in range(0, 64, 2)).upper()
    anchor = gc.ConfigurationAnchor(instance="DEMO", registry_url="http://x", signing_cert_sha256=["00" * 32, openssl])
    assert anchor.signing_cert_sha256 == ["00" * 32, fp]
    assert gc.verify_container(sign(document(ca), registry), anchor, NOW).serial == 5


@pytest.mark.parametrize("value", ["ab" * 31, "zz" * 32, "", "ab" * 33])
def test_anchor_refuses_bad_fingerprints(value: str) -> None:
    with pytest.raises(ValueError, match="SHA-256 fingerprint"):
        gc.ConfigurationAnchor(instance="DEMO", registry_url="http://x", signing_cert_sha256=[value])


def test_anchor_needs_a_fingerprint() -> None:
    with pytest.raises(ValueError, match="signing_cert_sha256"):
        gc.ConfigurationAnchor(instance="DEMO", registry_url="http://x", signing_cert_sha256=[])


# -- refusals -----------------------------------------------------------------------------------------------------


def test_tampered_document_byte(ca: CertificateAuthority,
                                registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                                anchor: gc.ConfigurationAnchor) -> None:
    container = json.loads(sign(document(ca), registry))
    doc = bytearray(base64.b64decode(container["document"]))
    at = doc.index(b'"serial":5') + len(b'"serial":')
    doc[at:at + 1] = b"9"  # still valid JSON, still a valid document: only the signature can tell
    container["document"] = base64.b64encode(bytes(doc)).decode()
    error = refusal(json.dumps(container).encode(), anchor)
    assert error.code is Code.MALFORMED_GLOBALCONF
    assert "signature does not verify" in str(error)


def test_tampered_signature(ca: CertificateAuthority, registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                            anchor: gc.ConfigurationAnchor) -> None:
    container = json.loads(sign(document(ca), registry))
    other = json.loads(sign(document(ca, serial=6), registry))
    container["signature"] = other["signature"]
    assert refusal(json.dumps(container).encode(), anchor).code is Code.MALFORMED_GLOBALCONF


def test_signed_by_a_key_the_anchor_does_not_trust(ca: CertificateAuthority,
                                                   anchor: gc.ConfigurationAnchor) -> None:
    key = new_key()
    impostor = ca.issue_signing_certificate("Test Registry", key.public_key())  # same CA and name, other key
    error = refusal(gc.sign_document(document(ca), key, impostor), anchor)
    assert error.code is Code.MALFORMED_GLOBALCONF
    assert "does not trust" in str(error)


def test_trusted_certificate_with_a_signature_by_another_key(ca: CertificateAuthority,
                                                             registry: tuple[ec.EllipticCurvePrivateKey,
                                                                             x509.Certificate],
                                                             anchor: gc.ConfigurationAnchor) -> None:
    # An attacker can copy the trusted certificate into the container, but not sign with its key.
    blob = gc.sign_document(document(ca), new_key(), registry[1])
    error = refusal(blob, anchor)
    assert error.code is Code.MALFORMED_GLOBALCONF
    assert "signature does not verify" in str(error)


def test_wrong_instance(ca: CertificateAuthority, registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                        anchor: gc.ConfigurationAnchor) -> None:
    error = refusal(sign(document(ca, instance="OTHER"), registry), anchor)
    assert error.code is Code.MALFORMED_GLOBALCONF
    assert "'OTHER'" in str(error) and "'DEMO'" in str(error)


def test_older_serial_than_held(ca: CertificateAuthority,
                                registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                                anchor: gc.ConfigurationAnchor) -> None:
    error = refusal(sign(document(ca, serial=5), registry), anchor, held_serial=6)
    assert error.code is Code.MALFORMED_GLOBALCONF
    assert "older" in str(error)


def test_expired(ca: CertificateAuthority, registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                 anchor: gc.ConfigurationAnchor) -> None:
    blob = sign(document(ca, generated_at=NOW - dt.timedelta(minutes=10), validity=dt.timedelta(minutes=10)), registry)
    error = refusal(blob, anchor)  # expires_at == now counts as expired
    assert error.code is Code.OUTDATED_GLOBALCONF
    assert refusal(blob, anchor, now=NOW + dt.timedelta(days=1)).code is Code.OUTDATED_GLOBALCONF
    assert gc.verify_container(blob, anchor, NOW - dt.timedelta(seconds=1)).serial == 5


def test_allow_expired_accepts_an_expired_copy(ca: CertificateAuthority,
                                               registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                                               anchor: gc.ConfigurationAnchor) -> None:
    blob = sign(document(ca, generated_at=NOW - dt.timedelta(hours=2)), registry)
    conf = gc.verify_container(blob, anchor, NOW, allow_expired=True)
    assert conf.is_expired(NOW)
    with pytest.raises(Fault) as info:
        conf.require_fresh(NOW, Origin.CLIENT_PROXY)
    assert info.value.full_code == "Server.ClientProxy.OutdatedGlobalConf"
    # allow_expired does not relax anything else
    assert refusal(blob, anchor, allow_expired=True, held_serial=6).code is Code.MALFORMED_GLOBALCONF


@pytest.mark.parametrize("blob", [
    b"",
    b"garbage",
    b"\xff\xfe\x00",
    b"[]",
    b'"text"',
    b"{}",
    json.dumps({"format": "something-else/1", "document": "", "signature": "", "signing_certificate": ""}).encode(),
    json.dumps({"format": gc.CONTAINER_FORMAT, "document": "e30="}).encode(),  # no signature
    json.dumps({"format": gc.CONTAINER_FORMAT, "document": "not base64!", "signature": "",
                "signing_certificate": ""}).encode(),
    json.dumps({"format": gc.CONTAINER_FORMAT, "document": 5, "signature": "", "signing_certificate": ""}).encode(),
    json.dumps({"format": gc.CONTAINER_FORMAT, "document": "e30=", "signature": "e30=",
                "signing_certificate": "bm90IGEgY2VydA=="}).encode(),  # certificate is not DER
])
def test_garbage(blob: bytes, anchor: gc.ConfigurationAnchor) -> None:
    assert refusal(blob, anchor).code is Code.MALFORMED_GLOBALCONF


@pytest.mark.parametrize("doc", [b"not json", b"[]", b'{"format":"wasl-globalconf/1"}',
                                 b'{"format":"wasl-globalconf/2","instance":"DEMO"}'])
def test_signed_document_that_is_not_a_document(doc: bytes,
                                                registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                                                anchor: gc.ConfigurationAnchor) -> None:
    error = refusal(sign(doc, registry), anchor)
    assert error.code is Code.MALFORMED_GLOBALCONF
    assert "global configuration" in str(error)


def test_signed_document_with_an_unknown_field(ca: CertificateAuthority,
                                               registry: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                                               anchor: gc.ConfigurationAnchor) -> None:
    data = json.loads(document(ca))
    data["gateways"][0]["surprise"] = True
    error = refusal(sign(json.dumps(data).encode(), registry), anchor)
    assert error.code is Code.MALFORMED_GLOBALCONF
    assert "gateways.0.surprise" in str(error)


def test_oversized(anchor: gc.ConfigurationAnchor) -> None:
    blob = b" " * (gc.MAX_CONTAINER_BYTES + 1)
    error = refusal(blob, anchor)
    assert error.code is Code.MALFORMED_GLOBALCONF
    assert "too large" in str(error)


def test_global_conf_error_is_a_value_error() -> None:
    assert isinstance(gc.GlobalConfError(Code.MALFORMED_GLOBALCONF, "x"), ValueError)


# -- indexes ------------------------------------------------------------------------------------------------------


def test_gateways_for(conf: gc.GlobalConf) -> None:
    assert [gw.server for gw in conf.gateways_for("DEMO/GOV/1001/population")] == ["DEMO/GOV/1001/gw-civil"]
    assert [gw.server for gw in conf.gateways_for("DEMO/GOV/1002/tax-records")] == [
        "DEMO/GOV/1002/gw-tax-1", "DEMO/GOV/1002/gw-tax-2"]  # in the configuration's order
    assert [gw.server for gw in conf.gateways_for("DEMO/GOV/1002/archive")] == ["DEMO/GOV/1002/gw-tax-1"]
    assert conf.gateways_for("DEMO/GOV/1003/patients") == ()
    assert conf.gateways_for("DEMO/GOV/1002") == ()


def test_gateway_by_fingerprint(conf: gc.GlobalConf) -> None:
    assert conf.gateway_by_fingerprint[FP_CIVIL].server == "DEMO/GOV/1001/gw-civil"
    # both of a gateway's certificates (rollover), normalised from upper case and colons
    assert conf.gateway_by_fingerprint[FP_TAX_OLD].server == "DEMO/GOV/1002/gw-tax-1"
    assert conf.gateway_by_fingerprint[FP_TAX_NEW].server == "DEMO/GOV/1002/gw-tax-1"
    assert conf.gateway_by_fingerprint["12" * 32].server == "DEMO/GOV/1002/gw-tax-2"
    assert "00" * 32 not in conf.gateway_by_fingerprint
    assert len(conf.gateway_by_fingerprint) == 4


def test_groups_of(conf: gc.GlobalConf) -> None:
    # a subsystem listed itself
    assert conf.groups_of("DEMO/GOV/1002/tax-records") == {"trusted", "everyone"}
    # a sibling subsystem is not in a group that lists only the other subsystem
    assert conf.groups_of("DEMO/GOV/1002/archive") == {"everyone"}
    # the member itself is not in a group that lists only one of its subsystems
    assert conf.groups_of("DEMO/GOV/1002") == {"everyone"}
    # a member-level group member covers the member and each of its subsystems
    assert conf.groups_of("DEMO/GOV/1003") == {"health", "everyone"}
    assert conf.groups_of("DEMO/GOV/1003/patients") == {"health", "everyone"}
    # prefixes of a member code do not match
    assert conf.groups_of("DEMO/GOV/100") == frozenset()
    assert conf.groups_of("DEMO/GOV/10033/x") == frozenset()
    assert conf.groups_of("DEMO/COM/9") == frozenset()


def test_is_known_client(conf: gc.GlobalConf) -> None:
    for known in ("DEMO/GOV/1001", "DEMO/GOV/1001/population", "DEMO/GOV/1002/archive", "DEMO/COM/9"):
        assert conf.is_known_client(known), known
    for unknown in ("DEMO/GOV/1004", "DEMO/GOV/1001/other", "OTHER/GOV/1001", "DEMO/GOV/1001/population/x",
                    "DEMO/COM/9/sub", ""):
        assert not conf.is_known_client(unknown), unknown
    assert conf.member_names["DEMO/GOV/1002"] == "Tax Authority"


def test_gateway_fingerprints_are_validated() -> None:
    with pytest.raises(ValueError, match="SHA-256 fingerprint"):
        gc.Gateway(server="DEMO/GOV/1001/gw", address="https://x", auth_cert_sha256=["nothex"], clients=[])
