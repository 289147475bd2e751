"""``wasl pki ocsp serve`` and ``wasl pki revoke``: the development CA's certificate-status commands."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from gateway.audit.trail import AuditTrail, current_user
from gateway.configfile import ConfigError


def _audit(ca_dir: Path) -> AuditTrail:
    return AuditTrail(ca_dir / "audit.jsonl")


def _ocsp_serve(args: argparse.Namespace) -> int:
    from gateway.trust.ocsp_responder import Responder, serve

    if not (args.ca / "ca.pem").exists():
        raise ConfigError(f"{args.ca}: no ca.pem here; create the CA with wasl pki init")
    responder = Responder.for_ca_dir(args.ca, dt.timedelta(seconds=args.validity_seconds))
    serve(responder, args.host, args.port,
          banner=f"OCSP responder for {responder.ca_certificate.subject.rfc4514_string()} "
                 f"on http://{args.host}:{args.port}/")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from gateway.trust.ca_status import REASONS, StatusDatabase
    from gateway.trust.pki import load_certificate

    if args.cert is not None:
        serial = load_certificate(args.cert).serial_number
    else:
        try:
            serial = int(args.serial.replace(":", ""), 16)
        except ValueError:
            raise ConfigError(f"--serial {args.serial!r} is not a hexadecimal serial number") from None
    target = f"serial {serial:x}"
    trail = _audit(args.ca)
    try:
        revocation = StatusDatabase(args.ca).revoke(serial, REASONS[args.reason])
    except (KeyError, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        trail.record(actor=current_user(), action="pki.revoke", target=target, result="refused",
                     detail={"reason": args.reason, "error": message})
        print(f"wasl pki revoke: {message}", file=sys.stderr)
        return 1
    trail.record(actor=current_user(), action="pki.revoke", target=target, result="ok",
                 detail={"reason": args.reason, "revoked_at": revocation.revoked_at.isoformat()})
    print(f"revoked {target} at {revocation.revoked_at.isoformat()} ({args.reason}); gateways refuse it once "
          "their cached OCSP responses are refreshed")
    return 0


def _sign_csr(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from gateway.core import identifiers as ids
    from gateway.trust.csr import CsrError, issue_auth_certificate, issue_sign_certificate
    from gateway.trust.pki import CertificateAuthority, fingerprint

    ca = CertificateAuthority.load(args.ca)
    trail = _audit(args.ca)
    target = args.member if args.kind == "sign" else args.server
    try:
        csr = x509.load_pem_x509_csr(args.csr.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{args.csr}: not a PEM certificate signing request ({exc})") from None
    try:
        if args.kind == "sign":
            if not args.member:
                raise ConfigError("wasl pki sign-csr sign: --member is required")
            cert = issue_sign_certificate(ca, csr, ids.parse_member(args.member), args.name or args.member,
                                          days=args.days)
        else:
            if not args.server:
                raise ConfigError("wasl pki sign-csr auth: --server is required")
            cert = issue_auth_certificate(ca, csr, ids.parse_server(args.server), days=args.days)
    except (CsrError, ids.IdentifierError) as exc:
        trail.record(actor=current_user(), action=f"pki.sign_csr.{args.kind}", target=str(target), result="refused",
                     detail={"error": str(exc)})
        print(f"wasl pki sign-csr: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(cert.public_bytes(Encoding.PEM))
    trail.record(actor=current_user(), action=f"pki.sign_csr.{args.kind}", target=str(target), result="ok",
                 detail={"serial": f"{cert.serial_number:x}", "sha256": fingerprint(cert)})
    print(f"issued {args.out} ({args.kind} certificate for {target}, serial {cert.serial_number:x})")
    return 0


def _pkcs11_keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from gateway.core.settings import Pkcs11Key
    from gateway.trust.pkcs11_signer import Pkcs11Error, generate_key

    settings = Pkcs11Key(module=args.module, token_label=args.token_label, key_label=args.key_label,
                         pin_env=args.pin_env, pin_file=args.pin_file)
    trail = AuditTrail(args.audit) if args.audit else None
    target = f"{args.token_label}/{args.key_label}"
    try:
        public_key = generate_key(settings)
    except Pkcs11Error as exc:
        if trail:
            trail.record(actor=current_user(), action="key.pkcs11.generate", target=target, result="failed",
                         detail={"error": str(exc)})
        print(f"wasl pki pkcs11-keygen: {exc}", file=sys.stderr)
        return 1
    args.out.write_bytes(public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    if trail:
        trail.record(actor=current_user(), action="key.pkcs11.generate", target=target, result="ok")
    print(f"created P-256 key {args.key_label!r} in token {args.token_label!r}; public key in {args.out}\n"
          f"certify it: wasl pki issue sign --ca CA_DIR --member INST/CLASS/CODE --public-key {args.out} --out DIR")
    return 0


def register(pki: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from gateway.trust.ca_status import REASONS

    sign_csr = pki.add_parser("sign-csr", help="issue a certificate for a CSR whose subject names the member/gateway")
    sign_csr.add_argument("--ca", type=Path, required=True, help="folder with ca.pem and ca.key")
    sign_csr.add_argument("--kind", choices=["sign", "auth"], required=True)
    sign_csr.add_argument("--csr", type=Path, required=True, help="the PEM CSR (wasl gateway init writes them)")
    sign_csr.add_argument("--member", help="sign: INST/CLASS/CODE the CSR must name")
    sign_csr.add_argument("--name", help="sign: the member's name")
    sign_csr.add_argument("--server", help="auth: INST/CLASS/CODE/serverCode the CSR must name")
    sign_csr.add_argument("--days", type=int, default=365)
    sign_csr.add_argument("--out", type=Path, required=True)
    sign_csr.set_defaults(func=_sign_csr)

    keygen = pki.add_parser("pkcs11-keygen", help="create a P-256 sign key inside a PKCS#11 token")
    keygen.add_argument("--module", type=Path, required=True, help="e.g. /usr/lib/softhsm/libsofthsm2.so")
    keygen.add_argument("--token-label", required=True)
    keygen.add_argument("--key-label", required=True)
    pin = keygen.add_mutually_exclusive_group(required=True)
    pin.add_argument("--pin-env", help="environment variable holding the user PIN")
    pin.add_argument("--pin-file", type=Path, help="file holding the user PIN")
    keygen.add_argument("--out", type=Path, required=True, help="where to write the public key (PEM)")
    keygen.add_argument("--audit", type=Path, help="the gateway's audit trail to record the key operation in")
    keygen.set_defaults(func=_pkcs11_keygen)

    ocsp = pki.add_parser("ocsp", help="the CA's OCSP responder").add_subparsers(dest="ocsp_action", required=True)
    serve = ocsp.add_parser("serve", help="answer OCSP requests (RFC 6960 over HTTP) from the CA's status database")
    serve.add_argument("--ca", type=Path, required=True, help="folder with ca.pem and ca.key")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8888)
    serve.add_argument("--validity-seconds", type=int, default=600, help="nextUpdate - thisUpdate of responses")
    serve.set_defaults(func=_ocsp_serve)

    revoke = pki.add_parser("revoke", help="revoke a certificate this CA issued")
    revoke.add_argument("--ca", type=Path, required=True, help="folder with ca.pem and ca.key")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", help="the certificate's serial number, hexadecimal")
    which.add_argument("--cert", type=Path, help="the certificate (PEM)")
    revoke.add_argument("--reason", choices=sorted(REASONS), default="unspecified")
    revoke.set_defaults(func=_revoke)
