"""Signing manifests in batches: every manifest signed in one event-loop turn shares one ECDSA signature."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.core import batchsig
from gateway.core.envelope import SignedParts

# Bounded so a burst never builds one huge tree: a path stays short and a failure touches few messages.
MAX_BATCH = 256


class BatchSigner:
    """Collects the manifests handed to ``sign`` during one turn of the loop and signs them together.

    A lone manifest gets a plain signature, so an idle gateway's messages look exactly as before. The batch is
    signed inline on the loop: one ECDSA signature (~40 µs) is cheaper than a hop to a thread.
    """

    def __init__(self, sign_bytes: Callable[[bytes], bytes], certificate_der: bytes,
                 sign_elsewhere: Callable[[bytes], Awaitable[bytes]] | None = None) -> None:
        """``sign_bytes`` signs inline; ``sign_elsewhere``, when given, is used instead for keys whose signing
        must not run on the loop (a PKCS#11 token): while it works, the next batch gathers."""
        self._sign_bytes = sign_bytes
        self._sign_elsewhere = sign_elsewhere
        self._certificate_der = certificate_der
        self._pending: list[tuple[bytes, asyncio.Future[SignedParts]]] = []
        self._scheduled = False
        self._in_flight = False  # a batch is being signed elsewhere; the next one waits for it

    async def sign(self, manifest: bytes) -> SignedParts:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SignedParts] = loop.create_future()
        self._pending.append((manifest, future))
        if len(self._pending) >= MAX_BATCH:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)  # runs after every task already ready in this turn has had its go
        return await future

    def _flush(self) -> None:
        if self._in_flight:
            self._scheduled = False  # the batch in flight flushes what gathered when it is done
            return
        batch, self._pending, self._scheduled = self._pending, [], False
        batch = [(m, f) for m, f in batch if not f.done()]  # a cancelled caller needs no signature
        if not batch:
            return
        if self._sign_elsewhere is not None:
            self._in_flight = True
            asyncio.get_running_loop().create_task(self._flush_elsewhere(batch))
            return
        try:
            results = self.sign_now([m for m, _ in batch])
        except Exception as exc:  # a key that cannot sign fails every caller of this batch alike
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), parts in zip(batch, results, strict=True):
            future.set_result(parts)

    async def _flush_elsewhere(self, batch: list[tuple[bytes, asyncio.Future[SignedParts]]]) -> None:
        assert self._sign_elsewhere is not None
        content, finish = self._prepare([m for m, _ in batch])
        try:
            signature = await self._sign_elsewhere(content)
            results = finish(signature)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), parts in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(parts)
        finally:
            self._in_flight = False
            if self._pending:
                self._flush()

    def _prepare(self, manifests: list[bytes]) -> tuple[bytes, Callable[[bytes], list[SignedParts]]]:
        """(what to sign, how to turn its signature into each message's signed parts)."""
        cert = self._certificate_der
        if len(manifests) == 1:
            return manifests[0], lambda signature: [SignedParts(manifests[0], signature, cert)]
        root, paths = batchsig.tree(manifests)
        count = len(manifests)

        def finish(signature: bytes) -> list[SignedParts]:
            return [SignedParts(manifest, batchsig.encode(index, count, path, signature), cert)
                    for index, (manifest, path) in enumerate(zip(manifests, paths, strict=True))]

        return batchsig.signed_bytes(root), finish

    def sign_now(self, manifests: list[bytes]) -> list[SignedParts]:
        """Sign ``manifests`` as one batch, synchronously."""
        content, finish = self._prepare(manifests)
        return finish(self._sign_bytes(content))
