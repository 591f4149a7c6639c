"""Bounds on what one request may cost: bytes (counted as they arrive, whatever the framing), concurrent heavy
work, and time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from server.errors import Busy, DeadlineExceeded, problem


class BodyLimit:
    """Pure ASGI middleware: reads a POST body chunk by chunk, then replays it to the app. Refuses with 413 as soon
    as the body passes ``max_bytes`` (a declared Content-Length over the cap before reading; chunked bodies are
    counted like any other), with 503 + Retry-After when the bodies held across all connections would pass
    ``max_buffered`` (so many slow uploads cannot exhaust memory), and with 408 when the body has not arrived
    within ``timeout_s``."""

    def __init__(self, app, max_bytes: int, max_buffered: int, timeout_s: float):
        self.app, self.max_bytes, self.max_buffered, self.timeout_s = app, max_bytes, max_buffered, timeout_s
        self.buffered = 0  # bytes of the bodies of requests not yet answered, all connections together

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await problem(413, "Body too large", f"body exceeds {self.max_bytes} bytes")(scope, receive, send)
            return
        chunks: list[bytes] = []
        try:  # the body counts against max_buffered until its request is answered
            try:
                refusal = await asyncio.wait_for(self._read(receive, chunks), self.timeout_s)
            except TimeoutError:
                refusal = problem(408, "Request timeout", f"the body did not arrive within {self.timeout_s:g} s")
            if refusal is CLIENT_LEFT:
                return
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            body = b"".join(chunks)
            chunks[:] = [body]
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.buffered -= sum(map(len, chunks))

    async def _read(self, receive, chunks: list[bytes]):
        """Append the body's chunks to ``chunks``: None when complete, else the answer that refuses it."""
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return CLIENT_LEFT  # before sending its body: nothing to answer
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                return problem(413, "Body too large", f"body exceeds {self.max_bytes} bytes")
            if self.buffered + len(body) > self.max_buffered:
                return problem(503, "Busy", "the server holds too many request bodies; retry shortly",
                               headers={"Retry-After": "2"})  # fmt: skip
            self.buffered += len(body)
            chunks.append(body)
            if not message.get("more_body", False):
                return None


CLIENT_LEFT = object()


def _replay(body: bytes, receive):
    """An ASGI receive that gives ``body`` once, then defers to the connection (disconnect messages)."""
    replayed = False

    async def replay() -> dict:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Admission:
    """At most ``slots`` estimates run at once (each in a worker thread). A request waits for a slot, at most
    ``max_waiting`` of them at a time and within its deadline; past either it is refused with 503 (retry later).
    A request whose work runs past ``deadline_s`` (counted from arrival) is answered 504.

    A thread cannot be interrupted: work past its deadline (or whose client left) finishes in the background and
    only then frees its slot, so memory and CPU stay bounded by ``slots`` whatever clients do; a waiting request
    holds only its raw body."""

    def __init__(self, slots: int, deadline_s: float, max_waiting: int = 16):
        self.slots, self.deadline_s, self.max_waiting = slots, deadline_s, max_waiting
        self._free = asyncio.Semaphore(slots)
        self._waiting = 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        if self._free.locked():
            if self._waiting >= self.max_waiting:
                raise Busy
            self._waiting += 1
            try:
                await asyncio.wait_for(self._free.acquire(), self.deadline_s)
            except TimeoutError:
                raise Busy from None
            finally:
                self._waiting -= 1
        else:
            await self._free.acquire()
        try:
            future = loop.run_in_executor(None, fn, *args)
        except BaseException:
            self._free.release()
            raise
        future.add_done_callback(lambda _: self._free.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.deadline_s - (loop.time() - arrived))
        except TimeoutError:
            raise DeadlineExceeded from None
