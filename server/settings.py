"""Service settings, read from environment variables prefixed ``MIST_`` (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field
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
    max_waiting: int = Field(16, ge=0, description="requests waiting for a slot; past it: 503 + Retry-After")
    deadline_s: float = Field(30.0, gt=0, description="per-request deadline; past it the answer is 504")
    graceful_shutdown_s: int = Field(10, ge=1, description="SIGTERM drains in-flight requests for at most this long")

    def models(self) -> dict[str, str]:
        """Model name → checkpoint path; "default" is always present."""
        out = {"default": self.checkpoint}
        for entry in filter(None, (e.strip() for e in self.checkpoints.split(","))):
            name, sep, path = entry.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ValueError(f"MIST_CHECKPOINTS entry {entry!r} must read name=path")
            out[name.strip()] = path.strip()
        return out
