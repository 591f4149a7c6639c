"""Bounds on what one request may cost: bytes (counted as they arrive, whatever the framing), concurrent heavy
work, and time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from server.errors import Busy, ClientGone, DeadlineExceeded, problem


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
            await problem(413, "Body too large", f"body exceeds {self.max_bytes} bytes", headers=CLOSE)(
                scope, receive, send
            )
            return
        chunks: list[bytes] = []
        try:  # the body counts against max_buffered until its request is answered
            try:
                refusal = await asyncio.wait_for(self._read(receive, chunks), self.timeout_s)
            except TimeoutError:
                refusal = problem(408, "Request timeout", f"the body did not arrive within {self.timeout_s:g} s",
                                  headers=CLOSE)  # fmt: skip
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
                return problem(413, "Body too large", f"body exceeds {self.max_bytes} bytes", headers=CLOSE)
            if self.buffered + len(body) > self.max_buffered:
                return problem(503, "Busy", "the server holds too many request bodies; retry shortly",
                               headers={"Retry-After": "2", **CLOSE})  # fmt: skip
            self.buffered += len(body)
            chunks.append(body)
            if not message.get("more_body", False):
                return None


CLIENT_LEFT = object()
CLOSE = {"Connection": "close"}  # a body refused half-read leaves the connection unusable: uvicorn then closes it


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
    """Runs estimates in worker threads, at most ``slots`` at once, plus one lane kept for light work (estimated
    cost ≤ ``light_cost_s``), so a small request is not starved behind heavy batches. A request waits for a slot,
    at most ``max_waiting`` of them at a time and within its deadline; past either it is refused with 503 (retry
    later). Work that runs past ``deadline_s`` (counted from ``arrived``) is answered 504.

    ``cancel`` is set when the client leaves: a request not yet started is then never started (:class:`ClientGone`),
    and work checks it between batch items. A thread cannot be interrupted: work past its deadline finishes in the
    background and only then frees its slot, so CPU and memory stay bounded by the slots whatever clients do."""

    def __init__(self, slots: int, deadline_s: float, max_waiting: int = 16, light_cost_s: float = 0.5):
        self.slots, self.deadline_s, self.max_waiting, self.light_cost_s = slots, deadline_s, max_waiting, light_cost_s
        self._heavy, self._light = asyncio.Semaphore(slots), asyncio.Semaphore(1)
        self._waiting = 0

    def remaining_s(self, arrived: float) -> float:
        return self.deadline_s - (asyncio.get_running_loop().time() - arrived)

    async def _acquire(self, cost: float, arrived: float) -> asyncio.Semaphore:
        lane = self._light if cost <= self.light_cost_s and self._heavy.locked() else self._heavy
        if not lane.locked():
            await lane.acquire()
            return lane
        if self._waiting >= self.max_waiting:
            raise Busy
        self._waiting += 1
        try:
            await asyncio.wait_for(lane.acquire(), max(self.remaining_s(arrived), 0.0))
        except TimeoutError:
            raise Busy from None
        finally:
            self._waiting -= 1
        return lane

    async def run(self, fn: Callable[..., Any], *args: Any, cost: float = 0.0, arrived: float | None = None,
                  cancel: threading.Event | None = None) -> Any:  # fmt: skip
        loop = asyncio.get_running_loop()
        arrived = loop.time() if arrived is None else arrived
        lane = await self._acquire(cost, arrived)
        if cancel is not None and cancel.is_set():
            lane.release()
            raise ClientGone
        try:
            future = loop.run_in_executor(None, fn, *args)
        except BaseException:
            lane.release()
            raise
        future.add_done_callback(lambda _: lane.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.remaining_s(arrived))
        except TimeoutError:
            raise DeadlineExceeded from None
