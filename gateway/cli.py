"""`wasl`: the command line for every role (demo, registry, gateway, PKI, configuration checks)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from gateway.configfile import ConfigError, load_model
from gateway.core import identifiers as ids


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo.runner import demo
    from gateway.proxy.app import _install_uvloop

    _install_uvloop()
    return asyncio.run(demo(args.dir, args.base_port, args.once))


def _registry_serve(args: argparse.Namespace) -> int:
    from gateway.registry.server import serve

    serve(args.config, args.host, args.port)
    return 0


def _gateway_serve(args: argparse.Namespace) -> int:
    from gateway.core.settings import GatewaySettings

    settings = load_model(args.config, GatewaySettings)
    if (args.workers or settings.workers) > 1:
        # Workers share metrics through files; the folder must exist, empty, before prometheus_client loads.
        import os
        import shutil

        folder = settings.state_dir / "metrics"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    from gateway.proxy.app import serve

    serve(args.config, args.workers)
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from gateway.core.settings import FederationConfig, GatewaySettings

    model = FederationConfig if args.kind == "federation" else GatewaySettings
    load_model(args.file, model)
    print(f"{args.file}: valid {args.kind} configuration")
    return 0


def _pki_init(args: argparse.Namespace) -> int:
    from gateway.trust.pki import CertificateAuthority

    if (args.dir / "ca.key").exists():
        raise ConfigError(f"{args.dir}/ca.key exists; refusing to overwrite a CA key")
    ca = CertificateAuthority.create(args.name)
    ca.save(args.dir)
    print(f"created {args.dir}/ca.pem and {args.dir}/ca.key (0600)")
    return 0


def _pki_issue(args: argparse.Namespace) -> int:
    from gateway.trust.pki import CertificateAuthority, fingerprint, new_key, save_certificate, save_key

    ca = CertificateAuthority.load(args.ca)
    key = new_key()
    public_key = key.public_key()
    if args.public_key is not None:  # a key that lives elsewhere (a PKCS#11 token): certify it, write no key
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        loaded = load_pem_public_key(args.public_key.read_bytes())
        if not isinstance(loaded, ec.EllipticCurvePublicKey) or args.kind != "sign":
            raise ConfigError("--public-key takes an EC public key (PEM), for a sign certificate")
        public_key = loaded
    try:
        if args.kind == "sign":
            cert = ca.issue_sign_certificate(ids.parse_member(args.member), args.name, public_key,
                                             days=args.days)
        elif args.kind == "tsa":
            from gateway.trust.tsa import issue_tsa_certificate

            cert = issue_tsa_certificate(ca, key, args.name or "Wasl Development TSA", days=args.days)
        else:
            cert = ca.issue_auth_certificate(ids.parse_server(args.server), key.public_key(), days=args.days)
    except ids.IdentifierError as exc:
        raise ConfigError(str(exc)) from None
    if args.public_key is not None:
        save_certificate(args.out / f"{args.kind}.pem", cert)
        print(f"created {args.out}/{args.kind}.pem (SHA-256 {fingerprint(cert)}) for the given public key")
        return 0
    if (args.out / f"{args.kind}.key").exists():
        raise ConfigError(f"{args.out}/{args.kind}.key exists; refusing to overwrite a private key")
    save_key(args.out / f"{args.kind}.key", key)
    save_certificate(args.out / f"{args.kind}.pem", cert)
    print(f"created {args.out}/{args.kind}.pem (SHA-256 {fingerprint(cert)}) and {args.kind}.key (0600)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wasl", description="Wasl federated data-exchange gateway")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a whole local federation with sample exchanges")
    demo.add_argument("--once", action="store_true", help="run the sample exchanges, then exit (0 = all passed)")
    demo.add_argument("--dir", type=Path, help="where to put the PKI, configuration and logs (default: temp)")
    demo.add_argument("--base-port", type=int, default=24400, help="first of the loopback ports used")
    demo.set_defaults(func=_demo)

    registry = sub.add_parser("registry", help="the central registry").add_subparsers(dest="action", required=True)
    serve = registry.add_parser("serve", help="publish the signed global configuration")
    serve.add_argument("--config", type=Path, required=True, help="federation YAML file")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_registry_serve)
    from gateway.registry.commands import register as register_registry

    register_registry(registry)  # wasl registry requests | approve | reject | anchor

    gateway = sub.add_parser("gateway", help="an agency's gateway").add_subparsers(dest="action", required=True)
    gserve = gateway.add_parser("serve", help="run the client and server sides")
    gserve.add_argument("--config", type=Path, required=True, help="gateway YAML file")
    gserve.add_argument("--workers", type=int, help="worker processes (default: from the file)")
    gserve.set_defaults(func=_gateway_serve)
    from gateway.onboarding.commands import register as register_onboarding

    register_onboarding(gateway)  # wasl gateway init | register

    from gateway.inquiry.cli import add_parser as add_inquiry

    add_inquiry(sub)  # wasl inquiry serve | tx | list | stats | gateways

    config = sub.add_parser("config", help="configuration files").add_subparsers(dest="action", required=True)
    check = config.add_parser("check", help="validate a YAML file and name every bad field")
    check.add_argument("kind", choices=["federation", "gateway"])
    check.add_argument("file", type=Path)
    check.set_defaults(func=_config_check)

    pki = sub.add_parser("pki", help="the development PKI").add_subparsers(dest="action", required=True)
    init = pki.add_parser("init", help="create a development root CA")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--name", default="Wasl Development Root CA")
    init.set_defaults(func=_pki_init)
    issue = pki.add_parser("issue", help="issue a member sign certificate or a gateway auth certificate")
    issue.add_argument("kind", choices=["sign", "auth", "tsa"])
    issue.add_argument("--ca", type=Path, required=True, help="folder with ca.pem and ca.key")
    issue.add_argument("--out", type=Path, required=True)
    issue.add_argument("--member", help="sign: INST/CLASS/CODE")
    issue.add_argument("--name", default="", help="sign: the member's name; tsa: the TSA's common name")
    issue.add_argument("--server", help="auth: INST/CLASS/CODE/serverCode")
    issue.add_argument("--days", type=int, default=365)
    issue.add_argument("--public-key", type=Path, help="sign: certify this public key (PEM) instead of a new key")
    issue.set_defaults(func=_pki_issue)
    from gateway.trust.commands import register as register_status

    register_status(pki)  # wasl pki ocsp serve, wasl pki revoke

    from gateway.messagelog.commands import register

    register(sub)  # wasl log ..., wasl tsa serve
    from gateway.audit.commands import register as register_audit

    register_audit(sub)  # wasl audit show
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    if args.command == "pki" and args.action == "issue" and args.kind != "tsa":
        needed = "member" if args.kind == "sign" else "server"
        if getattr(args, needed) is None:
            print(f"wasl pki issue {args.kind}: --{needed} is required", file=sys.stderr)
            return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"wasl: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
