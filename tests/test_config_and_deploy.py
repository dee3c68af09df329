"""Settings validation and the docker-compose file's structure (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kb_service.core.config import Settings

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


def test_compose_structure(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"etcd", "minio", "milvus", "postgres", "api"} <= set(services)
    for name, svc in services.items():
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert "image" in svc or "build" in svc, name
        for dep, rule in svc.get("depends_on", {}).items():
            assert dep in services and rule["condition"] == "service_healthy", (name, dep)
        for volume in svc.get("volumes", []):  # every named volume is declared (no anonymous data dirs)
            assert volume.split(":")[0] in compose["volumes"], (name, volume)
    assert services["postgres"]["image"].startswith("pgvector/pgvector")
    assert services["milvus"]["image"].startswith("milvusdb/milvus")
    assert services["milvus"]["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert services["milvus"]["environment"]["MINIO_ADDRESS"] == "minio:9000"

    api = services["api"]
    env = api["environment"]
    fields = {f"KB_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    assert env["KB_BACKEND"] == "${KB_BACKEND:-milvus}"  # switching the store is one variable
    assert env["KB_MILVUS_URI"] == "http://milvus:19530" and "@postgres:5432/" in env["KB_PG_DSN"]
    assert {"milvus", "postgres"} <= set(api["depends_on"])
    assert api["ports"] == ["8000:8000"] and "/ready" in " ".join(api["healthcheck"]["test"])
    # What the compose file passes (defaults expanded, as docker compose does) is what the settings accept.
    for key, value in env.items():
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-(.*)\}", r"\1", str(value)))
    settings = Settings()
    assert settings.backend == "milvus" and settings.milvus_uri == "http://milvus:19530"

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "EXPOSE 8000" in dockerfile and "HEALTHCHECK" in dockerfile
    assert '"--host", "0.0.0.0", "--port", "8000"' in dockerfile


def test_compose_gpu_variant() -> None:
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]["api"]
    fields = {f"KB_{name.upper()}" for name in Settings.model_fields}
    assert set(gpu["environment"]) <= fields and gpu["environment"]["KB_EMBEDDING_DEVICE"] == "cuda"
    assert gpu["build"]["args"]["BASE"].startswith("nvidia/cuda:")
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert all(f"ARG {arg}" in dockerfile for arg in gpu["build"]["args"])  # the overrides reach the build
