"""Settings validation and the docker-compose file's structure (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kb_service.core.config import GROUPS, Settings, describe_errors

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_BACKEND", "pgvector")
    monkeypatch.setenv("KB_CHUNK_SIZE", "128")
    s = Settings()
    assert (s.store.backend, s.ingest.chunk_size, s.embedding.device) == ("pgvector", 128, "auto")


def test_settings_are_nested_by_subsystem_and_keep_their_flat_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KB_SEARCH_TOP_K", "7")
    monkeypatch.setenv("KB_GATE_DOCS", "30")
    monkeypatch.setenv("KB_ASK_TOP_K", "3")
    monkeypatch.setenv("KB_INGEST_BATCH_CHUNKS", "64")
    monkeypatch.setenv("KB_MODEL_CACHE", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-openai-variable")
    monkeypatch.setenv("KB_API_KEYS", '[{"key": "0123456789abcdef", "name": "ops"}]')
    s = Settings(gate_docs=40, rerank={"weight": 3.0})  # keyword arguments win over the environment
    assert (s.search.top_k, s.search.gate_docs, s.answer.top_k, s.ingest.batch_chunks) == (7, 40, 3, 64)
    assert s.embedding.model_cache == tmp_path and (s.rerank.weight, s.rerank.candidates) == (3.0, 30)
    assert s.llm.api_key is not None and s.llm.api_key.get_secret_value() == "sk-from-the-openai-variable"
    assert [k.name for k in s.api.keys] == ["ops"]

    changed = s.with_changes(rerank_backend="cross-encoder", chunk_size=128)
    assert (changed.rerank.backend, changed.ingest.chunk_size, changed.search.gate_docs) == ("cross-encoder", 128, 40)
    assert s.rerank.backend != "cross-encoder" and s.ingest.chunk_size == 256  # a copy
    with pytest.raises(ValidationError, match="chunk_overlap"):
        s.with_changes(chunk_overlap=300)
    with pytest.raises(ValidationError, match="Extra inputs"):
        Settings(chunk_sise=64)  # a typo is an error, not a silent default

    names = Settings.env_names()
    assert {"KB_BACKEND", "KB_SEARCH_TOP_K", "KB_GATE", "KB_ASK_TOP_K", "KB_MODEL_CACHE", "KB_API_KEYS"} <= names
    flat = [name for cls in GROUPS.values() for name in cls.flat_names().values()]
    assert len(flat) == len(set(flat))  # one value per environment name


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert sorted(n for n in Settings.env_names() if n not in readme) == []


def test_a_bad_value_is_reported_under_its_environment_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_SEARCH_TOP_K", "many")
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert describe_errors(exc.value).startswith("KB_SEARCH_TOP_K: Input should be a valid integer")
    monkeypatch.delenv("KB_SEARCH_TOP_K")
    with pytest.raises(ValidationError) as exc:
        Settings(rerank_candidates=0)
    assert describe_errors(exc.value) == "KB_RERANK_CANDIDATES: Input should be greater than or equal to 1"


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
    fields = Settings.env_names()
    assert set(env) <= fields, set(env) - fields
    assert env["KB_BACKEND"] == "${KB_BACKEND:-milvus}"  # switching the store is one variable
    assert env["KB_MILVUS_URI"] == "http://milvus:19530" and "@postgres:5432/" in env["KB_PG_DSN"]
    assert {"milvus", "postgres"} <= set(api["depends_on"])
    assert api["ports"] == ["8000:8000"] and "/ready" in " ".join(api["healthcheck"]["test"])
    # What the compose file passes (defaults expanded, as docker compose does) is what the settings accept.
    for key, value in env.items():
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-(.*)\}", r"\1", str(value)))
    settings = Settings()
    assert settings.store.backend == "milvus" and settings.store.milvus_uri == "http://milvus:19530"

    assert settings.ingest.queue_url is None  # KB_QUEUE_URL's empty default: ingestion in the API process

    # The scale profile: a RabbitMQ queue and worker replicas with the API's image on the same store and volume.
    worker, broker = services["worker"], services["rabbitmq"]
    assert worker["profiles"] == broker["profiles"] == ["scale"] and "profiles" not in api
    assert worker["image"] == api["image"] and worker["command"][:2] == ["kb", "worker"]
    assert worker["deploy"]["replicas"] >= 2 and worker["volumes"] == api["volumes"]
    assert set(worker["environment"]) <= fields and worker["environment"]["KB_BACKEND"] == "pgvector"
    assert worker["environment"]["KB_PG_DSN"] == env["KB_PG_DSN"]
    assert broker["image"].startswith("rabbitmq:") and api["depends_on"]["rabbitmq"]["required"] is False
    queue = re.sub(r"\$\{[A-Z_]+:-(.*)\}", r"\1", worker["environment"]["KB_QUEUE_URL"])
    user, password = broker["environment"]["RABBITMQ_DEFAULT_USER"], broker["environment"]["RABBITMQ_DEFAULT_PASS"]
    assert queue == f"amqp://{user}:{password}@rabbitmq:5672//"
    for key, value in worker["environment"].items():
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-(.*)\}", r"\1", str(value)))
    assert Settings().ingest.queue_url == queue  # what the worker gets is a valid configuration

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "EXPOSE 8000" in dockerfile and "HEALTHCHECK" in dockerfile
    assert '"--host", "0.0.0.0", "--port", "8000"' in dockerfile


def test_compose_gpu_variant() -> None:
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]["api"]
    fields = Settings.env_names()
    assert set(gpu["environment"]) <= fields and gpu["environment"]["KB_EMBEDDING_DEVICE"] == "cuda"
    assert gpu["build"]["args"]["BASE"].startswith("nvidia/cuda:")
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert all(f"ARG {arg}" in dockerfile for arg in gpu["build"]["args"])  # the overrides reach the build
    worker = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]["worker"]
    assert worker["environment"]["KB_EMBEDDING_DEVICE"] == "cuda" and set(worker["environment"]) <= fields
    assert worker["deploy"]["resources"] == gpu["deploy"]["resources"]  # each worker replica gets a GPU
