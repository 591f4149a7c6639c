"""ASGI entry point: ``uvicorn server.main:app`` (settings from MIST_* environment variables)."""

from server.app import create_app

app = create_app()
