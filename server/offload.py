"""Request parsing in worker processes.

orjson and numpy hold the GIL while they turn a large body into arrays (0.4 s for 8 MiB of numbers measured on
2 cores, 1.7 s once on a loaded CI machine), and while they hold it the event loop answers nothing, health checks
included. A body parsed in another process costs the server only the copy of its bytes and of the arrays back.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

WARM_UP_TIMEOUT_S = 60.0
log = logging.getLogger(__name__)


def _import(module: str) -> None:
    importlib.import_module(module)


class Parsers:
    """``workers`` parsing processes (spawned: they import ``preload``, numpy, orjson and pydantic, not torch);
    ``workers = 0`` parses in the calling thread. A pool whose process died is replaced on the next call.

    Spawned processes import the ``__main__`` module, so a script that builds the app must keep its start under
    ``if __name__ == "__main__":`` (``mist serve`` and uvicorn do). If the processes cannot start, parsing falls back
    to the calling thread with a warning."""

    def __init__(self, workers: int, preload: str = "server.parsing"):
        self.workers, self.preload = workers, preload
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    async def parse(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker process, awaited without holding a thread; its exceptions are raised here."""
        if self.workers == 0:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        pool = self._current()
        try:
            return await asyncio.wrap_future(pool.submit(fn, *args))
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            raise

    def warm_up(self) -> None:
        """Start the processes and import ``preload`` now, so the first request does not pay for it."""
        if not self.workers:
            return
        try:
            pool = self._current()
            for future in [pool.submit(_import, self.preload) for _ in range(self.workers)]:
                future.result(WARM_UP_TIMEOUT_S)
        except Exception as err:  # a main module that cannot be re-imported, a sandbox without processes, ...
            log.warning("parsing processes could not start (%s); parsing in request threads instead", err)
            self.close()
            self.workers = 0

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
