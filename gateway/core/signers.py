"""Deciding whether a message signer is trusted for a member, with results memoised per configuration."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core.certificates import CertificateError, check_sign_certificate
from gateway.core.envelope import SignedParts, VerifiedSignatures, load_signer, verify_signature
from gateway.core.faults import Code, Fault, Origin


class SignerTrust:
    """Chain checks cost ~100 µs; the same few certificates sign every message, so a verified
    (certificate, member, configuration serial) is remembered until the certificate's own expiry."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._memo: dict[tuple[bytes, str, int], tuple[ec.EllipticCurvePublicKey, dt.datetime]] = {}
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
            check_sign_certificate(cert, approved_cas, member_path, now)
        except CertificateError as exc:
            raise Fault(origin, Code.CERT_VALIDATION, f"sign certificate rejected: {exc}") from None
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise Fault(origin, Code.CERT_VALIDATION, "sign certificate must hold an ECDSA key")
        if len(self._memo) >= self._max:
            self._memo.clear()
        self._memo[key] = (public_key, cert.not_valid_after_utc)
        return public_key
