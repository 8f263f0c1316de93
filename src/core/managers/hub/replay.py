"""Bidi request replay: what lets a bidirectional stream fall back to another transport.

A bidi call's requests come from the caller's iterator, which can be read only once. Until the
stream's first response arrives, :class:`ReplayBuffer` keeps every request it has pulled, and
each transport attempt reads a fresh :meth:`ReplayBuffer.view` that starts from the first
request again: a fallback (or a retry) re-sends exactly the requests sent so far, then goes on
with the caller's iterator. Once the first response arrives the stream is committed to its
transport (it never falls back after that), :meth:`commit` stops the recording and requests
are no longer kept.

The caller's iterator is only ever advanced by one shared fetch task, shielded from the
attempts: when a failed attempt's reader is cancelled, the pending fetch survives for the next
view, so the caller's generator never sees a stray ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

from google.protobuf.message import Message


async def _aiter(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


class ReplayBuffer:
    """Replayable reads of one request iterator (see the module docstring)."""

    def __init__(self, source: AsyncIterable[Any] | Iterable[Any], convert: Callable[[Any], Message]) -> None:
        self._source: AsyncIterator[Any] = (
            aiter(source) if isinstance(source, AsyncIterable) else aiter(_aiter(source))
        )
        self._convert = convert
        self._items: list[Message] = []
        self._offset = 0
        """Index (in the whole request sequence) of ``_items[0]``."""
        self._fetch: asyncio.Task[Any] | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._recording = True
        self.pulled = 0
        """Requests taken from the caller's iterator so far."""

    @property
    def error(self) -> BaseException | None:
        """Why the caller's iterator stopped early: its own exception, or a request that is not valid."""
        return self._error

    def view(self) -> AsyncIterator[Message]:
        """A reader from the first request (while recording) or from where the stream is."""
        return _View(self, self._offset if not self._recording else 0)

    def commit(self) -> None:
        """The stream has its transport: stop keeping requests for a replay."""
        self._recording = False

    async def aclose(self) -> None:
        """Drop the pending fetch, if any (the caller's iterator itself is the caller's)."""
        if self._fetch is not None and not self._fetch.done():
            self._fetch.cancel()
            with contextlib.suppress(BaseException):
                await self._fetch

    async def get(self, index: int) -> Message:
        """Request number ``index``; StopAsyncIteration past the last one."""
        while True:
            if index < self._offset:
                raise RuntimeError(f"request {index} was dropped after the stream committed")
            if index < self._offset + len(self._items):
                msg = self._items[index - self._offset]
                if not self._recording:  # nobody will read it again
                    del self._items[: index - self._offset + 1]
                    self._offset = index + 1
                return msg
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            if self._fetch is None:
                self._fetch = asyncio.ensure_future(self._next())
            fetch = self._fetch
            await asyncio.shield(fetch)

    async def _next(self) -> None:
        try:
            item = await anext(self._source)
            msg = self._convert(item)
        except StopAsyncIteration:
            self._ended = True
        except Exception as e:  # the caller's iterator failed, or an item is not a valid request
            self._ended, self._error = True, e
        else:
            self._items.append(msg)
            self.pulled += 1
        finally:
            self._fetch = None


class _View:
    def __init__(self, buffer: ReplayBuffer, start: int) -> None:
        self._buffer = buffer
        self._index = start

    def __aiter__(self) -> _View:
        return self

    async def __anext__(self) -> Message:
        msg = await self._buffer.get(self._index)
        self._index += 1
        return msg
