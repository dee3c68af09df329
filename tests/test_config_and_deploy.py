"""Settings validation and the docker-compose file's structure (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from core.config import Settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_BACKEND", "pgvector")
    monkeypatch.setenv("KB_CHUNK_SIZE", "128")
    s = Settings()
    assert (s.backend, s.chunk_size, s.embedding_device) == ("pgvector", 128, "auto")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 64, "chunk_overlap": 64}, "chunk_overlap (64) must be smaller than chunk_size (64)"),
        ({"embedding_backend": "openai"}, "needs KB_EMBEDDING_API_BASE"),
        ({"backend": "sqlite"}, "Input should be 'milvus' or 'pgvector'"),
    ],
)
def test_invalid_settings_fail_fast(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(**kwargs)


def test_compose_structure() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"etcd", "minio", "milvus", "postgres", "api"} <= set(services)
    assert all("healthcheck" in svc for svc in services.values())
    assert services["postgres"]["image"].startswith("pgvector/pgvector")
    assert services["milvus"]["image"].startswith("milvusdb/milvus")
    fields = {f"KB_{name.upper()}" for name in Settings.model_fields}
    env = services["api"]["environment"]
    assert set(env) <= fields, set(env) - fields
    assert "KB_BACKEND" in env
    assert set(compose["volumes"]) >= {"milvus-data", "pg-data"}
    assert (ROOT / "Dockerfile").is_file()
