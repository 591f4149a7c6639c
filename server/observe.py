"""The outermost middleware: refuses a wrong media type before any body is read, and counts every answer."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

from server.errors import problem

UNMATCHED = "unmatched"


class Observe:
    """Pure ASGI middleware. A POST to a path in ``media`` must carry that media type (compared case-insensitively,
    RFC 9110 §8.3.1), else 415 at once. Every answer is counted by route template (or the known path, or
    ``unmatched``: bounded label cardinality) and status: 408, 413 and 503 from the body limit, and 500s, too."""

    def __init__(self, app, requests: Counter, latency: Histogram, media: dict[str, str], known: tuple[str, ...]):
        self.app, self.requests, self.latency, self.media, self.known = app, requests, latency, media, known

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500  # an exception that escapes is answered 500 outside us
        wanted = self.media.get(scope["path"]) if scope["method"] == "POST" else None
        ctype = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()

        async def counted(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if wanted is not None and ctype != wanted:
                refusal = problem(415, "Unsupported media type", f"content-type must be {wanted}, got {ctype!r}")
                await refusal(scope, receive, counted)
            else:
                await self.app(scope, receive, counted)
        finally:
            route = scope.get("route")
            path = scope["path"]
            label = route.path if route is not None else (path if path in self.known else UNMATCHED)
            self.requests.labels(label, str(status)).inc()
            self.latency.labels(label).observe(time.perf_counter() - start)
