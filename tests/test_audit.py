"""The audit trail: append-only, hash-chained, durable, and printed by ``wasl audit show``."""

from __future__ import annotations

import json

from gateway.audit.entries import verify
from gateway.audit.trail import AuditTrail
from gateway.cli import main


def test_entries_chain_and_verify(tmp_path):
    trail = AuditTrail(tmp_path / "audit.jsonl")
    first = trail.record(actor="os:alice", action="registration.approve", target="req-1", result="ok")
    second = trail.record(actor="os:bob", action="pki.revoke", target="serial 42", result="failed",
                          detail={"reason": "unknown serial"})
    assert (first.seq, second.seq) == (1, 2)
    assert second.prev == first.hash
    entries = list(trail.entries())
    assert [e.action for e in entries] == ["registration.approve", "pki.revoke"]
    assert entries[1].detail == {"reason": "unknown serial"}
    assert verify(entries) == []


def test_reopened_trail_continues_the_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditTrail(path).record(actor="a", action="x", target="t", result="ok")
    entry = AuditTrail(path).record(actor="a", action="y", target="t", result="ok")
    assert entry.seq == 2 and verify(AuditTrail(path).entries()) == []
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_an_edited_entry_is_detected(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path)
    for n in range(3):
        trail.record(actor="os:alice", action="registration.approve", target=f"req-{n}", result="ok")
    lines = path.read_bytes().splitlines()
    edited = json.loads(lines[1])
    edited["result"] = "refused"
    lines[1] = json.dumps(edited, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["audit", "show", "--file", str(path)]) == 1
    assert "entry 2: its content was changed" in capsys.readouterr().err


def test_a_removed_entry_is_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path)
    for n in range(3):
        trail.record(actor="a", action="x", target=str(n), result="ok")
    lines = path.read_bytes().splitlines()
    path.write_bytes(lines[0] + b"\n" + lines[2] + b"\n")
    problems = verify(AuditTrail(path).entries())
    assert any("expected sequence number 2 (missing" in p for p in problems)


def test_show_prints_and_filters(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path)
    trail.record(actor="os:alice", action="registration.approve", target="req-1", result="ok")
    trail.record(actor="os:alice", action="pki.revoke", target="serial 7", result="ok")
    assert main(["audit", "show", "--file", str(path), "--action", "pki."]) == 0
    out = capsys.readouterr().out
    assert "pki.revoke" in out and "registration.approve" not in out
    assert main(["audit", "show", "--file", str(path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == [1, 2]


def test_show_of_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["audit", "show", "--file", str(tmp_path / "nope.jsonl")]) == 2
    assert "no audit trail" in capsys.readouterr().err
