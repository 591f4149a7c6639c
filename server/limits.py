"""Bounds on what one request may cost: bytes (counted as they arrive, whatever the framing), concurrent heavy
work, and time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class BodyLimit:
    """Pure ASGI middleware: reads a POST body chunk by chunk, answers 413 as soon as it passes ``max_bytes``
    (a declared Content-Length over the cap is refused before reading), then replays the body to the app.
    Chunked bodies are counted like any other, so a small Content-Length cannot smuggle a large body."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        from server.errors import problem  # errors imports this module's exceptions

        too_large = problem(413, "Body too large", f"body exceeds {self.max_bytes} bytes")
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nothing to answer
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await too_large(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class Busy(Exception):  # noqa: N818 (a state, not an error)
    """All heavy slots are taken: answered 503 with Retry-After."""


class DeadlineExceeded(Exception):  # noqa: N818 (the name says it)
    """The work did not finish within the request deadline: answered 504."""


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
