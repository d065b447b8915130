"""Schemathesis fuzzes the API from its own OpenAPI schema, with valid and invalid inputs: no
input may cause a 5xx, and every response must match the schema. A quick pass by default; a
long one with -m slow."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed "
                                   "(pip install schemathesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (content_type_conformance, not_a_server_error,  # noqa: E402
                                 response_schema_conformance, status_code_conformance)

pytestmark = pytest.mark.integration  # schemathesis drives the whole app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(web_lib):
    from searchkit.web import WebConfig, create_app
    app = create_app(web_lib.library, WebConfig(max_upload_bytes=200_000))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def fuzz(api_schema, mode: GenerationMode, examples: int, **kw) -> None:
    """Every operation of the schema, ``examples`` cases each."""
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if mode == GenerationMode.NEGATIVE and not operation.label.startswith(
                ("GET /api/search", "POST", "GET /api/images")):
            continue  # nothing to make invalid (no parameters)

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), **kw)
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            case.call_and_validate(checks=CHECKS)
        run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_fuzz_quick(api_schema, mode):
    fuzz(api_schema, mode, 12, derandomize=True)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_fuzz_long(api_schema, mode):
    fuzz(api_schema, mode, 300)
