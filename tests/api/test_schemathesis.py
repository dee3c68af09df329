"""Property-based run of schemathesis over the whole OpenAPI schema against a live server on loopback: every
operation gets generated requests (valid and invalid); none may produce a server error (5xx)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from kb_service.core.config import Settings
from tests.live import live_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CASES_PER_OPERATION = 72
MIN_CASES = 1_000


def fuzz(operation: object, seen: list[int]) -> None:
    """Generated requests for one operation; every response status is recorded in ``seen``. Every other request
    naming a knowledge base names the existing one, so generated metadata, filters and queries reach a real
    knowledge base instead of stopping at its 404."""

    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    @settings(max_examples=CASES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        dropping = case.method == "DELETE" and case.path in (
            "/v1/knowledge-bases/{kb}",
            "/v1/vector_stores/{vector_store_id}",
        )
        for name in ("kb", "vector_store_id"):  # a knowledge base is a vector store
            if name in (case.path_parameters or {}) and len(seen) % 2 == 0 and not dropping:
                case.path_parameters = {**case.path_parameters, name: "fuzz"}
        response = case.call(timeout=60)
        seen.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    run()


def test_no_generated_request_makes_a_server_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = Settings(data_dir=tmp_path_factory.mktemp("fuzz"), llm_backend="none", chunk_size=64, chunk_overlap=8)
    statuses: dict[str, list[int]] = {}
    with live_server(config) as (url, app):
        app.state.catalog.create("fuzz")
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        only = os.environ.get("FUZZ_ONLY")  # a path prefix, to fuzz some operations while working on them
        for result in schema.get_all_operations():
            operation = result.ok()
            if only and not operation.path.startswith(only):
                continue
            fuzz(operation, statuses.setdefault(operation.label, []))
    total = sum(len(v) for v in statuses.values())
    assert total >= MIN_CASES, f"only {total} generated requests: { ({k: len(v) for k, v in statuses.items()}) }"
    assert all(code < 500 for codes in statuses.values() for code in codes)
