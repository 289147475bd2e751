"""RFC 3161 time-stamping: the pure TSA and verifier, the HTTP service and client, and OpenSSL's verdict on them."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import random
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from asn1crypto import core, parser, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

import gateway.core.timestamp as timestamp_module
from gateway.core.timestamp import (
    TimestampAuthority,
    TimestampError,
    TimestampInfo,
    build_timestamp_request,
    extract_timestamp_token,
    verify_timestamp_response,
)
from gateway.trust.pki import CertificateAuthority, new_key
from gateway.trust.tsa import MAX_QUERY_BYTES, issue_tsa_certificate, make_tsa_app, request_timestamp

POLICY = "1.3.6.1.4.1.99999.7.1"
DATA = b"the signed message of a Wasl exchange\n"
DIGEST = hashlib.sha256(DATA).digest()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Pki:
    ca: CertificateAuthority
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    authority: TimestampAuthority


@pytest.fixture
def pki() -> Pki:
    ca = CertificateAuthority.create()
    key = new_key()
    certificate = issue_tsa_certificate(ca, key)
    authority = TimestampAuthority(key, certificate, [ca.certificate], POLICY, itertools.count(1).__next__)
    return Pki(ca, key, certificate, authority)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def status_of(response: bytes) -> tuple[str, set[str]]:
    # Read the PKIStatusInfo only: asn1crypto's own TimeStampResp cannot parse a rejection (no token).
    status = tsp.PKIStatusInfo.load(parser.parse(response)[4], strict=False).native
    return status["status"], set(status["fail_info"] or ())


def stamp(pki: Pki, digest: bytes = DIGEST, *, nonce: int | None = 7, cert_req: bool = True,
          at: dt.datetime | None = None, hash_alg: str = "sha256") -> bytes:
    request = build_timestamp_request(digest, hash_alg, nonce=nonce, cert_req=cert_req)
    return pki.authority.respond(request, at or now())


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes((data[index] ^ mask,)) + data[index + 1:]


def token_parts(response: bytes) -> tuple[bytes, bytes, bytes]:
    """The TSTInfo, the signed attributes' contents and the signature, as they appear inside ``response``."""
    signed_data = tsp.TimeStampResp.load(response)["time_stamp_token"]["content"]
    signer = signed_data["signer_infos"][0]
    return (bytes(signed_data["encap_content_info"]["content"]), signer["signed_attrs"].contents,
            signer["signature"].native)


# -- the pure TSA and verifier ------------------------------------------------------------------------------------

def test_round_trip_response_and_bare_token(pki: Pki) -> None:
    at = now()
    response = stamp(pki, nonce=123456789, at=at)
    assert status_of(response) == ("granted", set())

    info = verify_timestamp_response(response, DIGEST, [pki.ca.certificate], nonce=123456789, policy=POLICY)
    assert info == TimestampInfo(gen_time=at, serial=1, digest=DIGEST, hash_alg="sha256", policy=POLICY)

    token = extract_timestamp_token(response, DIGEST, nonce=123456789)
    assert verify_timestamp_response(token, DIGEST, [pki.ca.certificate]) == info
    assert verify_timestamp_response(stamp(pki), DIGEST, [pki.ca.certificate]).serial == 2


@pytest.mark.parametrize("hash_alg", ["sha384", "sha512"])
def test_round_trip_other_hashes(pki: Pki, hash_alg: str) -> None:
    digest = hashlib.new(hash_alg, DATA).digest()
    response = stamp(pki, digest, hash_alg=hash_alg)
    info = verify_timestamp_response(response, digest, [pki.ca.certificate], hash_alg=hash_alg)
    assert info.hash_alg == hash_alg
    with pytest.raises(TimestampError, match=r"stamps a sha(384|512) digest"):
        verify_timestamp_response(response, DIGEST, [pki.ca.certificate])


def test_token_without_certificates_needs_them_supplied(pki: Pki) -> None:
    response = stamp(pki, cert_req=False)
    with pytest.raises(TimestampError, match="neither in the token"):
        verify_timestamp_response(response, DIGEST, [pki.ca.certificate])
    info = verify_timestamp_response(response, DIGEST, [pki.ca.certificate], tsa_certs=[pki.certificate])
    assert info.digest == DIGEST


def test_pinned_tsa_certificate_is_trusted(pki: Pki) -> None:
    # X-Road style: the global configuration lists the TSA certificate itself.
    assert verify_timestamp_response(stamp(pki), DIGEST, [pki.certificate]).policy == POLICY


def test_wrong_digest_nonce_and_policy_are_rejected(pki: Pki) -> None:
    response = stamp(pki, nonce=42)
    with pytest.raises(TimestampError, match="different digest"):
        verify_timestamp_response(response, hashlib.sha256(b"other").digest(), [pki.ca.certificate])
    with pytest.raises(TimestampError, match="nonce"):
        verify_timestamp_response(response, DIGEST, [pki.ca.certificate], nonce=43)
    with pytest.raises(TimestampError, match="policy"):
        verify_timestamp_response(response, DIGEST, [pki.ca.certificate], policy="1.2.3.4")
    with pytest.raises(TimestampError, match="32 bytes"):
        verify_timestamp_response(response, DIGEST[:20], [pki.ca.certificate])


def test_foreign_ca_and_expired_tsa_certificate_are_rejected(pki: Pki) -> None:
    with pytest.raises(TimestampError, match="does not chain to a trusted CA"):
        verify_timestamp_response(stamp(pki), DIGEST, [CertificateAuthority.create().certificate])
    late = pki.certificate.not_valid_after_utc + dt.timedelta(days=1)
    with pytest.raises(TimestampError, match="was not valid at"):
        verify_timestamp_response(stamp(pki, at=late), DIGEST, [pki.ca.certificate])


def _certificate(pki: Pki, eku: x509.ExtendedKeyUsage | None, critical: bool) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=Not a TSA"))
        .issuer_name(pki.ca.certificate.subject)
        .public_key(pki.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(minutes=5))
        .not_valid_after(now() + dt.timedelta(days=1))
    )
    if eku is not None:
        builder = builder.add_extension(eku, critical=critical)
    return builder.sign(pki.ca.key, hashes.SHA256())


@pytest.mark.parametrize(("eku", "critical", "message"), [
    (None, False, "no extended key usage"),
    (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), False, "not critical"),
    (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING]), True,
     "timeStamping only"),
])
def test_certificate_without_critical_timestamping_eku(pki: Pki, monkeypatch: pytest.MonkeyPatch,
                                                       eku: x509.ExtendedKeyUsage | None, critical: bool,
                                                       message: str) -> None:
    bad = _certificate(pki, eku, critical)
    with pytest.raises(TimestampError, match=message):
        TimestampAuthority(pki.key, bad, [], POLICY, itertools.count(1).__next__)
    # Sneak past the TSA's own check to prove the verifier enforces the rule on its own.
    with monkeypatch.context() as patch:
        patch.setattr(timestamp_module, "_check_tsa_usage", lambda cert: None)
        rogue = TimestampAuthority(pki.key, bad, [], POLICY, itertools.count(1).__next__)
    response = rogue.respond(build_timestamp_request(DIGEST), now())
    with pytest.raises(TimestampError, match=message):
        verify_timestamp_response(response, DIGEST, [pki.ca.certificate])


def test_authority_refuses_a_key_that_is_not_the_certificates(pki: Pki) -> None:
    with pytest.raises(ValueError, match="does not belong"):
        TimestampAuthority(new_key(), pki.certificate, [], POLICY, itertools.count(1).__next__)


def test_flipped_signature_byte_is_rejected(pki: Pki) -> None:
    response = stamp(pki)
    _, _, signature = token_parts(response)
    at = response.index(signature) + len(signature) - 1  # inside s, so the DER of the signature stays valid
    with pytest.raises(TimestampError, match="signature does not verify"):
        verify_timestamp_response(flip(response, at), DIGEST, [pki.ca.certificate])


def test_flipped_tstinfo_byte_is_rejected(pki: Pki) -> None:
    response = stamp(pki)
    tst_info, _, _ = token_parts(response)
    gen_time = tsp.TSTInfo.load(tst_info)["gen_time"].contents  # b"YYYYMMDDhhmmss.ffffffZ"
    at = response.index(gen_time) + 13  # the last digit of the seconds: still a valid time, one second off
    tampered = flip(response, at)
    with pytest.raises(TimestampError, match="message-digest attribute does not match"):
        verify_timestamp_response(tampered, DIGEST, [pki.ca.certificate])


def test_every_single_byte_flip_in_signed_content_is_rejected(pki: Pki) -> None:
    response = stamp(pki)
    tst_info, signed_attrs, signature = token_parts(response)
    for part in (tst_info, signed_attrs, signature):
        start = response.index(part)
        for index in range(start, start + len(part)):
            with pytest.raises(TimestampError):
                verify_timestamp_response(flip(response, index), DIGEST, [pki.ca.certificate])


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_any_byte_flip_fails_cleanly_or_changes_nothing(pki: Pki) -> None:
    # Bytes outside the signed content (the unused CA copy, lengths, tags) may be altered in a way the verifier
    # tolerates, but then the asserted facts must be the original ones, and any failure must be TimestampError.
    response = stamp(pki)
    original = verify_timestamp_response(response, DIGEST, [pki.ca.certificate])
    for index in range(len(response)):
        for mask in (0x01, 0x80):
            try:
                info = verify_timestamp_response(flip(response, index, mask), DIGEST, [pki.ca.certificate])
            except TimestampError:
                continue
            assert info == original, (index, mask)


def assert_der_lengths(data: bytes) -> None:
    """Every element, recursively, has a definite length in its minimal encoding, as DER demands."""
    rest = data
    while rest:
        _, method, _, header, body, trailer = parser.parse(rest)
        size = len(body)
        length = bytes((size,)) if size < 0x80 else bytes((0x80 | (size.bit_length() + 7) // 8,)) + size.to_bytes(
            (size.bit_length() + 7) // 8, "big")
        assert trailer == b"" and header[1:] == length, header.hex()
        if method == 1:
            assert_der_lengths(body)
        rest = rest[len(header) + size:]


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65535, 65536])
def test_envelope_lengths_at_encoding_boundaries(size: int) -> None:
    element = timestamp_module._tlv(0x04, b"x" * size)
    assert_der_lengths(element)
    assert core.OctetString.load(element).native == b"x" * size


def test_responses_are_der(pki: Pki) -> None:
    # Nonces of 1..256 bits and both certReq values vary the length of every enclosing element.
    for bits, cert_req in itertools.product(range(1, 257, 5), (True, False)):
        response = stamp(pki, nonce=(1 << (bits - 1)) | 1, cert_req=cert_req)
        assert_der_lengths(response)
        tst_info, _, _ = token_parts(response)
        assert_der_lengths(tst_info)
    # One full re-encoding by asn1crypto as an independent judge (slow: it re-encodes every certificate).
    assert tsp.TimeStampResp.load(response).dump(force=True) == response


def _request(**fields: object) -> bytes:
    request = {"version": "v1", "cert_req": True,
               "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": DIGEST}}
    request.update(fields)
    return tsp.TimeStampReq(request).dump()


@pytest.mark.parametrize(("request_der", "failure"), [
    (b"", "bad_data_format"),
    (b"\x00", "bad_data_format"),
    (b"not a time-stamp request at all", "bad_data_format"),
    (b"\x30\x80\x00\x00", "bad_data_format"),
    (build_timestamp_request(DIGEST)[:-3], "bad_data_format"),
    (build_timestamp_request(DIGEST) + b"\x00", "bad_data_format"),
    (b"\x30\x84\xff\xff\xff\xff", "bad_data_format"),
    (b"\x30" * 5000, "bad_data_format"),
    (_request(version=2), "bad_request"),
    (_request(nonce=1 << 300), "bad_request"),
    (_request(message_imprint={"hash_algorithm": {"algorithm": "sha1"}, "hashed_message": DIGEST[:20]}), "bad_alg"),
    (_request(message_imprint={"hash_algorithm": {"algorithm": "md5"}, "hashed_message": DIGEST[:16]}), "bad_alg"),
    (_request(message_imprint={"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": DIGEST[:31]}),
     "bad_data_format"),
    (_request(req_policy="1.2.3.4"), "unaccepted_policy"),
    (_request(extensions=[{"extn_id": "1.2.3.4", "extn_value": b"x"}]), "unaccepted_extensions"),
])
def test_bad_requests_get_a_rejection_not_an_exception(pki: Pki, request_der: bytes, failure: str) -> None:
    response = pki.authority.respond(request_der, now())
    assert status_of(response) == ("rejection", {failure})
    with pytest.raises(TimestampError, match=f"rejection \\({failure}\\)"):
        verify_timestamp_response(response, DIGEST, [pki.ca.certificate])


def test_matching_policy_and_null_parameters_are_accepted(pki: Pki) -> None:
    request = _request(req_policy=POLICY, message_imprint={
        "hash_algorithm": {"algorithm": "sha256", "parameters": core.Null()}, "hashed_message": DIGEST})
    response = pki.authority.respond(request, now())
    assert verify_timestamp_response(response, DIGEST, [pki.ca.certificate]).policy == POLICY


def test_random_and_mutated_requests_never_raise(pki: Pki) -> None:
    rng = random.Random(3161)
    valid = build_timestamp_request(DIGEST, nonce=99)
    for _ in range(300):
        garbage = rng.randbytes(rng.randrange(0, 200))
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        for request in (garbage, bytes(mutated)):
            status, _ = status_of(pki.authority.respond(request, now()))
            assert status in ("granted", "rejection")


def test_garbage_given_to_the_verifier_raises_timestamp_error(pki: Pki) -> None:
    rng = random.Random(5816)
    response = stamp(pki)
    for candidate in (b"", b"\x30\x00", b"\x06\x03\x55\x04\x03", response[:200], response + b"\x00",
                      *(rng.randbytes(64) for _ in range(50))):
        with pytest.raises(TimestampError):
            verify_timestamp_response(candidate, DIGEST, [pki.ca.certificate])


# -- the HTTP service and client, over real sockets on loopback -------------------------------------------------

@pytest.fixture
async def tsa_url(pki: Pki) -> AsyncIterator[str]:
    runner = web.AppRunner(make_tsa_app(pki.authority))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_http_client_and_server(pki: Pki, tsa_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/tsa"):
            token = await request_timestamp(session, tsa_url + path, DIGEST, timeout=5)
            info = verify_timestamp_response(token, DIGEST, [pki.ca.certificate])
            assert abs(info.gen_time - now()) < dt.timedelta(seconds=30)

        async with session.get(tsa_url + "/livez") as response:
            assert (response.status, await response.text()) == (200, "ok")

        query = build_timestamp_request(DIGEST)
        async with session.post(tsa_url, data=query, headers={"Content-Type": "application/octet-stream"}) as response:
            assert response.status == 415

        too_big = b"\x00" * (MAX_QUERY_BYTES + 1)
        headers = {"Content-Type": "application/timestamp-query"}
        async with session.post(tsa_url, data=too_big, headers=headers) as response:
            assert response.status == 413

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(MAX_QUERY_BYTES // 1024 + 1):
                yield b"\x00" * 1024

        async with session.post(tsa_url, data=chunked(), headers=headers) as response:
            assert response.status == 413

        async with session.post(tsa_url, data=b"garbage", headers=headers) as response:
            assert response.status == 200
            assert response.content_type == "application/timestamp-reply"
            assert status_of(await response.read()) == ("rejection", {"bad_data_format"})


async def test_http_client_failures_raise_timestamp_error(tsa_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimestampError, match="HTTP 404"):
            await request_timestamp(session, tsa_url + "/nowhere", DIGEST, timeout=5)
        with pytest.raises(TimestampError, match="unreachable"):
            await request_timestamp(session, "http://127.0.0.1:9/", DIGEST, timeout=5)


async def test_http_client_rejects_a_reply_for_another_request(pki: Pki) -> None:
    # A TSA (or anything in between) that replays an old token must not pass the nonce check.
    replayed = stamp(pki, nonce=1)

    async def replay(_: web.Request) -> web.Response:
        return web.Response(body=replayed, content_type="application/timestamp-reply")

    app = web.Application()
    app.router.add_post("/", replay)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(TimestampError, match="nonce"):
                await request_timestamp(session, f"http://{host}:{port}/", DIGEST, timeout=5)
    finally:
        await runner.cleanup()


# -- OpenSSL's opinion ----------------------------------------------------------------------------------------------

@pytest.fixture
def openssl() -> Iterator[str]:
    path = shutil.which("openssl")
    if path is None:
        if IN_CI:
            pytest.fail("openssl is required in CI to cross-check RFC 3161 tokens")
        pytest.skip("openssl not installed: cannot cross-check RFC 3161 tokens")
    yield path


def _openssl_verify(openssl: str, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([openssl, "ts", "-verify", *args, "-CAfile", str(directory / "ca.pem"),
                           "-untrusted", str(directory / "tsa.pem")],
                          capture_output=True, text=True, timeout=30, check=False)


async def test_openssl_verifies_our_tokens(pki: Pki, tsa_url: str, openssl: str, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        token = await request_timestamp(session, tsa_url, DIGEST, timeout=5)
    (tmp_path / "data.bin").write_bytes(DATA)
    (tmp_path / "token.der").write_bytes(token)
    (tmp_path / "reply.der").write_bytes(stamp(pki))
    (tmp_path / "bare.der").write_bytes(stamp(pki, cert_req=False))
    (tmp_path / "ca.pem").write_bytes(pki.ca.certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tsa.pem").write_bytes(pki.certificate.public_bytes(serialization.Encoding.PEM))
    data, token_file = str(tmp_path / "data.bin"), str(tmp_path / "token.der")

    for args in (["-data", data, "-in", token_file, "-token_in"],
                 ["-digest", DIGEST.hex(), "-in", token_file, "-token_in"],
                 ["-data", data, "-in", str(tmp_path / "reply.der")],
                 ["-data", data, "-in", str(tmp_path / "bare.der")]):
        result = _openssl_verify(openssl, tmp_path, *args)
        assert "Verification: OK" in result.stdout, (args, result.stdout, result.stderr)

    (tmp_path / "other.bin").write_bytes(DATA + b"!")
    result = _openssl_verify(openssl, tmp_path, "-data", str(tmp_path / "other.bin"), "-in", token_file, "-token_in")
    assert "Verification: OK" not in result.stdout
    assert "message imprint mismatch" in result.stderr
