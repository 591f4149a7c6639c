"""A deadline on each request head, which uvicorn lacks.

uvicorn times out an idle keep-alive connection only after a first response, and any byte cancels that timer: a
connection that sends nothing, or trickles its header lines, was held open forever. This protocol closes a
connection whose request head is not complete ``head_timeout_s`` after it opened, or after its last response.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadDeadlineH11Protocol(H11Protocol):
    """Pass to uvicorn as ``http=functools.partial(HeadDeadlineH11Protocol, head_timeout_s=...)``."""

    def __init__(self, *args, head_timeout_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_timeout_s = head_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        waiting_after = self.cycle  # a new head replaces the cycle; the same one means none has arrived
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_expired, waiting_after)

    def _head_expired(self, waiting_after) -> None:
        if self.cycle is waiting_after and not self.transport.is_closing():
            self.transport.close()
