"""RFC 3161 time-stamping without I/O: build requests, answer them as a TSA, and verify the tokens that come back."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from asn1crypto import algos, cms, core, parser, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "HASH_ALGORITHMS",
    "TimestampAuthority",
    "TimestampError",
    "TimestampInfo",
    "build_timestamp_request",
    "extract_timestamp_token",
    "verify_timestamp_response",
]

# Digest name (asn1crypto spelling) -> (cryptography hash factory, digest length). SHA-1 is left out on purpose:
# a collision-prone imprint would let one token vouch for two documents.
HASH_ALGORITHMS: dict[str, tuple[Callable[[], hashes.HashAlgorithm], int]] = {
    "sha256": (hashes.SHA256, 32),
    "sha384": (hashes.SHA384, 48),
    "sha512": (hashes.SHA512, 64),
}

# Only used to identify a certificate in the legacy ESS signingCertificate attribute of foreign TSAs.
_CERT_ID_HASHES = {**HASH_ALGORITHMS, "sha1": (hashes.SHA1, 20)}

# Nonces are echoed verbatim; a cap stops a client from making the TSA sign arbitrarily large integers.
_MAX_NONCE_BITS = 256
_MAX_CHAIN_DEPTH = 5


class TimestampError(ValueError):
    """A time-stamp request, response or token that must not be relied on; the message says why."""


@dataclass(frozen=True)
class TimestampInfo:
    """What a verified token asserts: ``digest`` (hashed with ``hash_alg``) existed at ``gen_time``."""

    gen_time: dt.datetime
    serial: int
    digest: bytes
    hash_alg: str
    policy: str


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER element with a single-byte tag and a definite, minimal length."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


_SIGNED_DATA_OID = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
_TST_INFO_OID = core.ObjectIdentifier("1.2.840.113549.1.9.16.1.4").dump()
_GRANTED = tsp.PKIStatusInfo({"status": "granted"}).dump()


class _TimeStampResp(core.Sequence):
    # asn1crypto 1.5.1 declares timeStampToken mandatory, yet RFC 3161 omits it from every rejection, so both
    # encoding a rejection and parsing one fail with the stock class.
    _fields: ClassVar[list[tuple[str, type, dict[str, bool]] | tuple[str, type]]] = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def _check_digest(digest: bytes, hash_alg: str) -> None:
    if hash_alg not in HASH_ALGORITHMS:
        raise TimestampError(f"unsupported hash algorithm {hash_alg!r}; use one of {sorted(HASH_ALGORITHMS)}")
    if not isinstance(digest, bytes) or len(digest) != HASH_ALGORITHMS[hash_alg][1]:
        raise TimestampError(f"a {hash_alg} digest is {HASH_ALGORITHMS[hash_alg][1]} bytes, got "
                             f"{len(digest) if isinstance(digest, bytes) else type(digest).__name__}")


def build_timestamp_request(digest: bytes, hash_alg: str = "sha256", nonce: int | None = None,
                            cert_req: bool = True, policy: str | None = None) -> bytes:
    """A DER TimeStampReq for ``digest``. Pass a fresh random ``nonce`` to bind the reply to this request."""
    _check_digest(digest, hash_alg)
    request: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": hash_alg}, "hashed_message": digest},
        "cert_req": cert_req,
    }
    if policy is not None:
        request["req_policy"] = policy
    if nonce is not None:
        request["nonce"] = nonce
    return tsp.TimeStampReq(request).dump()


def _cert_hash(cert_der: bytes, hash_alg: str) -> bytes:
    return hashlib.new(hash_alg, cert_der).digest()


def _check_tsa_usage(cert: x509.Certificate) -> None:
    """RFC 3161 §2.3: the only extended key usage is timeStamping and it is critical. Key usage, when present,
    must be limited to digitalSignature/nonRepudiation, which is the rule OpenSSL applies as well."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound as exc:
        raise TimestampError("TSA certificate has no extended key usage; RFC 3161 requires timeStamping") from exc
    except ValueError as exc:
        raise TimestampError(f"TSA certificate has malformed extensions: {exc}") from exc
    if not eku.critical:
        raise TimestampError("TSA certificate's extended key usage is not critical, as RFC 3161 requires")
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise TimestampError("TSA certificate's extended key usage must be timeStamping only, found "
                             + ", ".join(oid.dotted_string for oid in eku.value))
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    other = (usage.key_encipherment or usage.data_encipherment or usage.key_agreement or usage.key_cert_sign
             or usage.crl_sign)
    if other or not (usage.digital_signature or usage.content_commitment):
        raise TimestampError("TSA certificate's key usage must be digitalSignature and/or nonRepudiation only")


class TimestampAuthority:
    """Answers DER TimeStampReqs with DER TimeStampResps, signed with an EC key (ECDSA with SHA-256)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate,
                 chain: Sequence[x509.Certificate], policy: str, serial_numbers: Callable[[], int], *,
                 accuracy_seconds: int | None = 1) -> None:
        """``chain`` is sent alongside the TSA certificate when a client asks for certificates; ``serial_numbers``
        must return a new unique positive integer of at most 160 bits on every call (RFC 3161 §2.4.2)."""
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("the TSA key must be an EC private key")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if (key.public_key().public_bytes(serialization.Encoding.DER, spki)
                != certificate.public_key().public_bytes(serialization.Encoding.DER, spki)):
            raise ValueError("the TSA key does not belong to the TSA certificate")
        # Refuse to issue tokens that every conforming verifier, including our own, would reject.
        _check_tsa_usage(certificate)
        self._key = key
        self._serial_numbers = serial_numbers
        self.certificate = certificate
        self.policy = core.ObjectIdentifier(policy).dotted

        cert_der = certificate.public_bytes(serialization.Encoding.DER)
        asn1_cert = asn1_x509.Certificate.load(cert_der)
        # Everything that does not depend on the request is encoded here, once, and kept as DER bytes.
        self._policy_der = core.ObjectIdentifier(self.policy).dump()
        self._tsa_name_der = asn1_x509.GeneralName(name="directory_name", value=asn1_cert.subject).dump()
        self._accuracy_der = tsp.Accuracy({"seconds": accuracy_seconds}).dump() if accuracy_seconds else None
        self._signature_hash = ec.ECDSA(hashes.SHA256())
        # The two signed attributes that never change; signing_certificate_v2 in particular hashes the
        # certificate and encodes its issuer, which is wasted work per request.
        self._content_type_attr_der = cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}).dump()
        self._signing_cert_attr_der = cms.CMSAttribute({"type": "signing_certificate_v2", "values": [{
            "certs": [{
                "cert_hash": _cert_hash(cert_der, "sha256"),
                "issuer_serial": {
                    "issuer": [asn1_x509.GeneralName(name="directory_name", value=asn1_cert.issuer)],
                    "serial_number": asn1_cert.serial_number,
                },
            }],
        }]}).dump()
        # SignerInfo fields before signedAttrs (version 1, sid) and the digestAlgorithm, then after it the
        # signatureAlgorithm; SignedData's version 3 and digestAlgorithms; the certificate SET, DER-sorted by
        # asn1crypto, whose SET tag becomes [0] IMPLICIT.
        sid = cms.SignerIdentifier({"issuer_and_serial_number": {
            "issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}})
        self._signer_head = (core.Integer(1).dump() + sid.dump()
                             + algos.DigestAlgorithm({"algorithm": "sha256"}).dump())
        self._signature_algorithm_der = algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}).dump()
        self._signed_data_head = core.Integer(3).dump() + cms.DigestAlgorithms([{"algorithm": "sha256"}]).dump()
        certificates = cms.CertificateSet([
            cms.CertificateChoices(name="certificate", value=asn1_x509.Certificate.load(
                c.public_bytes(serialization.Encoding.DER))) for c in (certificate, *chain)])
        self._certificates_der = _tlv(0xA0, certificates.contents)

    def respond(self, request_der: bytes, now: dt.datetime) -> bytes:
        """A DER TimeStampResp: a granted token, or a rejection for any request that is malformed or unsupported.
        Untrusted input never raises; only a naive ``now`` or a broken serial-number source do."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        request = _parse_request(request_der, self.policy)
        if isinstance(request, _Rejection):
            return self._reject(request)
        imprint, nonce, cert_req = request
        serial = self._serial_numbers()
        if not isinstance(serial, int) or serial <= 0 or serial.bit_length() > 160:
            raise ValueError(f"the serial-number source returned {serial!r}, not a positive integer of ≤160 bits")

        tst_info: dict[str, Any] = {
            "version": "v1",
            "policy": core.ObjectIdentifier.load(self._policy_der),
            "message_imprint": imprint,
            "serial_number": serial,
            "gen_time": now,
            "tsa": asn1_x509.GeneralName.load(self._tsa_name_der),
        }
        if self._accuracy_der is not None:
            tst_info["accuracy"] = tsp.Accuracy.load(self._accuracy_der)
        if nonce is not None:
            tst_info["nonce"] = nonce
        tst_der = tsp.TSTInfo(tst_info).dump()

        # RFC 5652 §11.3: UTCTime for 1950–2049, GeneralizedTime outside it.
        signing_time = cms.Time(name="utc_time" if 1950 <= now.year < 2050 else "generalized_time", value=now)
        signed_attrs = cms.CMSAttributes([
            cms.CMSAttribute.load(self._content_type_attr_der),
            {"type": "signing_time", "values": [signing_time]},
            {"type": "message_digest", "values": [hashlib.sha256(tst_der).digest()]},
            cms.CMSAttribute.load(self._signing_cert_attr_der),
        ]).dump()
        # The signature covers the attributes as a DER SET OF (tag 0x31), not as the [0]-tagged field they become.
        signature = self._key.sign(signed_attrs, self._signature_hash)

        # The envelope is assembled from DER pieces rather than one nested asn1crypto tree: asn1crypto 1.5.1
        # re-encodes built trees once per level (exponential in depth) and mistakes any length ending in byte
        # 0x80 for an indefinite one, forcing a full re-encode — together, 300–1400 ms spikes on ~2% of tokens.
        signer_info = _tlv(0x30, self._signer_head + b"\xa0" + signed_attrs[1:] + self._signature_algorithm_der
                           + _tlv(0x04, signature))
        encap = _tlv(0x30, _TST_INFO_OID + _tlv(0xA0, _tlv(0x04, tst_der)))
        signed_data = _tlv(0x30, self._signed_data_head + encap + (self._certificates_der if cert_req else b"")
                           + _tlv(0x31, signer_info))
        token = _tlv(0x30, _SIGNED_DATA_OID + _tlv(0xA0, signed_data))
        return _tlv(0x30, _GRANTED + token)

    @staticmethod
    def _reject(rejection: _Rejection) -> bytes:
        return _TimeStampResp({"status": {
            "status": "rejection", "status_string": [rejection.text], "fail_info": {rejection.failure}}}).dump()


@dataclass(frozen=True)
class _Rejection:
    failure: str
    text: str


def _parse_request(request_der: bytes, policy: str) -> tuple[tsp.MessageImprint, int | None, bool] | _Rejection:
    """The message imprint (re-encoded as DER), nonce and certReq of an acceptable request, or why not."""
    try:
        request = tsp.TimeStampReq.load(request_der, strict=True)
        # asn1crypto parses lazily; touching .native makes every malformed field fail here, inside the guard.
        fields = request.native
        algorithm = request["message_imprint"]["hash_algorithm"]
        parameters = algorithm["parameters"]
    except Exception:
        # asn1crypto raises ValueError, TypeError, OverflowError and more on hostile input; all mean "not a request".
        return _Rejection("bad_data_format", "the request is not a DER TimeStampReq")
    if fields["version"] != "v1":
        return _Rejection("bad_request", f"unsupported TimeStampReq version {fields['version']!r}")
    hash_alg = fields["message_imprint"]["hash_algorithm"]["algorithm"]
    if hash_alg not in HASH_ALGORITHMS:
        return _Rejection("bad_alg", f"unsupported hash algorithm {hash_alg}; use one of {sorted(HASH_ALGORITHMS)}")
    if parameters.native is not None:
        return _Rejection("bad_alg", f"{hash_alg} takes no parameters")
    digest = fields["message_imprint"]["hashed_message"]
    if len(digest) != HASH_ALGORITHMS[hash_alg][1]:
        return _Rejection("bad_data_format", f"a {hash_alg} message imprint is {HASH_ALGORITHMS[hash_alg][1]} bytes, "
                                             f"got {len(digest)}")
    if fields["req_policy"] is not None and fields["req_policy"] != policy:
        return _Rejection("unaccepted_policy", f"this TSA issues tokens under policy {policy} only")
    if fields["extensions"]:
        return _Rejection("unaccepted_extensions", "this TSA supports no request extensions")
    nonce = fields["nonce"]
    if nonce is not None and nonce.bit_length() > _MAX_NONCE_BITS:
        return _Rejection("bad_request", f"the nonce is longer than {_MAX_NONCE_BITS} bits")
    # Re-encoded from the parsed values so a BER-encoded request cannot smuggle non-DER bytes into the token;
    # an explicit NULL parameter is kept because RFC 3161 wants the request's imprint echoed unchanged.
    hash_algorithm: dict[str, Any] = {"algorithm": hash_alg}
    if parameters.dump():
        hash_algorithm["parameters"] = core.Null()
    imprint = tsp.MessageImprint({"hash_algorithm": hash_algorithm, "hashed_message": digest})
    return imprint, nonce, bool(fields["cert_req"])


@dataclass(frozen=True)
class _Token:
    tst_der: bytes
    tst: dict[str, Any]
    digest_alg: str
    signature_kind: str
    signature_hash: str | None
    signature: bytes
    signed_attrs_der: bytes
    content_types: list[str]
    message_digests: list[bytes]
    # (hash algorithm, certificate hash, serial number or None) from signing_certificate(_v2); None if absent.
    signing_cert_ids: list[tuple[str, bytes, int | None]] | None
    sid_serial: int | None
    sid_issuer_der: bytes | None
    sid_key_id: bytes | None
    certificates: list[x509.Certificate]


def _split_response(data: bytes) -> bytes:
    """The token inside a granted TimeStampResp; a bare token (ContentInfo) is returned as it is."""
    try:
        _, _, _, _, contents, _ = parser.parse(data, strict=True)
    except Exception as exc:
        raise TimestampError("not a DER time-stamp response or token") from exc
    # A ContentInfo starts with its contentType OID; a TimeStampResp starts with the PKIStatusInfo SEQUENCE.
    if contents[:1] == b"\x06":
        return data
    # The token is sliced out of the received bytes, never re-dumped: asn1crypto may re-encode on dump().
    try:
        _, _, _, status_header, status_body, status_trailer = parser.parse(contents)
        split = len(status_header) + len(status_body) + len(status_trailer)
        status = tsp.PKIStatusInfo.load(contents[:split], strict=True).native
        token_der = contents[split:] or None
    except Exception as exc:
        raise TimestampError("malformed TimeStampResp") from exc
    if status["status"] not in ("granted", "granted_with_mods"):
        detail = "; ".join(status["status_string"] or [])
        failures = ", ".join(sorted(status["fail_info"] or []))
        raise TimestampError(f"the TSA answered {status['status']}"
                             + (f" ({failures})" if failures else "") + (f": {detail}" if detail else ""))
    if token_der is None:
        raise TimestampError(f"the TSA answered {status['status']} without a time-stamp token")
    return token_der


def _parse_token(token_der: bytes) -> _Token:
    try:
        info = cms.ContentInfo.load(token_der, strict=True)
        if info["content_type"].native != "signed_data":
            raise TimestampError(f"the token is {info['content_type'].native}, not signed data")
        signed_data = info["content"]
        encap = signed_data["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise TimestampError(f"the token signs {encap['content_type'].native}, not a TSTInfo")
        if isinstance(encap["content"], core.Void):
            raise TimestampError("the token carries no TSTInfo")
        tst_der = bytes(encap["content"])
        tst = tsp.TSTInfo.load(tst_der, strict=True).native
        signers = signed_data["signer_infos"]
        if len(signers) != 1:
            raise TimestampError(f"a time-stamp token has exactly one signer, this one has {len(signers)}")
        signer = signers[0]
        raw_attrs = signer["signed_attrs"]
        if isinstance(raw_attrs, core.Void) or not len(raw_attrs):
            raise TimestampError("the token has no signed attributes")
        # Captured before any attribute is read: asn1crypto marks a structure mutated when a DEFAULT field (the
        # ESSCertIDv2 hash algorithm) is read, and .contents would then re-encode instead of returning what was
        # received. Signed over as a DER SET OF (RFC 5652 §5.4), not under the [0] IMPLICIT tag it travels with.
        signed_attrs_der = _tlv(0x31, raw_attrs.contents)
        attributes: dict[str, Any] = {}
        for attribute in raw_attrs:
            name = attribute["type"].native
            if name in attributes:
                raise TimestampError(f"signed attribute {name} appears more than once")
            attributes[name] = attribute["values"]
        signing_cert_ids = _signing_cert_ids(attributes)
        signature_alg = signer["signature_algorithm"]
        try:
            signature_kind = signature_alg.signature_algo
        except ValueError:
            signature_kind = signature_alg["algorithm"].dotted
        try:
            signature_hash = signature_alg.hash_algo
        except ValueError:
            # Bare "ecdsa"/"rsaEncryption" OIDs leave the hash to the signer's digestAlgorithm.
            signature_hash = None
        sid = signer["sid"]
        by_key_id = sid.name == "subject_key_identifier"
        # Built from the received contents, not dump(): asn1crypto 1.5.1 treats any length ending in byte 0x80
        # as indefinite and re-encodes the whole subtree on dump(), which is slow and alters the bytes.
        certificates = [x509.load_der_x509_certificate(_tlv(0x30, choice.chosen.contents))
                        for choice in (signed_data["certificates"] or []) if choice.name == "certificate"]
        return _Token(
            tst_der=tst_der,
            tst=dict(tst),
            digest_alg=signer["digest_algorithm"]["algorithm"].native,
            signature_kind=signature_kind,
            signature_hash=signature_hash,
            signature=signer["signature"].native,
            signed_attrs_der=signed_attrs_der,
            content_types=list(attributes["content_type"].native) if "content_type" in attributes else [],
            message_digests=list(attributes["message_digest"].native) if "message_digest" in attributes else [],
            signing_cert_ids=signing_cert_ids,
            sid_serial=None if by_key_id else sid.chosen["serial_number"].native,
            sid_issuer_der=None if by_key_id else _tlv(0x30, sid.chosen["issuer"].chosen.contents),
            sid_key_id=sid.chosen.native if by_key_id else None,
            certificates=certificates,
        )
    except TimestampError:
        raise
    except Exception as exc:
        raise TimestampError(f"malformed time-stamp token: {exc}") from exc


def _signing_cert_ids(attributes: dict[str, Any]) -> list[tuple[str, bytes, int | None]] | None:
    # Walked field by field: .native on these re-builds the ESSCertIDv2 default algorithm for every access.
    if "signing_certificate_v2" in attributes:
        entries, v2 = attributes["signing_certificate_v2"], True
    elif "signing_certificate" in attributes:
        entries, v2 = attributes["signing_certificate"], False
    else:
        return None
    if len(entries) != 1:
        raise TimestampError("the signing-certificate attribute must have exactly one value")
    ids: list[tuple[str, bytes, int | None]] = []
    for cert_id in entries[0]["certs"]:
        hash_alg = cert_id["hash_algorithm"]["algorithm"].native if v2 else "sha1"
        issuer_serial = cert_id["issuer_serial"]
        serial = None if isinstance(issuer_serial, core.Void) else issuer_serial["serial_number"].native
        ids.append((hash_alg, cert_id["cert_hash"].native, serial))
    return ids


def _check_imprint(tst: dict[str, Any], digest: bytes, hash_alg: str, nonce: int | None) -> None:
    imprint = tst["message_imprint"]
    if imprint["hash_algorithm"]["algorithm"] != hash_alg:
        raise TimestampError(f"the token stamps a {imprint['hash_algorithm']['algorithm']} digest, "
                             f"expected {hash_alg}")
    if not hmac.compare_digest(imprint["hashed_message"], digest):
        raise TimestampError("the token stamps a different digest")
    if nonce is not None and tst["nonce"] != nonce:
        raise TimestampError("the token's nonce does not match the request's")


def extract_timestamp_token(response_der: bytes, digest: bytes, *, hash_alg: str = "sha256",
                            nonce: int | None = None) -> bytes:
    """The DER token from a TSA's reply after the protocol checks (status, imprint, nonce). Its signature and
    certificate are NOT checked here: that needs trust anchors, see ``verify_timestamp_response``."""
    _check_digest(digest, hash_alg)
    token_der = _split_response(response_der)
    _check_imprint(_parse_token(token_der).tst, digest, hash_alg, nonce)
    return token_der


def _signer_certificate(token: _Token, candidates: Iterable[x509.Certificate]) -> x509.Certificate:
    for cert in candidates:
        if token.sid_key_id is not None:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except (x509.ExtensionNotFound, ValueError):
                continue
            if ski == token.sid_key_id:
                return cert
        # Byte comparison of the issuer names, as OpenSSL does: both come from the same DER certificate.
        elif cert.serial_number == token.sid_serial and cert.issuer.public_bytes() == token.sid_issuer_der:
            return cert
    raise TimestampError("the TSA certificate is neither in the token nor among the supplied certificates")


def _check_signed_attributes(token: _Token, cert: x509.Certificate) -> None:
    if token.content_types != ["tst_info"]:
        raise TimestampError("the signed content-type attribute is missing or is not TSTInfo")
    if token.digest_alg not in HASH_ALGORITHMS:
        raise TimestampError(f"unsupported signer digest algorithm {token.digest_alg}")
    if len(token.message_digests) != 1:
        raise TimestampError("the token has no single message-digest attribute")
    if not hmac.compare_digest(token.message_digests[0], hashlib.new(token.digest_alg, token.tst_der).digest()):
        raise TimestampError("the message-digest attribute does not match the TSTInfo: the token was altered")
    # RFC 3161 §2.4.1 / RFC 5816: the ESS attribute binds the signature to this very certificate.
    if token.signing_cert_ids is None:
        raise TimestampError("the token has no signing-certificate attribute")
    if not token.signing_cert_ids:
        raise TimestampError("the signing-certificate attribute names no certificate")
    # The first ESSCertID names the signer; later ones, if any, name the chain and are not needed here.
    cert_hash_alg, cert_hash, serial = token.signing_cert_ids[0]
    if cert_hash_alg not in _CERT_ID_HASHES:
        raise TimestampError(f"unsupported signing-certificate hash {cert_hash_alg}")
    if not hmac.compare_digest(cert_hash, _cert_hash(cert.public_bytes(serialization.Encoding.DER), cert_hash_alg)):
        raise TimestampError("the signing-certificate attribute names a different certificate")
    if serial is not None and serial != cert.serial_number:
        raise TimestampError("the signing-certificate attribute names a different serial number")


def _check_signature(token: _Token, cert: x509.Certificate) -> None:
    hash_name = token.signature_hash or token.digest_alg
    if hash_name not in HASH_ALGORITHMS:
        raise TimestampError(f"unsupported signature hash {hash_name}")
    chosen_hash = HASH_ALGORITHMS[hash_name][0]()
    public_key = cert.public_key()
    kind = token.signature_kind
    try:
        if kind == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(token.signature, token.signed_attrs_der, ec.ECDSA(chosen_hash))
        elif kind == "rsassa_pkcs1v15" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(token.signature, token.signed_attrs_der, padding.PKCS1v15(), chosen_hash)
        else:
            raise TimestampError(f"unsupported signature algorithm {kind} for a "
                                 f"{type(public_key).__name__.lstrip('_')} TSA key")
    except InvalidSignature as exc:
        raise TimestampError("the token's signature does not verify with the TSA certificate") from exc


def _within_validity(cert: x509.Certificate, at: dt.datetime) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise TimestampError(f"certificate {cert.subject.rfc4514_string()} was not valid at {at.isoformat()}")


def _may_issue(issuer: x509.Certificate, cert: x509.Certificate) -> bool:
    if issuer.subject != cert.issuer:
        return False
    try:
        if not issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
        cert.verify_directly_issued_by(issuer)
    except (x509.ExtensionNotFound, InvalidSignature, ValueError, TypeError):
        return False
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign


def _check_chain(cert: x509.Certificate, trusted: Sequence[x509.Certificate],
                 untrusted: Sequence[x509.Certificate], at: dt.datetime) -> None:
    """``cert`` is trusted itself (pinned) or leads, through CA certificates from ``untrusted``, to a trusted CA.
    Every link must be valid at ``at``: a token outlives its TSA certificate, so "now" is the wrong instant."""
    current = cert
    for _ in range(_MAX_CHAIN_DEPTH):
        _within_validity(current, at)
        if current in trusted:
            return
        for anchor in trusted:
            if _may_issue(anchor, current):
                _within_validity(anchor, at)
                return
        parent = next((c for c in untrusted if c != current and _may_issue(c, current)), None)
        if parent is None:
            break
        current = parent
    raise TimestampError(f"TSA certificate {cert.subject.rfc4514_string()} does not chain to a trusted CA")


def verify_timestamp_response(data: bytes, digest: bytes, trusted: Sequence[x509.Certificate], *,
                              hash_alg: str = "sha256", nonce: int | None = None,
                              tsa_certs: Sequence[x509.Certificate] = (),
                              policy: str | None = None) -> TimestampInfo:
    """Check a DER TimeStampResp or bare token against ``digest`` and return what it asserts, or raise
    TimestampError. ``trusted`` holds CA certificates (or pinned TSA certificates); ``tsa_certs`` supplies
    certificates a token sent without (certReq false). Revocation is not checked."""
    _check_digest(digest, hash_alg)
    try:
        return _verify(data, digest, trusted, hash_alg, nonce, tsa_certs, policy)
    except TimestampError:
        raise
    except Exception as exc:
        # cryptography parses certificate fields lazily and a hostile certificate bag can make any of them raise
        # (KeyError, UnsupportedAlgorithm, ...): fail closed, with the one exception type callers handle.
        raise TimestampError(f"cannot verify the time-stamp token: {exc!r}") from exc


def _verify(data: bytes, digest: bytes, trusted: Sequence[x509.Certificate], hash_alg: str, nonce: int | None,
            tsa_certs: Sequence[x509.Certificate], policy: str | None) -> TimestampInfo:
    token = _parse_token(_split_response(data))
    _check_imprint(token.tst, digest, hash_alg, nonce)
    if token.tst["version"] != "v1":
        raise TimestampError(f"unsupported TSTInfo version {token.tst['version']!r}")
    if policy is not None and token.tst["policy"] != policy:
        raise TimestampError(f"the token was issued under policy {token.tst['policy']}, expected {policy}")
    pool = [*token.certificates, *tsa_certs]
    cert = _signer_certificate(token, pool)
    _check_signed_attributes(token, cert)
    _check_signature(token, cert)
    _check_tsa_usage(cert)
    gen_time = token.tst["gen_time"]
    if not isinstance(gen_time, dt.datetime) or gen_time.tzinfo is None:
        raise TimestampError(f"the token's genTime {gen_time!r} is not a usable UTC time")
    _check_chain(cert, trusted, pool, gen_time)
    return TimestampInfo(gen_time=gen_time, serial=token.tst["serial_number"], digest=digest, hash_alg=hash_alg,
                         policy=token.tst["policy"])
