"""Service settings, read from environment variables prefixed ``MIST_`` (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.estimator import default_checkpoint_path


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIST_")

    checkpoint: str = Field(default_factory=lambda: str(default_checkpoint_path()), description="the default model")
    # More models by name, picked per request with the "model" field: "lab=/models/lab.pt,other=/m/o.pt".
    # A "default=PATH" entry replaces `checkpoint`.
    checkpoints: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    torch_threads: int = 2
    # A JSON body of n = 20 000 rows of 64 + 64 numbers is about 50 MB; one parsed request of 32 MiB peaks at a few
    # hundred MB, and at most estimate_slots run at once (see deploy/kubernetes for the pod's memory limit).
    max_body_bytes: int = 32 * 1024 * 1024
    max_batch_items: int = 256
    max_batch_numbers: int = 4_000_000
    estimate_slots: int = Field(2, ge=1, description="estimates running at once; others wait for a slot")
    parse_workers: int = Field(2, ge=0, description="processes parsing request bodies (0: in the request's thread)")
    max_waiting: int = Field(16, ge=0, description="requests waiting for a slot; past it: 503 + Retry-After")
    deadline_s: float = Field(30.0, gt=0, description="per-request deadline; past it the answer is 504")
    graceful_shutdown_s: int = Field(
        35,
        ge=1,
        description="SIGTERM drains in-flight requests for at most this long "
        "(at least deadline_s, so no admitted request loses its answer)",
    )
    # Connections: what a slow or idle client may hold.
    max_connections: int = Field(128, ge=1, description="open connections and requests; past it: 503")
    head_timeout_s: float = Field(10.0, gt=0, description="a request head must arrive within this; else closed")
    body_timeout_s: float = Field(30.0, gt=0, description="a request body must arrive within this; else 408")
    max_buffered_bytes: int = Field(128 * 1024 * 1024, ge=1, description="request bytes held across all "
                                    "connections; past it: 503 + Retry-After")  # fmt: skip

    @model_validator(mode="after")
    def _drain_covers_the_deadline(self) -> Settings:
        if self.graceful_shutdown_s < self.deadline_s:
            raise ValueError(f"graceful_shutdown_s ({self.graceful_shutdown_s}) must be at least deadline_s "
                             f"({self.deadline_s}): a shorter drain drops admitted requests unanswered")  # fmt: skip
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError("max_buffered_bytes must be at least max_body_bytes")
        return self

    def models(self) -> dict[str, str]:
        """Model name → checkpoint path; "default" is always present."""
        out = {"default": self.checkpoint}
        for entry in filter(None, (e.strip() for e in self.checkpoints.split(","))):
            name, sep, path = entry.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ValueError(f"MIST_CHECKPOINTS entry {entry!r} must read name=path")
            out[name.strip()] = path.strip()
        return out
