"""schemathesis against the OpenAPI document served by a real uvicorn server: generated
requests, valid and invalid, on every operation, with a key that has every scope; no
answer is a 5xx, and every answer conforms to the document (status, content type,
headers, body)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import schemathesis
from api_helpers import ALL_SCOPES, ApiServer, party, pool_numbers, write_records
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation


def invalid_data_rejected(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' negative_data_rejection, for requests that still carried their invalid
    part once sent: every request here sends a valid key (so a case made invalid by
    dropping or mangling the Authorization header is valid once sent); a query value is
    text whatever type it was generated as (``tenant=false`` is a valid tenant filter); and
    requests drops a query parameter whose value it cannot encode (a nested list)."""
    data = getattr(case.meta.phase, "data", None)
    made = list(getattr(data, "mutations", ()))
    sent = set(parse_qs(urlsplit(response.request.url).query, keep_blank_values=True))
    declared = {p.name for p in case.operation.query}
    kept = []
    for m in made:
        if m.parameter_location == ParameterLocation.HEADER and m.parameter == "Authorization":
            continue
        if m.parameter_location == ParameterLocation.QUERY:
            if set(m.keywords) <= {"type"}:
                continue
            if "additionalProperties" in m.keywords and sent <= declared:
                continue
        kept.append(m)
    if made and not kept:
        return None
    return negative_data_rejection(ctx, response, case)  # type: ignore[no-any-return]


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    invalid_data_rejected,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str]]:
    folder: Path = tmp_path_factory.mktemp("schema")
    with ApiServer(folder / "numbers.lmdb", cdr=folder / "cdr.sqlite") as server:
        token = server.tenant("acme", ALL_SCOPES | {"admin"})
        with server.client(token) as api:
            numbers = [{"number": n} for n in pool_numbers(50)]
            api.post("/v1/pools", json={"name": "trips", "numbers": numbers}).raise_for_status()
            made = []
            for n in range(5):
                body = {"kind": "axb", "pool": "trips", "a": party(2 * n), "b": party(2 * n + 1)}
                made.append(api.post("/v1/bindings", json=body).raise_for_status().json())
            api.post(
                "/v1/webhooks", json={"url": "http://127.0.0.9:9/h", "events": ["call.completed"]}
            ).raise_for_status()
        write_records(server, folder / "cdr.sqlite", made[0])  # records, statistics: not empty
        yield server, token


#: Generated requests per operation and mode (valid, then invalid data).
EXAMPLES = 40


def test_every_operation_conforms(served: tuple[ApiServer, str]) -> None:
    server, token = served
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    auth = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    failures: list[str] = []
    tried = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                case.call_and_validate(headers=auth, checks=CHECKS)

            tried += 1
            try:
                run()
            except Unsatisfiable:
                # Nothing invalid can be made for an operation that takes no input at all.
                inputs = [operation.path_parameters, operation.query, operation.headers]
                inputs += [operation.body, list(operation.security.iter_parameters())]
                if mode != GenerationMode.NEGATIVE or any(len(i) for i in inputs):
                    failures.append(f"{operation.method.upper()} {operation.path}: no cases")
            except (Exception, BaseExceptionGroup) as exc:  # try all, report every failure
                failures.append(
                    f"{operation.method.upper()} {operation.path} [{mode.value}]: {exc}"
                )
    assert tried == 2 * len(operations)
    assert not failures, "\n\n".join(failures)


def test_the_document_is_openapi_3_1(served: tuple[ApiServer, str]) -> None:
    server, _ = served
    with server.client(None) as client:
        document = client.get("/openapi.json").json()
        docs = client.get("/docs")
        css = client.get("/docs/static/swagger-ui.css")
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert "/v1/bindings/{binding_id}" in document["paths"]
    assert docs.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
