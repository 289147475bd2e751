"""``wasl gateway rotate sign|auth``: install a new sign key or auth certificate in a running gateway, no restart.

The new key and certificate are checked (the certificate holds the key; a sign certificate names the member, an
auth certificate this gateway), the gateway YAML is pointed at them, and the running gateway is sent SIGHUP, which
installs them (GatewayRuntime.reload_keys). Every rotation, refused ones included, goes to the gateway's audit
trail (``<state_dir>/audit.jsonl``). For an auth certificate, the federation must list its fingerprint first
(docs/keys.md has the runbook).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import yaml

from gateway.audit.trail import AuditTrail, current_user
from gateway.configfile import ConfigError, load_model
from gateway.core.certificates import fingerprint, member_of_sign_certificate
from gateway.core.settings import GatewaySettings
from gateway.trust.pki import holds_key, load_certificate, load_key


class RotationError(ValueError):
    """A new key or certificate that must not be installed."""


def _same_key(cert_path: Path, key_path: Path) -> None:
    if not holds_key(load_certificate(cert_path), load_key(key_path)):
        raise RotationError(f"{cert_path} does not hold the public key of {key_path}")


def rotate(config_file: Path, kind: str, key: Path, certificate: Path, member: str | None = None) -> str:
    """Check the new pair and point the YAML at it; return a description. Raises RotationError or ConfigError."""
    settings = load_model(config_file, GatewaySettings)
    key, certificate = key.resolve(), certificate.resolve()
    _same_key(certificate, key)
    cert = load_certificate(certificate)
    data = yaml.safe_load(config_file.read_text())
    if kind == "sign":
        member = member or settings.server_id.owner.path()
        index = next((i for i, s in enumerate(settings.signing) if s.member == member), None)
        if index is None:
            raise RotationError(f"this gateway holds no sign key for member {member}")
        if member_of_sign_certificate(cert) != member:
            raise RotationError(f"{certificate} names member {member_of_sign_certificate(cert)}, not {member}")
        data["signing"][index].update({"key": str(key), "certificate": str(certificate)})
        data["signing"][index].pop("pkcs11", None)
        what = f"sign key of {member}"
    else:
        named = member_of_sign_certificate(cert)
        if named != settings.server:
            raise RotationError(f"{certificate} names {named}, not gateway {settings.server}")
        data["auth"] = {"key": str(key), "certificate": str(certificate)}
        what = f"auth certificate of {settings.server}"
    tmp = config_file.with_suffix(".rotating")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    load_model(tmp, GatewaySettings)  # the rewritten file must still be valid
    os.replace(tmp, config_file)
    return f"{what} -> {certificate} (SHA-256 {fingerprint(cert)})"


def signal_gateway(settings: GatewaySettings) -> int | None:
    """Send SIGHUP to the gateway serving this configuration; return its pid, or None if none is running."""
    try:
        pid = int((settings.state_dir / "gateway.pid").read_text().strip())
        os.kill(pid, signal.SIGHUP)
        return pid
    except (OSError, ValueError):
        return None


def _command(args: argparse.Namespace) -> int:
    settings = load_model(args.config, GatewaySettings)
    trail = AuditTrail(settings.state_dir / "audit.jsonl")
    action = f"key.rotate.{args.kind}"
    try:
        done = rotate(args.config, args.kind, args.key, args.cert, args.member)
    except (RotationError, ConfigError) as exc:
        trail.record(actor=current_user(), action=action, target=str(args.cert), result="refused",
                     detail={"error": str(exc)})
        print(f"wasl gateway rotate: {exc}", file=sys.stderr)
        return 1
    pid = None if args.no_reload else signal_gateway(settings)
    trail.record(actor=current_user(), action=action, target=str(args.cert), result="ok",
                 detail={"installed": done, "signalled_pid": pid})
    print(f"rotated {done}")
    print(f"the running gateway (pid {pid}) installs it now" if pid else
          "no running gateway was signalled; it takes the new key when started (or send it SIGHUP)")
    return 0


def register(gateway: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rotate_parser = gateway.add_parser("rotate", help="install a new sign key or auth certificate without a restart")
    rotate_parser.add_argument("kind", choices=["sign", "auth"])
    rotate_parser.add_argument("--config", type=Path, required=True)
    rotate_parser.add_argument("--key", type=Path, required=True, help="the new private key (PEM, 0600)")
    rotate_parser.add_argument("--cert", type=Path, required=True, help="its certificate from the CA")
    rotate_parser.add_argument("--member", help="sign: the member (default: the gateway's owner)")
    rotate_parser.add_argument("--no-reload", action="store_true", help="only rewrite the file")
    rotate_parser.set_defaults(func=_command)
