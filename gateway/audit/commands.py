"""``wasl audit show``: print an audit trail and check its hash chain."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.audit.entries import verify
from gateway.audit.trail import AuditTrail


def _show(args: argparse.Namespace) -> int:
    trail = AuditTrail(args.file)
    if not trail.path.exists():
        print(f"wasl audit show: no audit trail at {trail.path}", file=sys.stderr)
        return 2
    try:
        entries = list(trail.entries())
    except (ValueError, KeyError) as exc:
        print(f"wasl audit show: {trail.path} is not an audit trail ({exc})", file=sys.stderr)
        return 1
    shown = [e for e in entries
             if (args.only_action is None or e.action.startswith(args.only_action))
             and (args.result is None or e.result == args.result)]
    if args.tail:
        shown = shown[-args.tail:]
    for e in shown:
        if args.json:
            print(json.dumps({**e.body(), "hash": e.hash}, sort_keys=True))
        else:
            extra = " ".join(f"{k}={v}" for k, v in sorted(e.detail.items()))
            print(f"{e.seq:>6}  {e.at}  {e.result:<7}  {e.action:<28} {e.target:<40} by {e.actor}"
                  + (f"  {extra}" if extra else ""))
    problems = verify(entries)
    for problem in problems:
        print(f"wasl audit show: TAMPERED: {problem}", file=sys.stderr)
    return 1 if problems else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="the administrative audit trail").add_subparsers(dest="action", required=True)
    show = audit.add_parser("show", help="print the audit trail and verify its hash chain (exit 1 if broken)")
    show.add_argument("--file", type=Path, required=True, help="the audit trail (audit.jsonl)")
    show.add_argument("--action", dest="only_action", help="only actions starting with this, e.g. pki.")
    show.add_argument("--result", choices=["ok", "failed", "refused"])
    show.add_argument("--tail", type=int, help="only the last N entries shown")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(func=_show)
