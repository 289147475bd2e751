"""`wasl inquiry ...`: serve the inquiry, or ask a running one and print tables (or JSON)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gateway.inquiry import tables

DEFAULT_URL = "http://127.0.0.1:4600"


def add_parser(sub: Any) -> None:
    inquiry = sub.add_parser("inquiry", help="the unified inquiry: trace transactions across agencies")
    actions = inquiry.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="run the inquiry service and its dashboard")
    serve.add_argument("--config", type=Path, required=True, help="inquiry YAML file")
    serve.add_argument("--port", type=int, help="override the configured port")
    serve.set_defaults(func=_serve)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text)
        p.add_argument("--url", default=DEFAULT_URL, help=f"the inquiry service (default {DEFAULT_URL})")
        p.add_argument("--json", action="store_true", help="print the JSON answer")
        p.set_defaults(func=_ask)
        return p

    tx = client("tx", "one transaction by X-Road id (or --trace trace id): both sides, timeline, where time went")
    tx.add_argument("id")
    tx.add_argument("--trace", action="store_true", help="the id is a W3C trace id")
    for name, text in (("list", "transactions in a time range, newest first"),
                       ("stats", "counts, error rates and latency percentiles per agency pair and service")):
        p = client(name, text)
        p.add_argument("--last", help="15m, 1h, 24h, 7d ... (default 1h)")
        p.add_argument("--from", dest="from_", help="Unix ms or ISO 8601")
        p.add_argument("--to", help="Unix ms or ISO 8601")
        p.add_argument("--client", help="calling agency INST/CLASS/CODE or subsystem")
        p.add_argument("--provider", help="providing agency or subsystem")
        p.add_argument("--service", help="INST/CLASS/CODE/SUB/serviceCode")
        if name == "list":
            p.add_argument("--status", help="any, ok or failed")
            p.add_argument("--limit", help="page size (default 50)")
            p.add_argument("--cursor", help="the next page, as printed")
    client("gateways", "health of every gateway: configuration age, certificates, timestamping")


def _serve(args: argparse.Namespace) -> int:
    from gateway.configfile import load_model
    from gateway.inquiry.config import InquirySettings
    from gateway.inquiry.service import serve
    from gateway.proxy.app import _install_uvloop

    settings = load_model(args.config, InquirySettings)
    if args.port is not None:
        settings = settings.model_copy(update={"port": args.port})
    _install_uvloop()
    serve(settings)
    return 0


def _ask(args: argparse.Namespace) -> int:
    if args.action == "tx":
        path, params = "/api/v1/transaction", {"trace_id" if args.trace else "xroad_id": args.id}
    elif args.action == "gateways":
        path, params = "/api/v1/gateways", {}
    else:
        path = "/api/v1/transactions" if args.action == "list" else "/api/v1/aggregates"
        params = {k: v for k, v in (("last", args.last), ("from", args.from_), ("to", args.to),
                                    ("client", args.client), ("provider", args.provider),
                                    ("service", args.service), ("status", getattr(args, "status", None)),
                                    ("limit", getattr(args, "limit", None)),
                                    ("cursor", getattr(args, "cursor", None))) if v is not None}
        if "from" not in params and "to" not in params:
            params.setdefault("last", "1h")
    url = args.url.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read())
            print(f"wasl inquiry: {err.get('type')}: {err.get('message')}", file=sys.stderr)
        except ValueError:
            print(f"wasl inquiry: HTTP {exc.code}", file=sys.stderr)
        return 2
    except (urllib.error.URLError, OSError) as exc:
        print(f"wasl inquiry: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=1, ensure_ascii=False) if args.json else render(args.action, answer))
    return 0


def render(action: str, answer: dict[str, Any]) -> str:
    if action == "tx":
        found = answer["transactions"]
        body = "\n\n".join(tables.transaction(t) for t in found) if found else "no such transaction"
    elif action == "list":
        body = tables.transactions(answer)
    elif action == "stats":
        body = tables.aggregates(answer)
    else:
        body = tables.gateways(answer)
    return body + "\n\n" + tables.coverage(answer)
