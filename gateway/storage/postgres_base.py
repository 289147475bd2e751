"""asyncpg plumbing shared by the stores: the connection pool and versioned migrations under an advisory lock."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import asyncpg

from gateway.storage.sqlite_base import MigrationLike


async def create_pool(dsn: str, min_size: int, max_size: int, server_settings: dict[str, str]) -> asyncpg.Pool:
    """Open an asyncpg pool of ``min_size``..``max_size`` connections with the given server settings."""
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, server_settings=server_settings)


async def migrate(pool: asyncpg.Pool, lock: int, component: str, migrations: Sequence[MigrationLike], latest: int,
                  too_new: Callable[[int], Exception]) -> int:
    """Apply the migrations of ``component`` newer than its row in ``schema_version``, one node at a time."""
    async with pool.acquire() as conn, conn.transaction():
        # Two nodes starting together would otherwise race on CREATE TABLE; the lock ends with the transaction.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (component text NOT NULL, version integer NOT NULL,"
            " description text NOT NULL, applied_ms bigint NOT NULL, PRIMARY KEY (component, version))"
        )
        current = await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM schema_version WHERE component = $1", component
        )
        if current > latest:
            raise too_new(current)
        for m in migrations[current:]:
            for stmt in m.statements:
                await conn.execute(stmt)
            await conn.execute(
                "INSERT INTO schema_version (component, version, description, applied_ms) VALUES ($1, $2, $3, $4)",
                component, m.version, m.description, int(time.time() * 1000),
            )
    return latest


class PoolStore:
    """Mixin giving a store ``close`` of its asyncpg pool, kept in ``_pool``."""

    _pool: asyncpg.Pool | None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
