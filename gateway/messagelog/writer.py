"""Group commit for the message log: many concurrent appends become few transactions, each acknowledged when durable."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.messagelog.records import LogFields, LogRecord
from gateway.messagelog.store import MessageLogStore


class MessageLogWriteError(RuntimeError):
    """The batch holding this record was not committed; the store's exception is the ``__cause__``."""


class WriterClosed(MessageLogWriteError):
    """The writer is closed (or its task died) and takes no more records."""


@dataclass(slots=True)
class WriterStats:
    batches: int = 0
    records: int = 0
    failed_batches: int = 0
    failed_records: int = 0
    largest_batch: int = 0


_Item = tuple[tuple[LogFields, ...], "asyncio.Future[list[LogRecord]]"]  # one append_many call
_WAKE = None  # put by close() to wake a writer blocked on an empty queue


def _consume(fut: asyncio.Future[list[LogRecord]]) -> None:
    if not fut.cancelled():
        fut.exception()


class GroupCommitWriter:
    """Funnel ``append`` calls through one task that commits them in batches.

    ``append`` returns the stored record only after the transaction holding it has committed, so an acknowledged
    record is durable; if that transaction fails, every caller in the batch gets MessageLogWriteError (nothing is
    silently dropped). The queue is bounded: when the store falls behind, ``append`` waits for room (back-pressure)
    instead of letting memory grow. A cancelled ``append`` does not withdraw its record: once queued, it is written.

    Batching: after taking the first record the task keeps yielding to the event loop for as long as more records
    keep arriving, up to ``max_batch`` records or ``max_delay_ms``; then, only while traffic flows (a commit within
    the last 50 ms), it waits ``linger_ms`` more; then it commits. A lone record on an idle writer is committed at
    once; under load the records that queued during one commit form the next batch. The records of one
    ``append_many`` call are never split: they go into one transaction, in order, even past ``max_batch``.
    ``max_queue`` bounds the calls waiting, each of one or a few records.
    """

    def __init__(
        self, store: MessageLogStore, max_batch: int = 256, max_delay_ms: float = 2.0, max_queue: int = 10_000,
        linger_ms: float = 0.0,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_delay_ms >= 0")
        self.store = store
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000
        self.linger = linger_ms / 1000
        self.busy_window = 0.05  # a commit this recent means traffic is flowing
        self._last_commit = float("-inf")
        self.stats = WriterStats()
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._putting = 0  # appends admitted before close() but still waiting for queue room
        self._queued_records = 0

    @property
    def pending(self) -> int:
        """Records queued and not yet taken into a batch."""
        return self._queued_records

    def start(self) -> None:
        """Start the commit task (``append`` does this on first use)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="messagelog-group-commit")

    async def append(self, fields: LogFields) -> LogRecord:
        """Queue ``fields`` and return its stored record once committed; raise MessageLogWriteError if not."""
        return (await self.append_many((fields,)))[0]

    async def append_many(self, many: tuple[LogFields, ...] | list[LogFields]) -> list[LogRecord]:
        """``append`` for several records, queued in order and committed in one transaction; returns once they
        are, or raises if they were not. One queue item and one future for the whole call."""
        if self._closing:
            raise WriterClosed("the message-log writer is closed")
        self.start()
        assert self._task is not None
        if self._task.done():
            raise WriterClosed("the message-log writer task has stopped")
        fields = tuple(many)
        if not fields:
            return []
        fut: asyncio.Future[list[LogRecord]] = asyncio.get_running_loop().create_future()
        self._putting += 1
        try:
            await self._queue.put((fields, fut))
        finally:
            self._putting -= 1
        self._queued_records += len(fields)
        try:
            return await fut
        except BaseException:
            fut.add_done_callback(_consume)  # the failure is the caller's answer; nobody else retrieves it
            raise

    async def close(self) -> None:
        """Stop taking records, commit everything already accepted, and stop the task. The store stays open."""
        self._closing = True
        if self._task is None:
            return
        if not self._task.done():
            await self._queue.put(_WAKE)
        await self._task

    def _take(self, batch: list[_Item], item: _Item) -> int:
        batch.append(item)
        self._queued_records -= len(item[0])
        return len(item[0])

    def _take_ready(self, batch: list[_Item], records: int) -> int:
        """Move queued calls into ``batch`` while it holds fewer than max_batch records; the new record count."""
        while records < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is not None:
                records += self._take(batch, item)
        return records

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Item] = []
        try:
            while True:
                if self._closing and self._queue.empty() and self._putting == 0:
                    return
                item = await self._queue.get()
                if item is None:
                    continue
                batch = []
                records = self._take_ready(batch, self._take(batch, item))
                deadline = loop.time() + self.max_delay
                while records < self.max_batch and loop.time() < deadline:
                    before = records
                    # One loop iteration lets producers that are already runnable (woken by the last commit, or by
                    # I/O that is ready) queue their records; stop as soon as an iteration brings none.
                    await asyncio.sleep(0)
                    records = self._take_ready(batch, records)
                    if records == before:
                        break
                if self.linger and records < self.max_batch and loop.time() - self._last_commit < self.busy_window:
                    # Busy: records keep coming, and each transaction costs far more CPU than a record, so wait a
                    # moment to commit more of them together. An idle gateway commits a lone record at once.
                    await asyncio.sleep(self.linger)
                    self._take_ready(batch, records)
                await self._commit(batch)
                self._last_commit = loop.time()
                batch = []
        finally:
            # After close() nothing is left here; after a cancellation or a bug, fail whoever is still waiting rather
            # than leave them hanging.
            self._closing = True
            err = WriterClosed("the message-log writer stopped before committing this record")
            self._fail(batch, err)
            leftovers: list[_Item] = []
            while not self._queue.empty():
                leftover = self._queue.get_nowait()
                if leftover is not None:
                    self._take(leftovers, leftover)
            self._fail(leftovers, err)

    async def _commit(self, batch: list[_Item]) -> None:
        fields = [f for many, _ in batch for f in many]
        try:
            records = await self.store.append_batch(fields)
        except Exception as exc:
            self.stats.failed_batches += 1
            self.stats.failed_records += len(fields)
            self._fail(
                batch,
                MessageLogWriteError(f"message-log batch of {len(fields)} record(s) not committed: {exc!r}"),
                cause=exc,
            )
            return
        self.stats.batches += 1
        self.stats.records += len(fields)
        self.stats.largest_batch = max(self.stats.largest_batch, len(fields))
        start = 0
        for many, fut in batch:
            end = start + len(many)
            if not fut.done():  # done = the caller was cancelled; the records are stored all the same
                fut.set_result(records[start:end])
            start = end

    @staticmethod
    def _fail(batch: list[_Item], err: MessageLogWriteError, cause: BaseException | None = None) -> None:
        for _, fut in batch:
            if not fut.done():
                # One exception object per waiter: a shared one would have its traceback rewritten by each raise.
                e = type(err)(*err.args)
                e.__cause__ = cause
                fut.set_exception(e)
        batch.clear()
