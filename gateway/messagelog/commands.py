"""`wasl log ...` and `wasl tsa serve` on the command line; the work is in tools.py, imported only when run."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from gateway.configfile import ConfigError

# -- argument handling --------------------------------------------------------------------------------------------

def _keys(args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    from gateway.messagelog.bodycrypt import BodyKey, BodyKeyError

    keys = []
    for path in args.key_file or []:
        try:
            keys.append(BodyKey.parse(path.read_bytes(), str(path)))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the body key: {exc.strerror}") from None
        except BodyKeyError as exc:
            raise ConfigError(str(exc)) from None
    return keys


def _cmd_archive(args: argparse.Namespace) -> int:
    from gateway.messagelog.tools import archive_log

    return asyncio.run(archive_log(args.config, args.out, args.retention_days, sys.stdout))


def _cmd_verify(args: argparse.Namespace) -> int:
    if bool(args.files) == bool(args.config):
        print("wasl log verify: give archive FILEs, or --config for the live database", file=sys.stderr)
        return 2
    from gateway.messagelog.tools import read_pems, verify_database, verify_files

    keys = _keys(args)
    if args.config:
        return asyncio.run(verify_database(args.config, keys, sys.stdout))
    return verify_files(args.files, read_pems(args.trust_ca), read_pems(args.trust_tsa), keys, sys.stdout)


def _cmd_show(args: argparse.Namespace) -> int:
    from gateway.messagelog.bodycrypt import BodyKeyError
    from gateway.messagelog.tools import show

    try:
        return asyncio.run(show(args.config, args.id, args.full, sys.stdout))
    except BodyKeyError as exc:
        raise ConfigError(str(exc)) from None


def _cmd_keygen(args: argparse.Namespace) -> int:
    from gateway.messagelog.bodycrypt import BodyKey

    if args.out.exists():
        raise ConfigError(f"{args.out} exists; refusing to overwrite a key")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(BodyKey.generate().text() + "\n")
    print(f"created {args.out} (0600): set message_log.body_key_file to it, and keep a copy: without it the "
          "encrypted bodies cannot be read")
    return 0


def _cmd_tsa_serve(args: argparse.Namespace) -> int:
    from gateway.trust.tsa import DEFAULT_POLICY, load_authority, serve

    authority = load_authority(args.key, args.cert, args.chain or [], args.policy or DEFAULT_POLICY)
    serve(authority, args.host, args.port, f"TSA {authority.certificate.subject.rfc4514_string()} on "
          f"http://{args.host}:{args.port}/ (policy {authority.policy})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``log`` and ``tsa`` to the ``wasl`` command line."""
    log = sub.add_parser("log", help="the message log: archive, verify, look up").add_subparsers(
        dest="action", required=True)
    arch = log.add_parser("archive", help="export closed, timestamped ranges to archive files, then apply retention")
    arch.add_argument("--config", type=Path, required=True, help="gateway YAML file")
    arch.add_argument("--out", type=Path, help="folder for the archives (default: message_log.archive_dir)")
    arch.add_argument("--retention-days", type=float,
                      help="remove archived records older than this from the database (default: from the file)")
    arch.set_defaults(func=_cmd_archive)

    ver = log.add_parser("verify", help="check archives (or the live database) offline; exit 1 on any problem")
    ver.add_argument("files", nargs="*", type=Path, help="archive ZIP files")
    ver.add_argument("--config", type=Path, help="verify the live database of this gateway instead")
    ver.add_argument("--trust-ca", type=Path, action="append",
                     help="PEM file of CA certificates to trust for signers instead of those in the archives")
    ver.add_argument("--trust-tsa", type=Path, action="append",
                     help="PEM file of TSA certificates to trust for tokens instead of those in the archives")
    ver.add_argument("--key-file", type=Path, action="append", help="body key: also decrypt and check bodies")
    ver.set_defaults(func=_cmd_verify)

    shw = log.add_parser("show", help="print both messages of a transaction and whether they verify")
    shw.add_argument("--config", type=Path, required=True, help="gateway YAML file")
    shw.add_argument("--id", required=True, help="the X-Road message id")
    shw.add_argument("--full", action="store_true", help="print long bodies whole")
    shw.set_defaults(func=_cmd_show)

    key = log.add_parser("keygen", help="make a key for encrypting bodies at rest")
    key.add_argument("--out", type=Path, required=True)
    key.set_defaults(func=_cmd_keygen)

    tsa = sub.add_parser("tsa", help="the built-in RFC 3161 timestamping authority").add_subparsers(
        dest="action", required=True)
    serve = tsa.add_parser("serve", help="answer application/timestamp-query over HTTP")
    serve.add_argument("--key", type=Path, required=True, help="TSA private key (PEM)")
    serve.add_argument("--cert", type=Path, required=True, help="TSA certificate (PEM), from wasl pki issue tsa")
    serve.add_argument("--chain", type=Path, action="append", help="CA certificate (PEM) to send along")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4500)
    serve.add_argument("--policy", help="TSA policy OID (default: the built-in TSA's)")
    serve.set_defaults(func=_cmd_tsa_serve)
