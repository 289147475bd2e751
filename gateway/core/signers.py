"""Deciding whether a message signer is trusted for a member, with results memoised per configuration."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core import ocsp
from gateway.core.certificates import CertificateError, check_sign_certificate
from gateway.core.envelope import SignedParts, VerifiedSignatures, load_signer, verify_signature
from gateway.core.faults import Code, Fault, Origin
from gateway.core.globalconf import GlobalConf


class SignerTrust:
    """Chain checks cost ~100 µs; the same few certificates sign every message, so a verified
    (certificate, member, configuration serial) is remembered until the certificate's own expiry."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._memo: dict[tuple[bytes, str, int], tuple[ec.EllipticCurvePublicKey, dt.datetime]] = {}
        self._issuers: dict[bytes, tuple[x509.Certificate, x509.Certificate]] = {}  # signer DER -> (cert, CA)
        self._statuses: dict[tuple[bytes, bytes], dt.datetime] = {}  # (OCSP DER, signer DER) -> fresh until
        self._max = max_entries
        self._verified = VerifiedSignatures(max_entries)

    def verify(self, parts: SignedParts, public_key: ec.EllipticCurvePublicKey, origin: Origin) -> None:
        """Verify the message's signature, remembering verified batch roots (core/batchsig.py)."""
        verify_signature(parts, public_key, origin, self._verified)

    def public_key_for(self, parts: SignedParts, member_path: str, approved_cas: list[x509.Certificate],
                       conf_serial: int, now: dt.datetime, origin: Origin) -> ec.EllipticCurvePublicKey:
        key = (parts.signer_cert, member_path, conf_serial)
        hit = self._memo.get(key)
        if hit is not None and now < hit[1]:
            return hit[0]
        cert = load_signer(parts, origin)
        try:
            issuer = check_sign_certificate(cert, approved_cas, member_path, now)
        except CertificateError as exc:
            raise Fault(origin, Code.CERT_VALIDATION, f"sign certificate rejected: {exc}") from None
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise Fault(origin, Code.CERT_VALIDATION, "sign certificate must hold an ECDSA key")
        if len(self._memo) >= self._max:
            self._memo.clear()
            self._issuers.clear()
        self._memo[key] = (public_key, cert.not_valid_after_utc)
        self._issuers[parts.signer_cert] = (cert, issuer)
        return public_key

    def check_status(self, parts: SignedParts, conf: GlobalConf, now: dt.datetime, origin: Origin) -> None:
        """Where the signer's CA runs OCSP, require the message's stapled response to prove the sign certificate
        good and fresh (core/ocsp.py). Call after ``public_key_for``. A checked response is remembered until
        it stops being fresh, so the same staple on many messages costs one check."""
        cert, issuer = self._issuers[parts.signer_cert]
        if not conf.ocsp_responders_for(issuer):
            return
        if not parts.ocsp:
            raise Fault(origin, Code.CERT_VALIDATION, "the message carries no OCSP response for its sign certificate")
        key = (parts.ocsp, parts.signer_cert)
        fresh_until = self._statuses.get(key)
        if fresh_until is not None and now <= fresh_until:
            return
        try:
            checked = ocsp.check_response(parts.ocsp, cert, issuer, now, conf.ocsp_freshness)
        except ocsp.OcspError as exc:
            self._statuses.pop(key, None)
            raise Fault(origin, exc.code, f"sign certificate status: {exc}") from None
        if len(self._statuses) >= self._max:
            self._statuses.clear()
        self._statuses[key] = checked.fresh_until
