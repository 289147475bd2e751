"""``wasl gateway init`` and ``wasl gateway register``: a new agency's onboarding commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway.configfile import ConfigError, load_model
from gateway.core import identifiers as ids
from gateway.core import registration as reg
from gateway.core.settings import GatewaySettings


def _init(args: argparse.Namespace) -> int:
    from gateway.onboarding.client import RegistrationFailed, download_conf
    from gateway.onboarding.setup import InitPlan, init_gateway, read_anchor

    try:
        member = ids.parse_member(args.member)
        server = ids.parse_server(f"{member.path()}/{args.server_code}")
    except ids.IdentifierError as exc:
        raise ConfigError(str(exc)) from None
    anchor = read_anchor(args.anchor)
    address = args.address or f"https://127.0.0.1:{args.server_port}"
    written = init_gateway(InitPlan(args.dir, member, args.name, server, anchor, args.client_port, args.server_port,
                                    address))
    for path in written:
        print(f"created {path}" + (" (0600)" if path.suffix == ".key" else ""))
    try:
        conf = download_conf(anchor)
        print(f"anchor verified: the registry at {anchor.registry_url} serves configuration serial {conf.serial} "
              f"signed by the anchored key")
    except RegistrationFailed as exc:
        print(f"warning: anchor imported but not yet verified against the registry: {exc}", file=sys.stderr)
    d = args.dir
    print(f"""
Next steps:
  1. Send {d}/csr/sign.csr and {d}/csr/auth.csr to the CA; it signs them with
       wasl pki sign-csr --ca CA_DIR --kind sign --csr sign.csr --member {member} --name "{args.name}" --out sign.pem
       wasl pki sign-csr --ca CA_DIR --kind auth --csr auth.csr --server {server} --out auth.pem
     and put the certificates in {d}/certs/.
  2. Ask the registry to add you (each request is signed with your sign key, sent over mutual TLS):
       wasl gateway register member --config {d}/gateway.yaml --member-name "{args.name}"
       wasl gateway register gateway --config {d}/gateway.yaml --address {address}
       wasl gateway register subsystem --config {d}/gateway.yaml --subsystem SUBSYSTEM
       wasl gateway register client --config {d}/gateway.yaml --client {member}/SUBSYSTEM
  3. Once the registry's administrator approves them: wasl gateway serve --config {d}/gateway.yaml""")
    return 0


_KINDS = {"member": reg.Kind.REGISTER_MEMBER, "subsystem": reg.Kind.REGISTER_SUBSYSTEM,
          "gateway": reg.Kind.REGISTER_GATEWAY, "client": reg.Kind.ADD_CLIENT,
          "remove-client": reg.Kind.REMOVE_CLIENT, "remove-gateway": reg.Kind.REMOVE_GATEWAY,
          "remove-subsystem": reg.Kind.REMOVE_SUBSYSTEM}


def _register(args: argparse.Namespace) -> int:
    from gateway.onboarding.client import RegistrationFailed, build, download_conf, submit

    settings = load_model(args.config, GatewaySettings)
    kind = _KINDS[args.kind]
    fields = {k: v for k, v in {"member_name": args.member_name, "subsystem": args.subsystem, "client": args.client,
                                "address": args.address}.items() if v}
    if kind in (reg.Kind.ADD_CLIENT, reg.Kind.REMOVE_CLIENT, reg.Kind.REMOVE_GATEWAY):
        fields["server"] = args.server or settings.server_id.path()
    try:
        signed = build(settings, kind, args.member, **fields)
        conf = download_conf(settings.anchor)
        submitted = asyncio.run(submit(settings, conf, signed))
    except RegistrationFailed as exc:
        print(f"wasl gateway register: {exc}", file=sys.stderr)
        return 1
    print(f"request {submitted.id}: {kind.value} {submitted.target}: {submitted.state}")
    return 0


def register(gateway: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    init = gateway.add_parser("init", help="set up a new agency's gateway: keys, CSRs, configuration, anchor")
    init.add_argument("--dir", type=Path, required=True, help="where to write keys/, csr/, certs/, gateway.yaml")
    init.add_argument("--member", required=True, help="the agency's member id, INST/CLASS/CODE")
    init.add_argument("--name", required=True, help="the agency's name")
    init.add_argument("--server-code", required=True, help="this gateway's code, e.g. gw1")
    init.add_argument("--anchor", type=Path, required=True, help="the registry's anchor file (wasl registry anchor)")
    init.add_argument("--client-port", type=int, default=8080)
    init.add_argument("--server-port", type=int, default=5500)
    init.add_argument("--address", help="the https:// address other gateways reach the server side at")
    init.set_defaults(func=_init)

    send = gateway.add_parser("register", help="send a signed registration request to the registry")
    send.add_argument("kind", choices=sorted(_KINDS))
    send.add_argument("--config", type=Path, required=True, help="this gateway's YAML file")
    send.add_argument("--member", help="the member asking (default: the gateway's owner)")
    send.add_argument("--member-name", help="member: the member's name")
    send.add_argument("--subsystem", help="subsystem: the subsystem code")
    send.add_argument("--client", help="client: the subsystem path to serve at the gateway")
    send.add_argument("--server", help="client: the gateway (default: this one)")
    send.add_argument("--address", help="gateway: https:// address of this gateway's server side")
    send.set_defaults(func=_register)
    from gateway.onboarding.rotation import register as register_rotation

    register_rotation(gateway)  # wasl gateway rotate
