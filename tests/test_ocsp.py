"""OCSP: the development CA's responder and the check every gateway applies to a stapled response."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp

from gateway.core import identifiers as ids
from gateway.core.faults import Code
from gateway.core.ocsp import OcspError, build_request, check_response
from gateway.trust.ca_status import StatusDatabase
from gateway.trust.ocsp_responder import Responder, issue_responder_certificate
from gateway.trust.pki import CertificateAuthority, new_key

FRESH = dt.timedelta(minutes=5)


@pytest.fixture()
def ca_dir(tmp_path):
    ca = CertificateAuthority.create()
    ca.save(tmp_path)
    return tmp_path


def _issue(ca_dir, member="DEMO/GOV/1001"):
    ca = CertificateAuthority.load(ca_dir)
    cert = ca.issue_sign_certificate(ids.parse_member(member), "Agency", new_key().public_key())
    return ca, cert  # a CA loaded from its folder records what it issues


def _now():
    return dt.datetime.now(dt.UTC)


def test_a_good_certificate_gets_a_good_fresh_response(ca_dir):
    ca, cert = _issue(ca_dir)
    responder = Responder.for_ca_dir(ca_dir)
    der = responder.respond(build_request(cert, ca.certificate), _now())
    checked = check_response(der, cert, ca.certificate, _now(), FRESH)
    assert checked.serial == cert.serial_number
    assert checked.fresh_until <= _now() + FRESH


def test_revoked_is_refused_as_certificate_revoked(ca_dir):
    ca, cert = _issue(ca_dir)
    StatusDatabase(ca_dir).revoke(cert.serial_number, x509.ReasonFlags.key_compromise)
    der = Responder.for_ca_dir(ca_dir).respond(build_request(cert, ca.certificate), _now())
    with pytest.raises(OcspError) as exc:
        check_response(der, cert, ca.certificate, _now(), FRESH)
    assert exc.value.code is Code.CERT_REVOKED


def test_revoking_twice_or_an_unknown_serial_is_an_error(ca_dir):
    _, cert = _issue(ca_dir)
    db = StatusDatabase(ca_dir)
    with pytest.raises(KeyError):
        db.revoke(12345, x509.ReasonFlags.unspecified)
    db.revoke(cert.serial_number, x509.ReasonFlags.unspecified)
    with pytest.raises(ValueError, match="already revoked"):
        db.revoke(cert.serial_number, x509.ReasonFlags.unspecified)


def test_a_certificate_the_ca_never_recorded_is_unknown(ca_dir):
    loaded = CertificateAuthority.load(ca_dir)
    ca = CertificateAuthority(loaded.key, loaded.certificate)  # no folder: nothing recorded
    cert = ca.issue_sign_certificate(ids.parse_member("DEMO/GOV/1001"), "Agency", new_key().public_key())
    der = Responder.for_ca_dir(ca_dir).respond(build_request(cert, ca.certificate), _now())
    with pytest.raises(OcspError, match="status unknown"):
        check_response(der, cert, ca.certificate, _now(), FRESH)


def test_a_response_for_another_certificate_is_refused(ca_dir):
    ca, cert = _issue(ca_dir)
    _, other = _issue(ca_dir, "DEMO/GOV/1002")
    der = Responder.for_ca_dir(ca_dir).respond(build_request(other, ca.certificate), _now())
    with pytest.raises(OcspError, match="another certificate"):
        check_response(der, cert, ca.certificate, _now(), FRESH)


def test_an_expired_response_is_refused(ca_dir):
    ca, cert = _issue(ca_dir)
    der = Responder.for_ca_dir(ca_dir).respond(build_request(cert, ca.certificate), _now())
    with pytest.raises(OcspError, match="too old"):
        check_response(der, cert, ca.certificate, _now() + FRESH + dt.timedelta(seconds=1), FRESH)
    # nextUpdate caps freshness too: the responder's validity is 10 minutes.
    with pytest.raises(OcspError, match="too old"):
        check_response(der, cert, ca.certificate, _now() + dt.timedelta(minutes=11), dt.timedelta(hours=1))


def _forged(cert, issuer, signer_cert, signer_key, status=x509_ocsp.OCSPCertStatus.GOOD):
    now = _now().replace(microsecond=0)
    return (x509_ocsp.OCSPResponseBuilder()
            .add_response(cert=cert, issuer=issuer, algorithm=hashes.SHA1(), cert_status=status, this_update=now,
                          next_update=now + dt.timedelta(minutes=10), revocation_time=None,
                          revocation_reason=None)
            .responder_id(x509_ocsp.OCSPResponderEncoding.HASH, signer_cert).certificates([signer_cert])
            .sign(signer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def test_a_response_signed_by_the_wrong_key_is_refused(ca_dir):
    ca, cert = _issue(ca_dir)
    rogue_ca = CertificateAuthority.create("Rogue CA")
    rogue_key = new_key()
    rogue_responder = issue_responder_certificate(rogue_ca, rogue_key)
    with pytest.raises(OcspError, match="not issued by the CA"):
        check_response(_forged(cert, ca.certificate, rogue_responder, rogue_key), cert, ca.certificate, _now(),
                       FRESH)


def test_a_responder_certificate_without_ocsp_signing_is_refused(ca_dir):
    ca, cert = _issue(ca_dir)
    key = new_key()
    not_a_responder = ca.issue_sign_certificate(ids.parse_member("DEMO/GOV/1009"), "X", key.public_key())
    with pytest.raises(OcspError, match="not authorised for OCSP signing"):
        check_response(_forged(cert, ca.certificate, not_a_responder, key), cert, ca.certificate, _now(), FRESH)


def test_a_tampered_response_fails_its_signature(ca_dir):
    ca, cert = _issue(ca_dir)
    der = bytearray(Responder.for_ca_dir(ca_dir).respond(build_request(cert, ca.certificate), _now()))
    tbs = x509_ocsp.load_der_ocsp_response(bytes(der)).tbs_response_bytes
    at = bytes(der).index(tbs) + len(tbs) - 5  # inside the signed data, past the CertID
    der[at] ^= 0x01
    with pytest.raises(OcspError):
        check_response(bytes(der), cert, ca.certificate, _now(), FRESH)


@pytest.mark.parametrize("junk", [b"", b"not der", b"\x30\x03\x0a\x01\x00" * 3])
def test_malformed_bytes_are_a_clear_refusal(ca_dir, junk):
    ca, cert = _issue(ca_dir)
    with pytest.raises(OcspError) as exc:
        check_response(junk, cert, ca.certificate, _now(), FRESH)
    assert exc.value.code is Code.CERT_VALIDATION


def test_a_malformed_request_gets_malformed_request(ca_dir):
    der = Responder.for_ca_dir(ca_dir).respond(b"garbage", _now())
    assert x509_ocsp.load_der_ocsp_response(der).response_status is x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    ca, cert = _issue(ca_dir)
    with pytest.raises(OcspError, match="MALFORMED_REQUEST"):
        check_response(der, cert, ca.certificate, _now(), FRESH)


def test_a_request_about_another_ca_is_unauthorized(ca_dir):
    other = CertificateAuthority.create("Other CA")
    cert = other.issue_sign_certificate(ids.parse_member("DEMO/GOV/1001"), "A", new_key().public_key())
    der = Responder.for_ca_dir(ca_dir).respond(build_request(cert, other.certificate), _now())
    assert x509_ocsp.load_der_ocsp_response(der).response_status is x509_ocsp.OCSPResponseStatus.UNAUTHORIZED


async def test_a_responder_answering_http_500_or_garbage_is_a_clear_failure(ca_dir):
    """A broken responder over real HTTP: HTTP 500, a wrong content type, garbage under the right content type,
    and a closed port. Each is a clear refusal; none crashes the caller."""
    import aiohttp
    from aiohttp import web

    from gateway.trust.ocsp_responder import RESPONSE_CONTENT_TYPE, OcspFetchError, fetch_response
    from tests.conftest import free_ports, start_app

    ca, cert = _issue(ca_dir)

    async def error(_: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(body=b"\x30\x03garbage", content_type=RESPONSE_CONTENT_TYPE)

    app = web.Application()
    app.router.add_post("/500", error)
    app.router.add_post("/html", html)
    app.router.add_post("/garbage", garbage)
    runner, port = await start_app(app)
    closed = free_ports(1)[0]
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{port}"
            with pytest.raises(OcspFetchError, match="answered HTTP 500"):
                await fetch_response(session, f"{base}/500", cert, ca.certificate, 5)
            with pytest.raises(OcspFetchError, match="text/html"):
                await fetch_response(session, f"{base}/html", cert, ca.certificate, 5)
            with pytest.raises(OcspFetchError, match="unreachable"):
                await fetch_response(session, f"http://127.0.0.1:{closed}/", cert, ca.certificate, 5)
            der = await fetch_response(session, f"{base}/garbage", cert, ca.certificate, 5)
            with pytest.raises(OcspError) as refused:
                check_response(der, cert, ca.certificate, _now(), FRESH)
            assert refused.value.code is Code.CERT_VALIDATION
            assert str(refused.value) == "OCSP response is not valid DER"
    finally:
        await runner.cleanup()
