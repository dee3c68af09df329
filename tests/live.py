"""The live uvicorn server for tests (it lives in api.live so the benchmarks use it too)."""

from kb_service.api.live import live_server

__all__ = ["live_server"]
