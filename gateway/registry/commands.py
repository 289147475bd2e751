"""``wasl registry requests | approve | reject | anchor``: the registry administrator's commands."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import yaml

from gateway.audit.trail import current_user
from gateway.configfile import ConfigError, load_model
from gateway.core import registration as reg
from gateway.core.settings import FederationConfig


def _queue(config: Path):  # type: ignore[no-untyped-def]
    from gateway.registry.management import RequestQueue

    fed = load_model(config, FederationConfig)
    if fed.registry.management is None:
        raise ConfigError(f"{config}: registry.management is not configured; there is no request queue")
    return fed, RequestQueue(fed.registry.management.state_dir)


def _requests(args: argparse.Namespace) -> int:
    _, queue = _queue(args.config)
    rows = queue.requests(None if args.state == "all" else args.state)
    if args.json:
        print(json.dumps([q.as_json() for q in rows], indent=1))
        return 0
    if not rows:
        print(f"no {args.state} requests" if args.state != "all" else "no requests")
    for q in rows:
        print(f"{q.id}  {q.state:<8}  {q.kind:<18} {q.target:<45} from {q.submitter}  {q.submitted_at}"
              + (f"  ({q.decided_by}: {q.reason})" if q.reason else ""))
    return 0


def _decide(args: argparse.Namespace, approve: bool) -> int:
    from gateway.registry.management import QueueError, effective_federation

    seed, queue = _queue(args.config)
    action = "registration.approve" if approve else "registration.reject"
    actor = current_user()

    def still_applies(request: reg.Request) -> None:
        from gateway.registry.publisher import Publisher

        fed = effective_federation(seed, queue)
        reg.check(fed, request, list(Publisher.from_files(seed).ca_certificates), dt.datetime.now(dt.UTC))

    try:
        decided = queue.decide(args.id, approve, actor, getattr(args, "reason", None), still_applies)
    except (QueueError, reg.RegistrationError) as exc:
        queue.audit.record(actor=actor, action=action, target=args.id, result="refused", detail={"error": str(exc)})
        print(f"wasl registry {'approve' if approve else 'reject'}: {exc}", file=sys.stderr)
        return 1
    queue.audit.record(actor=actor, action=action, target=decided.target, result="ok",
                       detail={"id": decided.id, "kind": decided.kind, **({"reason": decided.reason}
                                                                          if decided.reason else {})})
    print(f"{decided.state} {decided.id}: {decided.kind} {decided.target}"
          + ("; it is in the next global configuration" if approve else ""))
    return 0


def _anchor(args: argparse.Namespace) -> int:
    from gateway.registry.publisher import Publisher

    fed = load_model(args.config, FederationConfig)
    url = args.url or f"http://{fed.registry.host}:{fed.registry.port}"
    anchor = Publisher.from_files(fed).anchor(url)
    text = yaml.safe_dump(anchor.model_dump(), sort_keys=False)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def _audit_trail(fed: FederationConfig, config: Path):  # type: ignore[no-untyped-def]
    from gateway.audit.trail import AuditTrail

    state = fed.registry.management.state_dir if fed.registry.management else config.parent / "registry-state"
    return AuditTrail(state / "audit.jsonl")


def _rotate_signing_key(args: argparse.Namespace) -> int:
    """Announce a new configuration-signing key (gateways learn to trust it), or switch to an announced one."""
    from gateway.core.certificates import fingerprint
    from gateway.trust.pki import holds_key, load_certificate, load_key

    fed = load_model(args.config, FederationConfig)
    trail = _audit_trail(fed, args.config)
    action = "registry.signing_key." + ("switch" if args.switch else "announce")
    cert_path, key_path = args.cert.resolve(), args.key.resolve()
    try:
        cert = load_certificate(cert_path)
        if not holds_key(cert, load_key(key_path)):
            raise ConfigError(f"{cert_path} does not hold the public key of {key_path}")
        announced = [p.resolve() for p in fed.registry.next_signing_certificates]
        data = yaml.safe_load(args.config.read_text())
        registry = data["registry"]
        if args.switch:
            if cert_path not in announced:
                raise ConfigError(f"{cert_path} was not announced; run without --switch first and wait until every "
                                  "gateway has refreshed")
            registry["signing_key"], registry["signing_certificate"] = str(key_path), str(cert_path)
            registry["next_signing_certificates"] = [str(p) for p in announced if p != cert_path]
        else:
            registry["next_signing_certificates"] = [str(p) for p in dict.fromkeys([*announced, cert_path])]
        tmp = args.config.with_suffix(".rotating")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
        load_model(tmp, FederationConfig)
        tmp.replace(args.config)
    except ConfigError as exc:
        trail.record(actor=current_user(), action=action, target=str(cert_path), result="refused",
                     detail={"error": str(exc)})
        print(f"wasl registry rotate-signing-key: {exc}", file=sys.stderr)
        return 1
    trail.record(actor=current_user(), action=action, target=str(cert_path), result="ok",
                 detail={"sha256": fingerprint(cert)})
    if args.switch:
        print(f"the registry now signs with {cert_path} (SHA-256 {fingerprint(cert)}) from its next publication")
    else:
        print(f"announced {fingerprint(cert)}: every gateway trusts it after its next refresh; then run again "
              "with --switch. New gateways' anchors (wasl registry anchor) list both keys meanwhile.")
    return 0


def register(registry: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    listing = registry.add_parser("requests", help="list registration requests")
    listing.add_argument("--config", type=Path, required=True, help="federation YAML file")
    listing.add_argument("--state", choices=["pending", "approved", "rejected", "all"], default="pending")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_requests)
    approve = registry.add_parser("approve", help="approve a pending request (it is re-checked first)")
    approve.add_argument("id")
    approve.add_argument("--config", type=Path, required=True)
    approve.set_defaults(func=lambda a: _decide(a, True))
    reject = registry.add_parser("reject", help="reject a pending request")
    reject.add_argument("id")
    reject.add_argument("--config", type=Path, required=True)
    reject.add_argument("--reason", default="")
    reject.set_defaults(func=lambda a: _decide(a, False))
    rotate = registry.add_parser("rotate-signing-key", help="announce, then switch to, a new configuration-signing key")
    rotate.add_argument("--config", type=Path, required=True)
    rotate.add_argument("--key", type=Path, required=True, help="the new signing key (PEM)")
    rotate.add_argument("--cert", type=Path, required=True, help="its certificate")
    rotate.add_argument("--switch", action="store_true", help="switch to the (already announced) key")
    rotate.set_defaults(func=_rotate_signing_key)
    anchor = registry.add_parser("anchor", help="write the configuration anchor new gateways import")
    anchor.add_argument("--config", type=Path, required=True)
    anchor.add_argument("--url", help="the registry URL gateways use (default: from the federation file)")
    anchor.add_argument("--out", type=Path)
    anchor.set_defaults(func=_anchor)
