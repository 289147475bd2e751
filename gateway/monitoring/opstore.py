"""The operational-record store interface (insert in batches, query, aggregate, prune) and the shared schema."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.monitoring.opquery import OpQuery, Scope
from gateway.monitoring.oprecords import COLUMNS, OpRecord

COMPONENT = "opmon"
"""This component's key in the shared ``schema_version`` table."""
TABLE = "opmon_record"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


@dataclass(slots=True)
class Aggregate:
    """Grouped rows from the store (see opquery.aggregate_sql), histograms packed as ``bucket:count,...`` text."""

    traffic: list[tuple[Any, ...]]  # client member, provider member, service, count, failed, histogram
    faults: list[tuple[Any, ...]]  # client member, provider member, service, fault code, count
    backend: list[tuple[Any, ...]]  # service, count, histogram
    series: list[tuple[Any, ...]]  # time bucket, count, failed, histogram

    def packed(self) -> dict[str, list[list[Any]]]:
        """The form sent to the inquiry: histograms as flat [bucket, count, ...] lists, faults as [code, count, ...]
        on their traffic row."""
        faults: dict[tuple[str, str, str], list[Any]] = {}
        for cm, pm, service, fault, n in self.faults:
            faults.setdefault((cm, pm, service), []).extend((fault, int(n)))
        return {
            "traffic": [[cm, pm, service, int(n), int(f), unpack(h), faults.get((cm, pm, service), [])]
                        for cm, pm, service, n, f, h in self.traffic],
            "backend": [[service, int(n), unpack(h)] for service, n, h in self.backend],
            "series": [[int(t), int(n), int(f), unpack(h)] for t, n, f, h in self.series],
        }


def unpack(text: str | None) -> list[int]:
    """``3:5,7:2`` -> [3, 5, 7, 2]."""
    if not text:
        return []
    return [int(x) for x in text.replace(":", ",").split(",")]


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says why."""


def column_types(text: str, integer: str, real: str, boolean: str) -> str:
    """The record columns as a CREATE TABLE body, in COLUMNS order, for one SQL dialect."""
    kinds = {
        "side": f"{text} NOT NULL", "request_in_ms": f"{integer} NOT NULL", "request_out_ms": integer,
        "response_in_ms": integer, "response_out_ms": f"{integer} NOT NULL", "xroad_id": f"{text} NOT NULL",
        "request_id": f"{text} NOT NULL", "user_id": text, "issue": text, "traceparent": text, "trace_id": text,
        "client": f"{text} NOT NULL", "client_member": f"{text} NOT NULL", "service": f"{text} NOT NULL",
        "service_key": f"{text} NOT NULL", "provider_member": f"{text} NOT NULL", "protocol": f"{text} NOT NULL",
        "protocol_version": text, "rest_method": text, "rest_path": text, "request_size": f"{integer} NOT NULL",
        "response_size": f"{integer} NOT NULL", "status_code": f"{integer} NOT NULL",
        "succeeded": f"{boolean} NOT NULL", "fault_code": text, "fault_message": text,
        "duration_ms": f"{real} NOT NULL", "backend_ms": real, "overhead_ms": f"{real} NOT NULL",
        "client_server": text, "service_server": text, "duration_bucket": f"{integer} NOT NULL",
        "backend_bucket": integer,
    }
    assert tuple(kinds) == COLUMNS, "schema and OpRecord disagree"
    return ",\n".join(f"{name} {kind}" for name, kind in kinds.items())


def check_migrations(migrations: Sequence[Migration]) -> int:
    for i, m in enumerate(migrations, start=1):
        if m.version != i:
            raise StoreError(f"migration list out of order: position {i} holds version {m.version}")
    return len(migrations)


class OpStore(abc.ABC):
    """One gateway's operational records. Writes come in batches from one writer task; reads are scoped queries."""

    gateway_id: str

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> int:
        """Create or upgrade the schema; safe on every start and from several workers at once."""

    @abc.abstractmethod
    async def insert(self, batch: Sequence[OpRecord]) -> None:
        """Store a batch in one transaction."""

    @abc.abstractmethod
    async def records(self, query: OpQuery, scope: Scope) -> list[tuple[Any, ...]]:
        """Rows in COLUMNS order, newest first, at most ``query.limit + 1`` (the extra one says there is more)."""

    @abc.abstractmethod
    async def aggregate(self, query: OpQuery, scope: Scope) -> Aggregate: ...

    @abc.abstractmethod
    async def delete_before(self, cutoff_ms: int, limit: int = 10_000) -> int:
        """Retention: delete at most ``limit`` records older than ``cutoff_ms``; return how many went."""

    @abc.abstractmethod
    async def count(self) -> int: ...
