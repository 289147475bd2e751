"""The registry's management API: signed registration requests in, a persistent approval queue, audited decisions.

Gateways POST signed requests (core/registration.py) over mutual TLS. Each is verified and checked against the
federation as it stands, then queued in ``<state_dir>/requests.db`` (SQLite) as pending, or approved at once when
the federation's ``auto_approve`` policy covers its kind. An administrator decides the rest with ``wasl registry
requests | approve | reject``. Approved requests, in the order they were approved, are applied on top of the
federation file every time the registry publishes, so they survive a restart and reach every gateway on its next
refresh. Every submission and decision, refused ones included, goes to ``<state_dir>/audit.jsonl``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import ssl
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509

from gateway.audit.trail import AuditTrail
from gateway.core import registration as reg
from gateway.core.certificates import member_of_sign_certificate
from gateway.core.settings import FederationConfig, ManagementSettings
from gateway.storage import sqlite_base

REQUESTS_PATH = "/managementservice/requests"


@dataclass(frozen=True)
class QueuedRequest:
    id: str
    kind: str
    member: str
    target: str
    state: str  # pending, approved, rejected
    submitter: str
    submitted_at: str
    decided_at: str | None
    decided_by: str | None
    reason: str | None
    raw: bytes

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "member": self.member, "target": self.target,
                "state": self.state, "submitter": self.submitter, "submitted_at": self.submitted_at,
                "decided_at": self.decided_at, "decided_by": self.decided_by, "reason": self.reason}


class QueueError(ValueError):
    """An administrative action on the queue that cannot be done (unknown id, already decided, no longer applies)."""


class RequestQueue:
    """The persistent queue. Each call opens its own connection: the registry and the CLI share the file."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "requests.db"
        self.audit = AuditTrail(Path(state_dir) / "audit.jsonl")

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("""CREATE TABLE IF NOT EXISTS request (
            seq INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, nonce TEXT UNIQUE NOT NULL, kind TEXT NOT NULL,
            member TEXT NOT NULL, target TEXT NOT NULL, state TEXT NOT NULL, submitter TEXT NOT NULL,
            submitted_at TEXT NOT NULL, decided_at TEXT, decided_by TEXT, reason TEXT, approved_seq INTEGER,
            raw BLOB NOT NULL)""")
        return db

    _COLS = "id, kind, member, target, state, submitter, submitted_at, decided_at, decided_by, reason, raw"

    def requests(self, state: str | None = None) -> list[QueuedRequest]:
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT {self._COLS} FROM request" + (" WHERE state = ?" if state else "")
                              + " ORDER BY seq", (state,) if state else ()).fetchall()
        return [QueuedRequest(*row) for row in rows]

    def get(self, request_id: str) -> QueuedRequest | None:
        with closing(self._connect()) as db:
            row = db.execute(f"SELECT {self._COLS} FROM request WHERE id = ?", (request_id,)).fetchone()
        return QueuedRequest(*row) if row else None

    def approved(self) -> list[reg.Request]:
        """Approved requests in approval order: what the federation file does not say yet."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT raw FROM request WHERE state = 'approved' ORDER BY approved_seq").fetchall()
        return [reg.parse_signed(row[0]) for row in rows]

    def submit(self, verified: reg.Verified, submitter: str, *, approve: bool) -> QueuedRequest:
        request = verified.request
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        request_id = str(uuid.uuid4())
        def insert(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM request WHERE nonce = ?", (request.nonce,)).fetchone():
                raise reg.RegistrationError("this signed request was already submitted (replay)")
            pending = db.execute("SELECT id FROM request WHERE state = 'pending' AND kind = ? AND target = ?",
                                 (request.kind.value, request.target())).fetchone()
            if pending:
                raise reg.RegistrationError(f"a {request.kind.value} request for {request.target()} is already "
                                            f"pending ({pending[0]})")
            db.execute(
                "INSERT INTO request (id, nonce, kind, member, target, state, submitter, submitted_at, "
                "decided_at, decided_by, approved_seq, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (request_id, request.nonce, request.kind.value, request.member, request.target(),
                 "approved" if approve else "pending", submitter, now, now if approve else None,
                 "policy:auto-approve" if approve else None, _next_approved(db) if approve else None,
                 verified.raw))

        with closing(self._connect()) as db:
            sqlite_base.transaction(db, insert)
        queued = self.get(request_id)
        assert queued is not None
        return queued

    def decide(self, request_id: str, approve: bool, by: str, reason: str | None = None,
               still_applies: object = None) -> QueuedRequest:
        """Approve or reject a pending request. ``still_applies(request)`` re-checks an approval against the
        federation as it is now; raising RegistrationError there refuses the approval."""
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        def update(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT state, raw FROM request WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                raise QueueError(f"no request {request_id} in the queue")
            if row[0] != "pending":
                raise QueueError(f"request {request_id} was already {row[0]}")
            if approve and callable(still_applies):
                still_applies(reg.parse_signed(row[1]))
            db.execute("UPDATE request SET state = ?, decided_at = ?, decided_by = ?, reason = ?, approved_seq = ? "
                       "WHERE id = ?", ("approved" if approve else "rejected", now, by, reason,
                                        _next_approved(db) if approve else None, request_id))

        with closing(self._connect()) as db:
            sqlite_base.transaction(db, update)
        decided = self.get(request_id)
        assert decided is not None
        return decided


def _next_approved(db: sqlite3.Connection) -> int:
    """The approval order of the next approved request: approved changes apply in this order."""
    return int(db.execute("SELECT coalesce(max(approved_seq), 0) + 1 FROM request").fetchone()[0])


def effective_federation(seed: FederationConfig, queue: RequestQueue) -> FederationConfig:
    """The federation file with every approved request applied, in approval order."""
    fed = seed
    for request in queue.approved():
        fed = reg.apply(fed, request)
    return fed


def server_context(settings: ManagementSettings, ca_certificates: list[x509.Certificate]) -> ssl.SSLContext:
    """TLS for the management API: the registry's certificate; clients must present one from an approved CA."""
    from cryptography.hazmat.primitives.serialization import Encoding

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_certificate, settings.tls_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata="".join(c.public_bytes(Encoding.PEM).decode() for c in ca_certificates))
    return ctx


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"type": f"Server.RegistryManagement.{code}", "message": message}, status=status)


class ManagementApi:
    """The HTTP face. ``registry`` gives the federation as it stands and the approved CAs."""

    def __init__(self, queue: RequestQueue, current: object, auto_approve: list[str]) -> None:
        self.queue = queue
        self._current = current  # () -> (FederationConfig, list[x509.Certificate])
        self.auto_approve = frozenset(auto_approve)

    async def submit(self, request: web.Request) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return _error(401, "SslAuthenticationFailed", "present the gateway's auth certificate (mutual TLS)")
        tls_certificate = x509.load_der_x509_certificate(der)
        named = member_of_sign_certificate(tls_certificate)  # an auth certificate names its gateway the same way
        submitter = f"gateway:{named}" if named else tls_certificate.subject.rfc4514_string()
        raw = await request.content.read(reg.MAX_REQUEST_BYTES + 1)
        fed, cas = self._current()  # type: ignore[operator]
        now = dt.datetime.now(dt.UTC)
        try:
            verified = reg.verify(raw, cas, now)
            reg.check_submitter(verified.request, tls_certificate)
            reg.check(fed, verified.request, cas, now)
            approve = verified.request.kind.value in self.auto_approve
            queued = self.queue.submit(verified, submitter, approve=approve)
        except reg.RegistrationError as exc:
            self.queue.audit.record(actor=submitter, action="registration.submit", target="(refused)",
                                    result="refused", detail={"error": str(exc)})
            return _error(400, "InvalidRequest", str(exc))
        self.queue.audit.record(actor=submitter, action="registration.submit", target=queued.target,
                                result="ok", detail={"id": queued.id, "kind": queued.kind})
        if approve:
            self.queue.audit.record(actor="policy:auto-approve", action="registration.approve", target=queued.target,
                                    result="ok", detail={"id": queued.id, "kind": queued.kind})
        return web.json_response(queued.as_json(), status=202)

    async def status(self, request: web.Request) -> web.Response:
        queued = self.queue.get(request.match_info["id"])
        if queued is None:
            return _error(404, "UnknownRequest", "no such request")
        return web.json_response(queued.as_json())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=reg.MAX_REQUEST_BYTES + 1)
        app.router.add_post(REQUESTS_PATH, self.submit)
        app.router.add_get(REQUESTS_PATH + "/{id}", self.status)
        return app
