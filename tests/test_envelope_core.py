"""The signed gateway-to-gateway envelope: sign, carry, verify and decode; tampering caught; signer trust decided."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.core import envelope
from gateway.core.envelope import RequestManifest, ResponseManifest, SignedParts
from gateway.core.faults import Fault, Origin
from gateway.core.frames import Decoder, Frame, Kind, encode
from gateway.core.identifiers import MemberId, ServerId
from gateway.core.signers import SignerTrust
from gateway.trust.pki import CertificateAuthority, new_key

NOW = dt.datetime.now(dt.UTC)
CIVIL = MemberId("DEMO", "GOV", "1001")
TAX = MemberId("DEMO", "GOV", "1002")
BODY = b'<Envelope>request body \xe2\x9c\x93</Envelope>'
Signer = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("Test Root CA")


@pytest.fixture(scope="module")
def civil(ca: CertificateAuthority) -> Signer:
    key = new_key()
    return key, ca.issue_sign_certificate(CIVIL, "Civil Registry", key.public_key())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def request_manifest(body: bytes = BODY, **changes: object) -> RequestManifest:
    manifest = RequestManifest(
        protocol="soap", xroad_id="x-1", request_id="r-1", client="DEMO/GOV/1001/population",
        service="DEMO/GOV/1002/tax-records/taxpayers/v1", method="POST", path="", query="",
        headers=(("content-type", "text/xml; charset=utf-8"), ("soapaction", '""')),
        body_sha512=envelope.body_digest(body), body_length=len(body), created_ms=1_700_000_000_000,
        user_id="EE123", protocol_version="4.0", traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    for key, value in changes.items():
        setattr(manifest, key, value)
    return manifest


def signed(manifest_bytes: bytes, civil: Signer) -> SignedParts:
    key, cert = civil
    return envelope.sign(manifest_bytes, key, der(cert))


def signed_json(data: object, civil: Signer) -> SignedParts:
    return signed(json.dumps(data).encode(), civil)


def over_the_wire(parts: SignedParts, body: bytes, kind: Kind = Kind.REQUEST) -> tuple[SignedParts, bytes]:
    """What the receiving gateway reads off the peer link."""
    decoder = Decoder(1 << 20)
    frames = decoder.feed(b"".join(encode(Frame(7, kind, parts.manifest, parts.signature, parts.signer_cert, body))))
    assert len(frames) == 1
    frame = frames[0]
    assert isinstance(frame, Frame)
    return SignedParts(frame.manifest, frame.signature, frame.signer_cert), frame.body


def code_of(call: Callable[..., object], *args: object) -> str:
    with pytest.raises(Fault) as info:
        call(*args)
    return info.value.full_code


# -- round trip ---------------------------------------------------------------------------------------------------


def test_request_round_trip(ca: CertificateAuthority, civil: Signer) -> None:
    manifest = request_manifest()
    manifest_bytes = envelope.encode_manifest(manifest)
    parts, body = over_the_wire(signed(manifest_bytes, civil), BODY)
    assert parts.manifest == manifest_bytes
    key = SignerTrust().public_key_for(parts, CIVIL.path(), [ca.certificate], 1, NOW, Origin.SERVER_PROXY)
    assert key.public_numbers() == civil[0].public_key().public_numbers()
    envelope.verify_signature(parts, key, Origin.SERVER_PROXY)
    assert envelope.parse_request(parts, body) == manifest


def test_optional_fields_are_left_out_and_come_back_as_none(civil: Signer) -> None:
    manifest = request_manifest(user_id=None, protocol_version=None, traceparent=None, protocol="rest",
                                method="GET", path="/1", query="a=1")
    data = json.loads(envelope.encode_manifest(manifest))
    for key in ("user_id", "issue", "protocol_version", "traceparent", "tracestate", "target_server"):
        assert key not in data
    assert data["v"] == 1 and data["type"] == "request"
    assert envelope.parse_request(signed(envelope.encode_manifest(manifest), civil), BODY) == manifest


def test_manifest_is_compact_utf8() -> None:
    encoded = envelope.encode_manifest(request_manifest(user_id="Jüri"))
    assert "Jüri".encode() in encoded
    assert b", " not in encoded and b": " not in encoded


def test_digests() -> None:
    assert envelope.body_digest(BODY) == base64.b64encode(hashlib.sha512(BODY).digest()).decode()
    manifest = envelope.encode_manifest(request_manifest())
    assert envelope.request_hash(manifest) == base64.b64encode(hashlib.sha512(manifest).digest()).decode()
    assert envelope.request_hash(manifest + b" ") != envelope.request_hash(manifest)


def test_response_round_trip(civil: Signer) -> None:
    request_bytes = envelope.encode_manifest(request_manifest())
    expected = envelope.request_hash(request_bytes)
    body = b'{"ok":true}'
    response = ResponseManifest(xroad_id="x-1", request_id="r-1", request_hash=expected, status=200,
                                headers=(("content-type", "application/json"),),
                                body_sha512=envelope.body_digest(body), body_length=len(body),
                                created_ms=1_700_000_000_500)
    parts, got_body = over_the_wire(signed(envelope.encode_manifest(response), civil), body, Kind.RESPONSE)
    envelope.verify_signature(parts, civil[0].public_key(), Origin.CLIENT_PROXY)
    assert envelope.parse_response(parts, got_body, expected) == response


# -- tampering ----------------------------------------------------------------------------------------------------


def test_tampered_manifest(civil: Signer) -> None:
    parts = signed(envelope.encode_manifest(request_manifest()), civil)
    forged = SignedParts(parts.manifest.replace(b'"id":"x-1"', b'"id":"x-2"'), parts.signature, parts.signer_cert)
    assert forged.manifest != parts.manifest
    assert code_of(envelope.verify_signature, forged, civil[0].public_key(), Origin.SERVER_PROXY) == \
        "Server.ServerProxy.InvalidSignatureValue"


def test_tampered_signature(civil: Signer) -> None:
    parts = signed(envelope.encode_manifest(request_manifest()), civil)
    sig = bytearray(parts.signature)
    sig[-1] ^= 0x01
    for bad in (bytes(sig), b"", b"garbage", parts.signature + b"\x00"):
        forged = SignedParts(parts.manifest, bad, parts.signer_cert)
        assert code_of(envelope.verify_signature, forged, civil[0].public_key(), Origin.SERVER_PROXY) == \
            "Server.ServerProxy.InvalidSignatureValue"


def test_signature_by_another_key(civil: Signer) -> None:
    manifest = envelope.encode_manifest(request_manifest())
    parts = envelope.sign(manifest, new_key(), der(civil[1]))
    assert code_of(envelope.verify_signature, parts, civil[0].public_key(), Origin.CLIENT_PROXY) == \
        "Server.ClientProxy.InvalidSignatureValue"


@pytest.mark.parametrize("body", [BODY + b"!", BODY[:-1], BODY.replace(b"request", b"REQUEST"), b""])
def test_tampered_body(civil: Signer, body: bytes) -> None:
    parts = signed(envelope.encode_manifest(request_manifest()), civil)
    envelope.verify_signature(parts, civil[0].public_key(), Origin.SERVER_PROXY)  # the manifest itself is fine
    with pytest.raises(Fault) as info:
        envelope.parse_request(parts, body)
    assert info.value.full_code == "Server.ServerProxy.InvalidSignatureValue"
    assert "body" in info.value.message


def test_signer_certificate_that_is_not_der(civil: Signer) -> None:
    parts = signed(envelope.encode_manifest(request_manifest()), civil)
    for bad in (b"", b"not a certificate", der(civil[1])[:-10]):
        broken = SignedParts(parts.manifest, parts.signature, bad)
        assert code_of(envelope.load_signer, broken, Origin.SERVER_PROXY) == "Server.ServerProxy.MalformedSignature"
        assert code_of(SignerTrust().public_key_for, broken, CIVIL.path(), [], 1, NOW, Origin.SERVER_PROXY) == \
            "Server.ServerProxy.MalformedSignature"


def test_strict_base64() -> None:
    assert envelope.unb64(envelope.b64(b"\x00\xffdata")) == b"\x00\xffdata"
    for bad in ("not base64!", "QUJD\n", "QUJ", "QU JD"):
        with pytest.raises(binascii.Error):
            envelope.unb64(bad)


# -- malformed manifests (validly signed) --------------------------------------------------------------------------


def good_request_json() -> dict[str, object]:
    return request_manifest().to_json()


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: {**d, "type": "response"}, "not a version 1 request"),
    (lambda d: {**d, "v": 2}, "not a version 1 request"),
    (lambda d: {k: v for k, v in d.items() if k != "v"}, "not a version 1 request"),
    (lambda d: {**d, "protocol": "ftp"}, "protocol must be soap or rest"),
    (lambda d: {k: v for k, v in d.items() if k != "client"}, "client is missing"),
    (lambda d: {**d, "service": 7}, "service is missing"),
    (lambda d: {**d, "headers": "content-type: x"}, "headers are malformed"),
    (lambda d: {**d, "headers": [["content-type"]]}, "headers are malformed"),
    (lambda d: {**d, "headers": [["content-type", 1]]}, "headers are malformed"),
    (lambda d: {**d, "created_ms": "1700000000000"}, "created_ms must be an integer"),
    (lambda d: {**d, "created_ms": True}, "created_ms must be an integer"),
    (lambda d: {**d, "user_id": 5}, "user_id must be a string"),
    (lambda d: {**d, "target_server": ["DEMO/GOV/1002/gw"]}, "target_server must be a string"),
])
def test_malformed_request_manifest(civil: Signer, change: Callable[[dict[str, object]], object], words: str) -> None:
    parts = signed_json(change(good_request_json()), civil)
    with pytest.raises(Fault) as info:
        envelope.parse_request(parts, BODY)
    assert info.value.full_code == "Server.ServerProxy.MalformedSignature"
    assert words in info.value.message


@pytest.mark.parametrize("manifest", [b"", b"not json", b"\xff\xfe{}", b"[1, 2]", b'"request"', b"null"])
def test_manifest_that_is_not_a_json_object(civil: Signer, manifest: bytes) -> None:
    assert code_of(envelope.parse_request, signed(manifest, civil), BODY) == "Server.ServerProxy.MalformedSignature"
    assert code_of(envelope.parse_response, signed(manifest, civil), BODY, "h") == \
        "Server.ClientProxy.MalformedSignature"


def test_manifest_of_the_wrong_type(civil: Signer) -> None:
    request_bytes = envelope.encode_manifest(request_manifest())
    expected = envelope.request_hash(request_bytes)
    # a request manifest offered as a response (e.g. a reflected request) ...
    with pytest.raises(Fault) as info:
        envelope.parse_response(signed(request_bytes, civil), BODY, expected)
    assert info.value.full_code == "Server.ClientProxy.MalformedSignature"
    assert "response" in info.value.message
    # ... and a response manifest offered as a request
    response = ResponseManifest("x-1", "r-1", expected, 200, (), envelope.body_digest(BODY), len(BODY), 1)
    with pytest.raises(Fault) as info:
        envelope.parse_request(signed(envelope.encode_manifest(response), civil), BODY)
    assert info.value.full_code == "Server.ServerProxy.MalformedSignature"
    assert "request" in info.value.message


def test_response_bound_to_another_request(civil: Signer) -> None:
    sent = envelope.encode_manifest(request_manifest())
    other = envelope.encode_manifest(request_manifest(xroad_id="x-2"))
    body = b"answer"
    response = ResponseManifest("x-1", "r-1", envelope.request_hash(other), 200, (), envelope.body_digest(body),
                                len(body), 1)
    parts = signed(envelope.encode_manifest(response), civil)
    with pytest.raises(Fault) as info:
        envelope.parse_response(parts, body, envelope.request_hash(sent))
    assert info.value.full_code == "Server.ClientProxy.InconsistentResponse"
    assert envelope.parse_response(parts, body, envelope.request_hash(other)).status == 200


def test_response_without_request_hash(civil: Signer) -> None:
    body = b"answer"
    data = ResponseManifest("x-1", "r-1", "h", 200, (), envelope.body_digest(body), len(body), 1).to_json()
    del data["request_hash"]
    assert code_of(envelope.parse_response, signed_json(data, civil), body, "h") == \
        "Server.ClientProxy.InconsistentResponse"


def test_response_with_tampered_body(civil: Signer) -> None:
    body = b"answer"
    response = ResponseManifest("x-1", "r-1", "h", 200, (), envelope.body_digest(body), len(body), 1)
    parts = signed(envelope.encode_manifest(response), civil)
    assert code_of(envelope.parse_response, parts, b"answeR", "h") == "Server.ClientProxy.InvalidSignatureValue"


# -- signer trust -------------------------------------------------------------------------------------------------


def parts_signed_by(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> SignedParts:
    return envelope.sign(envelope.encode_manifest(request_manifest()), key, der(cert))


def trust_fault(parts: SignedParts, cas: list[x509.Certificate], member: str = CIVIL.path(),
                now: dt.datetime = NOW, serial: int = 1) -> Fault:
    with pytest.raises(Fault) as info:
        SignerTrust().public_key_for(parts, member, cas, serial, now, Origin.SERVER_PROXY)
    return info.value


def test_signer_trust_accepts_the_members_cert(ca: CertificateAuthority, civil: Signer) -> None:
    parts = parts_signed_by(*civil)
    key = SignerTrust().public_key_for(parts, CIVIL.path(), [CertificateAuthority.create("Other CA").certificate,
                                                             ca.certificate], 1, NOW, Origin.SERVER_PROXY)
    envelope.verify_signature(parts, key, Origin.SERVER_PROXY)


def test_signer_trust_refuses_another_members_cert(ca: CertificateAuthority) -> None:
    key = new_key()
    tax_cert = ca.issue_sign_certificate(TAX, "Tax Authority", key.public_key())
    fault = trust_fault(parts_signed_by(key, tax_cert), [ca.certificate], member=CIVIL.path())
    assert fault.full_code == "Server.ServerProxy.CertValidation"
    assert "DEMO/GOV/1002" in fault.message and "DEMO/GOV/1001" in fault.message


def test_signer_trust_refuses_an_unapproved_ca(ca: CertificateAuthority) -> None:
    rogue = CertificateAuthority.create("Rogue CA")
    key = new_key()
    cert = rogue.issue_sign_certificate(CIVIL, "Civil Registry", key.public_key())
    fault = trust_fault(parts_signed_by(key, cert), [ca.certificate])
    assert fault.full_code == "Server.ServerProxy.CertValidation"
    assert "approved CA" in fault.message
    assert trust_fault(parts_signed_by(key, cert), []).full_code == "Server.ServerProxy.CertValidation"


def test_signer_trust_refuses_a_ca_impostor_with_the_same_name(ca: CertificateAuthority) -> None:
    impostor = CertificateAuthority.create("Test Root CA")  # same subject, different key
    assert impostor.certificate.subject == ca.certificate.subject
    key = new_key()
    cert = impostor.issue_sign_certificate(CIVIL, "Civil Registry", key.public_key())
    assert trust_fault(parts_signed_by(key, cert), [ca.certificate]).full_code == "Server.ServerProxy.CertValidation"


def test_signer_trust_refuses_an_expired_cert(ca: CertificateAuthority) -> None:
    key = new_key()
    cert = ca.issue_sign_certificate(CIVIL, "Civil Registry", key.public_key(), days=1,
                                     not_before=NOW - dt.timedelta(days=10))
    assert cert.not_valid_after_utc < NOW
    fault = trust_fault(parts_signed_by(key, cert), [ca.certificate])
    assert fault.full_code == "Server.ServerProxy.CertValidation"
    assert "expired" in fault.message


def test_signer_trust_refuses_a_cert_not_yet_valid(ca: CertificateAuthority) -> None:
    key = new_key()
    cert = ca.issue_sign_certificate(CIVIL, "Civil Registry", key.public_key(),
                                     not_before=NOW + dt.timedelta(days=2))
    fault = trust_fault(parts_signed_by(key, cert), [ca.certificate])
    assert fault.full_code == "Server.ServerProxy.CertValidation"
    assert "not valid yet" in fault.message


def test_signer_trust_refuses_certs_of_other_profiles(ca: CertificateAuthority) -> None:
    key = new_key()
    tls = ca.issue_tls_server_certificate("localhost", key.public_key())  # no key usage at all
    fault = trust_fault(parts_signed_by(key, tls), [ca.certificate])
    assert fault.full_code == "Server.ServerProxy.CertValidation"
    assert "key usage" in fault.message
    auth = ca.issue_auth_certificate(ServerId("DEMO", "GOV", "1001", "gw"), key.public_key())  # names a server
    assert trust_fault(parts_signed_by(key, auth), [ca.certificate]).full_code == "Server.ServerProxy.CertValidation"


def test_signer_trust_memo_respects_expiry_and_configuration(ca: CertificateAuthority) -> None:
    key = new_key()
    cert = ca.issue_sign_certificate(CIVIL, "Civil Registry", key.public_key(), days=1)
    parts = parts_signed_by(key, cert)
    trust = SignerTrust()
    trust.public_key_for(parts, CIVIL.path(), [ca.certificate], 1, NOW, Origin.SERVER_PROXY)
    # a new configuration serial is checked afresh: the CA is no longer approved
    with pytest.raises(Fault) as info:
        trust.public_key_for(parts, CIVIL.path(), [], 2, NOW, Origin.SERVER_PROXY)
    assert info.value.full_code == "Server.ServerProxy.CertValidation"
    # another member is checked afresh too
    with pytest.raises(Fault):
        trust.public_key_for(parts, TAX.path(), [ca.certificate], 1, NOW, Origin.SERVER_PROXY)
    # once the certificate has expired, the remembered answer no longer counts
    with pytest.raises(Fault) as info:
        trust.public_key_for(parts, CIVIL.path(), [ca.certificate], 1, NOW + dt.timedelta(days=3),
                             Origin.SERVER_PROXY)
    assert "expired" in info.value.message
