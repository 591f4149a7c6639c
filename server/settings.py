"""Service settings, read from environment variables prefixed ``MIST_`` (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.estimator import default_checkpoint_path


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIST_")

    checkpoint: str = Field(default_factory=lambda: str(default_checkpoint_path()))
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    torch_threads: int = 2
    max_body_bytes: int = 64 * 1024 * 1024
    max_batch_items: int = 256
